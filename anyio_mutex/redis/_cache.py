"""RedisRefreshCache: RefreshCache across processes."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Awaitable, Callable
from typing import Any, Generic, TypeVar, final

import coredis

from .._refresh import _UNSET, RefreshCache, _Expiring
from .._validation import check_callable
from ._client import _call, _check_client
from ._errors import LockLostError
from ._mutex import RedisMutex, _check_lease_ms
from ._scripts import _READ

V = TypeVar("V")


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
        _check_client(client)
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
