"""The output directory of a regeneration: shards, the manifest, the merged file, and resuming from them.

```
<out>/manifest.json         settings, target identity, input fingerprint, counts; rewritten after every shard
<out>/shards/shard-00000.json   one shard's records and counts, written atomically once the shard is done
<out>/conversations.jsonl   every kept record in input order, written last: `data.source=` points here
```

Every file goes through `specauf.io.atomic_write`, so a killed run leaves whole shards or none: a shard file
exists only once complete, and one that does not parse or belongs to other settings is regenerated, never
merged. A rerun with the same settings resumes at the first missing shard; other settings are refused.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from collections import Counter
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, BinaryIO

from specauf.errors import ConfigError
from specauf.io import TEMP_MARK, atomic_write

log = logging.getLogger(__name__)

FORMAT = 1
MANIFEST = "manifest.json"
OUTPUT = "conversations.jsonl"
SHARDS = "shards"


def fingerprint(identity: Mapping[str, Any]) -> str:
    """SHA-256 of the canonical JSON of what decides the output (target, input, settings)."""
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode("utf-8")).hexdigest()


def conversations_sha256(conversations: Iterable[Any]) -> str:
    """SHA-256 of the normalised input conversations: a changed input file is caught on resume."""
    digest = hashlib.sha256()
    for conversation in conversations:
        digest.update(json.dumps(conversation, sort_keys=True, ensure_ascii=False).encode("utf-8") + b"\n")
    return digest.hexdigest()


def _differences(ours: Any, theirs: Any, key: str = "") -> list[str]:
    if isinstance(ours, Mapping) and isinstance(theirs, Mapping):
        keys = sorted(set(ours) | set(theirs))
        return [d for k in keys for d in _differences(ours.get(k), theirs.get(k), f"{key}.{k}" if key else k)]
    return [] if ours == theirs else [f"{key}: {_short(theirs)} there, {_short(ours)} here"]


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:36] + "...'"


class RegenerationStore:
    """`out` for one set of settings (`identity`: target, input, settings; all JSON values)."""

    def __init__(self, out: str | Path, identity: Mapping[str, Any], num_shards: int) -> None:
        self.out = Path(out).expanduser()
        self.identity = dict(identity)
        self.key = fingerprint(self.identity)
        self.num_shards = num_shards

    @property
    def manifest_path(self) -> Path:
        return self.out / MANIFEST

    @property
    def output_path(self) -> Path:
        return self.out / OUTPUT

    def shard_path(self, shard: int) -> Path:
        return self.out / SHARDS / f"shard-{shard:05d}.json"

    # --- opening ---------------------------------------------------------------------------------------

    @staticmethod
    def check_destination(out: str | Path) -> None:
        """Refuse (ConfigError) a file, or a non-empty directory that is not a regeneration output."""
        out = Path(out).expanduser()
        if out.exists() and not out.is_dir():
            raise ConfigError(f"out={out} is a file. Fix: give a directory to write the regenerated data to")
        if out.is_dir() and any(out.iterdir()) and not (out / MANIFEST).is_file():
            raise ConfigError(
                f"out={out} is not empty and holds no {MANIFEST}, so it is not a regeneration to resume. "
                "Fix: choose a new or empty directory"
            )

    def open(self, overwrite: bool = False) -> dict[str, Any]:
        """Start or resume: the manifest to continue from. ConfigError when `out` holds other settings."""
        self.check_destination(self.out)
        manifest = self._read_manifest()
        if manifest is not None and overwrite:
            log.info("overwrite=true: removing the regeneration in %s", self.out)
            for name in (MANIFEST, OUTPUT):
                (self.out / name).unlink(missing_ok=True)
            shutil.rmtree(self.out / SHARDS, ignore_errors=True)
            manifest = None
        if manifest is not None:
            theirs = {k: manifest.get(k) for k in self.identity}
            if fingerprint(theirs) != self.key:
                diffs = "; ".join(_differences(self.identity, theirs)[:6])
                raise ConfigError(
                    f"out={self.out} holds a regeneration with other settings ({diffs}). Fix: rerun with that "
                    "run's settings to resume it, choose another out, or overwrite=true to start over"
                )
            return manifest
        manifest = {
            "format": FORMAT,
            **self.identity,
            "status": "running",
            "shards": {"total": self.num_shards},
        }
        self.write_manifest(manifest)
        return manifest

    def _read_manifest(self) -> dict[str, Any] | None:
        if not self.manifest_path.is_file():
            return None
        try:
            manifest = json.loads(self.manifest_path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise ConfigError(
                f"{self.manifest_path} cannot be read ({err}). Fix: overwrite=true to start over, or another out"
            ) from None
        if manifest.get("format") != FORMAT:
            raise ConfigError(
                f"{self.manifest_path} has format {manifest.get('format')!r}, this specauf writes {FORMAT}. "
                "Fix: overwrite=true to regenerate, or another out"
            )
        return manifest

    def write_manifest(self, manifest: Mapping[str, Any]) -> None:
        atomic_write(self.manifest_path, json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")

    # --- shards ----------------------------------------------------------------------------------------

    def read_shard(self, shard: int, expected: int) -> dict[str, Any] | None:
        """A finished shard of these settings with `expected` conversations, or None (then it is redone)."""
        path = self.shard_path(shard)
        if not path.is_file():
            return None
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            ok = data["key"] == self.key and data["shard"] == shard and data["count"] == expected
            ok = ok and isinstance(data["records"], list) and isinstance(data["counts"], dict)
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as err:
            log.warning("shard %s is unreadable (%s): regenerating it", path.name, err)
            return None
        if not ok:
            log.warning(
                "shard %s was written for other settings or another shard size: regenerating it", path.name
            )
            return None
        return data

    def write_shard(
        self, shard: int, count: int, records: list[dict[str, Any]], counts: Counter, seconds: float
    ) -> None:
        body = {
            "format": FORMAT,
            "key": self.key,
            "shard": shard,
            "count": count,
            "seconds": round(seconds, 3),
            "counts": dict(sorted(counts.items())),
            "records": records,
        }
        atomic_write(self.shard_path(shard), json.dumps(body, ensure_ascii=False))

    def clear_leftovers(self) -> None:
        """Delete the temporary files of writes a crash interrupted (they are never read)."""
        for leftover in (self.out / SHARDS).glob(f"*{TEMP_MARK}*"):
            leftover.unlink(missing_ok=True)

    # --- the merged output -----------------------------------------------------------------------------

    def merge(self, records: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
        """Write conversations.jsonl, one record a line; its record count and SHA-256."""
        digest = hashlib.sha256()
        count = 0

        def write(f: BinaryIO) -> None:
            nonlocal count
            for record in records:
                line = (json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8")
                digest.update(line)
                f.write(line)
                count += 1

        atomic_write(self.output_path, write, durable=True)
        return {"file": OUTPUT, "records": count, "sha256": digest.hexdigest()}


def regeneration_record(path: str | Path) -> dict[str, Any] | None:
    """What a chat file is, when it is the output of a finished regeneration: its manifest's target, input
    and settings, and whether the file still has the SHA-256 the manifest recorded. None for any other file.

    For a training run to record which data it used (`data.source=<out>/conversations.jsonl`).
    """
    path = Path(path).expanduser()
    manifest_path = path.parent / MANIFEST
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        output = manifest["output"]
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError):
        return None
    if manifest.get("status") != "complete" or output.get("file") != path.name or not path.is_file():
        return None
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return {
        "manifest": str(manifest_path),
        **{k: manifest.get(k) for k in ("target", "source", "input", "settings")},
        "sha256": digest.hexdigest(),
        "sha256_matches": digest.hexdigest() == output.get("sha256"),
    }


def regeneration_warnings(record: Mapping[str, Any] | None, target_name: str) -> list[str]:
    """What a training run on regenerated data should hear about: another target wrote the replies, or the
    file changed after the regeneration wrote it (`record` from `regeneration_record`; None: nothing)."""
    if record is None:
        return []
    out = []
    wrote = (record.get("target") or {}).get("name")
    if wrote != target_name:
        out.append(
            f"the training data was regenerated by target {wrote!r}, not by {target_name!r} this run trains "
            f"against ({record['manifest']}): the drafter learns another model's replies"
        )
    if not record.get("sha256_matches"):
        out.append(
            f"the regenerated data file changed after its regeneration ({record['manifest']} records another SHA-256)"
        )
    return out
