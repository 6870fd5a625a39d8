"""A trained drafter as a Hugging Face-style directory: `config.json` + `model.safetensors`, and back.

The layout follows the one z-lab publishes its DFlash drafters in (e.g. z-lab/Qwen3-8B-DFlash-b16; read from
z-lab/dflash `dflash/model.py` and the SGLang/vLLM DFlash loaders that consume it), so that what can be shared
is named the same way:

config.json
    `architectures`: the drafter class's `export_architectures` for its label alignment (DFlash:
    ["DFlashDraftModel"] for same-position labels, the DFlash convention); `model_type` "qwen3" (the layers
    are Qwen3-shaped); the standard Qwen3 keys `hidden_size`, `num_hidden_layers`, `num_attention_heads`,
    `num_key_value_heads`, `head_dim`, `intermediate_size`, `hidden_act` "silu", `rms_norm_eps`, `rope_theta`
    (and transformers-5 `rope_parameters`), `attention_bias` false, `tie_word_embeddings` false,
    `torch_dtype`/`dtype`; `block_size` at the top level (as some z-lab configs have it) and in
    `dflash_config` = {`block_size`, `mask_token_id`, `target_layer_ids` (0-based; the drafter reads HF
    `hidden_states[i + 1]`), `label_alignment`}. A drafter class with an `export_section` adds it (Domino:
    `domino_config` = {`gru_size`, `rank`, `base_slots`, `vocab_size`, `label_alignment`}). `specauf` holds
    what the above cannot say: the drafter class and its settings, whether the mask embedding is learned, the
    target's name, layers and config, the checkpoint's step. Training schedules (Domino's curriculum) are not
    architecture and are not exported.
model.safetensors
    DFlash names: `fc.weight` (the n·H → H fusion), `hidden_norm.weight` (its RMSNorm; `fc_norm` in specauf),
    `layers.{i}.input_layernorm|post_attention_layernorm.weight`, `layers.{i}.self_attn.{q,k,v,o}_proj.weight`,
    `layers.{i}.self_attn.{q,k}_norm.weight`, `layers.{i}.mlp.{gate,up,down}_proj.weight`, `norm.weight`.
    No embedding, no LM head: both are the target's, as in DFlash.

Not known / not standard — a serving engine will not pick these up without its own support:
- A learned mask embedding (targets without a spare embedding row, e.g. SmolLM2): stored as `mask_embedding`
  with `dflash_config.mask_token_id` null and `specauf.learned_mask_embedding` true.
- Domino keeps specauf's tensor names (`gru.weight_ih_l0`, `gru.weight_hh_l0`, `w1.weight`, `w2.weight`).
- A DFlash backbone trained with next-token labels (`backbone.label_offset=1`) is exported as
  `DFlashNextTokenDraftModel`: an engine assuming same-position alignment would otherwise draft shifted tokens.
- No modeling code (`trust_remote_code`, `auto_map`) is shipped: `transformers.AutoModel` cannot build it.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from specauf.dtypes import dtype_name, parse_dtype
from specauf.errors import CheckpointError, PathNotFoundError
from specauf.io import atomic_directory, check_empty_destination
from specauf.loading import META_KEYS, build_drafter, drafter_class, load_drafter

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
CONFIG_NAME, WEIGHTS_NAME = "config.json", "model.safetensors"
# specauf state-dict name → exported name, where DFlash's published naming differs from ours.
RENAMES = {"fc_norm.weight": "hidden_norm.weight"}
ALIGNMENT = {0: "same_position", 1: "next_token"}
# Drafter settings that config.json states in the HF/DFlash vocabulary (the rest go to config["specauf"]).
HF_KEYS = {
    "hidden_size": "hidden_size",
    "num_layers": "num_hidden_layers",
    "num_heads": "num_attention_heads",
    "num_kv_heads": "num_key_value_heads",
    "head_dim": "head_dim",
    "intermediate_size": "intermediate_size",
    "rms_norm_eps": "rms_norm_eps",
    "rope_theta": "rope_theta",
}


# --- writing ---------------------------------------------------------------------------------------------


def hf_config(drafter: torch.nn.Module, meta: dict[str, Any], dtype: torch.dtype) -> dict[str, Any]:
    """config.json for `drafter`; `meta` as `specauf.loading` returns it (see the module docstring)."""
    c = dict(drafter.config)
    cls = type(drafter)
    layer_ids = [int(i) for i in meta.get("target_layer_ids") or []]
    if len(layer_ids) != c["num_feature_layers"]:
        raise CheckpointError(
            f"{meta.get('path')}: it records target layers {layer_ids}, but the drafter fuses "
            f"{c['num_feature_layers']}; config.json could not say which target layers it reads. Fix: export "
            "a checkpoint written by `python -m specauf.train`"
        )
    alignment = ALIGNMENT[c["label_offset"]]
    config: dict[str, Any] = {
        "architectures": [cls.export_architectures[c["label_offset"]]],
        "model_type": "qwen3",
        **{hf: c[ours] for ours, hf in HF_KEYS.items()},
        "rope_parameters": {"rope_type": "default", "rope_theta": c["rope_theta"]},
        "hidden_act": "silu",
        "attention_bias": False,
        "attention_dropout": 0.0,
        "tie_word_embeddings": False,
        "torch_dtype": dtype_name(dtype),
        "dtype": dtype_name(dtype),
        "block_size": c["block_size"],
        "dflash_config": {
            "block_size": c["block_size"],
            "mask_token_id": c["mask_token_id"],
            "target_layer_ids": layer_ids,
            "label_alignment": alignment,
        },
    }
    for key, value in (
        ("num_target_layers", meta.get("target_num_layers")),
        ("vocab_size", c.get("vocab_size") or meta.get("target_vocab_size")),
    ):
        if value is not None:
            config[key] = value
    if cls.export_section is not None:
        section, keys = cls.export_section
        config[section] = {**{k: c[k] for k in keys}, "label_alignment": alignment}
    config["specauf"] = {
        "format_version": FORMAT_VERSION,
        **{k: meta.get(k) for k in META_KEYS if k not in ("path", "epoch", "training_config")},
        "drafter_class": f"{cls.__module__}.{cls.__qualname__}",
        "drafter_config": c,
        "learned_mask_embedding": c["mask_token_id"] is None,
        "target_layer_ids": layer_ids,
        "checkpoint": meta.get("path"),
    }
    return config


def export_drafter(
    drafter: torch.nn.Module,
    meta: dict[str, Any],
    out: str | os.PathLike,
    *,
    overwrite: bool = False,
    dtype: torch.dtype | str | None = None,
) -> Path:
    """Write `drafter` to the directory `out` (config.json + model.safetensors); returns `out`.

    `out` must not exist or be empty, unless `overwrite`; it never holds a half-written export.
    """
    out = Path(out).expanduser()
    weights_dtype = next(drafter.parameters()).dtype if dtype is None else parse_dtype(dtype)
    config = hf_config(drafter, meta, weights_dtype)
    state = {
        RENAMES.get(k, k): v.detach().to("cpu", weights_dtype).contiguous()
        for k, v in drafter.state_dict().items()
    }
    # The written config must rebuild exactly this drafter: check now rather than at load time.
    rebuilt = drafter_config_from_hf(config)
    if rebuilt != dict(drafter.config):
        diff = {k: (v, rebuilt.get(k)) for k, v in drafter.config.items() if rebuilt.get(k) != v}
        raise AssertionError(f"config.json would not rebuild the drafter (differs in {diff})")
    with atomic_directory(out, overwrite=overwrite) as tmp:
        save_file(state, tmp / WEIGHTS_NAME, metadata={"format": "pt"})
        (tmp / CONFIG_NAME).write_text(json.dumps(config, indent=2) + "\n")
    log.info(
        "exported %s (%s, block size %d) to %s",
        type(drafter).__name__,
        weights_dtype,
        drafter.block_size,
        out,
    )
    return out


def export_checkpoint(
    ckpt: str | os.PathLike, out: str | os.PathLike, *, overwrite: bool = False, dtype: str | None = None
) -> Path:
    """`python -m specauf.export` as a function: checkpoint (or run directory) → export directory."""
    # Fail before reading a multi-GB checkpoint.
    check_empty_destination(Path(out).expanduser(), overwrite)
    if dtype is not None:
        parse_dtype(dtype, key="dtype")
    drafter, meta = load_drafter(ckpt)
    return export_drafter(drafter, meta, out, overwrite=overwrite, dtype=dtype)


# --- reading back --------------------------------------------------------------------------------------------


def read_export_config(path: str | os.PathLike) -> dict[str, Any]:
    """config.json of an export directory, checked to be one specauf can load."""
    path = Path(path).expanduser()
    config_file = path / CONFIG_NAME
    if not config_file.is_file() or not (path / WEIGHTS_NAME).is_file():
        raise PathNotFoundError(
            f"{path} is not an exported drafter (it needs {CONFIG_NAME} and {WEIGHTS_NAME}). Fix: pass a "
            "directory written by `python -m specauf.export`"
        )
    try:
        config = json.loads(config_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{config_file} is not valid JSON ({err}). Fix: re-export the drafter") from err
    saved = config.get("specauf") if isinstance(config, dict) else None
    if not isinstance(saved, dict) or "drafter_class" not in saved or "dflash_config" not in config:
        raise CheckpointError(
            f"{path}: {CONFIG_NAME} is not a specauf export (no `specauf.drafter_class` / `dflash_config`). "
            "Fix: pass a directory written by `python -m specauf.export`"
        )
    return config


def drafter_config_from_hf(config: dict[str, Any]) -> dict[str, Any]:
    """The drafter's constructor arguments from an export's config.json."""
    dflash = config["dflash_config"]
    settings = dict(config["specauf"].get("drafter_config") or {})
    settings.update({ours: config[hf] for ours, hf in HF_KEYS.items()})
    settings.update(
        block_size=dflash["block_size"],
        mask_token_id=dflash["mask_token_id"],
        num_feature_layers=len(dflash["target_layer_ids"]),
        label_offset={v: k for k, v in ALIGNMENT.items()}[dflash.get("label_alignment", "same_position")],
    )
    section = drafter_class(config["specauf"]["drafter_class"]).export_section
    if section is not None:
        name, keys = section
        settings.update({k: config[name][k] for k in keys})
    return settings


def read_export(path: str | os.PathLike) -> tuple[torch.nn.Module, dict[str, Any]]:
    """`(drafter, meta)` of an export directory: the exported weights bit for bit, in eval mode."""
    path = Path(path).expanduser()
    config = read_export_config(path)
    saved = config["specauf"]
    cls = drafter_class(saved["drafter_class"])
    arch = (config.get("architectures") or [None])[0]
    if arch not in cls.export_architectures.values():
        raise CheckpointError(
            f"{path}: architecture {arch!r} is not one {cls.__name__} is exported as "
            f"({', '.join(cls.export_architectures.values())}). Fix: re-export the drafter from its checkpoint"
        )
    meta = {key: saved.get(key) for key in META_KEYS}
    meta.update(
        drafter_config=drafter_config_from_hf(config),
        target_layer_ids=config["dflash_config"]["target_layer_ids"],
        path=str(path),
    )
    try:
        state = load_file(path / WEIGHTS_NAME)
    except Exception as err:  # safetensors raises its own error types for a cut or garbled file
        raise CheckpointError(
            f"cannot read {path / WEIGHTS_NAME}: the file is corrupt or truncated ({err}). Fix: re-export "
            "the drafter from its checkpoint"
        ) from err
    renamed_back = {v: k for k, v in RENAMES.items()}
    # Exports may be bf16; the drafter is rebuilt in fp32 (its training dtype) and moved by the caller.
    state = {renamed_back.get(k, k): v.float() for k, v in state.items()}
    return build_drafter(meta, state, path / WEIGHTS_NAME), meta
