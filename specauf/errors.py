"""The user-facing error types.

Only these print as one line at the command line (`specauf: error: …`, see `specauf.cli`); anything else is a
bug of ours and shows its traceback. Each subclass also derives from the built-in type a caller would expect
(`ValueError` for a bad setting, `FileNotFoundError` for a missing path), so library users can catch either.
"""


class UserError(Exception):
    """A problem with what the user asked for or gave us (config, paths, data, downloads).

    The message names the problem and the fix. The entry points print it as one line, without a traceback
    (SPECAUF_DEBUG=1 shows it).
    """


class ConfigError(UserError, ValueError):
    """A setting that cannot work: out of range, contradicting another, or unknown."""


class DataError(UserError, ValueError):
    """Input data that cannot be used: malformed files, empty corpora, records of the wrong shape."""


class PathNotFoundError(UserError, FileNotFoundError):
    """A file or directory the user named does not exist (or lacks what it must hold)."""


class DownloadError(UserError, OSError):
    """A packaged asset or hub resource that could not be fetched."""


class CheckpointError(UserError):
    """A checkpoint or export that cannot be used: unreadable, not from specauf, or for another target."""
