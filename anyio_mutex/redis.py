"""The mutex and the cache refresh on Redis or Valkey, across processes and machines.

Needs the ``redis`` extra (``pip install 'anyio_mutex[redis]'``): the client is
`coredis <https://coredis.readthedocs.io>`_ 6.x, which is built on anyio, so this
module runs unchanged on asyncio and trio. ``import anyio_mutex`` never imports it.

Guarantees and their limits:

- Every acquisition gets a lease (there is no lease-less lock) and a random token
  that lives in the acquisition's :class:`RedisLease`, never on the shared mutex.
  A release is an atomic compare-and-delete: it never touches another holder's key.
- A lease is a timing assumption. If the holder stalls longer than the lease (a GC
  pause, a lost network, a stopped VM), the key expires and another client may
  acquire while the first still believes it holds it. ``hold()`` renews the lease and
  cancels its body with :class:`LockLostError` when renewal fails, which narrows the
  window but cannot close it. Where two holders at once would corrupt data, pass
  :attr:`RedisLease.fence` to the protected resource and have it reject any fence
  lower than one it has seen: fencing tokens strictly increase per lock name.
- One Redis server is one point of failure: this is not Redlock. With replication,
  a failover can lose a just-granted lock.
"""

from __future__ import annotations

import contextlib
import json
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Final, Generic, TypeVar, final

import anyio
import anyio.lowlevel

try:
    import coredis
    import coredis.exceptions
except ImportError as exc:  # pragma: no cover - exercised in a subprocess by the tests
    raise ImportError(
        "anyio_mutex.redis needs coredis: pip install 'anyio_mutex[redis]'"
    ) from exc

from ._errors import MutexError, MutexReleaseError, MutexTimeoutError
from ._refresh import _UNSET, RefreshCache, _Expiring
from ._validation import check_callable, check_label, check_seconds, check_timeout_ms

__all__ = [
    "LockLostError",
    "LockUnavailableError",
    "RedisLease",
    "RedisMutex",
    "RedisMutexStatistics",
    "RedisRefreshCache",
]

T = TypeVar("T")
V = TypeVar("V")

# KEYS: lock, fence. ARGV: token, lease ms, label.
# Grants and mints the fencing token in one step, or reports the holder's PTTL.
_ACQUIRE: Final = """
if redis.call('EXISTS', KEYS[1]) == 1 then
  return {0, redis.call('PTTL', KEYS[1])}
end
local fence = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], ARGV[1] .. ':' .. fence .. ':' .. ARGV[3], 'PX', ARGV[2])
return {1, fence}
"""
# KEYS: lock, wake. ARGV: the holder's value, wake-key ms.
# Compare-and-delete, then wake one waiter (BLPOP serves the longest-blocked first).
_RELEASE: Final = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1], KEYS[2])
  redis.call('RPUSH', KEYS[2], '1')
  redis.call('PEXPIRE', KEYS[2], ARGV[2])
  return 1
end
return 0
"""
# KEYS: lock. ARGV: the holder's value, lease ms. Renewal never touches the fence.
_RENEW: Final = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""
# KEYS: value. Returns {} when missing, else {value, pttl}: one atomic round trip.
_READ: Final = """
local v = redis.call('GET', KEYS[1])
if not v then return {} end
return {v, redis.call('PTTL', KEYS[1])}
"""
_WAKE_TTL_MS: Final = 5000
_MIN_BLOCK_S: Final = 0.01  # BLPOP's timeout 0 would mean "forever"
_SERVER_TICK_S: Final = 0.1  # 1 / hz: how late a server-side blocking timeout may fire


class LockLostError(MutexError, RuntimeError):
    """Raised when a Redis lease was lost: expired, stolen or deleted.

    ``hold()`` cancels its body and raises this when renewal finds the lease gone; a
    release after the lease was lost raises it too, without touching the key.

    :ivar name: the lock's name
    :ivar label: the owner label of the lost acquisition
    :ivar fence: its fencing token
    :ivar reason: what was observed
    """

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
    """

    def __init__(self, name: str, detail: str) -> None:
        self.name = name
        super().__init__(f"Lock {name!r}: Redis unavailable: {detail}")


async def _call(
    name: str, what: str, timeout_s: float, request: Callable[[], Awaitable[T]]
) -> T:
    """One Redis round trip with its own deadline; client failures become ours."""
    try:
        with anyio.fail_after(timeout_s):
            return await request()
    except TimeoutError as exc:
        raise LockUnavailableError(
            name, f"{what} got no answer within {timeout_s * 1000:.0f} ms"
        ) from exc
    except (coredis.exceptions.ConnectionError, OSError) as exc:
        raise LockUnavailableError(name, f"{what} failed: {exc}") from exc


def _check_lease_ms(lease_ms: object) -> float:
    lease = check_seconds(lease_ms, "lease_ms", allow_zero=False)
    assert lease is not None
    if lease < 1 or lease == float("inf"):
        raise ValueError(f"lease_ms must be a finite number >= 1, got {lease_ms!r}")
    return lease


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
class RedisLease:
    """One acquisition of a :class:`RedisMutex`: its token, its fence and its lease.

    ``await lease.release()`` (or ``await lease()``) releases it, with the same
    shape as :class:`~anyio_mutex.AsyncMutex`'s release function, but awaited.

    :ivar fence: the fencing token, strictly increasing per lock name across clients
    :ivar label: the owner label of this acquisition
    :ivar lost: ``True`` once the lease is known to be lost
    """

    __slots__ = (
        "_expires_at",
        "_mutex",
        "_released",
        "_value",
        "fence",
        "label",
        "lost",
    )

    def __init__(
        self, mutex: RedisMutex, value: str, fence: int, label: str, expires_at: float
    ) -> None:
        self._mutex = mutex
        self._value = value  # token:fence:label, exactly as stored
        self.fence = fence
        self.label = label
        self.lost = False
        self._released = False
        self._expires_at = expires_at  # local, monotonic: no later than the server's

    @property
    def expires_at(self) -> float:
        """When the lease ends at the latest, on ``anyio.current_time()``'s clock."""
        return self._expires_at

    async def renew(self) -> None:
        """Extend the lease by the mutex's ``lease_ms`` from now.

        :raises LockLostError: if the lease is no longer held
        :raises LockUnavailableError: if Redis cannot be reached in time
        """
        if not await self._mutex._renew(self):
            self._mark_lost("the key no longer holds this lease at renewal")

    def _mark_lost(self, reason: str) -> None:
        if not self.lost:
            self.lost = True
            self._mutex._lost += 1
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
        try:
            with anyio.CancelScope(shield=True):
                released = await self._mutex._release(self)
        finally:
            self._mutex._local.release()
        if not released:
            self._mark_lost("the key no longer held this lease at release")

    def __call__(self) -> Awaitable[None]:
        """Release the lock (the same as :meth:`release`)."""
        return self.release()

    def __repr__(self) -> str:
        state = "lost" if self.lost else "released" if self._released else "held"
        return f"<RedisLease {self._mutex.name!r} fence={self.fence} {self.label!r} {state}>"


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
    process has at most one waiter per mutex at the server, holding one connection.

    :param client: a connected ``coredis.Redis`` (used inside ``async with client:``)
    :param name: the lock's name; its keys are ``{name}:lock``, ``{name}:fence`` and
        ``{name}:wake`` (hash-tagged, so they share a cluster slot)
    :param lease_ms: how long a grant lasts without renewal
    :param label: a name shown in errors and the default owner label
    :param renew_ms: how often ``hold()`` renews (default: a third of the lease)
    :param poll_ms: the longest a waiter blocks before trying again
    :param op_timeout_ms: the deadline of each Redis round trip
    """

    __slots__ = (
        "_acquisitions",
        "_client",
        "_contended",
        "_keys",
        "_lease_ms",
        "_local",
        "_longest_wait",
        "_lost",
        "_op_timeout_s",
        "_poll_s",
        "_renew_s",
        "_renewals",
        "_scripts",
        "_timeouts",
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
        label: str = "redis-mutex",
        renew_ms: float | None = None,
        poll_ms: float = 1000,
        op_timeout_ms: float = 2000,
    ) -> None:
        if not isinstance(client, coredis.Redis):
            raise TypeError(f"client must be a coredis.Redis, got {client!r}")
        if not isinstance(name, str) or not name:
            raise ValueError(f"name must be a non-empty str, got {name!r}")
        if not isinstance(label, str):
            raise TypeError(f"label must be a str, got {label!r}")
        # check_seconds validates any duration; these are in milliseconds.
        lease = _check_lease_ms(lease_ms)
        renew = check_seconds(renew_ms, "renew_ms", allow_none=True, allow_zero=False)
        if renew is not None and renew >= lease:
            raise ValueError(
                f"renew_ms must be < lease_ms ({lease_ms!r}), got {renew_ms!r}"
            )
        poll = check_seconds(poll_ms, "poll_ms", allow_zero=False)
        op = check_seconds(op_timeout_ms, "op_timeout_ms", allow_zero=False)
        assert poll is not None
        assert op is not None
        self._client = client
        self.name = name
        self.label = label
        self._lease_ms = int(lease)
        self._renew_s = (renew if renew is not None else lease / 3) / 1000
        self._poll_s = poll / 1000
        self._op_timeout_s = op / 1000
        tag = "{" + name + "}"
        self._keys = (f"{tag}:lock", f"{tag}:fence", f"{tag}:wake")
        self._scripts = (
            client.register_script(_ACQUIRE),
            client.register_script(_RELEASE),
            client.register_script(_RENEW),
        )
        # One waiter per process at the server; not task-owned, so a lease may be
        # released by another task than the one that acquired it.
        self._local = anyio.Semaphore(1)
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
        :raises MutexTimeoutError: if ``timeout_ms`` ran out (with the real wait)
        :raises LockUnavailableError: if Redis cannot be reached; nothing is held then
        """
        timeout_s = check_timeout_ms(timeout_ms)
        check_label(label)
        label = self.label if label is None else label
        start = anyio.current_time()
        deadline = None if timeout_s is None else start + timeout_s
        self._waiting += 1
        try:
            await self._acquire_local(start, deadline, timeout_ms)
            try:
                lease, contended = await self._acquire_remote(
                    label, start, deadline, timeout_ms
                )
            except BaseException:
                self._local.release()
                raise
        finally:
            self._waiting -= 1
        waited = anyio.current_time() - start
        self._acquisitions += 1
        if contended:
            self._contended += 1
        self._longest_wait = max(self._longest_wait, waited)
        return lease

    async def _acquire_local(
        self, start: float, deadline: float | None, timeout_ms: float | None
    ) -> None:
        local = self._local
        if local.value or deadline is None:
            await local.acquire()
            return
        with anyio.CancelScope(deadline=deadline) as scope:
            await local.acquire()
        if scope.cancelled_caught:
            await anyio.lowlevel.checkpoint_if_cancelled()  # an enclosing cancel wins
            self._timeouts += 1
            raise MutexTimeoutError(
                (anyio.current_time() - start) * 1000,
                timeout_ms=timeout_ms,
                label=self.name,
                owner="(a task of this process)",
            )

    async def _acquire_remote(
        self, label: str, start: float, deadline: float | None, timeout_ms: float | None
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
                granted, number = await self._call(
                    "acquire",
                    lambda: acquire_script(
                        keys=[lock, fence], args=[token, self._lease_ms, label]
                    ),
                )
            if granted:
                lease = RedisLease(
                    self,
                    f"{token}:{number}:{label}",
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
                        await self._release(lease)
                    raise
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

    async def _release(self, lease: RedisLease) -> bool:
        lock, _, wake = self._keys
        release_script = self._scripts[1]
        result: int = await self._call(
            "release",
            lambda: release_script(
                keys=[lock, wake], args=[lease._value, _WAKE_TTL_MS]
            ),
        )
        return bool(result)

    async def _renew(self, lease: RedisLease) -> bool:
        renew_script = self._scripts[2]
        sent_at = anyio.current_time()
        result: int = await self._call(
            "renew",
            lambda: renew_script(
                keys=[self._keys[0]], args=[lease._value, self._lease_ms]
            ),
        )
        if result:
            lease._expires_at = sent_at + self._lease_ms / 1000
            self._renewals += 1
        return bool(result)

    async def _keep_alive(self, lease: RedisLease, body: anyio.CancelScope) -> None:
        # Renews until cancelled; on loss, cancels the body and leaves lease.lost set.
        interval = self._renew_s
        while True:
            await anyio.sleep(interval)
            try:
                if await self._renew(lease):
                    interval = self._renew_s
                    continue
            except Exception:  # unreachable, or any client error: not an answer
                remaining = lease.expires_at - anyio.current_time()
                if remaining > self._op_timeout_s:
                    interval = min(self._renew_s, remaining / 4)
                    continue  # retry while the lease surely still holds
            if not lease.lost:
                lease.lost = True
                self._lost += 1
            body.cancel()
            return

    @asynccontextmanager
    async def hold(
        self, *, timeout_ms: float | None = None, label: str | None = None
    ) -> AsyncIterator[RedisLease]:
        """Hold the lock for the body of ``async with``, renewing the lease meanwhile.

        Renewal runs in a task group of the caller's own. If it fails, or finds the key
        stolen, deleted or expired, the body is cancelled and :class:`LockLostError`
        is raised, never just logged. On exit the lease is released (shielded, with
        its own deadline), also when the body was cancelled.

        :raises MutexTimeoutError: if ``timeout_ms`` ran out before the lock was free
        :raises LockLostError: if the lease was lost while the body ran
        :raises LockUnavailableError: if Redis cannot be reached
        """
        lease = await self.acquire(timeout_ms=timeout_ms, label=label)
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._keep_alive, lease, tg.cancel_scope)
                try:
                    yield lease
                finally:
                    tg.cancel_scope.cancel()  # stop renewing
        finally:
            if lease.lost:
                # Safe to try: the compare-and-delete never touches a new holder's key.
                with contextlib.suppress(LockLostError, LockUnavailableError):
                    await lease.release()
                raise LockLostError(
                    self.name, lease.label, lease.fence, "renewal found the lease gone"
                )
            await lease.release()

    async def with_lock(
        self,
        fn: Callable[[], Awaitable[T]],
        *,
        timeout_ms: float | None = None,
        label: str | None = None,
    ) -> T:
        """Await ``fn()`` while holding (and renewing) the lock; return its result."""
        check_callable(fn, "fn")
        async with self.hold(timeout_ms=timeout_ms, label=label):
            return await fn()

    async def locked(self) -> bool:
        """Ask the server whether anyone holds the lock."""
        return bool(
            await self._call("locked", lambda: self._client.exists([self._keys[0]]))
        )

    async def owner(self) -> str | None:
        """Ask the server for the owner label of the current holder, or ``None``."""
        value = await self._call("owner", lambda: self._client.get(self._keys[0]))
        if value is None:
            return None
        text = value.decode() if isinstance(value, bytes) else str(value)
        return text.split(":", 2)[2]

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


@final
class RedisRefreshCache(Generic[V]):
    """:class:`~anyio_mutex.RefreshCache` across processes: one fetch per key per expiry.

    Inside each process, callers of a key share one flight (as in ``RefreshCache``).
    That flight's leader looks for the value in Redis. If it is missing, it takes a
    :class:`RedisMutex` for the key, looks again (another process may have refreshed
    it while we waited), and only then calls the fetcher and stores the value in Redis
    with the TTL. So N processes refreshing one key call the fetcher once per expiry.
    Each process also keeps the value locally until its Redis TTL ends.

    A fetch that outlasts ``lease_ms`` may let a second process fetch too (the lease
    is not renewed during a fetch): choose a lease longer than your slowest fetch.

    :param client: a connected ``coredis.Redis``
    :param prefix: prepended to every key in Redis
    :param ttl_s: default freshness (``None``: never expires)
    :param max_entries: the local LRU bound
    :param timeout_ms: default limit on waiting for another caller's or process's fetch
    :param lease_ms: the lease of each key's refresh lock
    :param dumps: turns a value into ``str`` or ``bytes`` for Redis (default JSON)
    :param loads: turns it back
    """

    __slots__ = (
        "_client",
        "_dumps",
        "_fetches",
        "_lease_ms",
        "_loads",
        "_local",
        "_op_timeout_s",
        "_prefix",
        "_read_script",
        "_remote_hits",
        "_timeout_ms",
        "_ttl_s",
    )

    def __init__(
        self,
        client: coredis.Redis[Any],
        *,
        prefix: str = "anyio_mutex:cache:",
        ttl_s: float | None = 60.0,
        max_entries: int = 1024,
        timeout_ms: float | None = 5000,
        lease_ms: float = 10_000,
        dumps: Callable[[Any], str | bytes] = json.dumps,
        loads: Callable[[Any], Any] = json.loads,
    ) -> None:
        if not isinstance(client, coredis.Redis):
            raise TypeError(f"client must be a coredis.Redis, got {client!r}")
        if not isinstance(prefix, str):
            raise TypeError(f"prefix must be a str, got {prefix!r}")
        check_callable(dumps, "dumps")
        check_callable(loads, "loads")
        _check_lease_ms(lease_ms)  # the same rule RedisMutex applies, but at the door
        self._local: RefreshCache[str, V] = RefreshCache(
            ttl_s=ttl_s, max_entries=max_entries, timeout_ms=timeout_ms, label="refresh"
        )
        self._client = client
        self._prefix = prefix
        self._ttl_s = ttl_s
        self._timeout_ms = timeout_ms
        self._lease_ms = lease_ms
        self._dumps = dumps
        self._loads = loads
        self._fetches = 0
        self._remote_hits = 0
        self._op_timeout_s = 2.0
        self._read_script = client.register_script(_READ)

    async def get_or_refresh(
        self,
        key: str,
        fetcher: Callable[[], Awaitable[V]],
        ttl_s: float | None = _UNSET,
        *,
        timeout_ms: float | None = _UNSET,
        label: str | None = None,
    ) -> V:
        """Return the fresh value of ``key``, fetching it once across all processes.

        :raises MutexTimeoutError: if ``timeout_ms`` ran out waiting for a fetch
        :raises LockUnavailableError: if Redis cannot be reached
        :raises Exception: whatever the fetch raised (never cached)
        """
        if not isinstance(key, str):
            raise TypeError(f"key must be a str, got {key!r}")
        check_callable(fetcher, "fetcher")
        ttl = self._ttl_s if ttl_s is _UNSET else ttl_s
        wait_ms = self._timeout_ms if timeout_ms is _UNSET else timeout_ms
        return await self._local.get_or_refresh(
            key,
            lambda: self._shared_fetch(key, fetcher, ttl, wait_ms, label),  # type: ignore[arg-type,return-value]
            ttl,
            timeout_ms=wait_ms,
            label=label,
        )

    async def _read(self, redis_key: str) -> _Expiring | None:
        found: list[Any] = await _call(
            redis_key,
            "read",
            self._op_timeout_s,
            lambda: self._read_script(keys=[redis_key]),
        )
        if not found:
            return None
        raw, pttl = found
        self._remote_hits += 1
        return _Expiring(self._loads(raw), None if pttl < 0 else pttl / 1000)

    async def _shared_fetch(
        self,
        key: str,
        fetcher: Callable[[], Awaitable[V]],
        ttl_s: float | None,
        timeout_ms: float | None,
        label: str | None,
    ) -> _Expiring:
        redis_key = self._prefix + key
        found = await self._read(redis_key)
        if found is not None:
            return found
        mutex = RedisMutex(
            self._client,
            f"{redis_key}:refresh",
            lease_ms=self._lease_ms,
            label="refresh",
        )
        lease = await mutex.acquire(
            timeout_ms=timeout_ms,
            label=label if label is not None else f"refresh:{key}",
        )
        try:
            found = await self._read(
                redis_key
            )  # refreshed by another process meanwhile?
            if found is not None:
                return found
            value = await fetcher()
            self._fetches += 1
            data = self._dumps(value)
            await _call(
                redis_key,
                "store",
                self._op_timeout_s,
                lambda: self._client.set(
                    redis_key,
                    data,
                    px=None if ttl_s is None else max(1, int(ttl_s * 1000)),
                ),
            )
            return _Expiring(value, ttl_s)
        finally:
            # A lost lease is fine here: the value is good; at worst another process
            # fetched it too.
            with contextlib.suppress(LockLostError):
                await lease.release()

    async def invalidate(self, key: str) -> None:
        """Drop ``key`` here and in Redis (other processes keep their local copy until
        its TTL ends)."""
        self._local.invalidate(key)
        redis_key = self._prefix + key
        await _call(
            redis_key,
            "invalidate",
            self._op_timeout_s,
            lambda: self._client.delete([redis_key]),
        )

    @property
    def fetches(self) -> int:
        """How many times this process called a fetcher."""
        return self._fetches

    @property
    def remote_hits(self) -> int:
        """How many local misses were answered from Redis without fetching."""
        return self._remote_hits

    @property
    def local(self) -> RefreshCache[str, V]:
        """The process-local cache in front of Redis."""
        return self._local
