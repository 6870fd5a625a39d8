"""Whole regenerations on the tiny target: seeds, resume, half-written shards, settings, bad input, training."""

from __future__ import annotations

import dataclasses
import json
import shutil

import pytest
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from specauf.errors import ConfigError, DataError
from specauf.regeneration import HFEngine, ReplyFilter, regeneration_record
from specauf.regeneration.store import regeneration_warnings
from specauf.target import tiny_random
from tests.checkpoints import TINY_TARGET
from tests.conftest import CONF, TINY
from tests.regeneration.conftest import SAMPLING, regenerate

ONE_TOKEN = dataclasses.replace(SAMPLING, max_new_tokens=1)  # an end-of-turn is empty, anything else cut


class Interrupted(Exception):
    pass


class StopsAfter:
    """The HF engine, interrupted (an exception) at its call number `calls` + 1: a run killed mid-shard."""

    def __init__(self, calls: int, **engine) -> None:
        self.calls = calls
        self.engine_args = engine

    def __call__(self, target):
        self.inner = HFEngine(target, **self.engine_args)
        return self

    @property
    def settings(self):
        return self.inner.settings

    def generate(self, prompts, sampling, seed):
        if self.calls == 0:
            raise Interrupted
        self.calls -= 1
        return self.inner.generate(prompts, sampling, seed)


def output(out) -> bytes:
    return (out / "conversations.jsonl").read_bytes()


def shard_files(out) -> list[str]:
    return sorted(p.name for p in (out / "shards").iterdir())


@pytest.fixture(scope="module")
def reference(chats, target, tmp_path_factory):
    """An uninterrupted run with the tests' defaults, and its manifest."""
    out = tmp_path_factory.mktemp("reference") / "regen"
    return out, regenerate(chats, target, out)


def test_a_run_writes_shards_a_manifest_and_the_merged_file(reference, target):
    out, manifest = reference
    assert shard_files(out) == ["shard-00000.json", "shard-00001.json", "shard-00002.json"]
    assert manifest["status"] == "complete" and manifest["shards"] == {"total": 3, "done": 3}
    assert manifest["target"] == {
        "name": target.name,
        "revision": target.revision,
        "chat_template_sha256": target.chat_template_sha256,
    }
    assert manifest["settings"]["temperature"] == 0.9 and manifest["settings"]["engine"]["batch_size"] == 3
    c = manifest["counts"]
    assert c["conversations"] == 10 and c["turns"] == 20 == c["replies"] + c["turns_not_asked"]
    assert c["replies"] == sum(c[f"replies_{v}"] for v in ("ok", "cut", "empty", "repetition"))
    lines = output(out).decode().splitlines()
    assert len(lines) == manifest["output"]["records"] == c["conversations_kept"]
    assert json.loads((out / "manifest.json").read_text()) == manifest


def test_one_seed_gives_the_same_bytes_and_another_seed_other_replies(reference, chats, target, tmp_path):
    out, _ = reference
    regenerate(chats, target, tmp_path / "again")
    regenerate(chats, target, tmp_path / "seed1", seed=1)
    assert output(tmp_path / "again") == output(out)
    assert output(tmp_path / "seed1") != output(out)


def test_an_interrupted_run_resumes_where_it_stopped_and_matches_an_uninterrupted_one(
    reference, chats, target, tmp_path
):
    out = tmp_path / "regen"
    # Two turns per shard, so call 3 is shard 1's first: the run dies with shard 0 written.
    with pytest.raises(Interrupted):
        regenerate(chats, target, out, engine=StopsAfter(3, batch_size=3, device="cpu"))
    assert shard_files(out) == ["shard-00000.json"]
    assert json.loads((out / "manifest.json").read_text())["shards"]["done"] == 1
    assert not (out / "conversations.jsonl").exists()
    resumed = StopsAfter(4, batch_size=3, device="cpu")  # shards 1 and 2 only: shard 0 is not redone
    manifest = regenerate(chats, target, out, engine=resumed)
    assert resumed.calls == 0
    assert output(out) == output(reference[0])
    assert manifest["counts"] == reference[1]["counts"]


def test_a_half_written_or_foreign_shard_is_never_taken_as_complete(reference, chats, target, tmp_path):
    out = tmp_path / "regen"
    (out / "shards").mkdir(parents=True)
    good = reference[0] / "shards"
    (out / "manifest.json").write_bytes((reference[0] / "manifest.json").read_bytes())
    (out / "shards" / "shard-00000.json").write_bytes((good / "shard-00000.json").read_bytes())
    half = (good / "shard-00001.json").read_bytes()
    (out / "shards" / "shard-00001.json").write_bytes(half[: len(half) // 2])  # cut short
    (out / "shards" / "shard-00002.json.tmpabc").write_bytes(half)  # a crashed write's temporary file
    other = json.loads((good / "shard-00002.json").read_text())
    other["key"] = "0" * 64  # whole, but written for other settings
    (out / "shards" / "shard-00002.json").write_text(json.dumps(other))
    (out / "manifest.json").write_text(
        json.dumps({**json.loads((out / "manifest.json").read_text()), "status": "running"})
    )
    redone = StopsAfter(4, batch_size=3, device="cpu")
    regenerate(chats, target, out, engine=redone)
    assert redone.calls == 0  # shards 1 and 2 regenerated, shard 0 reused
    assert output(out) == output(reference[0])
    assert shard_files(out) == ["shard-00000.json", "shard-00001.json", "shard-00002.json"]


def test_other_settings_on_the_same_out_are_refused_and_overwrite_starts_over(
    reference, chats, target, tmp_path
):
    out = tmp_path / "regen"
    regenerate(chats, target, out)
    with pytest.raises(
        ConfigError, match=r"other settings \(settings.seed: 0 there, 1 here\).*overwrite=true"
    ):
        regenerate(chats, target, out, seed=1)
    regenerate(chats, target, out, seed=1, overwrite=True)
    assert output(out) != output(reference[0])


def test_a_finished_run_is_not_generated_again(reference, chats, target):
    manifest = regenerate(chats, target, reference[0], engine=StopsAfter(0, batch_size=3, device="cpu"))
    assert manifest["output"] == reference[1]["output"]


def test_a_target_without_a_chat_template_is_refused_before_its_engine_is_built(chats, tmp_path):
    bare = tiny_random(**TINY_TARGET)
    bare.tokenizer.chat_template = None
    with pytest.raises(ConfigError, match=r"no chat template.*Fix: use the instruct/chat variant"):
        regenerate(chats, bare, tmp_path / "regen", engine=lambda target: pytest.fail("engine built"))
    assert not (tmp_path / "regen").exists()


def test_empty_input_and_a_foreign_directory_are_refused(chats, target, tmp_path):
    with pytest.raises(DataError, match="the input is empty"):
        regenerate([], target, tmp_path / "regen")
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "todo.txt").write_text("mine")
    with pytest.raises(ConfigError, match=r"holds no manifest\.json"):
        regenerate(chats, target, tmp_path / "notes")


def test_a_run_whose_every_reply_is_filtered_out_says_so(chats, target, tmp_path):
    with pytest.raises(DataError, match=r"no conversation survived.*cut replies.*drop_cut=false"):
        regenerate(
            chats, target, tmp_path / "regen", reply_filter=ReplyFilter(drop_cut=True), sampling=ONE_TOKEN
        )


def test_training_reads_the_output_with_data_source_alone(reference, target, isolated_cache):
    out, manifest = reference
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(
            "train", overrides=[*TINY, f"data.source={out / 'conversations.jsonl'}", "data.val_size=2"]
        )
    data = instantiate(cfg.data, tokenizer=target.tokenizer, block_size=8, label_offset=0)
    data.setup("fit")
    assert len(data.train_set) + len(data.val_set) == manifest["output"]["records"]
    # the run records which data it used (specauf.train writes it to summary.json)
    assert data.source_record["target"] == manifest["target"] and data.source_record["sha256_matches"]
    assert regeneration_warnings(data.source_record, target.name) == []


def test_a_training_run_can_tell_a_regenerated_file_and_whether_it_was_changed(reference, tmp_path):
    out, manifest = reference
    record = regeneration_record(out / "conversations.jsonl")
    assert record["sha256_matches"] and record["target"] == manifest["target"]
    assert record["settings"] == manifest["settings"] and record["sha256"] == manifest["output"]["sha256"]
    copy = tmp_path / "regen"
    shutil.copytree(out, copy)
    with open(copy / "conversations.jsonl", "a") as f:
        f.write('{"messages": []}\n')
    changed = regeneration_record(copy / "conversations.jsonl")
    assert changed["sha256_matches"] is False
    warnings = regeneration_warnings(changed, "another-target")
    assert len(warnings) == 2 and "not by 'another-target'" in warnings[0] and "changed" in warnings[1]
    assert regeneration_warnings(None, "any") == []
    assert regeneration_record(out / "manifest.json") is None  # not the output it names
    assert regeneration_record(tmp_path / "elsewhere.jsonl") is None
