"""A burst of requests against a slow backend, three ways.

A "service" answers 2,000 concurrent requests for 20 products; each backend fetch takes
20 ms. Without protection every request hits the backend. With the original pattern,
one global lock, each key is fetched once but the keys queue behind each other.
With get_or_refresh each key is fetched once and the keys are fetched in parallel.
Then the values expire and a second burst refreshes each key exactly once.
Last, the same backend behind @cached on a method, called by position and by keyword
(as FastAPI calls endpoints): one key, one query.

    python examples/cache_refresh.py [asyncio|trio]
"""

from __future__ import annotations

import functools
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import anyio

from anyio_mutex import AsyncMutex, RefreshCache, cached

PRODUCTS = 20
REQUESTS = 2000
FETCH_S = 0.02


class Backend:
    """A slow database that counts its queries."""

    def __init__(self) -> None:
        self.queries = 0

    async def load(self, product: int) -> dict[str, object]:
        self.queries += 1
        await anyio.sleep(FETCH_S)
        return {"id": product, "price": 10 + product}


def global_lock_cache(
    ttl_s: float,
) -> Callable[[int, Callable[[], Awaitable[object]]], Coroutine[Any, Any, object]]:
    """The original pattern: check, take one global mutex, re-check, fetch, store."""
    store: dict[int, tuple[object, float]] = {}
    mutex = AsyncMutex("refresh")

    async def get_or_refresh(
        key: int, fetcher: Callable[[], Awaitable[object]]
    ) -> object:
        hit = store.get(key)
        if hit and time.monotonic() < hit[1]:
            return hit[0]
        async with mutex.hold(timeout_ms=5000, label=f"refresh:{key}"):
            hit = store.get(key)
            if hit and time.monotonic() < hit[1]:
                return hit[0]
            value = await fetcher()
            store[key] = (value, time.monotonic() + ttl_s)
            return value

    return get_or_refresh


async def burst(get: Callable[[int], Coroutine[Any, Any, object]]) -> float:
    start = time.perf_counter()
    async with anyio.create_task_group() as tg:
        for n in range(REQUESTS):
            tg.start_soon(get, n % PRODUCTS)
    return (time.perf_counter() - start) * 1000


async def main() -> None:
    print(
        f"{REQUESTS} concurrent requests for {PRODUCTS} products, {FETCH_S * 1000:.0f} ms per fetch\n"
    )
    print(f"{'strategy':<34}{'backend queries':>16}{'wall ms':>10}")

    db = Backend()
    ms = await burst(db.load)
    print(f"{'no cache':<34}{db.queries:>16}{ms:>10.0f}")

    db = Backend()
    original = global_lock_cache(ttl_s=60)
    ms = await burst(lambda p: original(p, lambda: db.load(p)))
    print(f"{'one global lock (original pattern)':<34}{db.queries:>16}{ms:>10.0f}")

    db = Backend()
    # A clock the example moves by hand: a real 0.5 s TTL could run out in the
    # middle of a burst on a loaded machine and refresh a key twice.
    now = [0.0]
    cache: RefreshCache[int, object] = RefreshCache(ttl_s=60, clock=lambda: now[0])

    async def get(product: int) -> object:
        return await cache.get_or_refresh(product, lambda: db.load(product))

    ms = await burst(get)
    print(f"{'RefreshCache.get_or_refresh':<34}{db.queries:>16}{ms:>10.0f}")
    ms = await burst(get)
    print(f"{'  again, all hits':<34}{db.queries:>16}{ms:>10.0f}")
    now[0] += 60  # every value expires
    ms = await burst(get)
    print(f"{'  after expiry: one refresh per key':<34}{db.queries:>16}{ms:>10.0f}")

    stats = cache.statistics()
    print(
        f"\nhits={stats.hits} misses={stats.misses} fetches={stats.fetches} "
        f"in_flight={stats.in_flight} size={stats.currsize}"
    )
    assert stats.fetches == 2 * PRODUCTS

    catalog = Catalog(Backend())
    async with anyio.create_task_group() as tg:
        for n in range(REQUESTS):
            if n % 2:
                tg.start_soon(catalog.product, 7)
            else:
                tg.start_soon(functools.partial(catalog.product, product=7))
    print(f"\n@cached method, {REQUESTS} calls by position and keyword: ", end="")
    print(f"{catalog.db.queries} backend query")
    assert catalog.db.queries == 1
    assert catalog.product.invalidate(product=7)  # the key both spellings share


class Catalog:
    """A repository whose method results are cached per instance."""

    def __init__(self, db: Backend) -> None:
        self.db = db

    @cached(ttl_s=60)
    async def product(self, product: int) -> dict[str, object]:
        return await self.db.load(product)


if __name__ == "__main__":
    anyio.run(main, backend=sys.argv[1] if len(sys.argv) > 1 else "asyncio")
