"""RefreshCache, get_or_refresh, @cached and SingleFlight as user code uses them."""

from __future__ import annotations

from typing import Any

from typing_extensions import assert_type

from anyio_mutex import (
    CacheStatistics,
    RefreshCache,
    SingleFlight,
    SingleFlightStatistics,
    cached,
    default_cache,
    get_or_refresh,
)


async def load_price(product_id: int) -> float:
    return 9.99


cache: RefreshCache[int, float] = RefreshCache(ttl_s=30, max_entries=100)
flight: SingleFlight[str, bytes] = SingleFlight()


async def fetch_blob() -> bytes:
    return b""


@cached(ttl_s=10)
async def load_user(user_id: int, *, verbose: bool = False) -> dict[str, Any]:
    return {"id": user_id}


async def use_cache() -> None:
    price = await cache.get_or_refresh(3, lambda: load_price(3))
    assert_type(price, float)
    assert_type(cache.invalidate(3), bool)
    assert_type(cache.statistics(), CacheStatistics)
    await cache.get_or_refresh("3", lambda: load_price(3))  # type: ignore[arg-type]  # pyright: ignore[reportArgumentType]

    assert_type(await get_or_refresh("k", lambda: load_price(1), ttl_s=5), float)
    assert_type(default_cache(), RefreshCache[Any, Any])

    assert_type(await flight.do("a", fetch_blob), bytes)
    assert_type(flight.statistics(), SingleFlightStatistics)

    user = await load_user(1, verbose=True)
    assert_type(user, dict[str, Any])
    assert_type(load_user.invalidate(1), bool)
    await load_user("1")  # type: ignore[arg-type]  # pyright: ignore[reportArgumentType]
