"""Files: the one atomic writer (files and directories) and the one reader of JSON/JSONL/Parquet records.

Atomic means a reader, or a crash, never sees half a file: the bytes go to a temporary sibling that is renamed
over the destination, so the destination is always either the old complete file or the new one.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

from specauf.errors import ConfigError, DataError, PathNotFoundError

log = logging.getLogger(__name__)

TEMP_MARK = ".tmp"  # `name` is written as `name.tmp<random>`, then renamed: leftovers of a crash carry it


def atomic_write(
    path: str | os.PathLike, content: str | bytes | Callable[[BinaryIO], None], *, durable: bool = False
) -> Path:
    """Write `content` (text as UTF-8, bytes, or a function writing to a binary file) to `path` atomically.

    `durable` also fsyncs the file before the rename and the directory after it, so the new file survives a
    power loss (checkpoints). The file is made readable to the group (mkstemp's default is owner-only).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + TEMP_MARK, dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            if callable(content):
                content(f)
            else:
                f.write(content.encode("utf-8") if isinstance(content, str) else content)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    if durable:
        _fsync_dir(path.parent)
    return path


def _fsync_dir(directory: Path) -> None:
    # Makes a rename durable. Not every platform/filesystem allows opening a directory: best effort.
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def check_empty_destination(out: Path, overwrite: bool, what: str = "out") -> None:
    """Refuse (ConfigError) a destination that is a file, or a non-empty directory unless `overwrite`."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{what}={out} is a file. Fix: give a directory path")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise ConfigError(
            f"{what}={out} exists and is not empty. Fix: choose another directory, or overwrite=true to "
            "replace it"
        )


@contextlib.contextmanager
def atomic_directory(out: str | os.PathLike, *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling directory to fill; on success it replaces `out` in one rename.

    `out` must not exist or be empty, unless `overwrite`: then the old directory is moved aside first and
    removed only once the new one is in place, so a failure leaves one complete version. The files are
    fsynced and made readable to the group.
    """
    out = Path(out).expanduser()
    check_empty_destination(out, overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}{TEMP_MARK}-", dir=out.parent))
    try:
        yield tmp
        for f in tmp.rglob("*"):
            if f.is_file():
                with open(f, "rb") as handle:
                    os.fsync(handle.fileno())
                f.chmod(0o644)
        tmp.chmod(0o755)
        _move_into_place(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _move_into_place(tmp: Path, out: Path) -> None:
    if out.is_dir() and not any(out.iterdir()):
        out.rmdir()
    if not out.exists():
        os.rename(tmp, out)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
    old.rmdir()
    os.rename(out, old)
    try:
        os.rename(tmp, out)
    except BaseException:
        os.rename(old, out)
        raise
    shutil.rmtree(old, ignore_errors=True)


# --- reading records ----------------------------------------------------------------------------------------


def read_records(path: str | os.PathLike) -> list[Any]:
    """The records of a JSON array, JSON Lines (either optionally gzipped) or Parquet file.

    The format is sniffed, not taken from the suffix: a file starting with `[` is an array, anything else one
    record per line. An array cut off inside its last record (as the packaged ShareGPT file is) keeps every
    complete record; any other syntax error raises DataError naming the file and the record or line.
    """
    path = Path(path)
    if not path.is_file():
        raise PathNotFoundError(f"{path} does not exist or is not a file")
    if path.name.endswith(".parquet"):
        import pyarrow.parquet as pq  # a dependency of `datasets`; imported here as few runs need it

        return pq.read_table(path).to_pylist()
    opener = gzip.open if path.name.endswith(".gz") else open
    try:
        with opener(path, "rt", encoding="utf-8") as f:
            text = f.read()
    except UnicodeDecodeError as err:
        raise DataError(
            f"{path}: not UTF-8 text (byte {err.object[err.start]:#04x} at offset {err.start}): is it a binary "
            "file? Fix: give a JSON array or JSON Lines file (optionally .gz), or a .parquet file"
        ) from None
    except (OSError, EOFError) as err:  # a .gz that is not gzip, or cut short
        raise DataError(f"{path}: cannot be read ({type(err).__name__}: {err})") from None
    if text.lstrip(" \t\r\n\ufeff").startswith("["):
        return list(_iter_json_array(text, path))
    return list(_iter_jsonl(text, path))


def _iter_jsonl(text: str, path: Path) -> Iterator[Any]:
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            yield json.loads(line)
        except json.JSONDecodeError as err:
            hint = " (a JSON array must start with '[')" if lineno == 1 else ""
            raise DataError(
                f"{path}: line {lineno} is not valid JSON ({err.msg}, column {err.colno}){hint}. Fix: give a "
                "JSON array of records or one JSON record per line"
            ) from None


def _iter_json_array(text: str, path: Path) -> Iterator[Any]:
    decoder = json.JSONDecoder()
    pos = _skip(text, 0, " \t\r\n\ufeff") + 1  # past the '['
    count = 0
    while True:
        pos = _skip(text, pos, " \t\r\n,")
        if pos >= len(text):
            log.info("%s: the JSON array is never closed; keeping its %d complete records", path, count)
            return
        if text[pos] == "]":
            return
        try:
            record, pos = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as err:
            if _cut_off(text, err):
                log.info(
                    "%s ends inside record %d (the file was cut short); using the %d complete records before it",
                    path.name,
                    count + 1,
                    count,
                )
                return
            where = f"record {count + 1} (line {err.lineno}, column {err.colno})"
            raise DataError(f"{path}: {where} is not valid JSON: {err.msg}") from None
        count += 1
        yield record


def _skip(text: str, pos: int, chars: str) -> int:
    while pos < len(text) and text[pos] in chars:
        pos += 1
    return pos


def _cut_off(text: str, err: json.JSONDecodeError) -> bool:
    """Whether a decode error is the end of the file arriving mid-record rather than a real syntax error.

    The decoder reports an unterminated string only when it reaches the end of the input; any other error
    with (almost) nothing after it is a cut inside a number, literal or escape. A real error mid-file has
    the rest of the file after it.
    """
    return err.msg.startswith("Unterminated string") or len(text[err.pos :].strip()) <= 16
