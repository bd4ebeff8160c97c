"""RedisRefreshCache: RefreshCache across processes, and its statistics."""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass
from typing import Any, Generic, NoReturn, TypeVar, final

import anyio
import anyio.abc

from .. import CacheStatistics
from .._refresh import _UNSET, RefreshCache, _check_ttl, _Expiring
from .._validation import (
    check_callable,
    check_hashable,
    check_label,
    check_timeout_ms,
)
from ._checks import _check_lease_ms, _check_ms
from ._client import _adapt, _call, _Client, _our_error
from ._errors import LockLostError, LockUnavailableError
from ._mutex import RedisMutex
from ._scripts import _READ

V = TypeVar("V")


def key_to_str(key: Hashable) -> str:
    """The default key-to-string rule: a ``str`` as it is, anything else by ``repr()``.

    ``repr()`` must then be the same in every process: true of ints, tuples of
    strings and ints, enums with their own repr; not of objects with the default
    repr (it holds a memory address). Note that ``1`` and ``"1"`` share an entry.
    """
    return key if isinstance(key, str) else repr(key)


@final
@dataclass(frozen=True)
class RedisRefreshCacheStatistics:
    """A snapshot of one :class:`RedisRefreshCache`'s counters (this process only).

    :ivar CacheStatistics local: the process-local cache in front of Redis (its
        ``hits`` are local hits, its ``fetches`` are local misses that went to Redis)
    :ivar int fetches: fetcher calls made by this process
    :ivar int fetch_errors: fetcher calls that raised (never cached)
    :ivar int remote_hits: local misses answered from Redis without fetching
    :ivar int remote_misses: local misses that found nothing in Redis
    :ivar int unavailable: operations that failed because Redis could not be
        reached, did not answer in time, or refused
    """

    local: CacheStatistics
    fetches: int
    fetch_errors: int
    remote_hits: int
    remote_misses: int
    unavailable: int


#: A TTL at least this long (about 31,700 years) is stored without an expiry: Redis
#: refuses an expiry whose milliseconds overflow its clock.
_FOREVER_S = 1e12


@final
class RedisRefreshCache(Generic[V]):
    """:class:`~anyio_mutex.RefreshCache` across processes: one fetch per key per expiry.

    Inside each process, callers of a key share one flight (as in ``RefreshCache``).
    That flight's leader looks for the value in Redis. If it is missing, it takes a
    :class:`RedisMutex` for the key, looks again (another process may have refreshed
    it while we waited), and only then calls the fetcher and stores the value in Redis
    with the TTL. So N processes refreshing one key call the fetcher once per expiry.
    Each process also keeps the value locally until its Redis TTL ends, or until
    :meth:`invalidate` is called for its key in any process that runs :meth:`listen`.

    **Keys** may be any hashable: Redis sees ``prefix + key_to_str(key)`` (by default
    a ``str`` as it is, anything else by ``repr()``: see :func:`key_to_str`). The
    key's refresh lock lives under the same prefix (``prefix{<key>:refresh}:lock``...),
    so one ACL pattern covers the cache.

    **Values** cross processes as ``dumps(value)`` and come back as ``loads(data)``
    (JSON by default). Every caller, in the fetching process too, gets
    ``loads(dumps(value))``, so a value JSON cannot represent exactly (a tuple comes
    back as a list; a dataclass or a set does not encode) shows up at once: give such
    values their own ``dumps``/``loads`` (e.g. ``pickle`` if every process is
    trusted).

    A fetch that outlasts ``lease_ms`` may let a second process fetch too (the lease
    is not renewed during a fetch): choose a lease longer than your slowest fetch.

    :param client: a connected client, as :class:`RedisMutex` takes
    :param prefix: prepended to every key in Redis
    :param ttl_s: default freshness (``None``: never expires)
    :param max_entries: the local LRU bound
    :param timeout_ms: default limit on waiting for another caller's or process's
        fetch (``None``: wait as long as it takes)
    :param op_timeout_ms: the deadline of each Redis round trip
    :param lease_ms: the lease of each key's refresh lock
    :param dumps: turns a value into ``str`` or ``bytes`` for Redis (default JSON)
    :param loads: turns it back (it receives ``bytes``, or ``str`` from a client made
        with ``decode_responses=True``)
    :param key_to_str: turns a key into the string Redis sees
    :raises TypeError: if an argument has the wrong type (named in the message)
    :raises ValueError: if a number is out of range (named in the message)
    """

    __slots__ = (
        "__weakref__",
        "_channel",
        "_client",
        "_dumps",
        "_fetch_errors",
        "_fetches",
        "_key_to_str",
        "_lease_ms",
        "_loads",
        "_local",
        "_op_timeout_ms",
        "_op_timeout_s",
        "_prefix",
        "_remote_hits",
        "_remote_misses",
        "_timeout_ms",
        "_ttl_s",
        "_unavailable",
        "_user_client",
    )

    def __init__(
        self,
        client: object,
        *,
        prefix: str = "anyio_mutex:cache:",
        ttl_s: float | None = 60.0,
        max_entries: int = 1024,
        timeout_ms: float | None = 5000,
        op_timeout_ms: float = 2000,
        lease_ms: float = 10_000,
        dumps: Callable[[Any], str | bytes] = json.dumps,
        loads: Callable[[Any], Any] = json.loads,
        key_to_str: Callable[[Any], str] = key_to_str,
    ) -> None:
        adapted = _adapt(client)
        if not isinstance(prefix, str):
            raise TypeError(f"prefix must be a str, got {prefix!r}")
        check_timeout_ms(timeout_ms)
        op = _check_ms(op_timeout_ms, "op_timeout_ms")
        assert op is not None
        _check_lease_ms(lease_ms)  # the same rule RedisMutex applies, but at the door
        check_callable(dumps, "dumps")
        check_callable(loads, "loads")
        check_callable(key_to_str, "key_to_str")
        # Validates ttl_s and max_entries (naming them) before any state is set.
        self._local: RefreshCache[Hashable, V] = RefreshCache(
            ttl_s=ttl_s, max_entries=max_entries, timeout_ms=timeout_ms, label="refresh"
        )
        self._user_client = client  # what the refresh locks are made with
        self._client: _Client = adapted
        self._prefix = prefix
        self._channel = prefix + "invalidations"  # pub/sub: not a key, no slot
        self._ttl_s = _check_ttl(ttl_s)
        self._timeout_ms = timeout_ms
        self._op_timeout_ms = op
        self._op_timeout_s = op / 1000
        self._lease_ms = lease_ms
        self._dumps = dumps
        self._loads = loads
        self._key_to_str = key_to_str
        self._fetches = self._fetch_errors = 0
        self._remote_hits = self._remote_misses = self._unavailable = 0

    def _redis_key(self, key: Hashable) -> str:
        check_hashable(key)  # before any state changes
        text = self._key_to_str(key)
        if not isinstance(text, str):
            raise TypeError(f"key_to_str must return a str, got {text!r} for {key!r}")
        return text

    async def get_or_refresh(
        self,
        key: Hashable,
        fetcher: Callable[[], Awaitable[V]],
        ttl_s: float | None = _UNSET,
        *,
        timeout_ms: float | None = _UNSET,
        label: str | None = None,
    ) -> V:
        """Return the fresh value of ``key``, fetching it once across all processes.

        :param key: any hashable (see the class's key-to-string rule)
        :param fetcher: a zero-argument async callable producing the value
        :param ttl_s: freshness of a value fetched by this call (default: the cache's)
        :param timeout_ms: the longest to wait for another caller's or process's
            fetch (default: the cache's)
        :param label: the owner label of this caller's refresh lock
        :raises MutexTimeoutError: if ``timeout_ms`` ran out waiting for a fetch
        :raises LockUnavailableError: if Redis cannot be reached or refuses
        :raises Exception: whatever the fetch (or ``dumps``) raised (never cached)
        """
        text = self._redis_key(key)
        check_callable(fetcher, "fetcher")
        check_label(label)
        ttl = self._ttl_s if ttl_s is _UNSET else _check_ttl(ttl_s)
        wait_ms = self._timeout_ms if timeout_ms is _UNSET else timeout_ms
        # Local entries are keyed as Redis keys them: one rule in every process.
        return await self._local.get_or_refresh(
            text,
            lambda: self._shared_fetch(text, fetcher, ttl, wait_ms, label),  # type: ignore[arg-type,return-value]  # pyright: ignore[reportArgumentType]
            ttl,
            timeout_ms=wait_ms,
            label=label,
        )

    async def _redis(
        self, redis_key: str, what: str, request: Callable[[], Awaitable[Any]]
    ) -> Any:
        try:
            return await _call(
                self._client, redis_key, what, self._op_timeout_s, request
            )
        except LockUnavailableError:
            self._unavailable += 1
            raise

    async def _read(self, redis_key: str) -> _Expiring | None:
        found: list[Any] = await self._redis(
            redis_key, "read", lambda: self._client.script(_READ, (redis_key,))
        )
        if not found:
            return None
        raw, pttl = found
        pttl = int(pttl)
        return _Expiring(self._loads(raw), None if pttl < 0 else pttl / 1000)

    async def _shared_fetch(
        self,
        text: str,
        fetcher: Callable[[], Awaitable[V]],
        ttl_s: float | None,
        timeout_ms: float | None,
        label: str | None,
    ) -> _Expiring:
        redis_key = self._prefix + text
        # Beyond what a Redis expiry can count (or None): the key never expires.
        px = None if ttl_s is None or ttl_s >= _FOREVER_S else max(1, int(ttl_s * 1000))
        found = await self._read(redis_key)
        if found is not None:
            self._remote_hits += 1
            return found
        self._remote_misses += 1
        mutex = RedisMutex(
            self._user_client,
            f"{text}:refresh",
            key_prefix=self._prefix,
            lease_ms=self._lease_ms,
            op_timeout_ms=self._op_timeout_ms,
            label="refresh",
        )
        try:
            lease = await mutex.acquire(
                timeout_ms=timeout_ms,
                label=label if label is not None else f"refresh:{text}",
            )
        except LockUnavailableError:
            self._unavailable += 1
            raise
        try:
            found = await self._read(redis_key)  # refreshed by another process?
            if found is not None:
                self._remote_hits += 1
                return found
            self._fetches += 1
            try:
                value = await fetcher()
            except Exception:
                self._fetch_errors += 1
                raise
            data = self._dumps(value)
            await self._redis(
                redis_key,
                "store",
                lambda: self._client.set(redis_key, data, px),
            )
            # What every other process will read: the same here, so that a value
            # the serialisation changes is noticed in the fetching process too.
            return _Expiring(self._loads(data), ttl_s)
        finally:
            # A lost lease is fine here: the value is good; at worst another process
            # fetched it too.
            with contextlib.suppress(LockLostError, LockUnavailableError):
                await lease.release()

    async def invalidate(self, key: Hashable) -> None:
        """Drop ``key`` here, in Redis, and in every process that runs :meth:`listen`.

        The key is deleted, then its name published on the channel
        ``<prefix>invalidations``; each listening process drops its local copy when
        the message arrives (about a millisecond on loopback, within 100 ms in the
        tests). A process that does not listen keeps its copy until its TTL ends.

        :raises LockUnavailableError: if Redis cannot be reached or refuses
        """
        text = self._redis_key(key)
        redis_key = self._prefix + text
        self._local.invalidate(text)
        await self._redis(
            redis_key, "invalidate", lambda: self._client.delete(redis_key)
        )
        await self._redis(
            redis_key,
            "invalidate",
            lambda: self._client.publish(self._channel, text),
        )

    async def listen(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> NoReturn:
        """Drop local copies that another process invalidates, until cancelled.

        Start it in a task group of your own, ``await tg.start(cache.listen)``, which
        returns once the subscription is confirmed: from then on, an
        :meth:`invalidate` in any process reaches this one as soon as the server
        delivers the message. It takes one connection of its own.

        Pub/sub does not queue: a message sent while this process is disconnected is
        lost. So each time the subscription is established again (the client
        reconnected), every local copy is dropped; until then, copies are served at
        most until their local TTL ends, which is never later than the value's Redis
        TTL at the time it was read.

        :raises LockUnavailableError: if the subscription cannot be made, or is not
            confirmed within ``op_timeout_ms``
        """
        # The subscription must be confirmed within op_timeout_ms; the scope holds
        # the library's task group whole (a deadline that ended inside it would
        # break the nesting), and its deadline is lifted once subscribed.
        with anyio.CancelScope(
            deadline=anyio.current_time() + self._op_timeout_s
        ) as scope:
            async with contextlib.AsyncExitStack() as stack:
                try:
                    messages = await stack.enter_async_context(
                        self._client.subscribe(self._channel)
                    )
                except Exception as exc:
                    ours = _our_error(self._client, self._channel, "subscribe", exc)
                    if ours is None:
                        raise
                    self._unavailable += 1
                    raise ours from exc
                scope.deadline = math.inf
                task_status.started()
                async for kind, data in messages:
                    if kind == "subscribe":  # again: messages may have been lost
                        self._local.clear()
                        continue
                    text = data.decode() if isinstance(data, bytes) else str(data)
                    self._local.invalidate(text)
        if scope.cancelled_caught:
            self._unavailable += 1
            raise LockUnavailableError(
                self._channel,
                f"subscribe got no answer within {self._op_timeout_s * 1000:.0f} ms",
            )
        raise AssertionError("the subscription ended")  # pragma: no cover

    def statistics(self) -> RedisRefreshCacheStatistics:
        """Return this process's counters, with the local cache's (no round trip)."""
        return RedisRefreshCacheStatistics(
            local=self._local.statistics(),
            fetches=self._fetches,
            fetch_errors=self._fetch_errors,
            remote_hits=self._remote_hits,
            remote_misses=self._remote_misses,
            unavailable=self._unavailable,
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
    def local(self) -> RefreshCache[Hashable, V]:
        """The process-local cache in front of Redis."""
        return self._local

    def __repr__(self) -> str:
        return f"<RedisRefreshCache prefix={self._prefix!r} ttl_s={self._ttl_s}>"
