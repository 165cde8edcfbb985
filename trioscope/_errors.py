"""The errors trioscope raises, all rooted at `TrioscopeError`.

::

    TrioscopeError
    ├── NoRegistryError                  (also LookupError)
    ├── AlreadyRegisteredError           (also ValueError)
    ├── ServiceUnavailableError
    │   └── _NotRunError                 (private: the message never ran; calls by name retry it)
    ├── ServiceCrashedError
    ├── CallTimeoutError                 (also trio.TooSlowError)
    ├── CallingSelfError                 (also RuntimeError)
    ├── MailboxFullError                 (also trio.WouldBlock)
    ├── StartError
    ├── RestartIntensityExceededError
    ├── MaxChildrenError
    ├── UnknownChildError                (also LookupError)
    ├── ChildStateError                  (also RuntimeError)
    └── SupervisorClosedError            (also RuntimeError)
    Rejected                             (base for handlers' expected failures;
                                          a plain Exception, not a TrioscopeError)

Errors carry the data they are about (``service``, ``child_id``, ``holder``...)
and build their message from it; the message says what happened and what to do.
"""

from __future__ import annotations

import trio


class TrioscopeError(Exception):
    """Base class of every error trioscope itself raises."""

    # Where the crash behind this error began (service, handler, correlation
    # id), for the errors that pass a crash on: ServiceCrashedError to a
    # caller, RestartIntensityExceededError to a parent supervisor.
    _origin: tuple[str, str, str | None] | None = None


class Rejected(Exception):
    """Base for expected failures raised by a service's handler.

    The caller of the handler gets the exception; the service keeps running with
    its state as the handler left it. Subclass it together with a builtin for
    meaning, for example ``class BadAmount(trioscope.Rejected, ValueError)``.
    Any other exception from a handler is a crash.
    """


class NoRegistryError(TrioscopeError, LookupError):
    """No registry is open around the current task."""

    def __init__(self, what: str = "this operation", *, closed: str | None = None) -> None:
        self.what = what
        self.closed = closed
        if closed is not None:
            message = (
                f"{what} needs a registry, but registry {closed!r} around this task has "
                "closed (its async with block exited before the task ended): start the task "
                "inside the block, or open a registry around it"
            )
        else:
            message = (
                f"{what} needs a registry, and none is open around the current task: "
                "wrap the code in `async with trioscope.open_registry():` (or run it under "
                "`trioscope.run(...)`, which opens one)"
            )
        super().__init__(message)


class AlreadyRegisteredError(TrioscopeError, ValueError):
    """A name is already registered in this registry; nothing was changed."""

    def __init__(self, name: str, holder: object, namespace: str | None) -> None:
        self.name = name
        self.holder = holder
        self.namespace = namespace
        where = f"registry {namespace!r}" if namespace is not None else "this registry"
        super().__init__(
            f"name {name!r} is already registered in {where} (held by {holder!r}); "
            "pick another name, or open a nested registry scope to shadow it"
        )


class ServiceUnavailableError(TrioscopeError):
    """The service (or that incarnation of it) is not running."""

    def __init__(self, service: str, reason: str) -> None:
        self.service = service
        self.reason = reason
        super().__init__(f"service {service} is unavailable: {reason}")


class _NotRunError(ServiceUnavailableError):
    """The message was never executed by the incarnation it was sent to."""


class ServiceCrashedError(TrioscopeError):
    """The handler your call ran crashed the service; ``__cause__`` is the original error."""

    def __init__(self, service: str, handler: str) -> None:
        self.service = service
        self.handler = handler
        super().__init__(
            f"service {service} crashed in handler {handler}() while handling this call "
            "(the original error is the __cause__); its supervisor decides whether it restarts"
        )


class CallTimeoutError(TrioscopeError, trio.TooSlowError):
    """A call got no reply within its timeout; a late reply is discarded."""

    def __init__(
        self,
        service: str,
        handler: str,
        timeout: float,
        *,
        longer: str = "ref.with_timeout(seconds)",
    ) -> None:
        self.service = service
        self.handler = handler
        self.timeout = timeout
        super().__init__(
            f"call to {service} {handler}() got no reply within {timeout:g} s; "
            "if the message was still queued it was withdrawn and will not run. "
            f"Use {longer} for a longer budget; a cycle of calls "
            "(A calls B, which calls A) also ends here"
        )


class MailboxFullError(TrioscopeError, trio.WouldBlock):
    """``try_cast`` found the mailbox full; nothing was sent."""

    def __init__(self, service: str, capacity: int) -> None:
        self.service = service
        self.capacity = capacity
        super().__init__(
            f"mailbox of service {service} is full ({capacity}/{capacity}); nothing was sent. "
            "Use `await ref.cast(...)` to wait for space, or give the service a larger mailbox_size"
        )


class StartError(TrioscopeError):
    """A supervised child failed to start; ``__cause__`` is why."""

    def __init__(
        self, child_id: str, supervisor: str, *, stopped: int = 0, call: str | None = None
    ) -> None:
        self.child_id = child_id
        self.supervisor = supervisor
        self.stopped = stopped
        """How many children, started before it, were stopped (when opening)."""
        self.call = call
        """``"start_child"`` or ``"restart_child"`` when one of those failed, else ``None``."""
        if call == "start_child":
            what = " in start_child"
            then = "it was not added, and the other children were not touched"
        elif call is not None:
            what = f" in {call}"
            then = "it stays stopped, and the other children were not touched"
        else:
            what = ""
            if stopped == 0:
                then = "it was the first child, so no other child had started"
            elif stopped == 1:
                then = "the child started before it was stopped"
            else:
                then = "the children started before it were stopped in reverse order"
        super().__init__(
            f"child {child_id!r} of supervisor {supervisor!r} failed to start{what} "
            f"(see the cause); {then}"
        )


class RestartIntensityExceededError(TrioscopeError):
    """A supervisor gave up: too many restarts in too short a time."""

    def __init__(
        self, supervisor: str, child_id: str, max_restarts: int, max_seconds: float
    ) -> None:
        self.supervisor = supervisor
        self.child_id = child_id
        self.max_restarts = max_restarts
        self.max_seconds = max_seconds
        super().__init__(
            f"supervisor {supervisor!r} gave up after child {child_id!r} failed: more than "
            f"{max_restarts} restarts within {max_seconds:g} s (the latest failure is the "
            "__cause__); all its children were stopped"
        )


class MaxChildrenError(TrioscopeError):
    """A dynamic supervisor already holds its ``max_children``."""

    def __init__(self, supervisor: str, max_children: int) -> None:
        self.supervisor = supervisor
        self.max_children = max_children
        super().__init__(
            f"supervisor {supervisor!r} already has its maximum of {max_children} children; "
            "stop one first or open it with a larger max_children"
        )


class UnknownChildError(TrioscopeError, LookupError):
    """No child with that id in this supervisor."""

    def __init__(self, supervisor: str, child_id: str) -> None:
        self.supervisor = supervisor
        self.child_id = child_id
        super().__init__(
            f"supervisor {supervisor!r} has no child {child_id!r}; "
            "which_children() lists the ids it has"
        )


class ChildStateError(TrioscopeError, RuntimeError):
    """The child is not in a state that allows this operation."""

    def __init__(self, supervisor: str, child_id: str, status: str, wanted: str) -> None:
        self.supervisor = supervisor
        self.child_id = child_id
        self.status = status
        super().__init__(f"child {child_id!r} of supervisor {supervisor!r} is {status}; {wanted}")


class SupervisorClosedError(TrioscopeError, RuntimeError):
    """A control call reached a supervisor that is stopping or has stopped."""

    def __init__(self, supervisor: str, call: str, *, stopped: bool) -> None:
        self.supervisor = supervisor
        self.call = call
        self.stopped = stopped
        state = "has stopped" if stopped else "is stopping"
        super().__init__(
            f"supervisor {supervisor!r} {state}: {call} was refused (a stopping supervisor "
            "starts, restarts and terminates nothing more; its children are stopped in order)"
        )


class CallingSelfError(TrioscopeError, RuntimeError):
    """A service called itself (from a handler, ``init`` or ``terminate``): the call could
    never be answered, since a service takes one message at a time (OTP's ``calling_self``)."""

    def __init__(self, service: str, handler: str, caller: str) -> None:
        self.service = service
        self.handler = handler
        self.caller = caller
        super().__init__(
            f"handler {caller}() of service {service} called its own service ({handler}()): "
            "a service takes one message at a time, so the call could never be answered. "
            f"Call the method directly (await self.{handler}(...)), or cast"
        )
