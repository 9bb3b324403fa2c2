"""Options with a fixed set of values: str-valued Enums that also accept their plain strings."""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING

from .errors import UsageError

if TYPE_CHECKING:
    from typing import Self


class Choice(str, enum.Enum):
    """A str Enum: `Choice.X == "x"`, and `parse` turns a plain string into a member or a usage error."""

    @classmethod
    def parse(cls, value: str, option: str) -> Self:
        """The member named by `value` (a member or its string); UsageError naming `option` if none is."""
        try:
            return cls(value)
        except ValueError:
            names = " or ".join(member.value for member in cls)
            raise UsageError(f"{option}: '{value}' is not {names}") from None

    def __str__(self) -> str:
        return str(self.value)
