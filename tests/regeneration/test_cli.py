"""`python -m specauf.regenerate`, run as a user would (the library is tested next to this file)."""

from __future__ import annotations

import json

import pytest

from specauf.data.conversations import load_conversations
from tests.conftest import REPO, run_cli, write_chats

TINY = ["target=tiny_random", "target.num_layers=2", "max_new_tokens=6", "shard_size=3", "engine.device=cpu"]


@pytest.mark.cli
def test_cli_regenerates_a_chat_file_into_a_training_source(tmp_path):
    chats = write_chats(tmp_path / "chats.jsonl", n=5)
    out = tmp_path / "regen"
    proc = run_cli("specauf.regenerate", *TINY, f"data.source={chats}", f"out={out}", cwd=REPO, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["shards"]["total"] == 2
    assert (
        manifest["target"]["name"].startswith("tiny_random") and manifest["settings"]["max_new_tokens"] == 6
    )
    assert manifest["source"]["source"] == str(chats)
    assert f"data.source={out / 'conversations.jsonl'}" in proc.stdout
    regenerated = load_conversations(str(out / "conversations.jsonl"))
    assert len(regenerated) == manifest["output"]["records"] and regenerated[0][0]["content"].startswith(
        "say "
    )


@pytest.mark.cli
def test_cli_empty_input_is_one_line(tmp_path):
    (tmp_path / "empty.jsonl").write_text("")
    proc = run_cli(
        "specauf.regenerate", *TINY, f"data.source={tmp_path / 'empty.jsonl'}", f"out={tmp_path / 'regen'}",
        cwd=REPO, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 1
    assert proc.stderr.startswith("specauf: error:") and "no usable conversations" in proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "regen").exists()
