"""A client for a Sentinel-managed primary (issue 9), with a Sentinel the suite starts.

The Sentinel is the same valkey-server binary run with ``--sentinel``.
"""

from __future__ import annotations

from collections.abc import Iterator

import anyio
import pytest

from anyio_mutex import MutexTimeoutError
from anyio_mutex.redis import RedisMutex, RedisRefreshCache

from ._redis_server import (
    HOW_TO_GET_ONE,
    SentinelServers,
    connect_sentinel,
    find_server_binary,
    over_families,
    unique,
)

# heavy: asyncio and trio; coredis on uvloop is tests/test_redis_adapters.py's.
pytestmark = [pytest.mark.anyio, pytest.mark.heavy]


@pytest.fixture(scope="module")
def sentinel() -> Iterator[SentinelServers]:
    binary = find_server_binary()
    if binary is None:
        pytest.fail(HOW_TO_GET_ONE)
    servers = SentinelServers(binary).start()
    yield servers
    servers.stop()


@pytest.mark.heavy  # servers of its own: asyncio and trio are enough
@over_families
async def test_mutex_and_cache_on_a_sentinel_managed_primary(
    sentinel: SentinelServers, family: str
) -> None:
    name = unique("sentinel")
    async with (
        connect_sentinel(sentinel, family) as a,
        connect_sentinel(sentinel, family) as b,
    ):
        first = RedisMutex(a, name, wait_replicas=1, wait_timeout_ms=5000)
        with anyio.fail_after(10):
            lease = await first.acquire(label="via sentinel")
            with pytest.raises(MutexTimeoutError) as exc_info:
                await RedisMutex(b, name).acquire(timeout_ms=0)
            assert exc_info.value.owner == "via sentinel"
            await lease.release()
        primary = sentinel.replicated.primary
        assert primary.command("EXISTS", "{" + name + "}:fence") == b":1\r\n"
        cache: RedisRefreshCache[int] = RedisRefreshCache(b)

        async def fetch() -> int:
            return 7

        with anyio.fail_after(10):
            assert await cache.get_or_refresh(name, fetch) == 7
