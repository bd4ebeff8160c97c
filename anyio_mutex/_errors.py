"""Exceptions raised by anyio_mutex.

Every error shares the base :class:`MutexError` and also subclasses the builtin that
anyio raises for the same situation, so ``except TimeoutError`` and ``except
RuntimeError`` keep working. Each error builds its own message from structured fields,
so the same misuse reads the same on asyncio and on trio.
"""

from __future__ import annotations

from typing import final


class MutexError(Exception):
    """Base class of every exception raised by anyio_mutex."""


@final
class MutexTimeoutError(MutexError, TimeoutError):
    """Raised when an acquisition's own ``timeout_ms`` runs out.

    Only the lock's own deadline raises this; an enclosing ``fail_after`` or any other
    cancellation passes through unchanged.

    :ivar waited_ms: how long the caller really waited, in milliseconds
    :ivar timeout_ms: the timeout the caller asked for
    :ivar label: the label of the lock
    :ivar owner: the label of the holder when the caller gave up (``None`` if unknown)
    """

    def __init__(
        self,
        waited_ms: float,
        *,
        timeout_ms: float | None = None,
        label: str | None = None,
        owner: str | None = None,
    ) -> None:
        self.waited_ms = waited_ms
        self.timeout_ms = timeout_ms
        self.label = label
        self.owner = owner
        message = f"Mutex acquisition timed out after {waited_ms:.0f}ms"
        details = []
        if timeout_ms is not None:
            details.append(f"timeout_ms={timeout_ms:g}")
        if label is not None:
            details.append(f"lock {label!r}")
        if owner is not None:
            details.append(f"held by {owner!r}")
        if details:
            message += f" ({', '.join(details)})"
        super().__init__(message)

    def __reduce__(self) -> tuple[object, ...]:
        return _rebuild_timeout, (
            self.waited_ms,
            self.timeout_ms,
            self.label,
            self.owner,
        )


def _rebuild_timeout(
    waited_ms: float, timeout_ms: float | None, label: str | None, owner: str | None
) -> MutexTimeoutError:
    return MutexTimeoutError(waited_ms, timeout_ms=timeout_ms, label=label, owner=owner)


@final
class MutexReleaseError(MutexError, RuntimeError):
    """Raised when a lock is released by a task that does not hold it, or twice.

    Nothing changes when it is raised: the lock stays with its holder.

    :ivar label: the label of the lock
    :ivar owner: the label of the current holder, or ``None`` if the lock is free
    """

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
    """

    def __init__(self, label: str, owner: str | None) -> None:
        self.label = label
        self.owner = owner
        held = f" (held as {owner!r})" if owner is not None else ""
        super().__init__(
            f"Lock {label!r} is already held by the current task{held}; "
            "it is not re-entrant"
        )


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
