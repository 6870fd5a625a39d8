"""The Hugging Face hub: telling a hub id from a local path, and the one dataset loader.

Users name data and models either way (`Qwen/Qwen3-8B`, `./models/qwen`, `data/chats.jsonl`); a string that is
meant as a path but does not exist must fail as a missing path, not as a hub lookup minutes later.
"""

from __future__ import annotations

import functools
import os
import re
import socket
import urllib.parse
from typing import Any

from specauf.errors import DownloadError

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
_FILE_SUFFIXES = (".json", ".jsonl", ".gz", ".parquet", ".safetensors", ".ckpt", ".gguf")


def looks_like_path(name: str) -> bool:
    """True for strings meant as filesystem paths rather than `org/name` hub ids (whether or not they exist).

    A path: a leading `/ ./ ../ ~`, a backslash, more than one `/`, a file suffix, or an `org/…` whose `org`
    is a directory here (`outputs/model` with a typo is a path, not a hub repo named `outputs`).
    """
    if name.startswith(("/", ".", "~")) or "\\" in name or name.count("/") > 1 or os.path.isabs(name):
        return True
    if name.endswith(_FILE_SUFFIXES) or not _HUB_ID.match(name):
        return True
    first = name.split("/", 1)[0]
    return "/" in name and os.path.isdir(first)


@functools.cache
def hub_unreachable() -> str | None:
    """Why the hub cannot be reached, or None. One quick connect per process instead of `datasets` retrying
    for ~25 s per call on a machine with no route to the hub. In HF offline mode `datasets` answers from its
    local cache, so that is left to it."""
    if os.environ.get("HF_HUB_OFFLINE") == "1" or os.environ.get("HF_DATASETS_OFFLINE") == "1":
        return None
    url = urllib.parse.urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    try:
        socket.create_connection((url.hostname, url.port or 443), timeout=3).close()
    except OSError as err:
        return f"the hub ({url.hostname}) is unreachable from this machine: {err}"
    return None


def load_hub_dataset(hub_id: str, config: str | None = None, split: str = "train") -> list[dict[str, Any]]:
    """The rows of a hub dataset split as plain dicts; DownloadError (saying why) when it cannot be had."""
    if (reason := hub_unreachable()) is not None:
        raise DownloadError(f"cannot load {hub_id} from the Hugging Face hub: {reason}")
    import datasets  # deferred: ~1 s to import and only this path needs it

    try:
        rows = datasets.load_dataset(hub_id, config, split=split)
    except Exception as err:  # datasets raises many types (ConnectionError, DatasetNotFoundError, ...)
        text = " ".join(str(err).split())[:300]
        raise DownloadError(
            f"cannot load {hub_id} from the Hugging Face hub ({type(err).__name__}: {text})"
        ) from err
    return [dict(r) for r in rows]
