"""RedisMutex and its statistics."""

from __future__ import annotations

import contextlib
import math
import secrets
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, TypeVar, final

import anyio
import anyio.lowlevel
import coredis

from .._errors import MutexReentryError, MutexTimeoutError
from .._validation import check_callable, check_label, check_timeout_ms
from ._checks import _check_lease_ms, _check_ms
from ._client import _call, _check_client
from ._errors import LockLostError, LockUnavailableError
from ._lease import RedisLease, _drift_s, _Turn
from ._scripts import (
    _ACQUIRE,
    _MIN_BLOCK_S,
    _OWNER,
    _RELEASE,
    _RENEW,
    _SERVER_TICK_S,
    _WAKE_TTL_MS,
)

T = TypeVar("T")


def _label_of(value: str) -> str:
    """The owner label in a lock key's value ("<token>:<fence>:<label>")."""
    token, _, rest = value.partition(":")
    fence, colon, label = rest.partition(":")
    if colon and len(token) == 32 and fence.isdigit():
        with contextlib.suppress(ValueError):
            int(token, 16)
            return label
    shown = value if len(value) <= 60 else value[:57] + "..."
    return f"(not an anyio_mutex lock: {shown!r})"


@final
@dataclass(frozen=True)
class RedisMutexStatistics:
    """A snapshot of one :class:`RedisMutex` object's counters (this process only).

    :ivar int total_acquisitions: successful acquisitions
    :ivar int contended_acquisitions: successful acquisitions that had to wait
    :ivar int timeouts: acquisitions that gave up because ``timeout_ms`` ran out
    :ivar float longest_wait_ms: the longest wait of a successful acquisition
    :ivar int renewals: successful lease renewals
    :ivar int lost: leases found lost (by renewal or by release)
    :ivar int tasks_waiting: tasks of this process waiting to acquire
    """

    total_acquisitions: int
    contended_acquisitions: int
    timeouts: int
    longest_wait_ms: float
    renewals: int
    lost: int
    tasks_waiting: int


@final
class RedisMutex:
    """An exclusive lock shared by every client of one Redis or Valkey server.

    The :class:`~anyio_mutex.AsyncMutex` API across processes: ``acquire()`` returns a
    :class:`RedisLease`, and ``hold()`` and ``with_lock()`` also renew the lease while
    their body runs, cancelling the body with :class:`LockLostError` if it is lost.
    ``timeout_ms`` bounds the real wait on the event loop's monotonic clock.

    Waiting does not poll in a loop: a waiter blocks on a wake-up list that each
    release pushes to, so a hand-off takes a few round trips. It also blocks no longer
    than the holder's remaining lease (a crashed holder is noticed when its lease
    ends) or ``poll_ms`` at most. Tasks of one process queue locally first, so each
    process has at most one waiter per mutex at the server, holding one connection:
    fairness is per process, not per task. A local turn ends at release or when its
    lease runs out, whichever comes first. Re-entry by the holding task raises
    :class:`~anyio_mutex.MutexReentryError` at once.

    :param client: a connected ``coredis.Redis`` (used inside ``async with client:``)
    :param name: the lock's name
    :param key_prefix: prepended to every key of this lock, so that an ACL pattern
        such as ``~app:*`` can cover them. The keys are ``<key_prefix>{<name>}:lock``
        (the holder's ``<token>:<fence>:<label>``, with the lease as its TTL),
        ``...:fence`` (the last fence), ``...:wake`` (a list each release pushes to)
        and ``...:released:<token>`` (a marker that lives ``2 * op_timeout_ms``);
        the hash tag ``{<name>}`` keeps them in one cluster slot.
    :param lease_ms: how long a grant lasts without renewal
    :param label: a name shown in errors and the default owner label
    :param renew_ms: how often ``hold()`` renews (default: a third of the lease)
    :param poll_ms: the longest a waiter blocks before trying again
    :param op_timeout_ms: the deadline of each Redis round trip
    """

    __slots__ = (
        "__weakref__",
        "_acquisitions",
        "_client",
        "_contended",
        "_drift_s",
        "_keys",
        "_lease_ms",
        "_longest_wait",
        "_lost",
        "_marker_ms",
        "_op_timeout_s",
        "_poll_s",
        "_queue",
        "_renew_s",
        "_renewals",
        "_scripts",
        "_tag",
        "_timeouts",
        "_turn",
        "_waiting",
        "label",
        "name",
    )

    def __init__(
        self,
        client: coredis.Redis[Any],
        name: str,
        *,
        lease_ms: float = 10_000,
        key_prefix: str = "",
        label: str = "redis-mutex",
        renew_ms: float | None = None,
        poll_ms: float = 1000,
        op_timeout_ms: float = 2000,
    ) -> None:
        _check_client(client)
        if not isinstance(name, str) or not name:
            raise ValueError(f"name must be a non-empty str, got {name!r}")
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
        self._client = client
        self.name = name
        self.label = label
        self._lease_ms = int(lease)
        self._renew_s = (renew if renew is not None else lease / 3) / 1000
        self._poll_s = poll / 1000
        self._op_timeout_s = op / 1000
        self._tag = tag = key_prefix + "{" + name + "}"
        self._keys = (f"{tag}:lock", f"{tag}:fence", f"{tag}:wake")
        # How long a release's marker lives: a client's retry comes within one call.
        self._marker_ms = max(1, int(2 * op))
        self._scripts = (
            client.register_script(_ACQUIRE),
            client.register_script(_RELEASE),
            client.register_script(_RENEW),
            client.register_script(_OWNER),
        )
        self._drift_s = _drift_s(self._lease_ms / 1000)
        # One task per process goes to the server (the turn); the others queue here.
        # A turn ends at release, or when its lease runs out locally: the lease is
        # the truth in this process as in any other.
        self._turn: _Turn | None = None
        self._queue: deque[_Turn] = deque()
        self._waiting = 0
        self._acquisitions = self._contended = self._timeouts = 0
        self._renewals = self._lost = 0
        self._longest_wait = 0.0

    async def _call(
        self, what: str, request: Callable[[], Awaitable[T]], extra_s: float = 0.0
    ) -> T:
        return await _call(self.name, what, self._op_timeout_s + extra_s, request)

    async def acquire(
        self, *, timeout_ms: float | None = None, label: str | None = None
    ) -> RedisLease:
        """Acquire the lock and return its lease; release it with ``await lease()``.

        The lease is not renewed: use :meth:`hold` for work that may outlast it.

        :param timeout_ms: give up after this many milliseconds; ``None`` or
            ``math.inf`` waits forever, ``0`` tries once
        :param label: the owner label of this acquisition (defaults to the mutex's)
        :raises MutexTimeoutError: if ``timeout_ms`` ran out (with the real wait and
            the holder's label, local or remote)
        :raises MutexReentryError: if the calling task holds this lock already (its
            lease has not run out): waiting would only let that lease expire
        :raises LockUnavailableError: if Redis cannot be reached or refuses
            (:class:`LockRefusedError`); nothing is held then
        """
        timeout_s = check_timeout_ms(timeout_ms)
        check_label(label)
        label = self.label if label is None else label
        task = anyio.get_current_task().id
        current = self._turn
        if current is not None and current.task == task and not self._ran_out(current):
            # Waiting for our own lease would only let it expire: fail at once.
            raise MutexReentryError(self.name, self._turn_label(current))
        start = anyio.current_time()
        deadline = None if timeout_s is None else start + timeout_s
        turn = _Turn(task, label)
        self._waiting += 1
        try:
            await self._acquire_local(turn, start, deadline, timeout_ms)
            try:
                lease, contended = await self._acquire_remote(
                    turn, label, start, deadline, timeout_ms
                )
            except BaseException:
                self._end_turn(turn)
                raise
        finally:
            self._waiting -= 1
        waited = anyio.current_time() - start
        self._acquisitions += 1
        if contended:
            self._contended += 1
        self._longest_wait = max(self._longest_wait, waited)
        return lease

    def _ran_out(self, turn: _Turn) -> bool:
        # A turn whose lease has run out on our clock no longer holds anything.
        lease = turn.lease
        return lease is not None and anyio.current_time() >= lease.expires_at

    @staticmethod
    def _turn_label(turn: _Turn) -> str:
        return turn.lease.label if turn.lease is not None else turn.label

    def _end_turn(self, turn: _Turn) -> None:
        """Hand the local turn on to the next waiter, if ``turn`` still has it."""
        if self._turn is not turn:
            return  # already ended (its lease ran out and a waiter took over)
        if self._queue:
            self._turn = self._queue.popleft()
            self._turn.event.set()
        else:
            self._turn = None

    async def _acquire_local(
        self,
        turn: _Turn,
        start: float,
        deadline: float | None,
        timeout_ms: float | None,
    ) -> None:
        current = self._turn
        if current is not None and self._ran_out(current):
            self._end_turn(current)  # its lease is over: no longer anyone's turn
        if self._turn is None and not self._queue:
            self._turn = turn
            return
        self._queue.append(turn)
        try:
            while not turn.event.is_set():
                # Wake at our deadline, or when the local holder's lease runs out.
                current = self._turn
                wake = math.inf if deadline is None else deadline
                if current is not None and current.lease is not None:
                    if anyio.current_time() >= current.lease.expires_at:
                        self._end_turn(current)
                        continue
                    wake = min(wake, current.lease.expires_at)
                try:
                    with anyio.CancelScope(deadline=wake) as turn.scope:
                        await turn.event.wait()
                finally:
                    turn.scope = None
                if turn.event.is_set():
                    break
                if deadline is not None and anyio.current_time() >= deadline:
                    await anyio.lowlevel.checkpoint_if_cancelled()  # theirs wins
                    self._timeouts += 1
                    holder = self._turn
                    owner = (
                        None
                        if holder is None
                        else holder.lease.label
                        if holder.lease is not None
                        else await self._quiet_owner()
                    )
                    raise MutexTimeoutError(
                        (anyio.current_time() - start) * 1000,
                        timeout_ms=timeout_ms,
                        label=self.name,
                        owner=owner,
                    )
        except BaseException:
            if turn.event.is_set():
                self._end_turn(turn)  # handed the turn as we left: pass it on
            else:
                self._queue.remove(turn)
            raise

    async def _quiet_owner(self) -> str | None:
        # The local turn is at the server, waiting for a holder elsewhere: ask.
        owner = None
        with anyio.CancelScope(shield=True):
            with contextlib.suppress(LockUnavailableError):
                owner = await self.owner()
        return owner

    async def _acquire_remote(
        self,
        turn: _Turn,
        label: str,
        start: float,
        deadline: float | None,
        timeout_ms: float | None,
    ) -> tuple[RedisLease, bool]:
        token = secrets.token_hex(16)
        lock, fence, wake = self._keys
        acquire_script = self._scripts[0]
        contended = False
        while True:
            sent_at = anyio.current_time()
            # Shielded: a grant whose answer we never read would be held by no one.
            with anyio.CancelScope(shield=True):
                granted: int
                number: int
                try:
                    granted, number = await self._call(
                        "acquire",
                        lambda: acquire_script(
                            keys=[lock, fence], args=[token, self._lease_ms, label]
                        ),
                    )
                except BaseException:
                    # No answer, a refusal, or a native Task.cancel() (which the
                    # shield does not stop). The grant may have happened with its
                    # answer lost: give it back (by token: it cannot touch anyone
                    # else's), so a failed acquisition leaves nothing held. If that
                    # fails too, the key expires with its lease.
                    with contextlib.suppress(LockUnavailableError):
                        await self._release(token)
                    raise
            if granted:
                lease = RedisLease(
                    self,
                    turn,
                    token,
                    int(number),
                    label,
                    sent_at + self._lease_ms / 1000,
                )
                try:
                    await anyio.lowlevel.checkpoint_if_cancelled()
                except BaseException:
                    # Cancelled as the grant arrived: give it back. If Redis is gone
                    # the key expires with its lease; the cancellation still wins.
                    with (
                        anyio.CancelScope(shield=True),
                        contextlib.suppress(LockUnavailableError),
                    ):
                        await self._release(token)
                    raise
                turn.lease = lease
                for waiter in self._queue:  # wake them when this lease runs out
                    if waiter.scope is not None:
                        waiter.scope.deadline = min(
                            waiter.scope.deadline, lease.expires_at
                        )
                return lease, contended
            contended = True
            now = anyio.current_time()
            if deadline is not None and now >= deadline:
                owner = await self.owner()
                self._timeouts += 1
                raise MutexTimeoutError(
                    (now - start) * 1000,
                    timeout_ms=timeout_ms,
                    label=self.name,
                    owner=owner,
                )
            # Block until a release wakes us, the holder's lease ends, or poll_ms.
            block = self._poll_s if number < 0 else min(number / 1000, self._poll_s)
            if deadline is not None and deadline - now <= block + _SERVER_TICK_S:
                # The server times blocking calls out on its own tick (100 ms at the
                # default hz=10). Block there only until a tick before our deadline,
                # wait out the rest here, then try once more: exact, and no cancelled
                # BLPOP (which would cost the client a reconnect).
                block = deadline - now - _SERVER_TICK_S
                if block < _MIN_BLOCK_S:
                    await anyio.sleep(deadline - now)
                    continue
            await self._call(
                "wait",
                lambda: self._client.blpop([wake], timeout=max(block, _MIN_BLOCK_S)),  # noqa: B023
                extra_s=block + _SERVER_TICK_S,
            )

    async def _release(self, token: str) -> bool:
        lock, _, wake = self._keys
        release_script = self._scripts[1]
        result: int = await self._call(
            "release",
            lambda: release_script(
                keys=[lock, wake, f"{self._tag}:released:{token}"],
                args=[token, _WAKE_TTL_MS, self._marker_ms],
            ),
        )
        return bool(result)

    async def _renew(self, lease: RedisLease, limit_s: float | None = None) -> bool:
        # limit_s: the answer is of no use after this long (the lease has ended).
        renew_script = self._scripts[2]
        sent_at = anyio.current_time()
        timeout_s = self._op_timeout_s if limit_s is None else limit_s
        result: int = await _call(
            self.name,
            "renew",
            max(0.0, min(self._op_timeout_s, timeout_s)),
            lambda: renew_script(
                keys=[self._keys[0]], args=[lease._token, self._lease_ms]
            ),
        )
        if result:
            lease._expires_at = sent_at + self._lease_ms / 1000
            self._renewals += 1
        return bool(result)

    async def _keep_alive(self, lease: RedisLease, body: anyio.CancelScope) -> None:
        # Renews until cancelled. The body's scope has the lease's own deadline (minus
        # the drift margin): each confirmed renewal moves it, so with no answer the
        # body is cancelled in time whatever the network does. A "not yours" answer
        # cancels it at once.
        interval = self._renew_s
        while True:
            await anyio.sleep(interval)
            remaining = lease.valid_until - anyio.current_time()
            try:
                renewed = await self._renew(lease, remaining)
            except LockUnavailableError:  # no answer in time, or a refusal
                # Try again while the lease lasts; the deadline stops us otherwise.
                interval = max(min(self._renew_s, remaining / 4), _MIN_BLOCK_S)
                continue
            if renewed:
                body.deadline = lease.valid_until
                interval = self._renew_s
                continue
            lease._lose("renewal found the key no longer holding this lease")
            body.cancel()
            return

    @asynccontextmanager
    async def hold(
        self, *, timeout_ms: float | None = None, label: str | None = None
    ) -> AsyncIterator[RedisLease]:
        """Hold the lock for the body of ``async with``, renewing the lease meanwhile.

        Renewal runs in a task group of the caller's own. If it finds the key stolen,
        deleted or expired, the body is cancelled and :class:`LockLostError` is
        raised, never just logged. If no renewal is confirmed in time (a partition, a
        stalled server), the body is cancelled the same way no later than
        :attr:`RedisLease.valid_until`: the lease's end on this process's clock, less
        a drift margin of 1% of the lease plus 2 ms. (A body that never reaches a
        checkpoint cannot be cancelled, though.) On exit the lease is released
        (shielded, with its own deadline), also when the body was cancelled.

        An exception raised by the body (or a cancellation) leaves exactly as raised,
        never wrapped in an ``ExceptionGroup``; it wins over a failure to release.

        :raises MutexTimeoutError: if ``timeout_ms`` ran out before the lock was free
        :raises MutexReentryError: if the calling task holds this lock already
        :raises LockLostError: if the lease was lost while the body ran
        :raises LockUnavailableError: if Redis cannot be reached or refuses
        """
        lease = await self.acquire(timeout_ms=timeout_ms, label=label)
        body_error: BaseException | None = None
        try:
            async with anyio.create_task_group() as tg:
                tg.cancel_scope.deadline = lease.valid_until
                tg.start_soon(self._keep_alive, lease, tg.cancel_scope)
                try:
                    yield lease
                except anyio.get_cancelled_exc_class():
                    raise  # ours (lease lost) stops at the group; others leave as is
                except BaseException as exc:
                    # Kept out of the group, which would wrap it in an ExceptionGroup;
                    # re-raised below as the very same object.
                    body_error = exc
                finally:
                    tg.cancel_scope.cancel()  # stop renewing
        except BaseException:
            # Cancelled from outside: free the key, and the cancellation still wins.
            await self._end_hold(lease, quiet=True)
            raise
        if (
            tg.cancel_scope.cancelled_caught
            and not lease.lost
            and anyio.current_time() >= lease.valid_until
        ):
            lease._lose(
                "no renewal was confirmed before the lease's deadline "
                f"(less a {self._drift_s * 1000:g} ms drift margin)"
            )
        try:
            await self._end_hold(lease, quiet=body_error is not None)
            if body_error is not None:
                raise body_error
        finally:
            body_error = None  # no reference cycle through the traceback

    async def _end_hold(self, lease: RedisLease, *, quiet: bool) -> None:
        # quiet: the body raised, and its exception wins over any release failure.
        if not (lease.lost or quiet):
            await lease.release()
            return
        if lease.lost and anyio.current_time() >= lease.valid_until:
            # Ended by its deadline: the key is gone or about to be, and the server
            # did not answer in time; asking again would only delay the exit.
            lease._released = True
            self._end_turn(lease._turn)
        else:
            # Safe to try: the compare-and-delete never touches a new holder's key.
            with contextlib.suppress(LockLostError, LockUnavailableError):
                await lease.release()
        if lease.lost and not quiet:
            raise LockLostError(self.name, lease.label, lease.fence, lease._reason)

    async def with_lock(
        self,
        fn: Callable[[], Awaitable[T]],
        *,
        timeout_ms: float | None = None,
        label: str | None = None,
    ) -> T:
        """Await ``fn()`` while holding (and renewing) the lock; return its result.

        The same guarantees as :meth:`hold`: ``fn``'s exception leaves as raised,
        and a lost lease cancels ``fn`` and raises :class:`LockLostError`.

        :raises MutexTimeoutError: if ``timeout_ms`` ran out before the lock was free
        :raises LockLostError: if the lease was lost while ``fn`` ran
        :raises LockUnavailableError: if Redis cannot be reached or refuses
        """
        check_callable(fn, "fn")
        async with self.hold(timeout_ms=timeout_ms, label=label):
            return await fn()

    async def locked(self) -> bool:
        """Ask the server whether anyone holds the lock."""
        return bool(
            await self._call("locked", lambda: self._client.exists([self._keys[0]]))
        )

    async def owner(self) -> str | None:
        """Ask the server for the owner label of the current holder, or ``None``.

        A key that does not hold one of this package's leases (another program's
        value, another type) is reported as ``"(not an anyio_mutex lock: ...)"``.
        """
        owner_script = self._scripts[3]
        found: list[Any] = await self._call(
            "owner", lambda: owner_script(keys=[self._keys[0]])
        )
        if not found:
            return None
        is_string, raw = found
        text = raw.decode(errors="replace") if isinstance(raw, bytes) else str(raw)
        if not is_string:
            return f"(not an anyio_mutex lock: a {text} value)"
        return _label_of(text)

    def statistics(self) -> RedisMutexStatistics:
        """Return this object's counters (this process only; no server round trip)."""
        return RedisMutexStatistics(
            total_acquisitions=self._acquisitions,
            contended_acquisitions=self._contended,
            timeouts=self._timeouts,
            longest_wait_ms=self._longest_wait * 1000,
            renewals=self._renewals,
            lost=self._lost,
            tasks_waiting=self._waiting,
        )

    def __repr__(self) -> str:
        return f"<RedisMutex {self.name!r} lease_ms={self._lease_ms}>"
