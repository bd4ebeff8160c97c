"""Exceptions raised by anyio_mutex.

Every error shares the base :class:`MutexError` and also subclasses the builtin that
anyio raises for the same situation, so ``except TimeoutError`` and ``except
RuntimeError`` keep working. Each error builds its own message from structured fields,
so the same misuse reads the same on asyncio and on trio.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final, final


class MutexError(Exception):
    """Base class of every exception raised by anyio_mutex.

    Every subclass keeps its constructor's arguments as attributes and pickles with
    them (across ``anyio.to_process``, multiprocessing and log shippers).
    """

    # Keyword fields that __reduce__ passes back to the constructor; set per subclass.
    _fields: tuple[str, ...] = ()
    # Positional fields, in constructor order.
    _positional: tuple[str, ...] = ()

    def __reduce__(self) -> tuple[Any, ...]:
        args = tuple(getattr(self, name) for name in self._positional)
        kwargs = {name: getattr(self, name) for name in self._fields}
        return _rebuild, (type(self), args, kwargs)


def _rebuild(
    cls: type[MutexError], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> MutexError:
    return cls(*args, **kwargs)


@final
class MutexTimeoutError(MutexError, TimeoutError):
    """Raised when an acquisition's own ``timeout_ms`` runs out.

    Only the lock's own deadline raises this; an enclosing ``fail_after`` or any other
    cancellation passes through unchanged.

    :ivar waited_ms: how long the caller really waited, in milliseconds
    :ivar timeout_ms: the timeout the caller asked for
    :ivar label: the label of the lock
    :ivar owner: the label of the holder when the caller gave up (``None`` if unknown)
    :ivar waiting_for: what was waited for when it was not a plain lock (for example
        ``"the fetch of key 'user:1'"``), or ``None``
    """

    _positional = ("waited_ms",)
    _fields = ("timeout_ms", "label", "owner", "waiting_for")

    def __init__(
        self,
        waited_ms: float,
        *,
        timeout_ms: float | None = None,
        label: str | None = None,
        owner: str | None = None,
        waiting_for: str | None = None,
    ) -> None:
        self.waited_ms = waited_ms
        self.timeout_ms = timeout_ms
        self.label = label
        self.owner = owner
        self.waiting_for = waiting_for
        # The prefix stays the same whatever was waited for: ported code matches on it.
        message = f"Mutex acquisition timed out after {waited_ms:.0f}ms"
        if waiting_for is not None:
            message += f" waiting for {waiting_for}"
        details: list[str] = []
        if timeout_ms is not None:
            details.append(f"timeout_ms={timeout_ms:g}")
        if label is not None:
            details.append(f"lock {label!r}")
        if owner is not None:
            details.append(f"held by {owner!r}")
        if details:
            message += f" ({', '.join(details)})"
        super().__init__(message)


@final
class MutexReleaseError(MutexError, RuntimeError):
    """Raised when a lock is released by a task that does not hold it, or twice.

    Nothing changes when it is raised: the lock stays with its holder.

    :ivar label: the label of the lock
    :ivar owner: the label of the current holder, or ``None`` if the lock is free
    :ivar reason: what was wrong (not locked, another task holds it, already released)
    """

    _positional = ("label", "owner")
    _fields = ("reason",)

    def __init__(self, label: str, owner: str | None, *, reason: str) -> None:
        self.label = label
        self.owner = owner
        self.reason = reason
        super().__init__(f"Cannot release lock {label!r}: {reason}")


@final
class MutexReentryError(MutexError, RuntimeError):
    """Raised when a task tries to acquire a lock it already holds.

    These locks are not re-entrant; waiting would deadlock, so this is raised at once.

    :ivar label: the label of the lock
    :ivar owner: the label of the acquisition that holds it
    :ivar reason: why this acquisition cannot proceed (``"it is not re-entrant"``,
        or what an RWLock upgrade or downgrade would have needed)
    """

    _positional = ("label", "owner")
    _fields = ("reason",)

    def __init__(
        self, label: str, owner: str | None, *, reason: str = "it is not re-entrant"
    ) -> None:
        self.label = label
        self.owner = owner
        self.reason = reason
        held = f" (held as {owner!r})" if owner is not None else ""
        super().__init__(
            f"Lock {label!r} is already held by the current task{held}; {reason}"
        )


@final
class MutexLoopError(MutexError, RuntimeError):
    """Raised when a lock is used where it cannot be: another event loop, or no loop.

    A free lock with no waiters moves to whatever event loop (or backend) uses it
    next, so one module-level lock serves ``anyio.run()`` after ``anyio.run()``, on
    asyncio and trio alike. A lock that is held, or has waiters, in one event loop
    cannot be acquired or released from another one, nor from a thread with no
    event loop (a worker thread): this error says so instead of failing deep inside
    the backend or waiting forever. Nothing changes when it is raised.

    :ivar label: the label of the lock
    :ivar owner: the label of the current holder, or ``None``
    :ivar reason: what was wrong, in words
    """

    _positional = ("label", "owner")
    _fields = ("reason",)

    def __init__(self, label: str, owner: str | None, *, reason: str) -> None:
        self.label = label
        self.owner = owner
        self.reason = reason
        super().__init__(f"Cannot use lock {label!r}: {reason}")


@final
class LockOrderError(MutexError, RuntimeError):
    """Raised by the lock-order checker when an acquisition would invert a known order.

    Holding ``holding`` and asking for ``wanted`` closes a cycle in the order graph:
    somewhere ``wanted`` was taken (directly or through other locks) before
    ``holding``. Two tasks doing both can deadlock. Raised before any waiting.

    :ivar wanted: the label of the lock being acquired
    :ivar holding: the label of the lock held while acquiring it
    :ivar first_seen: where the opposite order was first recorded
    :ivar here: where the inverting acquisition happens
    """

    _fields = ("wanted", "holding", "first_seen", "here")

    def __init__(
        self, *, wanted: str, holding: str, first_seen: str, here: str
    ) -> None:
        self.wanted = wanted
        self.holding = holding
        self.first_seen = first_seen
        self.here = here
        super().__init__(
            f"Lock order inversion: acquiring {wanted!r} while holding {holding!r}, "
            f"but {wanted!r} was taken before {holding!r} earlier "
            f"(first seen: {first_seen}; here: {here})"
        )


class LockOrderWarning(UserWarning):
    """The warning form of :class:`LockOrderError`, with ``mode="warn"``."""


# Reasons shared by every lock, so the same misuse reads the same everywhere.
NOT_LOCKED: Final = "it is not locked"
NOT_HOLDER: Final = (
    "the current task does not hold it; a lock belongs to the task that acquired "
    "it and only that task can release it (to end a hold from another task, signal "
    "the holder, for example with an anyio.Event or by cancelling its scope, and let "
    "it release)"
)
ALREADY_RELEASED: Final = "this acquisition was already released"
NO_EVENT_LOOP: Final = (
    "no event loop is running in this thread (a worker thread?); acquire and "
    "release it in a task of the event loop it is used in"
)
OTHER_LOOP: Final = (
    "it is held or waited for in another event loop; a lock moves to a new event "
    "loop or backend only while it is free and nobody waits for it"
)


@final
@dataclass(frozen=True)
class DeadlockStep:
    """One waiting task of a deadlock cycle.

    :ivar task: the name of the waiting task
    :ivar waits_for: the label of the lock (or fetch) it waits for
    :ivar held_by: the owner label of that lock's holder on the cycle
    :ivar holder_task: the name of that holder's task
    """

    task: str
    waits_for: str
    held_by: str | None
    holder_task: str | None

    def __str__(self) -> str:
        label, holder = self.held_by, self.holder_task
        # The default owner label is the lock's own label, and labels are often task
        # names: a label that repeats one of those says nothing new.
        if label is not None and label not in (self.waits_for, holder):
            held = f"held by {label!r}"
            if holder is not None:
                held += f" (task {holder!r})"
        elif holder is not None:
            held = f"held by task {holder!r}"
        else:
            held = "held" if label is None else f"held by {label!r}"
        return f"task {self.task!r} waits for {self.waits_for!r}, {held}"


@final
class DeadlockError(MutexError, RuntimeError):
    """Raised instead of waiting when the wait would close a cycle of waiting tasks.

    Every task of the cycle waits for a lock held by the next one, and the last holds
    what the first (the current task) already has: none can ever go on. The current
    task is not parked and holds nothing new; the other tasks keep waiting, so once
    the current task lets go of what it holds, they proceed.

    :ivar cycle: the steps of the cycle, the current task first: a tuple of
        :class:`DeadlockStep` with ``task``, ``waits_for``, ``held_by`` and
        ``holder_task``
    """

    _positional = ("cycle",)

    def __init__(self, cycle: tuple[DeadlockStep, ...]) -> None:
        self.cycle = cycle
        super().__init__(
            "Deadlock: waiting would never end: " + "; ".join(map(str, cycle))
        )
