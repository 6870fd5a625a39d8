"""How a run's backbone and loss are named, sorted and compared in a report (docs/method.md §1).

New runs carry these labels in summary.json (`labels`, written by the trainer from the loss's `labels()` and
the drafter class's `display_name` / `display_order`). Older runs do not: their labels are derived from the
repo's own config files for the run's choices, so a report never keeps its own list of known losses.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

GROUPS = ("backbone", "loss")


def conf_dir() -> Path:
    """The repo's Hydra config directory (conf/ next to the specauf package)."""
    import specauf

    return Path(specauf.__file__).resolve().parents[1] / "conf"


def run_labels(given: Any, choices: Mapping[str, str], block_size: int | None) -> dict[str, dict[str, Any]]:
    """`{"backbone": {...}, "loss": {...}}`: each entry from `given` (a summary's `labels`) when it has one,
    else derived from conf/. Every entry has a `name` (the choice when nothing better is known) and an
    `order` (None: sorts after the ordered ones); loss entries may add `support`, `decay` and `form`."""
    given = given if isinstance(given, Mapping) else {}
    out = {}
    for group in GROUPS:
        choice = str(choices.get(group, "?"))
        entry = given.get(group)
        if not isinstance(entry, Mapping):
            backbone = str(choices.get("backbone", "?"))
            entry = _from_conf(group, choice, block_size if group == "loss" else None, backbone)
        out[group] = _normalised(entry, choice)
    return out


def _normalised(entry: Mapping[str, Any], choice: str) -> dict[str, Any]:
    out = dict(entry)
    # A loss YAML without display_name gives name None: the choice is still a usable row name.
    out["name"] = str(out.get("name") or choice)
    order = out.get("order")
    out["order"] = order if isinstance(order, int | float) and not isinstance(order, bool) else None
    return out


def _from_conf(group: str, choice: str, block_size: int | None, backbone: str) -> dict[str, Any]:
    try:
        return dict(_labels_from_yaml(conf_dir(), group, choice, block_size, backbone))
    except Exception as err:  # a user's own config dir, an old or broken YAML: the choice name still works
        log.debug("no labels for %s=%s from %s: %s", group, choice, conf_dir(), err)
        return {"name": choice, "order": None}


@functools.lru_cache(maxsize=256)
def _labels_from_yaml(
    conf: Path, group: str, choice: str, block_size: int | None, backbone: str
) -> Mapping[str, Any]:
    from omegaconf import OmegaConf

    path = conf / group / f"{choice}.yaml"
    if not path.is_file():
        raise FileNotFoundError(path)
    node = OmegaConf.load(path)
    if group == "backbone":
        return _backbone_labels(str(node["_target_"]))
    return _loss_labels(node, [block_size, _default_block_size(conf, backbone)])


def _backbone_labels(target: str) -> dict[str, Any]:
    from hydra.utils import get_object

    # The target is the drafter class or one of its constructors (`DFlashDrafter.from_target`).
    obj = get_object(target)
    cls = obj if isinstance(obj, type) else getattr(obj, "__self__", None)
    if not isinstance(cls, type):
        raise TypeError(f"{target} is neither a class nor a class's constructor")
    return {"name": getattr(cls, "display_name", None), "order": getattr(cls, "display_order", None)}


def _loss_labels(node: Any, block_sizes: list[int | None]) -> dict[str, Any]:
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from specauf.config import register_resolvers

    register_resolvers()
    # γ's value never enters the labels, only whether it is set: a block size without a published γ is
    # labelled with the backbone's default size rather than losing its labels altogether.
    sizes = [size for size in block_sizes if size is not None]
    error: Exception = ValueError("no block size to resolve the loss config with")
    for size in dict.fromkeys(sizes):
        cfg = OmegaConf.create({"backbone": {"block_size": size}, "loss": node})
        try:
            return instantiate(cfg.loss).labels()
        except Exception as err:
            error = err
    raise error


def _default_block_size(conf: Path, backbone: str) -> int | None:
    from omegaconf import OmegaConf

    try:
        size = OmegaConf.load(conf / "backbone" / f"{backbone}.yaml").get("block_size")
    except Exception:  # no such backbone YAML, or not a mapping: only the run's own size is tried
        return None
    return size if isinstance(size, int) else None
