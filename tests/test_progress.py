"""`specauf.progress`: a run written to a file says how it is going, in plain lines."""

from __future__ import annotations

import pytest

from specauf.progress import _clock
from tests.conftest import REPO, TINY, run_cli


def test_clock():
    assert _clock(5) == "0:05" and _clock(125) == "2:05" and _clock(3725) == "1:02:05"


@pytest.mark.cli
def test_a_run_not_on_a_terminal_logs_plain_progress_lines(tmp_path, chat_file):
    overrides = [a for a in TINY if not a.startswith(("trainer.max_steps", "trainer.log_every"))]
    proc = run_cli("specauf.train", *overrides, "trainer.max_steps=4", "trainer.log_every_n_steps=2",
                   f"data.source={chat_file}", f"hydra.run.dir={tmp_path / 'run'}", cwd=REPO)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout + proc.stderr
    lines = [line for line in out.splitlines() if "steps/s" in line]
    assert [line.split("step ")[1].split(" |")[0] for line in lines] == ["2/4", "4/4"], lines
    assert "| loss " in lines[0] and "| TF-τ " in lines[0] and "ETA " in lines[0]
    assert "Epoch 0/-2" not in out and "💡 Tip" not in out and "LeafSpec" not in out
    assert "past_key_values` is deprecated" not in out
