"""Validation at the door of the Redis layer: one-line errors naming what to do.

Regression test for issue 8, defect 5 (a redis-py client produced a ~1,000-character
TypeError, its repr) and the lease_ms message that said "seconds".
"""

from __future__ import annotations

import weakref
from typing import Any

import pytest

from anyio_mutex.redis import RedisMutex, RedisRefreshCache

from ._redis_server import RedisServer, connect, server_fixture, unique

# heavy: asyncio and trio; coredis on uvloop is tests/test_redis_adapters.py's.
pytestmark = [pytest.mark.anyio, pytest.mark.heavy]

server = server_fixture()


class Redis:  # stands in for redis.asyncio.Redis: another library's client
    def __repr__(self) -> str:
        return "Redis<ConnectionPool<Connection<host=localhost,port=6379>>>" * 20


@pytest.mark.parametrize("make", [RedisMutex, RedisRefreshCache])
def test_wrong_client_type_says_what_to_pass_in_one_line(make: Any) -> None:
    args = (Redis(), "name") if make is RedisMutex else (Redis(),)
    with pytest.raises(TypeError) as exc_info:
        make(*args)
    message = str(exc_info.value)
    assert "\n" not in message
    assert len(message) < 250, message
    assert "client must be a coredis.Redis" in message
    assert f"got a {__name__}.Redis" in message
    assert "coredis.Redis.from_url(url)" in message
    assert "ConnectionPool" not in message  # no repr of the client


async def test_durations_are_named_in_milliseconds(server: RedisServer) -> None:
    async with connect(server) as client:
        with pytest.raises(
            TypeError, match="lease_ms must be a number of milliseconds"
        ):
            RedisMutex(client, "x", lease_ms="10")  # type: ignore[arg-type]
        with pytest.raises(
            TypeError, match="renew_ms must be a number of milliseconds"
        ):
            RedisMutex(client, "x", renew_ms="1")  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="op_timeout_ms must be > 0"):
            RedisMutex(client, "x", op_timeout_ms=0)
        with pytest.raises(
            TypeError, match="lease_ms must be a number of milliseconds"
        ):
            RedisRefreshCache(client, lease_ms=None)  # type: ignore[arg-type]


async def test_public_objects_are_weak_referenceable(server: RedisServer) -> None:
    async with connect(server) as client:
        mutex = RedisMutex(client, unique("weak"))
        cache: RedisRefreshCache[int] = RedisRefreshCache(client)
        lease = await mutex.acquire()
        for obj in (mutex, cache, lease):
            assert weakref.ref(obj)() is obj
        await lease.release()
