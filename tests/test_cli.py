"""`specauf.cli.run_main`, every entry point's error wrapper: user errors are one line, bugs keep tracebacks."""

from __future__ import annotations

import pytest
from hydra.errors import InstantiationException
from omegaconf import OmegaConf

from specauf.cli import run_main, user_error_in
from specauf.errors import CheckpointError, ConfigError, DataError


def fail(err: BaseException):
    def job():
        raise err

    return job


def test_a_user_error_is_one_line_and_exit_1(capsys):
    failures = []
    with pytest.raises(SystemExit) as exit_:
        run_main(fail(DataError("chats.jsonl: line 3 is not valid JSON")), on_failure=failures.append)
    assert exit_.value.code == 1
    err = capsys.readouterr().err
    assert err.startswith("specauf: error: chats.jsonl: line 3 is not valid JSON\n")
    assert "Traceback" not in err
    assert failures == ["specauf: error: chats.jsonl: line 3 is not valid JSON"]


def test_a_bug_keeps_its_traceback_even_as_a_value_error():
    failures = []
    with pytest.raises(ValueError, match="shape mismatch"):
        run_main(fail(ValueError("shape mismatch")), on_failure=failures.append)
    assert failures[0].startswith("Traceback") and "ValueError: shape mismatch" in failures[0]


def test_a_user_error_wrapped_by_hydra_instantiate_is_still_one():
    try:
        try:
            raise CheckpointError("bad ckpt")
        except CheckpointError as inner:
            raise InstantiationException("Error in call to target 'x'") from inner
    except InstantiationException as outer:
        assert isinstance(user_error_in(outer), CheckpointError)
    assert user_error_in(InstantiationException("no cause")) is None


def test_config_values_left_unset_or_failing_in_a_resolver():
    cfg = OmegaConf.create({"ckpt": "???", "x": "${oc.env:SPECAUF_TEST_UNSET_VARIABLE}"})
    with pytest.raises(Exception) as err:
        _ = cfg.ckpt
    user = user_error_in(err.value)
    assert isinstance(user, ConfigError)
    assert str(user) == "ckpt must be set (the config leaves it as ???). Fix: pass ckpt=<value>"

    def resolver(_: str) -> str:
        raise ConfigError("data_dir must exist")

    OmegaConf.register_new_resolver("specauf_test_fail", resolver, replace=True)
    bad = OmegaConf.create({"y": "${specauf_test_fail:1}"})
    with pytest.raises(Exception) as err:
        _ = bad.y
    assert str(user_error_in(err.value)) == "data_dir must exist"


def test_a_multirun_goes_on_after_either(capsys):
    seen = []
    assert run_main(fail(DataError("one bad run")), multirun=True, on_failure=seen.append) is None
    assert run_main(fail(RuntimeError("a bug")), multirun=True, on_failure=seen.append) is None
    assert seen[0] == "specauf: error: one bad run" and "RuntimeError: a bug" in seen[1]


def test_debug_lets_user_errors_raise(monkeypatch):
    monkeypatch.setenv("SPECAUF_DEBUG", "1")
    with pytest.raises(DataError):
        run_main(fail(DataError("x")))
    assert run_main(lambda: 42) == 42
