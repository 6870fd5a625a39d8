"""Regenerate a chat dataset with the target: shards in order, resumable, deterministic for a seed.

Shard k holds conversations [k·shard_size, (k+1)·shard_size) of the input and draws its random numbers from a
seed derived from (seed, k) alone, so a resumed run writes byte for byte what an uninterrupted one would.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from typing import Any

from specauf.data.chat import check_tokenizer
from specauf.errors import ConfigError, DataError
from specauf.evaluation.prompts import context_limit
from specauf.regeneration.engines import Engine, Sampling, derive_seed
from specauf.regeneration.filters import VERDICTS, ReplyFilter
from specauf.regeneration.store import RegenerationStore, conversations_sha256
from specauf.regeneration.turns import Message, regenerate_shard

log = logging.getLogger(__name__)

# The counts every manifest lists, zeros included, in this order.
COUNT_KEYS = (
    "conversations",
    "conversations_kept",
    "conversations_shortened",
    "conversations_dropped",
    "turns",
    "replies",
    *(f"replies_{v}" for v in VERDICTS),
    "replies_kept",
    "turns_over_context",
    "turns_not_asked",
    "new_tokens",
)


def target_identity(target: Any) -> dict[str, Any]:
    """What the replies came from: the target's name, weight revision and chat template."""
    return {
        "name": target.name,
        "revision": target.revision,
        "chat_template_sha256": target.chat_template_sha256,
    }


def _software() -> dict[str, str | None]:
    versions = {}
    for package in ("specauf", "torch", "transformers", "vllm"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return versions


def regenerate_dataset(
    conversations: Sequence[Sequence[Message]],
    target: Any,
    engine_factory: Callable[..., Engine],
    out: str | Path,
    *,
    sampling: Sampling,
    reply_filter: ReplyFilter,
    seed: int = 0,
    shard_size: int = 256,
    overwrite: bool = False,
    source: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Regenerate every assistant turn of `conversations` into `out`; returns the final manifest.

    `engine_factory(target=target)` builds the engine once the target's chat template is checked. `source`
    says where the conversations came from (recorded as the manifest's `source`; `input` is their count and
    hash, which a resume must match).
    Resumes a run in `out` with the same settings; DataError when no reply survives the filters.
    """
    if shard_size < 1:
        raise ConfigError(f"shard_size must be >= 1, got {shard_size}")
    if not conversations:
        raise DataError("no conversations to regenerate: the input is empty. Fix: give chats with user turns")
    RegenerationStore.check_destination(out)  # before the engine: a wrong out fails in a second
    check_tokenizer(target.tokenizer)
    engine = engine_factory(target=target)
    num_shards = -(-len(conversations) // shard_size)
    identity = {
        "target": target_identity(target),
        # The conversations themselves, not where they were read from: a resume from another directory, or
        # of a moved file, is the same input.
        "input": {"conversations": len(conversations), "sha256": conversations_sha256(conversations)},
        "settings": {
            **sampling.as_dict(),
            "seed": seed,
            "shard_size": shard_size,
            "filters": reply_filter.as_dict(),
            "engine": engine.settings,
        },
    }
    store = RegenerationStore(out, identity, num_shards)
    manifest = store.open(overwrite=overwrite)
    if manifest.get("software") not in (None, _software()):
        log.warning(
            "resuming with other library versions (%s then): later shards may sample differently",
            manifest["software"],
        )
    manifest["software"] = _software()
    manifest["source"] = dict(source or {})
    store.clear_leftovers()
    if manifest["status"] == "complete" and store.output_path.is_file():
        log.info("%s is complete already (%d records)", store.output_path, manifest["output"]["records"])
        return manifest

    bounds = [(k, k * shard_size, min((k + 1) * shard_size, len(conversations))) for k in range(num_shards)]
    # Only the counts stay in memory; the records are read back from the shard files when merging.
    shards = {k: _summary(store.read_shard(k, stop - start)) for k, start, stop in bounds}
    todo = [b for b in bounds if shards[b[0]] is None]
    if len(todo) < num_shards:
        log.info("resuming %s: %d of %d shards are done", store.out, num_shards - len(todo), num_shards)
    limit = context_limit(target)
    turns_left = sum(1 for _, a, b in todo for c in conversations[a:b] for m in c if m["role"] == "user")
    with _progress(turns_left, len(todo)) as advance:
        for k, start, stop in todo:
            began = time.perf_counter()
            records, counts = regenerate_shard(
                list(enumerate(conversations[start:stop], start=start)),
                engine,
                target.tokenizer,
                sampling,
                reply_filter,
                derive_seed(seed, k),
                limit,
                on_turns=advance,
            )
            store.write_shard(k, stop - start, records, counts, time.perf_counter() - began)
            shards[k] = _summary(store.read_shard(k, stop - start))
            manifest.update(_totals(shards, num_shards))
            store.write_manifest(manifest)
            log.info(_shard_line(k, num_shards, counts))

    manifest.update(_totals(shards, num_shards))
    manifest["output"] = store.merge(_records(store, bounds))
    manifest["status"] = "complete"
    store.write_manifest(manifest)
    if manifest["output"]["records"] == 0:
        c = manifest["counts"]
        raise DataError(
            f"no conversation survived regeneration ({c['replies_empty']} empty, {c['replies_repetition']} looping, "
            f"{c['replies_cut']} cut replies; {c['turns_over_context']} prompts over the context), so "
            f"{store.output_path} is empty. Fix: raise max_new_tokens, keep cut replies (filters.drop_cut=false), "
            "or check the target"
        )
    return manifest


def _summary(shard: Mapping[str, Any] | None) -> dict[str, Any] | None:
    return None if shard is None else {"counts": shard["counts"], "seconds": shard["seconds"]}


def _records(store: RegenerationStore, bounds: Sequence[tuple[int, int, int]]) -> Iterator[dict[str, Any]]:
    for k, start, stop in bounds:
        shard = store.read_shard(k, stop - start)
        if shard is None:  # written moments ago: only a change under our feet gets here
            raise DataError(f"{store.shard_path(k)} vanished or changed while merging. Fix: rerun to resume")
        yield from shard["records"]


def _totals(shards: Mapping[int, Mapping[str, Any] | None], num_shards: int) -> dict[str, Any]:
    done = [s for s in shards.values() if s is not None]
    total: Counter = Counter()
    for shard in done:
        total.update(shard["counts"])
    return {
        "shards": {"total": num_shards, "done": len(done)},
        "counts": {key: int(total.get(key, 0)) for key in COUNT_KEYS},
        "seconds": round(sum(s["seconds"] for s in done), 3),
    }


def _shard_line(k: int, num_shards: int, counts: Mapping[str, int]) -> str:
    kinds = ", ".join(f"{v} {counts.get(f'replies_{v}', 0)}" for v in VERDICTS)
    return (
        f"shard {k + 1}/{num_shards}: {counts.get('conversations_kept', 0)} of {counts['conversations']} "
        f"conversations kept; replies: {kinds}"
    )


@contextmanager
def _progress(total_turns: int, shards: int) -> Iterator[Callable[[int], None]]:
    """A bar over user turns on a terminal; elsewhere (logs, SLURM) the per-shard log lines say it."""
    from specauf.progress import console, interactive

    if not interactive() or not shards:
        yield lambda n: None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    columns = (
        TextColumn("regenerate"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("turns"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console()) as bar:
        task = bar.add_task("regenerate", total=total_turns)
        yield lambda n: bar.advance(task, n)
