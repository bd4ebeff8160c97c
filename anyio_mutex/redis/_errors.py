"""The errors of the Redis layer (public through ``anyio_mutex.redis``)."""

from __future__ import annotations

from .._errors import MutexError


class LockLostError(MutexError, RuntimeError):
    """Raised when a Redis lease was lost: expired, stolen or deleted.

    ``hold()`` cancels its body and raises this when renewal finds the lease gone; a
    release after the lease was lost raises it too, without touching the key.

    :ivar name: the lock's name
    :ivar label: the owner label of the lost acquisition
    :ivar fence: its fencing token
    :ivar reason: what was observed
    """

    _positional = ("name", "label", "fence", "reason")

    def __init__(self, name: str, label: str, fence: int, reason: str) -> None:
        self.name = name
        self.label = label
        self.fence = fence
        self.reason = reason
        super().__init__(
            f"Lock {name!r} held as {label!r} (fence {fence}) was lost: {reason}"
        )


class LockUnavailableError(MutexError, ConnectionError):
    """Raised when the Redis server cannot be reached or does not answer in time.

    Raised ``from`` the client's own error. Nothing is granted when this is raised
    by an acquisition.

    :ivar name: the lock's name
    :ivar detail: what failed, in the client's or the server's words
    """

    _positional = ("name", "detail")

    def __init__(self, name: str, detail: str) -> None:
        self.name = name
        self.detail = detail
        super().__init__(f"Lock {name!r}: Redis unavailable: {detail}")


class LockRefusedError(LockUnavailableError):
    """Raised when the Redis server refuses a command: ``OOM``, ``NOPERM``, ``READONLY``...

    A :class:`LockUnavailableError` (so one ``except`` covers both) whose ``detail``
    quotes the server's own words. Raised ``from`` the client's error. Nothing is
    granted when this is raised by an acquisition.

    :ivar name: the lock's name
    :ivar detail: the command and the server's reply
    """
