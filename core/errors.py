"""The errors a user's input can raise, in a module that imports nothing heavy: a command line that only
catches them (core.train, search.plan) answers bad input in a second, before torch or timm load."""
from __future__ import annotations


class CheckpointError(ValueError):
    """A checkpoint file is missing, unreadable or not ours; one line naming the file."""


class DataError(ValueError):
    """The user's data is unusable; the message is one line naming the file and the fix."""


class ModelError(ValueError):
    """A model that cannot be built or initialised as asked; one line naming the cause."""
