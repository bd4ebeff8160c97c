"""Fences never go backwards, even when the server loses the fence key.

Regression tests for issue 8, defect 9: the fence was a plain INCR key, so after a
restart without persistence, a FLUSHALL or the eviction of that key, fences started
again at 1 (measured 5 -> 1) and a stale holder's writes won over the new holder's.
The fence is now floored by the server's TIME (microseconds since the epoch).
"""

from __future__ import annotations

import time

import anyio
import pytest

from anyio_mutex.redis import RedisMutex

from ._redis_server import RedisServer, connect, dedicated_server_fixture, unique

# heavy: asyncio and trio; coredis on uvloop is tests/test_redis_adapters.py's.
pytestmark = [pytest.mark.anyio, pytest.mark.heavy]


# A server per test, which it may flush, fill or restart; small, and evicting.
own_server = dedicated_server_fixture(
    "--maxmemory", "4mb", "--maxmemory-policy", "allkeys-lru"
)


async def fences(mutex: RedisMutex, n: int) -> list[int]:
    out = []
    for _ in range(n):
        lease = await mutex.acquire(timeout_ms=1000)
        out.append(lease.fence)
        await lease.release()
    return out


async def test_fence_format_is_the_server_clock_in_microseconds(
    own_server: RedisServer,
) -> None:
    async with connect(own_server) as client:
        before = time.time_ns() // 1000
        got = await fences(RedisMutex(client, unique("format")), 3)
        after = time.time_ns() // 1000
        assert got == sorted(set(got))
        # Same machine, same clock: each fence is "now" in microseconds, give or take.
        assert all(before - 1_000_000 <= f <= after + 1_000_000 for f in got), got


async def test_fences_increase_across_flushall(own_server: RedisServer) -> None:
    async with connect(own_server) as client:
        mutex = RedisMutex(client, unique("flush"))
        first = await fences(mutex, 5)
        await client.flushall()
        assert await client.dbsize() == 0
        second = await fences(mutex, 2)
        assert first + second == sorted(set(first + second))


async def test_fences_increase_across_a_restart_without_persistence(
    own_server: RedisServer,
) -> None:
    name = unique("restart")
    async with connect(own_server) as client:
        first = await fences(RedisMutex(client, name), 5)
    await anyio.to_thread.run_sync(own_server.stop)
    await anyio.to_thread.run_sync(lambda: own_server.start(same_port=True))
    async with connect(own_server) as client:
        assert await client.dbsize() == 0  # nothing survived
        second = await fences(RedisMutex(client, name), 2)
    assert first + second == sorted(set(first + second))


async def test_fences_increase_after_the_fence_key_is_evicted(
    own_server: RedisServer,
) -> None:
    name = unique("evict")
    async with connect(own_server) as client:
        mutex = RedisMutex(client, name)
        first = await fences(mutex, 5)
        fence_key = "{" + name + "}:fence"
        assert await client.exists([fence_key]) == 1
        # Fill the 4 MB server until LRU evicts the fence key: a bounded loop on a
        # server condition (there is no event for an eviction).
        blob = b"x" * 65536
        for i in range(2000):
            await client.set(f"filler:{i}", blob)
            if not await client.exists([fence_key]):
                break
        else:
            pytest.fail("the fence key was never evicted")
        second = await fences(mutex, 2)
        assert first + second == sorted(set(first + second))


async def test_a_higher_stored_fence_still_wins_over_the_clock(
    own_server: RedisServer,
) -> None:
    # Grants faster than one per microsecond, or a server clock stepped back a
    # little: the stored fence + 1 keeps the order.
    name = unique("ahead")
    async with connect(own_server) as client:
        far_ahead = (time.time_ns() // 1000) + 10**12
        await client.set("{" + name + "}:fence", str(far_ahead))
        assert await fences(RedisMutex(client, name), 2) == [
            far_ahead + 1,
            far_ahead + 2,
        ]
