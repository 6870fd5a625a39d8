"""Export a trained drafter as a Hugging Face-style directory: `config.json` + `model.safetensors`.

    python -m specauf.export ckpt=PATH out=DIR [overwrite=true] [dtype=bfloat16]     (see conf/export.yaml)

The layout follows the one z-lab publishes its DFlash drafters in (e.g. z-lab/Qwen3-8B-DFlash-b16; read from
z-lab/dflash `dflash/model.py` and its test fixtures, and the SGLang/vLLM DFlash loaders that consume it), so
that what can be shared is named the same way:

config.json
    `architectures` ["DFlashDraftModel"] (same-position labels, the DFlash convention) or ["DominoDraftModel"];
    `model_type` "qwen3" (the layers are Qwen3-shaped); the standard Qwen3 keys `hidden_size`,
    `num_hidden_layers`, `num_attention_heads`, `num_key_value_heads`, `head_dim`, `intermediate_size`,
    `hidden_act` "silu", `rms_norm_eps`, `rope_theta` (and transformers-5 `rope_parameters`),
    `attention_bias` false, `tie_word_embeddings` false, `torch_dtype`/`dtype`; `block_size` at the top
    level (as some z-lab configs have it) and in `dflash_config` = {`block_size`, `mask_token_id`,
    `target_layer_ids` (0-based; the drafter reads HF `hidden_states[i + 1]`), `label_alignment`}.
    Domino adds `domino_config` = {`gru_size`, `rank`, `base_slots`, `vocab_size`, `label_alignment`}.
    `specauf` holds what the above cannot say: the drafter class and its full settings, the label offset,
    whether the mask embedding is learned, the target's name and training config, the checkpoint's step.
model.safetensors
    DFlash names: `fc.weight` (the n·H → H fusion), `hidden_norm.weight` (its RMSNorm; `fc_norm` in specauf),
    `layers.{i}.input_layernorm|post_attention_layernorm.weight`,
    `layers.{i}.self_attn.{q,k,v,o}_proj.weight`, `layers.{i}.self_attn.{q,k}_norm.weight`,
    `layers.{i}.mlp.{gate,up,down}_proj.weight`, `norm.weight`. No embedding, no LM head: both are the
    target's, as in DFlash.

Not known / not standard — a serving engine will not pick these up without its own support:
- A learned mask embedding (targets without a spare embedding row, e.g. SmolLM2): stored as `mask_embedding`
  with `dflash_config.mask_token_id` null and `specauf.learned_mask_embedding` true. z-lab's drafters always
  use a token id (they add `<|MASK|>` to the tokenizer); no published convention for a learned one exists.
- Domino: no public release format was found; the correction head keeps specauf's names (`gru.weight_ih_l0`,
  `gru.weight_hh_l0`, `w1.weight`, `w2.weight`) and `DominoDraftModel` is our name for it.
- A DFlash backbone trained with next-token labels (`backbone.label_offset=1`) is exported as
  `DFlashNextTokenDraftModel`, not `DFlashDraftModel`: an engine assuming DFlash's same-position alignment
  would otherwise load it and silently draft shifted tokens.
- z-lab's hub repos also ship their modeling code (`trust_remote_code`, `auto_map`); this export does not, so
  `transformers.AutoModel` cannot instantiate it; SGLang/vLLM use their own DFlash implementations.
- `num_target_layers` and the target's `vocab_size` are written only when the checkpoint records them.

`load_exported` reads such a directory back into a specauf drafter with identical weights (and so identical
outputs); `load_exported_checkpoint` mirrors `specauf.evaluate.load_checkpoint` for it.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import hydra
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig
from safetensors.torch import load_file, save_file

from specauf.checkpointing import checkpoint_file, read_checkpoint
from specauf.cli import USER_ERRORS, debug, print_user_error
from specauf.drafters.dflash import DFlashDrafter
from specauf.drafters.domino import DominoDrafter
from specauf.errors import CheckpointError, UserError

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
CONFIG_NAME, WEIGHTS_NAME = "config.json", "model.safetensors"
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
# specauf state-dict name → exported name, where DFlash's published naming differs from ours.
RENAMES = {"fc_norm.weight": "hidden_norm.weight"}
ARCHITECTURES = {
    ("DFlashDrafter", 0): "DFlashDraftModel",
    ("DFlashDrafter", 1): "DFlashNextTokenDraftModel",
    ("DominoDrafter", 1): "DominoDraftModel",
    ("DominoDrafter", 0): "DominoSamePositionDraftModel",
}
ALIGNMENT = {0: "same_position", 1: "next_token"}
# Drafter settings that config.json states in the HF/DFlash vocabulary (the rest go to config["specauf"]).
_HF_KEYS = {
    "hidden_size": "hidden_size",
    "num_layers": "num_hidden_layers",
    "num_heads": "num_attention_heads",
    "num_kv_heads": "num_key_value_heads",
    "head_dim": "head_dim",
    "intermediate_size": "intermediate_size",
    "rms_norm_eps": "rms_norm_eps",
    "rope_theta": "rope_theta",
}
_CLASSES = {"DFlashDrafter": DFlashDrafter, "DominoDrafter": DominoDrafter}


class ExportError(UserError):
    """An export that cannot be written or read back."""


# --- reading the training checkpoint ------------------------------------------------------------------------


def _drafter_class(qualname: str) -> type[DFlashDrafter]:
    module, _, name = qualname.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError) as err:
        raise CheckpointError(f"drafter class {qualname!r} cannot be imported ({err})") from err
    if not (isinstance(cls, type) and issubclass(cls, DFlashDrafter)):
        raise CheckpointError(f"{qualname!r} is not a specauf drafter")
    return cls


def drafter_from_checkpoint(path: str | os.PathLike) -> tuple[DFlashDrafter, dict[str, Any]]:
    """The drafter of a `specauf.train` checkpoint (or run directory) and its metadata, without the target.

    Export needs no target: loading an 8B model to copy a drafter's weights would only cost time and memory.
    """
    path = checkpoint_file(path)
    checkpoint = read_checkpoint(path)
    meta = checkpoint.get("specauf")
    if not isinstance(meta, dict):
        raise CheckpointError(
            f"{path} is not a specauf checkpoint (no 'specauf' entry). Fix: pass a .ckpt written by "
            "`python -m specauf.train`"
        )
    cls = _drafter_class(str(meta.get("drafter_class")))
    drafter = cls(**meta["drafter_config"])
    prefix = "drafter."
    state = {k[len(prefix) :]: v for k, v in checkpoint.get("state_dict", {}).items() if k.startswith(prefix)}
    _load_weights(drafter, state, path)
    meta = {**meta, "path": str(path), "global_step": checkpoint.get("global_step")}
    return drafter.eval(), meta


def _load_weights(drafter: torch.nn.Module, state: dict[str, torch.Tensor], source: Path) -> None:
    """load_state_dict with a one-line error instead of PyTorch's wall of missing/unexpected/shape lines."""
    own = drafter.state_dict()
    missing = sorted(own.keys() - state.keys())
    unexpected = sorted(state.keys() - own.keys())
    reshaped = [k for k in own.keys() & state.keys() if own[k].shape != state[k].shape]
    if missing or unexpected or reshaped:
        parts = [
            f"{len(names)} {what} (e.g. {names[0]})"
            for what, names in (
                ("missing", missing),
                ("unexpected", unexpected),
                ("of another shape", reshaped),
            )
            if names
        ]
        raise CheckpointError(
            f"{source}: the weights do not fit the {type(drafter).__name__} its config describes: "
            + ", ".join(parts)
            + ". Fix: the file was written by another version or edited; re-export it from its checkpoint"
        )
    drafter.load_state_dict(state)


# --- writing ---------------------------------------------------------------------------------------------


def hf_config(drafter: DFlashDrafter, meta: dict[str, Any], dtype: torch.dtype) -> dict[str, Any]:
    """config.json for `drafter` (see the module docstring for the layout)."""
    c = dict(drafter.config)
    kind = type(drafter).__name__
    if kind not in _CLASSES:
        raise ExportError(
            f"cannot export a {kind}: only DFlashDrafter and DominoDrafter have an export layout"
        )
    layer_ids = [int(i) for i in meta.get("target_layer_ids") or []]
    if len(layer_ids) != c["num_feature_layers"]:
        raise ExportError(
            f"the checkpoint records target layers {layer_ids}, but the drafter fuses {c['num_feature_layers']}; "
            "config.json could not say which target layers it reads"
        )
    dtype_name = str(dtype).removeprefix("torch.")
    alignment = ALIGNMENT[c["label_offset"]]
    config: dict[str, Any] = {
        "architectures": [ARCHITECTURES[(kind, c["label_offset"])]],
        "model_type": "qwen3",
        **{hf: c[ours] for ours, hf in _HF_KEYS.items()},
        "rope_parameters": {"rope_type": "default", "rope_theta": c["rope_theta"]},
        "hidden_act": "silu",
        "attention_bias": False,
        "attention_dropout": 0.0,
        "tie_word_embeddings": False,
        "torch_dtype": dtype_name,
        "dtype": dtype_name,
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
    if isinstance(drafter, DominoDrafter):
        config["domino_config"] = {
            **{k: c[k] for k in ("gru_size", "rank", "base_slots", "vocab_size")},
            "label_alignment": alignment,
        }
    training = (meta.get("config") or {}).get("config") or {}
    config["specauf"] = {
        "format_version": FORMAT_VERSION,
        "drafter_class": f"{type(drafter).__module__}.{type(drafter).__qualname__}",
        "drafter_config": c,
        "label_offset": c["label_offset"],
        "learned_mask_embedding": c["mask_token_id"] is None,
        "target_name": meta.get("target_name"),
        "target_layer_ids": layer_ids,
        "target_config": training.get("target"),
        "choices": (meta.get("config") or {}).get("choices"),
        "run_name": training.get("run_name"),
        "checkpoint": meta.get("path"),
        "global_step": meta.get("global_step"),
    }
    return config


def export_drafter(
    drafter: DFlashDrafter,
    meta: dict[str, Any],
    out: str | os.PathLike,
    *,
    overwrite: bool = False,
    dtype: torch.dtype | str | None = None,
) -> Path:
    """Write `drafter` to the directory `out` (config.json + model.safetensors); returns `out`.

    `meta` is a checkpoint's "specauf" entry (target name and layers, training config). `out` must not exist
    or be empty, unless `overwrite`. Files are written to a temporary sibling directory that is renamed into
    place, so `out` never holds a half-written export.
    """
    out = Path(out).expanduser()
    _check_destination(out, overwrite)
    weights_dtype = _resolve_dtype(dtype, drafter)
    config = hf_config(drafter, meta, weights_dtype)
    state = {
        RENAMES.get(k, k): v.detach().to("cpu", weights_dtype).contiguous()
        for k, v in drafter.state_dict().items()
    }
    # The written config must rebuild exactly this drafter: check now rather than at load time.
    rebuilt = drafter_config_from_hf(config)
    if rebuilt != dict(drafter.config):
        diff = {k: (v, rebuilt.get(k)) for k, v in drafter.config.items() if rebuilt.get(k) != v}
        raise ExportError(f"config.json would not rebuild the drafter (differs in {diff}); this is a bug")

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        save_file(state, tmp / WEIGHTS_NAME, metadata={"format": "pt"})
        (tmp / CONFIG_NAME).write_text(json.dumps(config, indent=2, sort_keys=False) + "\n")
        for name in (WEIGHTS_NAME, CONFIG_NAME):
            with open(tmp / name, "rb") as f:
                os.fsync(f.fileno())
        os.chmod(tmp, 0o755)  # mkdtemp's 0700 would hide the export from the rest of a shared group
        _move_into_place(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
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
    _check_destination(Path(out).expanduser(), overwrite)  # fail before reading a multi-GB checkpoint
    drafter, meta = drafter_from_checkpoint(ckpt)
    return export_drafter(drafter, meta, out, overwrite=overwrite, dtype=dtype)


def _resolve_dtype(dtype: torch.dtype | str | None, drafter: torch.nn.Module) -> torch.dtype:
    if dtype is None:
        return next(drafter.parameters()).dtype
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in DTYPES:
        raise ExportError(f"dtype must be one of {', '.join(DTYPES)} (or null: as trained), got {dtype!r}")
    return DTYPES[dtype]


def _check_destination(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise ExportError(f"out={out} is a file. Fix: give a directory path")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise ExportError(
            f"out={out} exists and is not empty. Fix: choose another directory, or overwrite=true to replace it"
        )


def _move_into_place(tmp: Path, out: Path) -> None:
    if out.is_dir() and not any(out.iterdir()):
        out.rmdir()
    if not out.exists():
        os.rename(tmp, out)
        return
    # Overwriting: the old export is moved aside first, so a failure leaves either it or the new one in place.
    old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
    old.rmdir()
    os.rename(out, old)
    try:
        os.rename(tmp, out)
    except BaseException:
        os.rename(old, out)
        raise
    shutil.rmtree(old, ignore_errors=True)


# --- reading an export back ----------------------------------------------------------------------------------


def read_export_config(path: str | os.PathLike) -> dict[str, Any]:
    """config.json of an export directory, checked to be one this module can load."""
    path = Path(path).expanduser()
    config_file = path / CONFIG_NAME
    if not config_file.is_file() or not (path / WEIGHTS_NAME).is_file():
        raise FileNotFoundError(
            f"{path} is not an exported drafter (it needs {CONFIG_NAME} and {WEIGHTS_NAME}). Fix: pass a "
            "directory written by `python -m specauf.export`"
        )
    try:
        config = json.loads(config_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ExportError(f"{config_file} is not valid JSON ({err})") from err
    arch = (config.get("architectures") or [None])[0]
    if arch not in ARCHITECTURES.values() or "dflash_config" not in config:
        raise ExportError(
            f"{path}: architecture {arch!r} is not one specauf exports ({', '.join(sorted(ARCHITECTURES.values()))})"
        )
    return config


def drafter_config_from_hf(config: dict[str, Any]) -> dict[str, Any]:
    """The drafter's constructor arguments from an export's config.json."""
    dflash = config["dflash_config"]
    extra = dict((config.get("specauf") or {}).get("drafter_config") or {})
    settings = {**extra, **{ours: config[hf] for ours, hf in _HF_KEYS.items()}}
    settings.update(
        block_size=dflash["block_size"],
        mask_token_id=dflash["mask_token_id"],
        num_feature_layers=len(dflash["target_layer_ids"]),
        label_offset={v: k for k, v in ALIGNMENT.items()}[dflash.get("label_alignment", "same_position")],
    )
    if "domino_config" in config:
        settings.update(
            {k: config["domino_config"][k] for k in ("gru_size", "rank", "base_slots", "vocab_size")}
        )
    return settings


def load_exported(
    path: str | os.PathLike,
    target: Any = None,
    *,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
) -> DFlashDrafter:
    """The drafter in an export directory, in eval mode, with its exported weights (bit for bit).

    With `target`, refuses (CheckpointError) a target other than the one it was trained for: name, feature
    layers, hidden size, mask token, vocabulary (Domino).
    """
    path = Path(path).expanduser()
    config = read_export_config(path)
    arch = config["architectures"][0]
    kind = next(k for (k, _), v in ARCHITECTURES.items() if v == arch)
    drafter = _CLASSES[kind](**drafter_config_from_hf(config))
    try:
        state = load_file(path / WEIGHTS_NAME)
    except Exception as err:  # safetensors raises its own error types for a cut or garbled file
        raise CheckpointError(
            f"cannot read {path / WEIGHTS_NAME}: the file is corrupt or truncated ({err})"
        ) from err
    renamed_back = {v: k for k, v in RENAMES.items()}
    state = {renamed_back.get(k, k): v.to(next(drafter.parameters()).dtype) for k, v in state.items()}
    _load_weights(drafter, state, path / WEIGHTS_NAME)
    if target is not None:
        check_target(path, config, drafter, target)
    placement = {k: v for k, v in (("device", device), ("dtype", dtype)) if v is not None}
    if placement:
        drafter.to(**placement)
    return drafter.eval()


def check_target(source: Any, config: dict[str, Any], drafter: DFlashDrafter, target: Any) -> None:
    """Refuse a target the exported drafter was not trained for."""
    meta = config.get("specauf") or {}
    problems = []
    if meta.get("target_name") is not None and target.name != meta["target_name"]:
        problems.append(f"it was trained for target {meta['target_name']!r}, the target is {target.name!r}")
    layers = list(config["dflash_config"]["target_layer_ids"])
    if list(target.layer_ids) != layers:
        problems.append(f"it reads target layers {layers}, the target gives {list(target.layer_ids)}")
    if target.hidden_size != drafter.config["hidden_size"]:
        problems.append(f"hidden size {drafter.config['hidden_size']} vs the target's {target.hidden_size}")
    mask = drafter.config["mask_token_id"]
    if mask is not None and not 0 <= mask < target.vocab_size:
        problems.append(f"mask token {mask} is outside the target's {target.vocab_size}-row embedding")
    vocab = drafter.config.get("vocab_size")
    if vocab is not None and vocab != target.vocab_size:
        problems.append(f"vocabulary {vocab} vs the target's {target.vocab_size}")
    if problems:
        raise CheckpointError(
            f"{source}: the drafter does not fit this target: " + "; ".join(problems) + ". Fix: use it with "
            "the target it was trained on"
        )


def load_exported_checkpoint(
    path: str | os.PathLike,
    target: Any = None,
    *,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
) -> tuple[DFlashDrafter, Any, dict[str, Any]]:
    """`(drafter, target, meta)` from an export directory, as `specauf.evaluate.load_checkpoint` returns for a
    checkpoint: the target is built from the training config stored in the export unless one is given."""
    path = Path(path).expanduser()
    config = read_export_config(path)
    meta = dict(config.get("specauf") or {})
    if target is None:
        target_cfg = meta.get("target_config")
        if not target_cfg or "_target_" not in target_cfg:
            raise CheckpointError(
                f"{path}: the export holds no target config. Fix: build the target yourself and pass it "
                "(load_exported_checkpoint(path, target=...))"
            )
        overrides = (
            {"dtype": str(dtype).removeprefix("torch.")}
            if dtype is not None and "dtype" in target_cfg
            else {}
        )
        target = instantiate(target_cfg, **overrides)
    drafter = load_exported(path, target, device=device, dtype=dtype)
    placement = {k: v for k, v in (("device", device), ("dtype", dtype)) if v is not None}
    if placement:
        target.to(**placement)
    # The keys load_checkpoint's meta has, where evaluate() reads them (run name, config groups).
    meta.update(
        path=str(path),
        epoch=None,
        config={"config": {"target": meta.get("target_config"), "run_name": meta.get("run_name")},
                "choices": meta.get("choices")},
    )  # fmt: skip
    return drafter, target, meta


# --- the entry point ---------------------------------------------------------------------------------------


@hydra.main(config_path="../conf", config_name="export", version_base="1.3")
def main(cfg: DictConfig) -> None:
    try:
        out = export_checkpoint(cfg.ckpt, cfg.out, overwrite=cfg.overwrite, dtype=cfg.dtype)
    except USER_ERRORS as err:
        if debug():
            raise
        print_user_error(err)
        raise SystemExit(1) from None
    print(f"exported to {out} ({CONFIG_NAME}, {WEIGHTS_NAME})")


if __name__ == "__main__":
    main()
