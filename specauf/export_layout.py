"""A trained drafter as a Hugging Face-style directory the field's loaders read, and back.

The layout is the one z-lab publishes DFlash drafters in and SpecForge exports Domino drafters in, as their
loaders read it (z-lab `dflash` 0.1.0 `DFlashDraftModel`, SpecForge 0.2.0 `DominoDraftModel`, vLLM 0.33
`qwen3_dflash.py`, SGLang's DFlash/Domino loader); docs/method.md §10 has the table and what was tested.

config.json
    `architectures` from the drafter class (`export_architectures`, by label offset): "DFlashDraftModel"
    for DFlash and for Domino (which SGLang tells apart by `dflash_config.projector_type`); a next-token
    DFlash is "DFlashNextTokenDraftModel", which no engine serves as DFlash by mistake. `model_type` "qwen3"
    and the Qwen3 keys (`hidden_size`, `num_hidden_layers`, `num_attention_heads`, `num_key_value_heads`,
    `head_dim`, `intermediate_size`, `hidden_act`, `rms_norm_eps`, `rope_theta`/`rope_parameters`,
    `attention_bias` false, `tie_word_embeddings` false, `dtype`); `vocab_size` and `num_target_layers` of
    the target (both loaders evaluate a default from `num_target_layers` eagerly); `block_size` at the top
    level and in `dflash_config` = {`block_size`, `mask_token_id`, `target_layer_ids` (0-based: the drafter
    reads HF `hidden_states[i + 1]`), `label_alignment`, + the class's `export_fields` (Domino:
    `projector_type` "domino", `emb_dim`, `gru_hidden_dim`, `pure_draft_prefix_len`, `shift_label`)}.
    `specauf` holds the drafter class and settings, the target's name, revision and chat-template hash
    (a load for another target is refused), and the checkpoint's step. Training schedules (Domino's
    curriculum) are not architecture and are not exported.
model.safetensors
    The drafter's weights under the field's names (the class's `export_renames`: `fc_norm` → `hidden_norm`;
    Domino `gru.*` → `prefix_gru.*`, `w1`/`w2` → `embed_proj.0`/`embed_proj.2`). No embedding and no LM
    head: both are the target's.
mask_embedding.pt (learned mask only)
    A target without a spare embedding row (SmolLM2) gives a drafter that learns its mask embedding. Loaders
    embed masked slots by token id, so the export names an existing id that never occurs in text (the
    checkpoint's `serving_mask_token_id`: an unused special token) as `dflash_config.mask_token_id`, and
    ships the embedding as {"mask_token_id": id, "embedding": Tensor[H]}, the file vLLM reads to replace
    that id's row. z-lab's and SpecForge's classes read the mask from the target's row: serve there by
    writing the embedding into that row (it is a token text never contains, so the target is unchanged).

No modeling code (`auto_map`, `trust_remote_code`) is shipped: no loader above needs it.
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
from specauf.errors import CheckpointError, ConfigError, PathNotFoundError
from specauf.io import atomic_directory, check_empty_destination
from specauf.loading import META_KEYS, build_drafter, drafter_class, load_drafter

log = logging.getLogger(__name__)

FORMAT_VERSION = 2
# Format 1 (before the field's names) renamed only the fusion norm, kept the mask embedding in the weights
# and Domino's head under our names; its exports still load.
V1_RENAMES = {"fc_norm.weight": "hidden_norm.weight"}
V1_ARCHITECTURES = {
    "DFlashDrafter": ("DFlashDraftModel", "DFlashNextTokenDraftModel"),
    "DominoDrafter": ("DominoDraftModel", "DominoSamePositionDraftModel"),
}
CONFIG_NAME, WEIGHTS_NAME, MASK_EMBEDDING_NAME = "config.json", "model.safetensors", "mask_embedding.pt"
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


def serving_mask_id(drafter: torch.nn.Module, meta: dict[str, Any], override: int | None = None) -> int:
    """The token id config.json gives as `mask_token_id`: the spare row, or the id a learned mask is served
    under (`override`, else the checkpoint's `serving_mask_token_id`); CheckpointError when there is none."""
    own = drafter.config["mask_token_id"]
    if own is not None:
        if override is not None and int(override) != own:
            raise ConfigError(
                f"mask_token_id={override}, but the drafter was trained with the target's spare row {own} as "
                "its mask. Fix: leave mask_token_id unset"
            )
        return int(own)
    chosen = override if override is not None else meta.get("serving_mask_token_id")
    if chosen is None:
        raise CheckpointError(
            f"{meta.get('path')}: the drafter learned its mask embedding (its target has no spare embedding "
            "row), and serving engines embed masked slots by token id, but the checkpoint records no id to "
            "serve it under (its target has no unused special token, or the checkpoint predates this). Fix: "
            "pass mask_token_id=<a token id that never occurs in text>"
        )
    vocab = meta.get("target_vocab_size")
    if vocab is not None and not 0 <= int(chosen) < vocab:
        raise ConfigError(f"mask_token_id={chosen} is outside the target's vocabulary of {vocab} ids")
    return int(chosen)


def hf_config(
    drafter: torch.nn.Module, meta: dict[str, Any], dtype: torch.dtype, *, mask_token_id: int | None = None
) -> dict[str, Any]:
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
    vocab = c.get("vocab_size") or meta.get("target_vocab_size")
    target_layers = meta.get("target_num_layers")
    missing = [
        k for k, v in (("target_vocab_size", vocab), ("target_num_layers", target_layers)) if v is None
    ]
    if missing:
        raise CheckpointError(
            f"{meta.get('path')}: the checkpoint does not record the target's {' and '.join(missing)}, which "
            "the field's loaders need in config.json (vocab_size, num_target_layers). Fix: export a checkpoint "
            "written by this version of `python -m specauf.train`"
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
        "vocab_size": int(vocab),
        "num_target_layers": int(target_layers),
        "block_size": c["block_size"],
        "dflash_config": {
            "block_size": c["block_size"],
            "mask_token_id": serving_mask_id(drafter, meta, mask_token_id),
            "target_layer_ids": layer_ids,
            "label_alignment": alignment,
            **cls.export_fields(c),
        },
    }
    if "emb_dim" in config["dflash_config"]:
        config["emb_dim"] = config["dflash_config"]["emb_dim"]  # SpecForge's configs state it twice
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
    mask_token_id: int | None = None,
) -> Path:
    """Write `drafter` to the directory `out` (config.json, model.safetensors, mask_embedding.pt for a
    learned mask); returns `out`. `out` must not exist or be empty, unless `overwrite`; it never holds a
    half-written export. `mask_token_id` names the id a learned mask is served under (see the docstring)."""
    out = Path(out).expanduser()
    weights_dtype = next(drafter.parameters()).dtype if dtype is None else parse_dtype(dtype)
    config = hf_config(drafter, meta, weights_dtype, mask_token_id=mask_token_id)
    renames = type(drafter).export_renames
    state = {k: v.detach().to("cpu", weights_dtype).contiguous() for k, v in drafter.state_dict().items()}
    mask = state.pop("mask_embedding", None)
    state = {renames.get(k, k): v for k, v in state.items()}
    # The written config must rebuild exactly this drafter: check now rather than at load time.
    rebuilt = drafter_config_from_hf(config)
    if rebuilt != dict(drafter.config):
        diff = {k: (v, rebuilt.get(k)) for k, v in drafter.config.items() if rebuilt.get(k) != v}
        raise AssertionError(f"config.json would not rebuild the drafter (differs in {diff})")
    with atomic_directory(out, overwrite=overwrite) as tmp:
        save_file(state, tmp / WEIGHTS_NAME, metadata={"format": "pt"})
        if mask is not None:
            served = {"mask_token_id": config["dflash_config"]["mask_token_id"], "embedding": mask}
            torch.save(served, tmp / MASK_EMBEDDING_NAME)
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
    ckpt: str | os.PathLike,
    out: str | os.PathLike,
    *,
    overwrite: bool = False,
    dtype: str | None = None,
    mask_token_id: int | None = None,
) -> Path:
    """`python -m specauf.export` as a function: checkpoint (or run directory) → export directory."""
    # Fail before reading a multi-GB checkpoint.
    check_empty_destination(Path(out).expanduser(), overwrite)
    if dtype is not None:
        parse_dtype(dtype, key="dtype")
    drafter, meta = load_drafter(ckpt)
    return export_drafter(drafter, meta, out, overwrite=overwrite, dtype=dtype, mask_token_id=mask_token_id)


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
    if saved.get("format_version", 1) not in (1, FORMAT_VERSION):
        raise CheckpointError(
            f"{path}: export format {saved.get('format_version', 1)} (this version reads {FORMAT_VERSION}). "
            f"Fix: re-export the drafter from its checkpoint ({saved.get('checkpoint') or 'the .ckpt'})"
        )
    return config


def drafter_config_from_hf(config: dict[str, Any]) -> dict[str, Any]:
    """The drafter's constructor arguments from an export's config.json."""
    dflash = config["dflash_config"]
    saved = config["specauf"]
    settings = dict(saved.get("drafter_config") or {})
    settings.update({ours: config[hf] for ours, hf in HF_KEYS.items()})
    settings.update(
        block_size=dflash["block_size"],
        mask_token_id=None if saved.get("learned_mask_embedding") else dflash["mask_token_id"],
        num_feature_layers=len(dflash["target_layer_ids"]),
        label_offset={v: k for k, v in ALIGNMENT.items()}[dflash.get("label_alignment", "same_position")],
    )
    if saved.get("format_version", 1) == 1:
        return settings  # its drafter_config states the class's own settings
    settings.update(drafter_class(saved["drafter_class"]).import_fields(dflash))
    if "vocab_size" in settings:
        settings["vocab_size"] = config["vocab_size"]
    return settings


def _read_mask_embedding(path: Path, mask_token_id: int) -> torch.Tensor:
    file = path / MASK_EMBEDDING_NAME
    if not file.is_file():
        raise CheckpointError(
            f"{path}: the drafter learned its mask embedding, but {MASK_EMBEDDING_NAME} is missing. Fix: "
            "re-export the drafter from its checkpoint"
        )
    try:
        served = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as err:  # pickle, zip and EOF errors: the file is unusable
        raise CheckpointError(f"cannot read {file}: the file is corrupt or truncated ({err})") from err
    if not isinstance(served, dict) or served.get("mask_token_id") != mask_token_id:
        raise CheckpointError(
            f"{file} is not the mask embedding of this export (it must hold {{'mask_token_id': "
            f"{mask_token_id}, 'embedding': tensor}}). Fix: re-export the drafter from its checkpoint"
        )
    return served["embedding"]


def read_export(path: str | os.PathLike) -> tuple[torch.nn.Module, dict[str, Any]]:
    """`(drafter, meta)` of an export directory: the exported weights bit for bit, in eval mode."""
    path = Path(path).expanduser()
    config = read_export_config(path)
    saved = config["specauf"]
    cls = drafter_class(saved["drafter_class"])
    version = saved.get("format_version", 1)
    arch = (config.get("architectures") or [None])[0]
    known = V1_ARCHITECTURES.get(cls.__name__, ()) if version == 1 else cls.export_architectures.values()
    if arch not in known:
        raise CheckpointError(
            f"{path}: architecture {arch!r} is not one {cls.__name__} is exported as "
            f"({', '.join(sorted(set(known)))}). Fix: re-export the drafter from its checkpoint"
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
    renamed_back = {v: k for k, v in (V1_RENAMES if version == 1 else cls.export_renames).items()}
    state = {renamed_back.get(k, k): v for k, v in state.items()}
    if saved.get("learned_mask_embedding") and version > 1:
        state["mask_embedding"] = _read_mask_embedding(path, config["dflash_config"]["mask_token_id"])
    # Exports may be bf16; the drafter is rebuilt in fp32 (its training dtype) and moved by the caller.
    state = {k: v.float() for k, v in state.items()}
    return build_drafter(meta, state, path / WEIGHTS_NAME), meta
