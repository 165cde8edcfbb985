"""The errors the foundation services raise, rooted at the core's.

::

    TrioscopeError
    ├── UnknownConfigPathError           (also KeyError)
    ├── ConfigUpdateTimeoutError         (also trio.TooSlowError)
    ├── EventBufferFullError             (also trio.WouldBlock)
    ├── IncompatibleDatabaseError        (also RuntimeError)
    └── SubscriptionOverflowError
    Rejected                             (a handler's expected failure)
    ├── ConfigRejected                   (also ValueError)
    ├── EventRejected                    (also ValueError)
    └── EventQueryRejected               (also ValueError)

One shape for every error (the ElixirScope original had two incompatible
error structs with clashing codes): an exception class that carries the data
it is about and builds its message from it.
"""

from __future__ import annotations

from collections.abc import Sequence

import trio

from .._errors import Rejected, TrioscopeError


class UnknownConfigPathError(TrioscopeError, KeyError):
    """A configuration path that the schema does not declare."""

    def __init__(
        self, path: str, nearest: Sequence[str] = (), *, source: str | None = None
    ) -> None:
        self.path = path
        self.nearest = tuple(nearest)
        self.source = source
        """Where the path came from, when not from code (``"the environment variable X"``)."""
        super().__init__(path)

    def __str__(self) -> str:
        # KeyError's own __str__ would repr() the message.
        origin = f" (from {self.source})" if self.source else ""
        hint = (
            f"; did you mean {', '.join(repr(p) for p in self.nearest)}?"
            if self.nearest
            else "; see the schema for the valid paths"
        )
        return f"no configuration path {self.path!r}{origin}{hint}"


class ConfigRejected(Rejected, ValueError):
    """A configuration update (or loaded value) that breaks a rule; nothing changed."""

    def __init__(self, path: str, value: object, rule: str, *, source: str | None = None) -> None:
        self.path = path
        self.value = value
        self.rule = rule
        self.source = source
        """Where the value came from, when not from code (``"the environment variable X"``)."""
        super().__init__(path, value, rule)

    def __str__(self) -> str:
        origin = f" (from {self.source})" if self.source else ""
        return (
            f"cannot set {self.path or 'the configuration'} to {self.value!r}{origin}: {self.rule}"
        )


class ConfigUpdateTimeoutError(TrioscopeError, trio.TooSlowError):
    """An update not acknowledged before the caller's deadline: it was withdrawn
    and will never be applied."""

    def __init__(self, path: str, value: object, timeout_s: float) -> None:
        self.path = path
        self.value = value
        self.timeout_s = timeout_s
        self.applied = False
        super().__init__(
            f"update of {path or 'the configuration'} to {value!r} was not acknowledged "
            f"within {timeout_s:g} s (the config server was away or busy); it was withdrawn "
            "and will not be applied: retry later or give a longer timeout_s"
        )


class EventRejected(Rejected, ValueError):
    """An event (or a batch, because of one event) that the store refused; nothing stored."""

    def __init__(self, reason: str, *, index: int | None = None, event: object = None) -> None:
        self.reason = reason
        self.index = index
        self.event = event
        where = f"event {index} of the batch" if index is not None else "event"
        tail = "; nothing in the batch was stored" if index is not None else ""
        super().__init__(f"{where} rejected: {reason}{tail}")


class EventBufferFullError(TrioscopeError, trio.WouldBlock):
    """The client's write buffer (used while the store restarts) is full; counted as overflow."""

    def __init__(self, capacity: int, overflowed: int) -> None:
        self.capacity = capacity
        self.overflowed = overflowed
        super().__init__(
            f"the event write buffer is full ({capacity} events waiting for the store to come "
            f"back; {overflowed} refused so far): use `await events.store(...)` to wait, "
            "or raise events.client_buffer"
        )


class SubscriptionOverflowError(TrioscopeError):
    """A subscriber too slow for its buffer was cut off; it missed what came after."""

    def __init__(self, what: str, delivered: int, buffer: int) -> None:
        self.what = what
        self.delivered = delivered
        self.buffer = buffer
        super().__init__(
            f"subscription to {what} cut off after {delivered} items: its buffer of {buffer} "
            "was full when the next one came (the subscriber is too slow); subscribe again, "
            "with a larger buffer or a faster consumer"
        )


class EventQueryRejected(Rejected, ValueError):
    """A query with arguments the store cannot answer (a bad order, a negative limit...).

    Raised by the client functions before anything is sent, and by the store's
    handlers (which never crash on a caller's mistake); the store keeps running.
    """


class IncompatibleDatabaseError(TrioscopeError, RuntimeError):
    """A file that `SQLiteBackend` cannot use as is: written by a newer version, or not its own.

    Nothing in the file was changed.
    """

    def __init__(self, path: str, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"cannot open event database {path!r}: {reason}")
