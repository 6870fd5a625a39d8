"""`specauf.io`: the atomic writer never leaves half a file, and the record reader sniffs its formats."""

from __future__ import annotations

import gzip
import json

import pytest

from specauf.errors import ConfigError, DataError, PathNotFoundError
from specauf.io import TEMP_MARK, atomic_directory, atomic_write, read_records


def test_atomic_write_text_bytes_and_writer(tmp_path):
    path = tmp_path / "deep" / "summary.json"
    atomic_write(path, "τ=3\n")
    assert path.read_text(encoding="utf-8") == "τ=3\n"
    atomic_write(path, b"\x00\x01", durable=True)
    assert path.read_bytes() == b"\x00\x01"
    atomic_write(path, lambda f: f.write(b"from a writer"))
    assert path.read_bytes() == b"from a writer"
    assert path.stat().st_mode & 0o777 == 0o644  # readable to the group, unlike mkstemp's 0o600
    assert sorted(p.name for p in path.parent.iterdir()) == ["summary.json"]


def test_a_failed_write_keeps_the_old_file_and_no_temp(tmp_path):
    path = tmp_path / "last.ckpt"
    atomic_write(path, b"complete")

    def crash(f):
        f.write(b"half")
        raise KeyboardInterrupt  # even an interrupt: BaseException, not only Exception

    with pytest.raises(KeyboardInterrupt):
        atomic_write(path, crash)
    assert path.read_bytes() == b"complete"
    assert not [p for p in tmp_path.iterdir() if TEMP_MARK in p.name]


def test_atomic_directory_replaces_only_on_success(tmp_path):
    out = tmp_path / "export"
    with atomic_directory(out) as tmp:
        (tmp / "config.json").write_text("{}")
    assert (out / "config.json").read_text() == "{}"
    with pytest.raises(ConfigError, match=r"exists and is not empty.*overwrite=true"), atomic_directory(out):
        pass
    with pytest.raises(RuntimeError), atomic_directory(out, overwrite=True) as tmp:
        (tmp / "config.json").write_text("new")
        raise RuntimeError("export failed half way")
    assert (out / "config.json").read_text() == "{}"  # the old complete version
    with atomic_directory(out, overwrite=True) as tmp:
        (tmp / "model.safetensors").write_bytes(b"w")
    assert sorted(p.name for p in out.iterdir()) == ["model.safetensors"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export"]  # no temp or old directories left
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="is a file"), atomic_directory(tmp_path / "file"):
        pass


def test_read_records_sniffs_array_lines_gzip(tmp_path):
    records = [{"id": i, "text": f"r{i}"} for i in range(3)]
    array, lines, gz = tmp_path / "a.jsonl", tmp_path / "b.json", tmp_path / "c.json.gz"
    array.write_text("\ufeff  " + json.dumps(records))  # an array, whatever the suffix says
    lines.write_text("\n".join(json.dumps(r) for r in records) + "\n\n")
    gz.write_bytes(gzip.compress(json.dumps(records).encode()))
    assert read_records(array) == read_records(lines) == read_records(gz) == records


def test_read_records_keeps_the_complete_records_of_a_cut_array(tmp_path):
    path = tmp_path / "cut.json"
    text = json.dumps([{"text": "one"}, {"text": "two"}, {"text": "three"}])
    path.write_text(text[: text.index("three") + 2])
    assert read_records(path) == [{"text": "one"}, {"text": "two"}]


def test_read_records_errors_name_the_file_and_place(tmp_path):
    with pytest.raises(PathNotFoundError, match="does not exist"):
        read_records(tmp_path / "missing.jsonl")
    bad_line = tmp_path / "bad.jsonl"
    bad_line.write_text('{"a": 1}\n{"a": \n{"a": 3}\n')
    with pytest.raises(DataError, match=r"bad\.jsonl: line 2 is not valid JSON"):
        read_records(bad_line)
    bad_array = tmp_path / "bad.json"
    bad_array.write_text('[{"a": 1}, {"a": ]' + " " * 40 + ', {"a": 3}]')
    with pytest.raises(DataError, match=r"bad\.json: record 2 \(line 1, column \d+\) is not valid JSON"):
        read_records(bad_array)
    binary = tmp_path / "model.bin"
    binary.write_bytes(b"\x89PNG\x00\xff")
    with pytest.raises(DataError, match="not UTF-8 text"):
        read_records(binary)
    not_gzip = tmp_path / "x.jsonl.gz"
    not_gzip.write_text("{}")
    with pytest.raises(DataError, match="cannot be read"):
        read_records(not_gzip)
