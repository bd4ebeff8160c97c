"""RedisMutex and its statistics."""

from __future__ import annotations

import contextlib
import math
import secrets
from collections import deque
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any, TypeVar, final

import anyio
import anyio.lowlevel

from .._errors import MutexReentryError, MutexTimeoutError
from .._hold import current_task
from .._validation import check_callable, check_label, check_timeout_ms
from .._waitgraph import (
    Holder,
    LockView,
    enter_wait,
    leave_wait,
    recheck_wait,
    track,
)
from .._waitgraph import registry as _waitgraph
from ._checks import _check_lease_ms, _check_ms
from ._client import _adapt, _call, _Client, _hash_tag
from ._errors import LockUnavailableError
from ._holding import _hold
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
    release pushes to, its next try pipelined behind the BLPOP, so that the server
    runs it the moment a release wakes it: a hand-off costs one wake-up, not a
    further round trip. It also blocks no longer
    than the holder's remaining lease (a crashed holder is noticed when its lease
    ends) or ``poll_ms`` at most. Tasks of one process queue locally first, so each
    process has at most one waiter per mutex at the server, holding one connection:
    fairness is per process, not per task. A local turn ends at release or when its
    lease runs out, whichever comes first. Re-entry by the holding task raises
    :class:`~anyio_mutex.MutexReentryError` at once.

    :param client: a connected client: ``coredis.Redis`` or ``coredis.RedisCluster``
        (asyncio and trio), or on asyncio ``redis.asyncio.Redis``,
        ``redis.asyncio.RedisCluster`` or ``valkey.asyncio.Valkey``
    :param name: the lock's name
    :param key_prefix: prepended to every key of this lock, so that an ACL pattern
        such as ``~app:*`` can cover them. The keys are ``<key_prefix>{<name>}:lock``
        (the holder's ``<token>:<fence>:<label>``, with the lease as its TTL),
        ``...:fence`` (the last fence), ``...:wake`` (a list each release pushes to)
        and ``...:released:<token>`` (a marker that lives ``2 * op_timeout_ms``);
        the hash tag ``{<name>}`` keeps them in one cluster slot (a ``}`` in the name
        is written ``\\]`` and a ``\\`` as ``\\\\``, so that the tag stays whole).
    :param lease_ms: how long a grant lasts without renewal
    :param label: a name shown in errors and the default owner label
    :param renew_ms: how often ``hold()`` renews (default: a third of the lease)
    :param poll_ms: the longest a waiter blocks before trying again
    :param op_timeout_ms: the deadline of each Redis round trip
    :param wait_replicas: confirm each grant and each renewal on this many replicas
        (``WAIT``) before returning it; ``0`` (the default) does not wait. A grant
        that fewer replicas acknowledge within ``wait_timeout_ms`` is given back and
        :class:`LockUnavailableError` raised. This narrows the window in which a
        failover loses a grant; it is not consensus (see the guide).
    :param wait_timeout_ms: how long ``WAIT`` may take (added to ``op_timeout_ms``)
    :param wait_aof: confirm with ``WAITAOF 1 <wait_replicas>`` instead of ``WAIT``:
        the grant is in the append-only file of this server and of ``wait_replicas``
        replicas (fsynced as their ``appendfsync`` says). Needs Redis or Valkey 7.2+
        with ``appendonly yes`` here (else the server's refusal is raised as
        :class:`LockRefusedError`) and on the replicas that are to count.
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
        "_tag",
        "_timeouts",
        "_turn",
        "_wait",
        "_waiting",
        "label",
        "name",
    )

    def __init__(
        self,
        client: object,
        name: str,
        *,
        lease_ms: float = 10_000,
        key_prefix: str = "",
        label: str = "redis-mutex",
        renew_ms: float | None = None,
        poll_ms: float = 1000,
        op_timeout_ms: float = 2000,
        wait_replicas: int = 0,
        wait_timeout_ms: float = 1000,
        wait_aof: bool = False,
    ) -> None:
        adapted = _adapt(client)
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
        if type(wait_replicas) is not int:
            raise TypeError(f"wait_replicas must be an int, got {wait_replicas!r}")
        if wait_replicas < 0:
            raise ValueError(f"wait_replicas must be >= 0, got {wait_replicas!r}")
        if not isinstance(wait_aof, bool):
            raise TypeError(f"wait_aof must be a bool, got {wait_aof!r}")
        wait_ms = _check_ms(wait_timeout_ms, "wait_timeout_ms")
        assert wait_ms is not None
        if wait_ms == math.inf:
            raise ValueError(
                f"wait_timeout_ms must be finite (WAIT 0 waits forever), "
                f"got {wait_timeout_ms!r}"
            )
        if (wait_replicas or wait_aof) and not adapted.can_wait:
            raise ValueError(
                f"wait_replicas={wait_replicas}, wait_aof={wait_aof} needs a client "
                "that can send WAIT on "
                f"the connection that wrote; a {adapted.family} cluster client "
                "cannot: use coredis.RedisCluster"
            )
        self._client: _Client = adapted
        # (replicas, WAIT's timeout in ms, WAITAOF?), or None: grants not confirmed.
        self._wait = (
            (wait_replicas, max(1, int(wait_ms)), wait_aof)
            if wait_replicas or wait_aof
            else None
        )
        self.name = name
        self.label = label
        self._lease_ms = int(lease)
        self._renew_s = (renew if renew is not None else lease / 3) / 1000
        self._poll_s = poll / 1000
        self._op_timeout_s = op / 1000
        self._tag = tag = key_prefix + _hash_tag(name)
        self._keys = (f"{tag}:lock", f"{tag}:fence", f"{tag}:wake")
        # How long a release's marker lives: a client's retry comes within one call.
        self._marker_ms = max(1, int(2 * op))
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
        track(self)

    async def _call(
        self, what: str, request: Callable[[], Awaitable[T]], extra_s: float = 0.0
    ) -> T:
        return await _call(
            self._client, self.name, what, self._op_timeout_s + extra_s, request
        )

    async def _grant(
        self, token: str, label: str, block_s: float | None = None
    ) -> tuple[int, int, int]:
        """Run the grant script; with ``wait_replicas``, only a confirmed grant counts.

        With ``block_s``, block on the wake-up list first (at most ``block_s``), the
        try pipelined behind the BLPOP on one connection: it runs at the server the
        moment a release wakes us, with no round trip of its own.

        :return: (granted, the fence or the holder's PTTL, the server's clock in
            microseconds when the script ran)
        :raises LockUnavailableError: if the replicas did not acknowledge in time
            (the caller gives the grant back: it may have happened)
        """
        lock, fence, wake = self._keys
        args = (token, self._lease_ms, label)
        if block_s is not None:
            result = await self._call(
                "wait",
                lambda: self._client.blpop_then_script(
                    wake, block_s, _ACQUIRE, (lock, fence, wake), args
                ),
                extra_s=block_s + _SERVER_TICK_S,
            )
        elif self._wait is None:
            result = await self._call(
                "acquire",
                lambda: self._client.script(_ACQUIRE, (lock, fence, wake), args),
            )
        else:
            replicas, wait_ms, aof = self._wait
            result, confirmed = await self._call(
                "acquire",
                lambda: self._client.script_and_wait(
                    _ACQUIRE, (lock, fence, wake), args, replicas, wait_ms, aof
                ),
                extra_s=wait_ms / 1000,
            )
            if not confirmed:
                raise LockUnavailableError(
                    self.name,
                    f"the grant was not acknowledged by {replicas} replica(s)"
                    f"{' and the local AOF' if aof else ''} within {wait_ms} ms",
                )
        granted, number, micros = result
        return int(granted), int(number), int(micros)

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
        owner = current_task()
        current = self._turn
        if (
            current is not None
            and current.owner is owner
            and not self._ran_out(current)
        ):
            # Waiting for our own lease would only let it expire: fail at once.
            raise MutexReentryError(self.name, self._turn_label(current))
        start = anyio.current_time()
        deadline = None if timeout_s is None else start + timeout_s
        turn = _Turn(owner, label)
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
        wait = None
        if _waitgraph.detect:  # raises DeadlockError: see _wg_holders
            wait = enter_wait(
                self,
                None,
                turn.label,
                deadline=math.inf if deadline is None else deadline,
            )
        self._queue.append(turn)
        try:
            woken = False
            while not turn.event.is_set():
                # Wake at our deadline, or when the local holder's lease runs out.
                current = self._turn
                wake = math.inf if deadline is None else deadline
                if current is not None and current.lease is not None:
                    if anyio.current_time() >= current.lease.expires_at:
                        self._end_turn(current)
                        continue
                    wake = min(wake, current.lease.expires_at)
                if woken and wait is not None:
                    # Woken at the holder's old lease expiry (it was renewed) and
                    # waiting on: while woken, walks counted this task as leaving.
                    recheck_wait(wait)
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
                woken = True
        except BaseException:
            if turn.event.is_set():
                self._end_turn(turn)  # handed the turn as we left: pass it on
            else:
                self._queue.remove(turn)
            raise
        finally:
            if wait is not None:
                leave_wait(wait)

    def _wg_holders(self, key: object) -> Sequence[Holder]:
        # A local turn from acquire() ends when its lease runs out: no edge, its
        # waiters are shown by snapshot() but never reported. A turn held by hold()
        # is renewed until its body ends, so its waiters wait for its task.
        turn = self._turn
        if turn is None or not turn.renewed:
            return ()
        return (Holder(turn.task, None, self._turn_label(turn)),)

    def _wg_label(self, key: object) -> str:
        return self.name

    def _wg_locks(self) -> Iterator[LockView]:
        turn = self._turn
        holders = () if turn is None else (Holder(turn.task, None, turn.label),)
        yield LockView("RedisMutex", self.name, self, None, holders)

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
        wake = self._keys[2]
        contended = False
        # Waiting pipelines each try behind its BLPOP (one round trip per wake-up),
        # unless grants are confirmed by WAIT (a round trip of its own) or the
        # client cannot keep the two on one connection (redis-py's cluster).
        pipelined = self._wait is None and self._client.can_pipeline
        block: float | None = None  # None: a plain try, not pipelined
        anchor = (0.0, 0)  # (a local time, the server's clock no earlier than it)
        while True:
            sent_at = anyio.current_time()
            # Bound first: pyright cannot know that a shield swallows nothing.
            granted, number, micros = 0, 0, 0
            try:
                if block is None:
                    # Shielded: a grant whose answer we never read would be held
                    # by no one.
                    with anyio.CancelScope(shield=True):
                        granted, number, micros = await self._grant(token, label)
                else:
                    # Not shielded: a cancellation must not wait out the BLPOP.
                    # The pipelined try may then have granted: given back below.
                    granted, number, micros = await self._grant(token, label, block)
            except BaseException:
                # No answer, a refusal, a cancellation while pipelined, or a native
                # Task.cancel() (which the shield does not stop). The grant may have
                # happened with its answer lost: give it back (by token: it cannot
                # touch anyone else's), so a failed acquisition leaves nothing held.
                # If that fails too, the key expires with its lease.
                with (
                    anyio.CancelScope(shield=True),
                    contextlib.suppress(LockUnavailableError),
                ):
                    await self._release(token)
                raise
            if block is None:
                anchor = (sent_at, micros)  # the script ran after we sent it
            else:
                sent_at = self._granted_at(anchor, sent_at, micros)
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
            block = None
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
            wait = self._poll_s if number < 0 else min(number / 1000, self._poll_s)
            if deadline is not None and deadline - now <= wait + _SERVER_TICK_S:
                # The server times blocking calls out on its own tick (100 ms at the
                # default hz=10). Block there only until a tick before our deadline,
                # wait out the rest here, then try once more: exact, and no cancelled
                # BLPOP (which would cost the client a reconnect).
                wait = deadline - now - _SERVER_TICK_S
                if wait < _MIN_BLOCK_S:
                    await anyio.sleep(deadline - now)
                    continue
            wait = max(wait, _MIN_BLOCK_S)
            if pipelined:
                # A grant behind a BLPOP is placed on our clock from the anchor,
                # counting the server's time since 1% short: an anchor older than
                # a lease would cut the lease by more than its drift margin covers,
                # so a plain try (which re-anchors) goes first then.
                if now - anchor[0] <= self._lease_ms / 1000:
                    block = wait
                continue
            await self._call(
                "wait",
                lambda: self._client.blpop(wake, wait),  # noqa: B023
                extra_s=wait + _SERVER_TICK_S,
            )

    @staticmethod
    def _granted_at(anchor: tuple[float, int], sent_at: float, micros: int) -> float:
        """When a pipelined try ran, on our clock, no later than it really did.

        It ran after the BLPOP in front of it returned: some time between its sending
        and its answer. The server's clock says how long after the anchor (a plain
        try, which ran after we sent it) that was; counted 1% short, for a server
        clock that runs fast, and never before the pipeline was sent. A server clock
        that says more time passed than did here, beyond what the lease's drift
        margin (1% + 2 ms) absorbs, stepped forward: it is not trusted, and the grant
        is placed at its sending.
        """
        local, server = anchor
        now = anyio.current_time()
        elapsed = (micros - server) / 1_000_000
        if elapsed > (now - local) * 1.01 + 0.002:
            return sent_at
        return min(max(sent_at, local + elapsed * 0.99), now)

    async def _release(self, token: str) -> bool:
        lock, _, wake = self._keys
        result = await self._call(
            "release",
            lambda: self._client.script(
                _RELEASE,
                (lock, wake, f"{self._tag}:released:{token}"),
                (token, _WAKE_TTL_MS, self._marker_ms),
            ),
        )
        return bool(int(result))

    async def _renew(self, lease: RedisLease, limit_s: float | None = None) -> bool:
        # limit_s: the answer is of no use after this long (the lease has ended).
        sent_at = anyio.current_time()
        bound_s = self._op_timeout_s
        if self._wait is not None:
            bound_s += self._wait[1] / 1000
        timeout_s = bound_s if limit_s is None else min(bound_s, limit_s)
        keys = (self._keys[0],)
        args = (lease._token, self._lease_ms)
        if self._wait is None:
            result = await _call(
                self._client,
                self.name,
                "renew",
                max(0.0, timeout_s),
                lambda: self._client.script(_RENEW, keys, args),
            )
        else:
            replicas, wait_ms, aof = self._wait
            result, confirmed = await _call(
                self._client,
                self.name,
                "renew",
                max(0.0, timeout_s),
                lambda: self._client.script_and_wait(
                    _RENEW, keys, args, replicas, wait_ms, aof
                ),
            )
            if not confirmed:
                # Not lost (the key may be ours), but not confirmed either: the
                # lease's deadline stays where the last confirmed renewal put it.
                raise LockUnavailableError(
                    self.name,
                    f"the renewal was not acknowledged by {replicas} replica(s)"
                    f"{' and the local AOF' if aof else ''} within {wait_ms} ms",
                )
            result = int(result)
        if int(result):
            lease._expires_at = sent_at + self._lease_ms / 1000
            self._renewals += 1
        return bool(result)

    def hold(
        self, *, timeout_ms: float | None = None, label: str | None = None
    ) -> AbstractAsyncContextManager[RedisLease]:
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
        return _hold(lambda: self.acquire(timeout_ms=timeout_ms, label=label))

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
            await self._call("locked", lambda: self._client.exists(self._keys[0]))
        )

    async def owner(self) -> str | None:
        """Ask the server for the owner label of the current holder, or ``None``.

        A key that does not hold one of this package's leases (another program's
        value, another type) is reported as ``"(not an anyio_mutex lock: ...)"``.
        """
        found: list[Any] = await self._call(
            "owner", lambda: self._client.script(_OWNER, (self._keys[0],))
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
