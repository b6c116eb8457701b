"""The errors a user's input can raise, in a module that imports nothing heavy: a command line catches UserError,
their one base, and answers bad input in one line (exit code 2) in a second, before torch or timm load."""
from __future__ import annotations


class UserError(ValueError):
    """Bad input from the user: its message is one line naming the input and the fix."""


class CheckpointError(UserError):
    """A checkpoint file is missing, unreadable or not ours; one line naming the file."""


class DataError(UserError):
    """The user's data is unusable; the message is one line naming the file and the fix."""


class ModelError(UserError):
    """A model that cannot be built or initialised as asked; one line naming the cause."""
