"""Checkpoints and exports written by the previous specauf version (before the curriculum left the drafter's
settings) still load, and still draft exactly what they drafted then.

The fixtures are a 3-step DFlash and Domino (loss=b_auf, curriculum_fraction=0.5) run on the tiny random
target, with the drafts and hidden states recorded by that version (expected.json).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from specauf.checkpointing import check_resumable
from specauf.loading import load_drafter, load_with_target

LEGACY = Path(__file__).resolve().parents[1] / "fixtures" / "legacy"
EXPECTED = json.loads((LEGACY / "expected.json").read_text())
SOURCES = {"dflash": "dflash.ckpt", "domino": "domino.ckpt", "dflash_export": "dflash_export",
           "domino_export": "domino_export"}  # fmt: skip


@pytest.mark.parametrize("kind", sorted(SOURCES))
def test_legacy_file_loads_and_drafts_as_before(kind):
    expected = EXPECTED[kind]
    drafter, target, _ = load_with_target(LEGACY / SOURCES[kind])
    assert type(drafter).__name__ == expected["class"] and target.name == expected["target"]
    assert "curriculum_fraction" not in drafter.config  # a training setting now, not architecture
    ids = torch.arange(3, 40)[None]
    with torch.no_grad():
        ctx = drafter.context_kv(target.features(ids), torch.arange(37)[None])
        anchor, pos = torch.tensor([41]), torch.tensor([37])
        hidden = drafter.draft_hidden(anchor, pos, ctx, target.embed)
        tokens = drafter.draft(anchor, pos, ctx, target.embed, target.lm_head_weight)
    assert tokens[0].tolist() == expected["draft"]
    torch.testing.assert_close(hidden[0, :2, :4], torch.tensor(expected["hidden_head"]))
    assert hidden.abs().sum().item() == pytest.approx(expected["hidden_abs_sum"], rel=1e-5)


def test_legacy_domino_checkpoint_resumes_into_a_run_without_the_setting():
    old, meta = load_drafter(LEGACY / "domino.ckpt")
    _, target, _ = load_with_target(LEGACY / "domino.ckpt")
    fresh = type(old).from_config(old.config)  # what this version builds from the same backbone settings
    resumed = check_resumable(LEGACY / "domino.ckpt", fresh, target)
    assert resumed["global_step"] == meta["global_step"] == 3
