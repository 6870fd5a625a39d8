"""`specauf.progress`: a run written to a file says how it is going, in plain lines (the subprocess run that
checks them is tests/evaluation/test_callback.py's)."""

from __future__ import annotations

from specauf.progress import _clock


def test_clock():
    assert _clock(5) == "0:05" and _clock(125) == "2:05" and _clock(3725) == "1:02:05"


def test_the_terminal_bar_has_no_epoch_count_for_a_step_bounded_run():
    from types import SimpleNamespace

    from specauf.progress import StepProgressBar

    bar = StepProgressBar()
    bar._trainer = SimpleNamespace(max_epochs=-1)  # max_steps bounds the run (the stock bar: "Epoch 0/-2")
    assert bar._get_train_description(0).strip() == "train"
    bar._trainer = SimpleNamespace(max_epochs=3)
    assert bar._get_train_description(1).startswith("Epoch 1/2")
