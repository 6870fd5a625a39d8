"""The user-facing error type."""


class UserError(Exception):
    """A problem with what the user asked for or gave us (config, paths, data, downloads).

    The entry points print these as one line, without a traceback (SPECAUF_DEBUG=1 shows it).
    """


class CheckpointError(UserError):
    """A checkpoint that cannot be used: unreadable, not from specauf, or for another target."""
