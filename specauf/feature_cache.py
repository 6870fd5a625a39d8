"""The frozen target's features kept in memory for one run, per sample (opt-in: `cache_target_features=true`).

Why: on the CPU default the target's forward is more than half of a training step (SmolLM2-135M, batch
2 × 256 tokens: ~0.8 s of ~1.35 s on 2 cores), and its output depends only on the sample's token ids — not on
the anchors, which are resampled every epoch, nor on the drafter. A run of several epochs over a small
dataset can compute each sample's features once and reuse them.

What is kept: each sample's features at its real length, in the dtype the target computed them (fp32 on
CPU), so a batch rebuilt from the cache holds the target's own numbers; padded positions are zeros (no
block attends to them: a context position is seen only before an anchor, and anchors are real tokens).
Keyed by (split, dataset index), which the data module puts in every batch as `sample_index`. Nothing goes
into checkpoints: a resumed run starts with an empty cache and recomputes.

Where it pays: one process on a CPU. On a GPU the forward is cheap next to moving features through host
memory, and under data parallelism every process would hold its own copy; `DrafterModule` runs without
the cache there (with a warning).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from typing import Any

from torch import Tensor

from specauf.errors import ConfigError

log = logging.getLogger(__name__)


class FeatureCache:
    """Per-sample target features of a run, filled the first time each sample is seen."""

    def __init__(self) -> None:
        self._store: dict[tuple[str, int], Tensor] = {}

    def __len__(self) -> int:
        return len(self._store)

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self._store.values())

    def check_room(self, splits: Sequence[Any], width: int) -> None:
        """Log the RAM the full cache will take for these datasets (fp32 features `width` wide) and refuse, in
        seconds rather than by swapping hours in, more than half of this machine's RAM."""
        tokens = sum(len(split[i]["input_ids"]) for split in splits for i in range(len(split)))
        need, total = tokens * width * 4, _physical_memory()
        log.info(
            "caching the target's features: %d samples, %d tokens, %.2f GB of RAM when full (fp32)",
            sum(len(split) for split in splits), tokens, need / 1e9,
        )  # fmt: skip
        if total and need > total / 2:
            raise ConfigError(
                f"cache_target_features=true would hold {need / 1e9:.1f} GB of target features, more than "
                f"half of this machine's {total / 1e9:.1f} GB of RAM. Fix: fewer data.max_conversations (or "
                "a shorter data.max_length), or cache_target_features=false"
            )

    def features(
        self, batch: dict[str, Tensor], compute: Callable[[Tensor, Tensor], Tensor], split: str
    ) -> Tensor:
        """The batch's features [b, S, F]: from the cache when all its samples are there, else computed."""
        if "sample_index" not in batch:  # data without sample keys (not specauf's ChatDataModule): no cache
            return compute(batch["input_ids"], batch["attention_mask"])
        keys = [(split, int(i)) for i in batch["sample_index"].tolist()]
        if all(key in self._store for key in keys):
            b, s = batch["input_ids"].shape
            first = self._store[keys[0]]
            out = first.new_zeros(b, s, first.shape[-1])
            for row, key in enumerate(keys):
                cached = self._store[key]
                out[row, : cached.shape[0]] = cached
            return out
        # A batch with any sample not yet seen runs the target as an uncached step would; only the new
        # samples are stored (a copy at the real length, not a view that would keep the padded batch alive).
        features = compute(batch["input_ids"], batch["attention_mask"])
        lengths = batch["attention_mask"].sum(dim=1).tolist()
        for row, (key, n) in enumerate(zip(keys, lengths, strict=True)):
            if key not in self._store:
                self._store[key] = features[row, : int(n)].detach().clone()
        return features


def _physical_memory() -> int | None:
    """This machine's RAM in bytes (None where the OS does not say)."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None
