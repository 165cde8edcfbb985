"""What the harness's own tests share: values with exact reprs, source lines."""

from __future__ import annotations

import inspect


class Token:
    """A value with a stable repr, for exact messages."""

    def __init__(self, label: str) -> None:
        self.label = label

    def __repr__(self) -> str:
        return f"<Token {self.label}>"


def line_of(fn: object, marker: str) -> int:
    """The line of *fn*'s source that contains *marker*."""
    lines, first = inspect.getsourcelines(fn)  # type: ignore[arg-type]
    for offset, text in enumerate(lines):
        if marker in text:
            return first + offset
    raise AssertionError(f"{marker!r} not in {fn!r}")
