"""`specauf.hub`: a string meant as a path never turns into a hub lookup."""

from __future__ import annotations

import pytest

from specauf.hub import looks_like_path


@pytest.mark.parametrize(
    "name", ["Qwen/Qwen3-8B", "HuggingFaceTB/SmolLM2-135M-Instruct", "gpt2", "anon8231489123/ShareGPT_V3"]
)
def test_hub_ids(name):
    assert not looks_like_path(name)


@pytest.mark.parametrize(
    "name",
    ["/abs/model", "./model", "../model", "~/model", "data/chats.jsonl", "a/b/c", "chats.json.gz",
     "model.gguf", "C:\\models\\qwen", "has space/model"],
)  # fmt: skip
def test_paths(name):
    assert looks_like_path(name)


def test_an_org_that_is_a_local_directory_is_a_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert not looks_like_path("outputs/model")
    (tmp_path / "outputs").mkdir()
    assert looks_like_path("outputs/model")  # a typo under outputs/ must fail as a missing path
