"""RedisSemaphore and its statistics."""

from __future__ import annotations

import contextlib
import math
import secrets
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any, NoReturn, TypeVar, final

import anyio
import anyio.lowlevel

from .._errors import MutexTimeoutError
from .._semaphore import _check_limit
from .._validation import check_label, check_timeout_ms
from ._checks import _check_lease_ms, _check_ms
from ._client import _adapt, _call, _Client, _hash_tag
from ._errors import LockUnavailableError
from ._holding import _hold
from ._lease import RedisLease, _drift_s, _Turn
from ._scripts import _MIN_BLOCK_S, _SERVER_TICK_S
from ._semaphore_scripts import _ACQUIRE, _HOLDERS, _RELEASE, _RENEW

T = TypeVar("T")


def _text(value: bytes | str) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else value


@final
class _Waiter:
    """One acquisition waiting in this process (its ticket lives at the server)."""

    __slots__ = ("event", "left", "parked", "promoted", "token", "woken")

    def __init__(self, token: str) -> None:
        self.token = token  # the acquisition's token: its permit's and its ticket's
        self.event = anyio.Event()  # set to end a park (woken or promoted)
        self.woken = False  # a wake-up came for it: try again at the server
        self.promoted = False  # handed the listening role while parked
        self.parked = False  # waiting on its event, not at the server
        self.left = False  # its ticket was given up already


@final
@dataclass(frozen=True)
class RedisSemaphoreStatistics:
    """A snapshot of one :class:`RedisSemaphore` object's counters (this process only).

    :ivar int limit: the number of permits
    :ivar int total_acquisitions: successful acquisitions
    :ivar int contended_acquisitions: successful acquisitions that had to wait
    :ivar int timeouts: acquisitions that gave up because ``timeout_ms`` ran out
    :ivar float longest_wait_ms: the longest wait of a successful acquisition
    :ivar int renewals: successful lease renewals
    :ivar int lost: leases found lost (by renewal or by release)
    :ivar int tasks_waiting: tasks of this process waiting to acquire
    """

    limit: int
    total_acquisitions: int
    contended_acquisitions: int
    timeouts: int
    longest_wait_ms: float
    renewals: int
    lost: int
    tasks_waiting: int


@final
class RedisSemaphore:
    """A counting semaphore shared by every client of one Redis or Valkey server.

    At most ``limit`` permits are held at once across all processes ("at most 3
    workers render at once"). :meth:`acquire` returns a :class:`RedisLease` for one
    permit (its own token and fence; ``await lease()`` gives it back); :meth:`hold`
    also renews the lease while its body runs and cancels the body with
    :class:`LockLostError` if the permit is lost. A process that dies loses its
    permits when their leases end; they then go to waiters.

    The server counts only unexpired permits, on its own clock, in one script that
    grants only while fewer than ``limit`` are held: no client can push the count
    over ``limit``, whatever it does. Every client of a name must use the same
    ``limit``: each grant checks against the caller's.

    Fairness: every acquisition, each task's own, takes a ticket at the server when
    its first try arrives there. A permit goes to a ticket only when fewer tickets
    are ahead of it than permits are free, so a free permit is kept for the longest
    waiters; and a ticket may be granted ahead of an earlier one (both had a permit
    kept for them, the later one's try came first) only while that earlier one has
    been passed fewer than ``limit - 1`` times. So no waiter is ever overtaken by
    more than ``limit - 1`` grants to callers that arrived after it, while its ticket
    lives. A ticket lives while its process keeps waiting: it is refreshed at least
    every ``poll_ms`` and dropped ``2 * poll_ms + 2 * op_timeout_ms + 200`` ms after
    its last refresh (a waiting process that died, or stalled that long: on its
    return it queues again at the back). Until then a dead waiter's ticket keeps at
    most one permit idle, and once passed ``limit - 1`` times holds back the callers
    behind it too.

    Waiting does not poll: a release (or the sweep of an expired permit) pushes a
    wake-up to the waiters that may now take a permit, through one list per
    ``RedisSemaphore`` object. One waiting task of the object blocks on that list
    and passes wake-ups on to the others, so an object holds at most one blocked
    connection whatever the number of its waiting tasks. That task also wakes when
    the next permit or ticket expires, or after ``poll_ms`` at most, and tries again.

    :param client: a connected client, as :class:`RedisMutex` takes: ``coredis.Redis``
        or ``coredis.RedisCluster`` (asyncio and trio), or on asyncio
        ``redis.asyncio.Redis``, ``redis.asyncio.RedisCluster`` or
        ``valkey.asyncio.Valkey``
    :param name: the semaphore's name
    :param limit: the number of permits, at least 1
    :param lease_ms: how long a permit lasts without renewal
    :param key_prefix: prepended to every key of this semaphore (for ACL patterns
        such as ``~app:*``). The keys are ``<key_prefix>{<name>}:`` followed by
        ``permits``, ``owners``, ``queue``, ``beats``, ``woken``, ``passed``,
        ``fence``, ``wake:<object id>`` and ``released:<token>``; the hash tag
        ``{<name>}`` keeps them in one cluster slot (a ``}`` in the name is written
        ``\\]`` and a ``\\`` as ``\\\\``, so that the tag stays whole).
    :param label: a name shown in errors and the default holder label
    :param renew_ms: how often ``hold()`` renews (default: a third of the lease)
    :param poll_ms: the longest a waiter goes without trying again
    :param op_timeout_ms: the deadline of each Redis round trip
    :raises TypeError: if an argument has the wrong type
    :raises ValueError: if an argument is out of range
    """

    __slots__ = (
        "__weakref__",
        "_acquisitions",
        "_beaten_at",
        "_client",
        "_contended",
        "_drift_s",
        "_fence_key",
        "_id",
        "_keys",
        "_lease_ms",
        "_limit",
        "_listener",
        "_longest_wait",
        "_lost",
        "_marker_ms",
        "_op_timeout_s",
        "_poll_s",
        "_renew_s",
        "_renewals",
        "_tag",
        "_ticket_ms",
        "_timeouts",
        "_waiters",
        "_wake_key",
        "label",
        "name",
    )

    def __init__(
        self,
        client: object,
        name: str,
        *,
        limit: int,
        lease_ms: float = 10_000,
        key_prefix: str = "",
        label: str = "redis-semaphore",
        renew_ms: float | None = None,
        poll_ms: float = 1000,
        op_timeout_ms: float = 2000,
    ) -> None:
        adapted = _adapt(client)
        if not isinstance(name, str) or not name:
            raise ValueError(f"name must be a non-empty str, got {name!r}")
        _check_limit(limit)
        if not isinstance(label, str):
            raise TypeError(f"label must be a str, got {label!r}")
        if not isinstance(key_prefix, str):
            raise TypeError(f"key_prefix must be a str, got {key_prefix!r}")
        lease = _check_lease_ms(lease_ms)
        renew = _check_ms(renew_ms, "renew_ms", allow_none=True)
        if renew is not None and renew >= lease:
            raise ValueError(
                f"renew_ms must be < lease_ms ({lease_ms!r}), got {renew_ms!r}"
            )
        poll = _check_ms(poll_ms, "poll_ms")
        op = _check_ms(op_timeout_ms, "op_timeout_ms")
        assert poll is not None
        assert op is not None
        if poll == math.inf or op == math.inf:
            bad = "poll_ms" if poll == math.inf else "op_timeout_ms"
            raise ValueError(f"{bad} must be finite, got {math.inf!r}")
        self._client: _Client = adapted
        self.name = name
        self.label = label
        self._limit = limit
        self._lease_ms = int(lease)
        self._renew_s = (renew if renew is not None else lease / 3) / 1000
        self._poll_s = poll / 1000
        self._op_timeout_s = op / 1000
        self._tag = tag = key_prefix + _hash_tag(name)
        self._keys = tuple(
            f"{tag}:{part}"
            for part in ("permits", "owners", "queue", "beats", "woken", "passed")
        )
        self._fence_key = f"{tag}:fence"
        # This object's id at the server: its waiters' tickets and wake-up list.
        self._id = secrets.token_hex(8)
        self._wake_key = f"{tag}:wake:{self._id}"
        # A ticket is refreshed at least every poll_ms (plus a blocking call's
        # lateness and a round trip); it is dropped this long after the last refresh.
        self._ticket_ms = int(2 * poll + 2 * op + 200)
        self._marker_ms = max(1, int(2 * op))
        self._drift_s = _drift_s(self._lease_ms / 1000)
        # This object's waiting acquisitions, by token, in arrival order. One of them
        # at a time (the listener) blocks on the wake-up list and wakes the others.
        self._waiters: dict[str, _Waiter] = {}
        self._listener: _Waiter | None = None
        # When the tickets of this object's waiters were last refreshed as a batch.
        self._beaten_at = -math.inf
        self._acquisitions = self._contended = self._timeouts = 0
        self._renewals = self._lost = 0
        self._longest_wait = 0.0

    @property
    def limit(self) -> int:
        """The number of permits."""
        return self._limit

    async def _call(
        self, what: str, request: Callable[[], Awaitable[T]], extra_s: float = 0.0
    ) -> T:
        return await _call(
            self._client, self.name, what, self._op_timeout_s + extra_s, request
        )

    async def acquire(
        self, *, timeout_ms: float | None = None, label: str | None = None
    ) -> RedisLease:
        """Acquire a permit and return its lease; give it back with ``await lease()``.

        The lease is not renewed: use :meth:`hold` for work that may outlast it. A
        task may hold several permits. If cancelled, nothing is left behind: no
        permit, no ticket.

        :param timeout_ms: give up after this many milliseconds; ``None`` or
            ``math.inf`` waits forever, ``0`` tries once (a permit kept for a longer
            waiter is not free to it)
        :param label: the holder label of this permit (defaults to the semaphore's)
        :raises MutexTimeoutError: if ``timeout_ms`` ran out (with the real wait and
            the oldest holder's label)
        :raises LockUnavailableError: if Redis cannot be reached or refuses
            (:class:`LockRefusedError`); nothing is held then
        :return: the permit's :class:`RedisLease`
        """
        timeout_s = check_timeout_ms(timeout_ms)
        check_label(label)
        label = self.label if label is None else label
        await anyio.lowlevel.checkpoint_if_cancelled()
        start = anyio.current_time()
        deadline = None if timeout_s is None else start + timeout_s
        waiter = _Waiter(secrets.token_hex(16))
        self._waiters[waiter.token] = waiter
        try:
            lease, contended = await self._wait_for_permit(
                waiter, label, start, deadline, timeout_ms
            )
        except BaseException:
            # Cancelled, timed out or failed anywhere (also by a native Task.cancel(),
            # which the shields below do not stop): leave the queue, and give back a
            # grant whose answer may have been lost (by token: it cannot touch anyone
            # else's). If Redis is gone, the ticket and the permit expire on their own.
            if not waiter.left:
                with (
                    anyio.CancelScope(shield=True),
                    contextlib.suppress(LockUnavailableError),
                ):
                    await self._leave(waiter.token)
            raise
        finally:
            del self._waiters[waiter.token]
            if self._listener is None:
                self._promote()
        self._acquisitions += 1
        if contended:
            self._contended += 1
        self._longest_wait = max(self._longest_wait, anyio.current_time() - start)
        return lease

    async def _wait_for_permit(
        self,
        waiter: _Waiter,
        label: str,
        start: float,
        deadline: float | None,
        timeout_ms: float | None,
    ) -> tuple[RedisLease, bool]:
        contended = False
        must_try = True
        wake_at = math.inf
        while True:
            if must_try:
                waiter.woken = False
                sent_at = anyio.current_time()
                granted, number = await self._try(waiter.token, label, sent_at)
                if granted:
                    lease = RedisLease(
                        self,
                        None,
                        waiter.token,
                        number,
                        label,
                        sent_at + self._lease_ms / 1000,
                    )
                    # Cancelled as the grant arrived: acquire() gives it back.
                    await anyio.lowlevel.checkpoint_if_cancelled()
                    return lease, contended
                contended = True
                # Try again when the next permit or ticket expires, or after poll_ms.
                wait_s = (
                    self._poll_s if number < 0 else min(number / 1000, self._poll_s)
                )
                wake_at = sent_at + wait_s
                if deadline is not None and anyio.current_time() >= deadline:
                    await self._time_out(waiter, start, timeout_ms)
            must_try = await self._wait(waiter, wake_at, deadline)

    async def _try(self, token: str, label: str, now: float) -> tuple[bool, int]:
        # One try at the server: take a ticket (on the first), refresh it, and be
        # granted a permit if it is this ticket's turn. Due once per poll_ms, any
        # try also refreshes the tickets of this object's other waiters.
        others: list[str] = []
        if now >= self._beaten_at + self._poll_s:
            others = [other for other in self._waiters if other != token]
            self._beaten_at = now
        keys = (*self._keys, self._fence_key)
        args: tuple[str | int, ...] = (
            self._id,
            token,
            self._lease_ms,
            label,
            self._limit,
            self._ticket_ms,
            self._limit - 1,
            self._tag,
            *others,
        )
        # Shielded: a grant whose answer we never read would be held by no one. (If
        # this raises, acquire() gives the permit back.)
        granted: Any = 0
        number: Any = 0
        with anyio.CancelScope(shield=True):  # (pyright: a scope may swallow errors)
            granted, number = await self._call(
                "acquire", lambda: self._client.script(_ACQUIRE, keys, args)
            )
        return bool(int(granted)), int(number)

    async def _wait(
        self, waiter: _Waiter, wake_at: float, deadline: float | None
    ) -> bool:
        """Wait for a reason to try again; ``False``: only made the listener."""
        if waiter.woken:
            return True
        if self._listener is None:
            self._listener = waiter
            try:
                return await self._listen(waiter, wake_at, deadline)
            finally:
                self._listener = None
        waiter.event = anyio.Event()
        waiter.parked = True
        try:
            with anyio.CancelScope(deadline=math.inf if deadline is None else deadline):
                await waiter.event.wait()
        finally:
            waiter.parked = False
        if waiter.promoted and not waiter.woken:
            waiter.promoted = False
            return False
        waiter.promoted = False
        return True  # woken, or our deadline came

    def _promote(self) -> None:
        # The listener left: the longest parked waiter takes over.
        for waiter in self._waiters.values():
            if waiter.promoted:
                return
            if waiter.parked:
                waiter.promoted = True
                waiter.event.set()
                return

    async def _listen(
        self, waiter: _Waiter, wake_at: float, deadline: float | None
    ) -> bool:
        # Block on this object's wake-up list and pass wake-ups on, until one is ours
        # or it is time to try again (wake_at), to refresh the tickets, or give up.
        while True:
            if waiter.woken:
                return True
            now = anyio.current_time()
            until = min(wake_at, self._beaten_at + self._poll_s)
            if deadline is not None:
                until = min(until, deadline)
            block = until - now
            if block <= 0:
                return True
            if deadline is not None and deadline - now <= block + _SERVER_TICK_S:
                # The server times blocking calls out on its own tick: block there
                # only until a tick before our deadline, wait out the rest here (as
                # RedisMutex does: exact, and no cancelled BLPOP).
                block = deadline - now - _SERVER_TICK_S
                if block < _MIN_BLOCK_S:
                    await anyio.sleep(deadline - now)
                    return True
            timeout = max(block, _MIN_BLOCK_S)
            element = await self._call(
                "wait",
                lambda: self._client.blpop(self._wake_key, timeout),  # noqa: B023
                extra_s=timeout + _SERVER_TICK_S,
            )
            if element is None:
                continue
            token = _text(element)
            if token == waiter.token:
                return True
            other = self._waiters.get(token)
            if other is not None:  # else: it gave up meanwhile
                other.woken = True
                other.event.set()

    async def _time_out(
        self, waiter: _Waiter, start: float, timeout_ms: float | None
    ) -> NoReturn:
        await anyio.lowlevel.checkpoint_if_cancelled()  # a cancellation wins
        waiter.left = True
        owner = None
        with anyio.CancelScope(shield=True):
            with contextlib.suppress(LockUnavailableError):
                _, owner = await self._leave(waiter.token, want_owner=True)
        self._timeouts += 1
        raise MutexTimeoutError(
            (anyio.current_time() - start) * 1000,
            timeout_ms=timeout_ms,
            label=self.name,
            owner=owner,
            waiting_for="a permit",
        )

    async def _leave(
        self, token: str, *, want_owner: bool = False
    ) -> tuple[bool, str | None]:
        # Give back the permit of `token` and its ticket, whichever exists.
        keys = (*self._keys, f"{self._tag}:released:{token}")
        args: tuple[str | int, ...] = (
            self._id,
            token,
            self._limit,
            self._limit - 1,
            self._tag,
            self._ticket_ms,
            self._marker_ms,
            "1" if want_owner else "0",
        )
        released, oldest = await self._call(
            "release", lambda: self._client.script(_RELEASE, keys, args)
        )
        return bool(int(released)), None if oldest is None else _text(oldest)

    async def _release(self, token: str) -> bool:
        released, _ = await self._leave(token)
        return released

    async def _renew(self, lease: RedisLease, limit_s: float | None = None) -> bool:
        # limit_s: the answer is of no use after this long (the lease has ended).
        sent_at = anyio.current_time()
        timeout_s = self._op_timeout_s if limit_s is None else limit_s
        result = await _call(
            self._client,
            self.name,
            "renew",
            max(0.0, min(self._op_timeout_s, timeout_s)),
            lambda: self._client.script(
                _RENEW, (self._keys[0],), (lease._token, self._lease_ms)
            ),
        )
        if int(result):
            lease._expires_at = sent_at + self._lease_ms / 1000
            self._renewals += 1
        return bool(result)

    def _end_turn(self, turn: _Turn) -> None:
        """Nothing to do: a semaphore's leases have no local turn."""

    def hold(
        self, *, timeout_ms: float | None = None, label: str | None = None
    ) -> AbstractAsyncContextManager[RedisLease]:
        """Hold a permit for the body of ``async with``, renewing its lease meanwhile.

        The same guarantees as :meth:`RedisMutex.hold`: renewal runs in a task group
        of the caller's own; if it finds the permit gone (expired, deleted), or no
        renewal is confirmed before :attr:`RedisLease.valid_until`, the body is
        cancelled and :class:`LockLostError` raised. On exit the permit is given back
        (shielded, with its own deadline), also when the body was cancelled. An
        exception raised by the body leaves exactly as raised, never wrapped in an
        ``ExceptionGroup``; it wins over a failure to release.

        :raises MutexTimeoutError: if ``timeout_ms`` ran out before a permit was free
        :raises LockLostError: if the permit was lost while the body ran
        :raises LockUnavailableError: if Redis cannot be reached or refuses
        """
        return _hold(lambda: self.acquire(timeout_ms=timeout_ms, label=label))

    async def _holder_values(self) -> list[tuple[int, str]]:
        values: list[bytes | str] = await self._call(
            "holders", lambda: self._client.script(_HOLDERS, self._keys[:2])
        )
        out: list[tuple[int, str]] = []
        for value in values:
            fence, _, label = _text(value).partition(":")
            out.append((int(fence) if fence.isdigit() else 0, label))
        return sorted(out)

    async def holders(self) -> list[str]:
        """Ask the server for the labels of the live permits, oldest grant first."""
        return [label for _, label in await self._holder_values()]

    async def available(self) -> int:
        """Ask the server how many permits are free now (``limit`` less the live ones).

        A free permit may still be kept for a caller that waited longer than yours.
        """
        return max(0, self._limit - len(await self._holder_values()))

    def statistics(self) -> RedisSemaphoreStatistics:
        """Return this object's counters (this process only; no server round trip)."""
        return RedisSemaphoreStatistics(
            limit=self._limit,
            total_acquisitions=self._acquisitions,
            contended_acquisitions=self._contended,
            timeouts=self._timeouts,
            longest_wait_ms=self._longest_wait * 1000,
            renewals=self._renewals,
            lost=self._lost,
            tasks_waiting=len(self._waiters),
        )

    def __repr__(self) -> str:
        return (
            f"<RedisSemaphore {self.name!r} limit={self._limit} "
            f"lease_ms={self._lease_ms} waiting={len(self._waiters)}>"
        )
