"""RedisLease (one acquisition) and _Turn (a task's place in the local queue)."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Protocol, final

import anyio

from .._errors import MutexReleaseError
from ._errors import LockLostError


def _drift_s(lease_s: float) -> float:
    """The clock-drift margin taken off every lease: 1% of it plus 2 ms."""
    return lease_s / 100 + 0.002


@final
class _Turn:
    """A task's place in the local queue: one task of a process goes to the server."""

    __slots__ = ("event", "label", "lease", "owner", "renewed", "scope", "task")

    def __init__(self, owner: object, label: str) -> None:
        # The acquiring task, kept alive for as long as the turn: a lease from
        # acquire() may outlive its task, and a new task must not get its id (the
        # re-entry check and the deadlock walk compare ids).
        self.owner = owner
        self.task = id(owner)
        self.label = label
        self.lease: RedisLease | None = None  # set once granted at the server
        self.event = anyio.Event()  # set when the turn is handed to this waiter
        # While queued: the scope of the wait, whose deadline a grant may bring
        # forward to the new lease's end (so that a stalled holder is noticed).
        self.scope: anyio.CancelScope | None = None
        # Set by hold(): the lease is renewed while its body runs, so the turn ends
        # only when the body does (the deadlock walk relies on that).
        self.renewed = False


class _LeaseOwner(Protocol):
    """What a lease needs of the lock that granted it (RedisMutex, RedisSemaphore)."""

    name: str
    _drift_s: float  # taken off every lease: see _drift_s()
    _renew_s: float  # how often hold() renews
    _lost: int  # counter of leases found lost

    async def _renew(self, lease: RedisLease, limit_s: float | None = None) -> bool: ...

    async def _release(self, token: str) -> bool: ...

    def _end_turn(self, turn: _Turn) -> None: ...


@final
class RedisLease:
    """One acquisition of a :class:`RedisMutex` or a permit of a :class:`RedisSemaphore`.

    It holds the acquisition's token, its fence and its lease.

    ``await lease.release()`` (or ``await lease()``) releases it, with the same
    shape as :class:`~anyio_mutex.AsyncMutex`'s release function, but awaited.

    :ivar fence: the fencing token, strictly increasing per lock name across clients
    :ivar label: the owner label of this acquisition
    :ivar lost: ``True`` once the lease is known to be lost
    """

    __slots__ = (
        "__weakref__",
        "_expires_at",
        "_mutex",
        "_reason",
        "_released",
        "_token",
        "_turn",
        "fence",
        "label",
        "lost",
    )

    def __init__(
        self,
        mutex: _LeaseOwner,
        turn: _Turn | None,
        token: str,
        fence: int,
        label: str,
        expires_at: float,
    ) -> None:
        self._mutex = mutex
        self._turn = turn  # this process's local turn, while it is ours (mutex only)
        self._token = token  # what a release or a renewal must show the server
        self.fence = fence
        self.label = label
        self.lost = False
        self._reason = ""  # why it was lost
        self._released = False
        self._expires_at = expires_at  # local, monotonic: no later than the server's

    @property
    def expires_at(self) -> float:
        """When the lease ends at the latest, on ``anyio.current_time()``'s clock.

        Measured from when the grant (or the last renewal) was *sent*, so it is never
        later than the server's own expiry, whatever the network delay. A grant won
        after waiting ran at the server when a release woke the waiter, later than
        it was sent (right behind the waiter's BLPOP): it is placed on this clock
        from an earlier try's sending plus the time the server's clock says passed
        since (less 1%), never earlier than its own sending nor later than its
        answer's arrival.
        """
        return self._expires_at

    @property
    def valid_until(self) -> float:
        """:attr:`expires_at` minus the clock-drift margin (1% of the lease + 2 ms).

        ``hold()`` cancels its body at this time unless a renewal was confirmed.
        """
        return self._expires_at - self._mutex._drift_s

    async def renew(self) -> None:
        """Extend the lease by its lock's ``lease_ms`` from now.

        :raises LockLostError: if the lease is no longer held
        :raises LockUnavailableError: if Redis cannot be reached in time
        """
        if not await self._mutex._renew(self):
            self._mark_lost("the key no longer holds this lease at renewal")

    def _lose(self, reason: str) -> None:
        if not self.lost:
            self.lost = True
            self._reason = reason
            self._mutex._lost += 1

    def _mark_lost(self, reason: str) -> None:
        self._lose(reason)
        raise LockLostError(self._mutex.name, self.label, self.fence, reason)

    async def release(self) -> None:
        """Release the lock: an atomic compare-and-delete, safe under cancellation.

        It runs shielded from cancellation with its own short deadline, so a cancelled
        body still frees the key at once.

        :raises LockLostError: if the lease had been lost (the key is left untouched)
        :raises MutexReleaseError: if this lease was already released
        :raises LockUnavailableError: if Redis cannot be reached in time (the key then
            expires with its lease)
        """
        if self._released:
            raise MutexReleaseError(
                self._mutex.name,
                self.label,
                reason="this acquisition was already released",
            )
        self._released = True
        released = False
        try:
            with anyio.CancelScope(shield=True):
                released = await self._mutex._release(self._token)
        finally:
            # Our turn may have been given to the next local waiter already, when
            # the lease ran out: then it is theirs, and stays so.
            if self._turn is not None:
                self._mutex._end_turn(self._turn)
        if not released:
            self._mark_lost("the key no longer held this lease at release")

    def __call__(self) -> Awaitable[None]:
        """Release the lock (the same as :meth:`release`)."""
        return self.release()

    def __repr__(self) -> str:
        state = "lost" if self.lost else "released" if self._released else "held"
        return f"<RedisLease {self._mutex.name!r} fence={self.fence} {self.label!r} {state}>"
