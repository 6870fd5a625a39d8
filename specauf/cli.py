"""The one error wrapper of every entry point: user errors as one line, bugs with their traceback.

Only the project's user-error classes (`specauf.errors`) print as `specauf: error: …`, also when Hydra's
`instantiate` wrapped them on the way out of a factory. Anything else is a bug and keeps its traceback. W&B is
closed whatever happens, and in a sweep one failed run does not stop the others.
"""

from __future__ import annotations

import logging
import os
import sys
import traceback
from collections.abc import Callable
from typing import TypeVar

from specauf.errors import ConfigError, UserError
from specauf.tracking import finish_wandb, quiet_third_party

log = logging.getLogger(__name__)
T = TypeVar("T")


def debug() -> bool:
    """SPECAUF_DEBUG=1: let user errors raise with their full traceback too."""
    return bool(os.environ.get("SPECAUF_DEBUG"))


def user_error_in(err: BaseException | None) -> UserError | None:
    """The user error `err` is, or was raised from; None for a bug.

    Wrappers looked through: Hydra's InstantiationException (the error is its cause) and OmegaConf's
    InterpolationResolutionError (a resolver's error is its context). A config value left at `???` is a
    user error too.
    """
    from omegaconf.errors import InterpolationResolutionError, MissingMandatoryValue

    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, UserError):
            return err
        if isinstance(err, MissingMandatoryValue):
            key = err.full_key or "a value"
            return ConfigError(f"{key} must be set (the config leaves it as ???). Fix: pass {key}=<value>")
        seen.add(id(err))
        following = err.__cause__
        if following is None and isinstance(err, InterpolationResolutionError):
            following = err.__context__
        err = following
    return None


def print_user_error(err: BaseException) -> str:
    """Print `specauf: error: …` to stderr (with the debug hint) and return that line."""
    message = f"specauf: error: {err}"
    print(message + "\n(set SPECAUF_DEBUG=1 for the traceback)", file=sys.stderr)
    return message


def run_main(
    job: Callable[[], T], *, multirun: bool = False, on_failure: Callable[[str], None] | None = None
) -> T | None:
    """Run an entry point's `job`; `on_failure` gets the error line (user error) or the traceback (bug).

    A user error exits with status 1 after one line; a bug re-raises. In a multirun both return None instead,
    so the sweep goes on (the failure is recorded by `on_failure`).
    """
    quiet_third_party()
    try:
        return job()
    except Exception as err:
        user = user_error_in(err)
        if user is not None and not debug():
            line = print_user_error(user)
            if on_failure is not None:
                on_failure(line)
            if multirun:
                return None
            raise SystemExit(1) from None
        if on_failure is not None:
            on_failure(traceback.format_exc())
        if multirun:
            log.exception("run failed; continuing with the rest of the sweep")
            return None
        raise
    finally:
        finish_wandb()
