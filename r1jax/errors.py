"""Failures a user can fix, as opposed to bugs.

The binaries in launch/ print an expected failure as one `error: ...` line and exit non-zero
(launch/cli.py); the traceback is shown only with --verbose. Expected are `UserError` and the
built-ins that bad input raises everywhere in Python (`EXPECTED`), so library code may keep
raising ValueError / FileNotFoundError with a message that names the key, file or value at fault.
"""


class UserError(Exception):
    """Bad input, config or files: the message says what is wrong, where, and what is allowed."""


class CheckpointError(UserError):
    """No checkpoint in a workdir restores, or a requested one does not."""


# KeyError: config lookups; OSError: missing, unreadable or unwritable files.
EXPECTED = (UserError, ValueError, KeyError, OSError)
