"""RedisRefreshCache as a first-class cache: keys, serialisation, statistics, limits.

Regression tests for issue 8, defect 6: no statistics(), no op_timeout_ms, str keys
only, and values silently changed by JSON (a tuple came back as a list, in other
processes only).
"""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Any

import anyio
import pytest

from anyio_mutex import MutexTimeoutError
from anyio_mutex.redis import (
    LockUnavailableError,
    RedisMutex,
    RedisRefreshCache,
    key_to_str,
)

from ._redis_server import (
    RedisServer,
    connect,
    connect_as,
    over_clients,
    server_fixture,
    unique,
)

# heavy: asyncio and trio; coredis on uvloop is tests/test_redis_adapters.py's.
pytestmark = [pytest.mark.anyio, pytest.mark.heavy]

server = server_fixture()


@dataclasses.dataclass(frozen=True)
class Price:
    sku: str
    cents: int
    tags: tuple[str, ...]


def dump_price(price: Price) -> str:
    return json.dumps(dataclasses.asdict(price))


def load_price(data: str | bytes) -> Price:
    fields = json.loads(data)
    return Price(fields["sku"], fields["cents"], tuple(fields["tags"]))


@over_clients
async def test_custom_dumps_loads_round_trip_a_dataclass_across_clients(
    server: RedisServer,
    family: str,
) -> None:
    prefix = unique("price") + ":"
    async with connect_as(server, family) as a, connect_as(server, family) as b:
        caches: list[RedisRefreshCache[Price]] = [
            RedisRefreshCache(c, prefix=prefix, dumps=dump_price, loads=load_price)
            for c in (a, b)
        ]
        price = Price("sku-1", 1999, ("new", "sale"))

        async def fetch() -> Price:
            return price

        key = ("sku", 1)  # any hashable key
        assert await caches[0].get_or_refresh(key, fetch) == price
        got = await caches[1].get_or_refresh(key, fetch)  # read from Redis
        assert got == price
        assert isinstance(got.tags, tuple)
        assert caches[1].statistics().fetches == 0
        assert (
            server.command("EXISTS", prefix + "('sku', 1)") == b":1\r\n"
        )  # repr(key), documented


@over_clients
async def test_json_default_gives_every_process_the_same_value(
    server: RedisServer,
    family: str,
) -> None:
    prefix = unique("json") + ":"
    async with connect_as(server, family) as a, connect_as(server, family) as b:
        first: RedisRefreshCache[Any] = RedisRefreshCache(a, prefix=prefix)
        second: RedisRefreshCache[Any] = RedisRefreshCache(b, prefix=prefix)

        async def fetch() -> Any:
            return (1, 2)

        # JSON has no tuple: the fetching process sees the list too, not only others.
        assert await first.get_or_refresh(7, fetch) == [1, 2]
        assert await second.get_or_refresh(7, fetch) == [1, 2]

        async def not_json() -> Any:
            return {1, 2}

        with pytest.raises(TypeError, match="not JSON serializable"):
            await first.get_or_refresh("set", not_json)
        assert (
            server.command("EXISTS", prefix + "set") == b":0\r\n"
        )  # nothing stored, nothing held
        assert not await RedisMutex(a, "set:refresh", key_prefix=prefix).locked()


@over_clients
async def test_statistics_count_local_and_remote_work(
    server: RedisServer, family: str
) -> None:
    prefix = unique("stats") + ":"
    async with connect_as(server, family) as a, connect_as(server, family) as b:
        first: RedisRefreshCache[int] = RedisRefreshCache(a, prefix=prefix)
        second: RedisRefreshCache[int] = RedisRefreshCache(b, prefix=prefix)

        async def fetch() -> int:
            return 42

        async def broken() -> int:
            raise ConnectionError("backend down")

        with pytest.raises(ConnectionError):
            await first.get_or_refresh("k", broken)
        for _ in range(3):
            assert await first.get_or_refresh("k", fetch) == 42
        assert await second.get_or_refresh("k", fetch) == 42
        one, two = first.statistics(), second.statistics()
        assert (one.fetches, one.fetch_errors, one.remote_misses) == (2, 1, 2)
        assert (one.local.hits, one.local.misses, one.local.currsize) == (2, 2, 1)
        assert (two.fetches, two.remote_hits, two.remote_misses) == (0, 1, 0)
        assert one.unavailable == two.unavailable == 0
        with pytest.raises(dataclasses.FrozenInstanceError):
            one.fetches = 0  # type: ignore[misc]


@over_clients
async def test_waiting_for_another_process_is_bounded_by_timeout_ms(
    server: RedisServer,
    family: str,
) -> None:
    prefix = unique("wait") + ":"
    async with connect_as(server, family) as a:
        cache: RedisRefreshCache[int] = RedisRefreshCache(
            a, prefix=prefix, timeout_ms=100
        )
        # Another process holds the key's refresh lock (a slow fetch elsewhere).
        other = await RedisMutex(
            a, "k:refresh", key_prefix=prefix, lease_ms=10_000
        ).acquire(label="other process")

        async def fetch() -> int:
            return 1  # pragma: no cover - the lock is never ours

        with anyio.fail_after(5), pytest.raises(MutexTimeoutError) as exc_info:
            await cache.get_or_refresh("k", fetch)
        assert exc_info.value.owner == "other process"
        await other.release()


@over_clients
async def test_op_timeout_bounds_a_stalled_server(
    server: RedisServer, family: str
) -> None:
    async with connect_as(server, family) as a:
        cache: RedisRefreshCache[int] = RedisRefreshCache(
            a, prefix=unique("stall") + ":", op_timeout_ms=100
        )
        await a.ping()

        async def fetch() -> int:
            return 1  # pragma: no cover - the read never answers

        server.command("CLIENT", "PAUSE", "400")  # the server holds every reply
        with anyio.fail_after(5), pytest.raises(LockUnavailableError, match="100 ms"):
            await cache.get_or_refresh("k", fetch)
        assert cache.statistics().unavailable == 1


async def test_bad_arguments_are_named(server: RedisServer) -> None:
    async with connect(server) as a:
        for kwargs, error, text in [
            ({"timeout_ms": -1}, ValueError, "timeout_ms must be >= 0"),
            ({"op_timeout_ms": 0}, ValueError, "op_timeout_ms must be > 0"),
            ({"op_timeout_ms": "2"}, TypeError, "op_timeout_ms must be a number"),
            ({"ttl_s": -1}, ValueError, "ttl_s must be >= 0"),
            ({"max_entries": 0}, ValueError, "max_entries must be >= 1"),
            ({"dumps": 1}, TypeError, "dumps must be callable"),
            ({"key_to_str": None}, TypeError, "key_to_str must be callable"),
            ({"prefix": 1}, TypeError, "prefix must be a str"),
        ]:
            with pytest.raises(error, match=text):
                RedisRefreshCache(a, **kwargs)  # type: ignore[arg-type]
        cache: RedisRefreshCache[int] = RedisRefreshCache(
            a,
            key_to_str=lambda key: key,
        )

        async def fetch() -> int:
            return 1  # pragma: no cover

        with pytest.raises(TypeError, match="unhashable"):
            await cache.get_or_refresh(["a", "list"], fetch)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="key_to_str must return a str"):
            await cache.get_or_refresh(5, fetch)


def test_key_to_str_rule() -> None:
    assert key_to_str("user:1") == "user:1"
    assert key_to_str(("user", 1)) == "('user', 1)"
    assert key_to_str(1) == "1"


@pytest.mark.parametrize("ttl_s", [math.inf, 10**400, 1e300])
async def test_a_ttl_beyond_any_expiry_is_stored_for_good(
    server: RedisServer, ttl_s: float
) -> None:
    # Regression: int(ttl_s * 1000) overflowed (inf) or Redis refused the expiry
    # (10**400, 1e300), after the fetch had run: the value was lost. Now the key is
    # stored without an expiry, and the local copy never expires either.
    async with connect(server) as a:
        cache: RedisRefreshCache[int] = RedisRefreshCache(
            a, prefix=unique("forever") + ":", ttl_s=ttl_s
        )
        calls = 0

        async def fetch() -> int:
            nonlocal calls
            calls += 1
            return 7

        assert await cache.get_or_refresh("k", fetch) == 7
        assert await cache.get_or_refresh("j", fetch, ttl_s) == 7
        for key in ("k", "j"):
            assert await a.pttl(cache._prefix + key) == -1  # no expiry
        assert await cache.get_or_refresh("k", fetch) == 7
        assert calls == 2
