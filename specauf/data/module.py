"""LightningDataModule: tokenized chats → per-epoch anchors → padded batches of packed blocks.

Data order and anchors are a pure function of (seed, epoch, index): the sampler shuffles with seed + epoch
and each item draws its anchors from a generator seeded by (seed, epoch, index). So anchors are resampled
every epoch (docs/method.md §3), two runs with one seed see the same batches, and a resumed run can replay
them.

Mid-epoch resumption: Lightning restarts a plain DataLoader at the start of its epoch. The datamodule's
`state_dict` (saved in every checkpoint) records how many training samples of the current epoch were already
trained on, and a resumed run's sampler skips exactly those, so the batches after the resume point are the
ones an uninterrupted run would have seen.
"""

from __future__ import annotations

import functools
import logging
import warnings
from collections.abc import Iterator
from typing import Any

import lightning as L
import torch
from lightning.pytorch.utilities.warnings import PossibleUserWarning
from torch.utils.data import DataLoader, Dataset, Sampler

from specauf.data.blocks import collate_blocks, sample_anchors
from specauf.data.tokenized import build_chat_splits
from specauf.errors import ConfigError
from specauf.regeneration.store import regeneration_record

log = logging.getLogger(__name__)


class EpochShuffle(Sampler):
    """Yields (index, epoch) pairs in a seeded order that changes every epoch (Lightning calls set_epoch).

    Under data parallelism each of `num_replicas` processes takes every `num_replicas`-th item of the one
    order, starting at its `rank`, so the ranks' k-th batches together are exactly the k-th batch a single
    process would draw at `num_replicas` × the batch size. A shuffled (training) order is cut to a whole
    number of items per rank, as every rank must take the same number of steps; validation keeps every item.
    """

    def __init__(
        self, size: int, seed: int, shuffle: bool = True, num_replicas: int = 1, rank: int = 0
    ) -> None:
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank {rank} outside 0..{num_replicas - 1}")
        self.size, self.seed, self.shuffle, self.epoch = size, seed, shuffle, 0
        self.num_replicas, self.rank = num_replicas, rank
        self._resume: tuple[int, int] | None = None

    def resume(self, epoch: int, consumed: int) -> None:
        """Skip the first `consumed` items of `epoch`'s global order (all ranks together), once."""
        self._resume = (epoch, consumed)

    def set_epoch(self, epoch: int) -> None:
        # Unshuffled (validation) loaders keep epoch 0 for good: same order, same anchors, every time.
        if self.shuffle:
            self.epoch = epoch

    def __len__(self) -> int:
        size = self.size - self.size % self.num_replicas if self.shuffle else self.size
        return len(range(self.rank, size, self.num_replicas))

    def __iter__(self) -> Iterator[tuple[int, int]]:
        if self.shuffle:
            order = torch.randperm(self.size, generator=torch.Generator().manual_seed(self.seed + self.epoch))
        else:
            order = torch.arange(self.size)
        if self._resume is not None:
            # One-shot: the epoch being resumed loses its trained-on head; later epochs are whole. An epoch
            # other than the recorded one (Lightning moves on when the checkpoint closed an epoch) is whole.
            epoch, consumed = self._resume
            self._resume = None
            if epoch == self.epoch:
                order = order[consumed:]
        if self.shuffle:  # the same number of items on every rank
            order = order[: len(order) - len(order) % self.num_replicas]
        # __len__ stays the full epoch: Lightning counts batches from the restored progress onwards.
        return ((int(i), self.epoch) for i in order[self.rank :: self.num_replicas])


class AnchoredChats(Dataset):
    """Wraps tokenized chats; item (index, epoch) → {input_ids, loss_mask, anchors, index}."""

    def __init__(self, chats: Dataset, num_anchors: int, seed: int) -> None:
        self.chats, self.num_anchors, self.seed = chats, num_anchors, seed

    def __len__(self) -> int:
        return len(self.chats)

    def __getitem__(self, key: tuple[int, int]) -> dict[str, torch.Tensor]:
        index, epoch = key
        item = dict(self.chats[index])
        g = torch.Generator().manual_seed(hash((self.seed, epoch, index)) & 0x7FFF_FFFF_FFFF_FFFF)
        item["anchors"] = sample_anchors(item["loss_mask"], self.num_anchors, g)
        item["index"] = index  # the key of DrafterModule's feature cache (batches carry it as sample_index)
        return item


class ChatDataModule(L.LightningDataModule):
    """Chat conversations as training blocks for one target tokenizer and one block layout."""

    def __init__(
        self,
        tokenizer: Any,
        block_size: int,
        label_offset: int,
        source: str = "sharegpt",
        max_length: int = 2048,
        max_conversations: int | None = None,
        val_size: int | float = 64,
        min_supervised_tokens: int = 16,
        batch_size: int = 4,
        val_batch_size: int | None = None,
        num_anchors: int = 512,
        num_workers: int = 0,
        seed: int = 0,
        cache: bool = True,
        template_kwargs: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if num_anchors < 1 or batch_size < 1:
            raise ConfigError(
                f"data.num_anchors and data.batch_size must be >= 1 (got {num_anchors}, {batch_size})"
            )
        self.tokenizer = tokenizer
        self.block_size, self.label_offset = block_size, label_offset
        self.split_args = {
            "source": source,
            "max_length": max_length,
            "max_conversations": max_conversations,
            "val_size": val_size,
            "min_supervised_tokens": min_supervised_tokens,
            "seed": seed,
            "cache": cache,
            "template_kwargs": dict(template_kwargs) if template_kwargs else None,
        }
        self.batch_size, self.val_batch_size = batch_size, val_batch_size or batch_size
        self.num_anchors, self.num_workers, self.seed = num_anchors, num_workers, seed
        self.train_set: Dataset | None = None
        self.val_set: Dataset | None = None
        self._resume_state: dict[str, int] | None = None
        # Which data this is, when it is a `specauf.regenerate` output: its target, input and settings.
        self.source_record = regeneration_record(source)

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is None:
            self.train_set, self.val_set = build_chat_splits(self.tokenizer, **self.split_args)

    @property
    def pad_id(self) -> int:
        pad = self.tokenizer.pad_token_id
        return pad if pad is not None else (self.tokenizer.eos_token_id or 0)

    @property
    def _replicas(self) -> tuple[int, int]:
        """(processes, this one's rank) of the data-parallel run, (1, 0) without a trainer."""
        trainer = self.trainer
        return (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)

    def _loader(self, chats: Dataset, batch_size: int, shuffle: bool) -> DataLoader:
        num_replicas, rank = self._replicas
        collate = functools.partial(
            collate_blocks, block_size=self.block_size, label_offset=self.label_offset, pad_id=self.pad_id
        )
        return DataLoader(
            AnchoredChats(chats, self.num_anchors, self.seed),
            batch_size=batch_size,
            # Sharded here, not by Lightning (trainer use_distributed_sampler: false): its wrapper would
            # reshuffle this order and never pass the epoch on, breaking replay and per-epoch anchors.
            sampler=EpochShuffle(len(chats), self.seed, shuffle, num_replicas, rank),
            collate_fn=collate,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        loader = self._loader(self.train_set, self.batch_size, shuffle=True)
        if self._resume_state is not None:
            self._apply_resume(loader.sampler, self._resume_state)
            self._resume_state = None
        return loader

    # -- resumption -----------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, int]:
        """Where training stands in the data, saved by Lightning in every checkpoint.

        Read from the fit loop when the checkpoint is written (after the step it follows): batches whose
        training step ran in the current epoch. Only ints, so `torch.load(weights_only=True)` reads it.
        """
        trainer = self.trainer
        if trainer is None or self.train_set is None:
            return {}
        loop = trainer.fit_loop
        batches = int(loop.epoch_loop.batch_progress.current.processed)
        return {
            "epoch": int(loop.epoch_progress.current.processed),  # the epoch the sampler was set to
            # All processes together: the head of the epoch's global order already trained on.
            "samples_in_epoch": batches * self.batch_size * trainer.world_size,
            "train_size": len(self.train_set),
            "seed": self.seed,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        # Called while the checkpoint is restored, before Lightning asks for the train loader (which happens
        # in configure_optimizers through estimated_stepping_batches, before the loops' progress is restored,
        # so the loader cannot read the progress itself).
        if state_dict:
            self._resume_state = dict(state_dict)
            # Lightning warns that a mid-epoch resume of a plain DataLoader is unreliable; this one replays.
            warnings.filterwarnings(
                "ignore", message="You're resuming from a checkpoint that ended before the epoch ended",
                category=PossibleUserWarning,
            )  # fmt: skip

    def _apply_resume(self, sampler: EpochShuffle, state: dict[str, Any]) -> None:
        size, consumed = len(self.train_set), int(state.get("samples_in_epoch", 0))
        if state.get("train_size") != size or state.get("seed") != self.seed:
            log.warning(
                "resuming on different training data (%s conversations, seed %s; the checkpoint had %s, seed "
                "%s): the data order of the interrupted run cannot be replayed, epoch %s starts over",
                size, self.seed, state.get("train_size"), state.get("seed"), state.get("epoch"),
            )  # fmt: skip
            return
        if 0 < consumed < size:
            log.info(
                "resuming epoch %d after its first %d of %d training samples", state["epoch"], consumed, size
            )
            sampler.resume(int(state["epoch"]), consumed)

    def val_dataloader(self) -> DataLoader:
        # Fixed order and epoch-0 anchors: validation numbers stay comparable across steps and runs.
        return self._loader(self.val_set, self.val_batch_size, shuffle=False)
