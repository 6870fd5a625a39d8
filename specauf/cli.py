"""What every entry point does the same way: user errors as one line, and W&B closed whatever happens."""

from __future__ import annotations

import os
import sys

from specauf.errors import UserError

# Problems with the user's request (paths, values, data, downloads) rather than bugs: one line, no traceback.
USER_ERRORS = (UserError, OSError, ValueError)


def debug() -> bool:
    """SPECAUF_DEBUG=1: let errors raise with their full traceback."""
    return bool(os.environ.get("SPECAUF_DEBUG"))


def print_user_error(err: BaseException) -> str:
    """Print `specauf: error: …` to stderr (with the debug hint) and return that line."""
    message = f"specauf: error: {err}"
    print(message + "\n(set SPECAUF_DEBUG=1 for the traceback)", file=sys.stderr)
    return message


def finish_wandb() -> None:
    """Close the W&B run if one is open: after a crash in a multirun the next run would log into it."""
    if "wandb" in sys.modules:
        import wandb

        if wandb.run is not None:
            wandb.finish()
