"""Search spaces by name: `spaces.SPACES[name]` or `spaces.get(name)`. Knows nothing of Ray."""
from core.errors import UserError
from spaces import finetune, scratch, smoke
from spaces.base import METRIC, MODE, TIME_ATTR, Space

SPACES: dict[str, Space] = {s.SPACE.name: s.SPACE for s in (finetune, scratch, smoke)}


class UnknownSpace(UserError, KeyError):
    def __str__(self) -> str:
        return self.args[0]


def get(name: str) -> Space:
    if name not in SPACES:
        raise UnknownSpace(f"unknown space '{name}'; valid spaces: {', '.join(SPACES)}")
    return SPACES[name]


__all__ = ["SPACES", "Space", "get", "METRIC", "MODE", "TIME_ATTR", "UnknownSpace"]
