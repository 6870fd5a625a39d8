"""Tokenised chats: `TokenizedChats` (flat arrays as a Dataset) and `build_chat_splits`, the whole pipeline.

`build_chat_splits` loads, tokenises, filters and splits conversations into train/validation, and caches the
result on disk under a key that covers the tokenizer, the source and every parameter.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from specauf.assets import cache_dir
from specauf.data.chat import check_tokenizer, mask_from_offsets, render_with_spans
from specauf.data.conversations import (
    FORMAT_VERSION,
    SHAREGPT_MEMBER,
    SHAREGPT_PACKAGE,
    SHAREGPT_VERSION,
    Conversation,
    load_conversations,
)
from specauf.errors import ConfigError, DataError
from specauf.io import atomic_write

log = logging.getLogger(__name__)

_TOKENIZE_BATCH = 256


class TokenizedChats(Dataset):
    """Tokenised conversations in flat arrays: ids (int32), loss mask (uint8) and offsets (n + 1).

    Item i is `{"input_ids": LongTensor[L], "loss_mask": BoolTensor[L]}`.
    """

    def __init__(self, input_ids: np.ndarray, loss_mask: np.ndarray, offsets: np.ndarray) -> None:
        self.input_ids = np.ascontiguousarray(input_ids, dtype=np.int32)
        self.loss_mask = np.ascontiguousarray(loss_mask, dtype=np.uint8)
        self.offsets = np.ascontiguousarray(offsets, dtype=np.int64)
        if self.input_ids.shape != self.loss_mask.shape or self.input_ids.ndim != 1:
            raise ValueError(
                f"ids {self.input_ids.shape} and mask {self.loss_mask.shape} must be equal 1-D shapes"
            )
        if self.offsets.ndim != 1 or self.offsets[0] != 0 or self.offsets[-1] != len(self.input_ids):
            raise ValueError("offsets must start at 0 and end at the number of tokens")

    @classmethod
    def from_sequences(cls, ids: Sequence[Sequence[int]], masks: Sequence[Sequence[int]]) -> TokenizedChats:
        lengths = np.array([len(x) for x in ids], dtype=np.int64)
        offsets = np.concatenate([[0], np.cumsum(lengths)])
        flat_ids = np.concatenate([np.asarray(x, dtype=np.int32) for x in ids]) if len(ids) else np.zeros(0)
        flat_mask = (
            np.concatenate([np.asarray(x, dtype=np.uint8) for x in masks]) if len(masks) else np.zeros(0)
        )
        return cls(flat_ids, flat_mask, offsets)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        n = len(self)
        if not -n <= index < n:
            raise IndexError(f"conversation {index} out of range for {n}")
        index %= n
        s, e = self.offsets[index], self.offsets[index + 1]
        return {
            "input_ids": torch.from_numpy(self.input_ids[s:e].astype(np.int64)),
            "loss_mask": torch.from_numpy(self.loss_mask[s:e].astype(np.bool_)),
        }

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def subset(self, indices: Sequence[int]) -> TokenizedChats:
        """The conversations at `indices`, in that order, as a new dataset."""
        idx = np.asarray(indices, dtype=np.int64)
        lengths = self.lengths[idx]
        offsets = np.concatenate([[0], np.cumsum(lengths)])
        gather = (
            np.concatenate([np.arange(self.offsets[i], self.offsets[i + 1]) for i in idx]) if len(idx) else []
        )
        gather = np.asarray(gather, dtype=np.int64)
        return TokenizedChats(self.input_ids[gather], self.loss_mask[gather], offsets)

    def stats(self) -> dict[str, int]:
        """Conversations, tokens and supervised (loss-mask) tokens."""
        return {
            "conversations": len(self),
            "tokens": len(self.input_ids),
            "supervised_tokens": int(self.loss_mask.sum(dtype=np.int64)),
        }

    def _arrays(self, prefix: str = "") -> dict[str, np.ndarray]:
        return {
            f"{prefix}input_ids": self.input_ids,
            f"{prefix}loss_mask": self.loss_mask,
            f"{prefix}offsets": self.offsets,
        }

    @classmethod
    def _from_arrays(cls, arrays: Mapping[str, np.ndarray], prefix: str = "") -> TokenizedChats:
        return cls(arrays[f"{prefix}input_ids"], arrays[f"{prefix}loss_mask"], arrays[f"{prefix}offsets"])

    def save(self, path: str | os.PathLike) -> None:
        """Save as .npz, atomically."""
        _save_npz(Path(path), self._arrays())

    @classmethod
    def load(cls, path: str | os.PathLike) -> TokenizedChats:
        with np.load(path) as arrays:
            return cls._from_arrays(arrays)


def _save_npz(path: Path, arrays: Mapping[str, np.ndarray]) -> None:
    # Through an open file: np.savez given a path would append ".npz" to the temporary name.
    atomic_write(path, lambda f: np.savez(f, **arrays))


def build_chat_splits(
    tokenizer: Any,
    source: str = "sharegpt",
    max_length: int = 2048,
    max_conversations: int | None = None,
    val_size: int | float = 0.02,
    min_supervised_tokens: int = 16,
    seed: int = 0,
    cache: bool = True,
    template_kwargs: Mapping[str, Any] | None = None,
) -> tuple[TokenizedChats, TokenizedChats]:
    """Load, tokenise, filter and split chat data into (train, validation).

    Conversations with fewer than `min_supervised_tokens` supervised tokens after truncation to
    `max_length` are dropped. `val_size` is a count (int) or a fraction (float in (0, 1)) of what is left;
    the split is a shuffle seeded by `seed`. With `cache`, the result is stored under
    `cache_dir()/tokenized/` keyed by the tokenizer, the source and every argument, and reloaded from there.
    `template_kwargs` go to the chat template (see `tokenize_chat`).
    """
    check_tokenizer(tokenizer)
    if max_length < 2:
        raise ConfigError(f"max_length must be >= 2, got {max_length}")
    params = {
        "max_length": max_length,
        "max_conversations": max_conversations,
        "val_size": val_size,
        "min_supervised_tokens": min_supervised_tokens,
        "seed": seed,
        "template_kwargs": dict(template_kwargs or {}),
    }
    path = cache_dir() / "tokenized" / f"{_cache_name(tokenizer, source, params)}.npz"
    if cache and path.exists():
        try:
            with np.load(path) as arrays:
                train, val = (
                    TokenizedChats._from_arrays(arrays, "train_"),
                    TokenizedChats._from_arrays(arrays, "val_"),
                )
            log.info("tokenized chats loaded from %s", path)
            _log_splits(train, val)
            return train, val
        except Exception as err:  # a cache we cannot read is rebuilt, never trusted
            log.warning("ignoring unreadable cache %s (%s)", path, err)

    conversations = load_conversations(source, max_conversations, seed)
    ids, masks = _tokenize_all(tokenizer, conversations, max_length, template_kwargs)
    keep = [i for i, m in enumerate(masks) if int(np.sum(m)) >= min_supervised_tokens]
    if len(keep) < len(ids):
        log.info(
            "dropped %d of %d conversations with fewer than %d supervised tokens within max_length=%d",
            len(ids) - len(keep),
            len(ids),
            min_supervised_tokens,
            max_length,
        )
    data = TokenizedChats.from_sequences([ids[i] for i in keep], [masks[i] for i in keep])
    n_val = _val_count(val_size, len(data), source)
    order = np.random.default_rng(seed).permutation(len(data))
    # Sorted within each split: file order, so that a split reads the same whatever the loader does.
    val, train = data.subset(np.sort(order[:n_val])), data.subset(np.sort(order[n_val:]))
    _log_splits(train, val)
    if cache:
        _save_npz(path, {**train._arrays("train_"), **val._arrays("val_")})
        log.info("tokenized chats cached at %s", path)
    return train, val


def _tokenize_all(
    tokenizer: Any,
    conversations: Sequence[Conversation],
    max_length: int,
    template_kwargs: Mapping[str, Any] | None,
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Render in Python, tokenise in batches (the Rust tokenizer runs a batch in parallel)."""
    all_ids: list[np.ndarray] = []
    all_masks: list[np.ndarray] = []
    with tqdm(total=len(conversations), desc="tokenizing chats", unit="conv") as bar:
        for lo in range(0, len(conversations), _TOKENIZE_BATCH):
            batch = conversations[lo : lo + _TOKENIZE_BATCH]
            rendered = [render_with_spans(tokenizer, c, template_kwargs) for c in batch]
            enc = tokenizer(
                [text for text, _ in rendered],
                return_offsets_mapping=True,
                add_special_tokens=False,
                truncation=True,
                max_length=max_length,
            )
            for ids, offsets, (_, spans) in zip(
                enc["input_ids"], enc["offset_mapping"], rendered, strict=True
            ):
                all_ids.append(np.asarray(ids, dtype=np.int32))
                all_masks.append(mask_from_offsets(offsets, spans))
            bar.update(len(rendered))
    return all_ids, all_masks


def _val_count(val_size: int | float, n: int, source: str) -> int:
    if isinstance(val_size, bool) or not isinstance(val_size, int | float):
        raise ConfigError(f"val_size must be a count (int) or a fraction (float), got {val_size!r}")
    if isinstance(val_size, float):
        if not 0.0 < val_size < 1.0:
            raise ConfigError(f"val_size as a fraction must lie in (0, 1), got {val_size}")
        n_val = max(1, round(val_size * n))
    else:
        if val_size < 1:
            raise ConfigError(f"val_size as a count must be >= 1, got {val_size}")
        n_val = val_size
    if n - n_val < 1:
        raise DataError(
            f"{source}: {n} usable conversations cannot give {n_val} for validation and at least 1 for "
            "training. Fix: use more data (raise data.max_conversations), lower data.val_size or "
            "data.min_supervised_tokens."
        )
    return n_val


def _log_splits(train: TokenizedChats, val: TokenizedChats) -> None:
    for name, split in (("train", train), ("val", val)):
        s = split.stats()
        log.info(
            "%s split: %d conversations, %d tokens, %d supervised tokens",
            name,
            s["conversations"],
            s["tokens"],
            s["supervised_tokens"],
        )


def _cache_name(tokenizer: Any, source: str, params: Mapping[str, Any]) -> str:
    """A readable prefix and a hash of everything the result depends on."""
    digest = hashlib.sha256()
    for part in (
        f"format={FORMAT_VERSION}",
        _tokenizer_fingerprint(tokenizer),
        _source_fingerprint(source),
        json.dumps(params, sort_keys=True, default=str),
    ):
        digest.update(part.encode("utf-8"))
        digest.update(b"\0")
    tag = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in Path(source.partition(":")[0]).stem)[
        :40
    ]
    return f"{tag}-L{params['max_length']}-{digest.hexdigest()[:16]}"


def _tokenizer_fingerprint(tokenizer: Any) -> str:
    # The backend's serialisation covers vocab, merges, normalisers and added tokens; the vocab is a
    # fallback for tokenizers that lack one.
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        state = json.loads(backend.to_str())
        # Truncation and padding are call-time settings the tokenizer keeps from its last call, not identity.
        state.pop("truncation", None)
        state.pop("padding", None)
        body = json.dumps(state, sort_keys=True)
    else:
        body = json.dumps(sorted(tokenizer.get_vocab().items()))
    extra = json.dumps(
        {"template": tokenizer.chat_template, "special": tokenizer.special_tokens_map},
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256((body + "\0" + extra).encode("utf-8")).hexdigest()


def _source_fingerprint(source: str) -> str:
    if source == "sharegpt":
        return f"sharegpt:{SHAREGPT_PACKAGE}=={SHAREGPT_VERSION}:{SHAREGPT_MEMBER}"
    path = Path(source).expanduser()
    if path.is_file():
        stat = path.stat()
        return f"file:{path.resolve()}:{stat.st_mtime_ns}:{stat.st_size}"
    # A hub id carries no revision here: a dataset updated in place needs cache=False once.
    return f"hub:{source}"
