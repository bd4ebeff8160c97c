"""The Redis layer as user code uses it."""

from __future__ import annotations

import coredis
from typing_extensions import assert_type

from anyio_mutex.redis import (
    LockLostError,
    RedisLease,
    RedisMutex,
    RedisMutexStatistics,
    RedisRefreshCache,
)


async def use_redis() -> None:
    client = coredis.Redis(host="127.0.0.1", port=6379)
    mutex = RedisMutex(client, "orders", lease_ms=5_000)
    assert_type(mutex, RedisMutex)
    lease = await mutex.acquire(timeout_ms=1_000, label="worker-1")
    assert_type(lease, RedisLease)
    assert_type(lease.fence, int)
    await lease.release()
    try:
        async with mutex.hold(timeout_ms=100) as held:
            assert_type(held, RedisLease)
    except LockLostError as exc:
        assert_type(exc.fence, int)
    assert_type(mutex.statistics(), RedisMutexStatistics)
    RedisMutex(client, 42)  # type: ignore[arg-type]  # pyright: ignore[reportArgumentType]

    cache: RedisRefreshCache[int] = RedisRefreshCache(client, prefix="prices")

    async def fetch() -> int:
        return 1

    assert_type(await cache.get_or_refresh("k", fetch), int)
