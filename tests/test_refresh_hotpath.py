"""The warm-hit fast paths: RefreshCache.get_or_refresh, get_or_refresh and @cached.

Each inlines RefreshCache's hit (a subscript lookup, one clock read), skips the
validator for plainly valid arguments, and sends caches with ``checkpoint_on_hit``
or XFetch down the general path. These tests pin that the shortcuts behave exactly
as the general path does: counters and LRU order, the expiry boundary, validation on
hits, fetch errors without a lookup's ``KeyError`` as their context, XFetch and
checkpoints not bypassed, the same keys for @cached, and the package-level cache
across event loops in one process.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import pytest
from anyio import wait_all_tasks_blocked

from anyio_mutex import RefreshCache, cached, default_cache, get_or_refresh

from .conftest import BACKENDS

pytestmark = pytest.mark.anyio

Get = Callable[[Any, Callable[[], Awaitable[Any]]], Awaitable[Any]]


class ManualClock:
    """A clock that moves only when told to."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Fetcher:
    """Counts calls and returns ``"{value}{calls}"``."""

    def __init__(self, value: str = "v") -> None:
        self.calls = 0
        self.value = value

    async def __call__(self) -> str:
        self.calls += 1
        return f"{self.value}{self.calls}"


class Boom(Exception):
    pass


async def fail() -> str:
    raise Boom("no")


def package_key(name: str) -> tuple[str, str]:
    return ("test_refresh_hotpath", name)


async def test_method_hits_count_and_bump_lru() -> None:
    cache: RefreshCache[str, str] = RefreshCache(max_entries=2, clock=ManualClock())
    fetch = Fetcher()
    await cache.get_or_refresh("a", fetch)
    await cache.get_or_refresh("b", fetch)
    assert await cache.get_or_refresh("a", fetch) == "v1"  # a hit: "a" is now newest
    await cache.get_or_refresh("c", fetch)  # evicts the least recently used: "b"
    assert "a" in cache
    assert "b" not in cache
    stats = cache.statistics()
    assert (stats.hits, stats.misses, stats.fetches, stats.evictions) == (1, 3, 3, 1)


async def test_package_hits_count_one_hit_each_and_no_miss() -> None:
    key = package_key("counts")
    fetch = Fetcher()
    try:
        assert await get_or_refresh(key, fetch) == "v1"
        before = default_cache().statistics()
        for _ in range(3):
            assert await get_or_refresh(key, fetch, 60.0) == "v1"
        after = default_cache().statistics()
        assert after.hits - before.hits == 3
        assert after.misses == before.misses
        assert fetch.calls == 1
    finally:
        default_cache().invalidate(key)


@pytest.mark.parametrize("path", ["method", "cached"])
async def test_a_value_is_fresh_until_exactly_its_expiry(path: str) -> None:
    clock = ManualClock()
    fetch = Fetcher()
    if path == "method":
        cache: RefreshCache[str, str] = RefreshCache(ttl_s=10, clock=clock)

        async def get() -> str:
            return await cache.get_or_refresh("k", fetch)

    else:

        @cached(ttl_s=10, clock=clock)
        async def load(key: str) -> str:
            return await fetch()

        cache = load.cache

        async def get() -> str:
            return await load("k")

    assert await get() == "v1"
    clock.now += 9.999
    assert await get() == "v1"  # still fresh: a hit
    clock.now += 0.001  # now == expiry: stale
    assert await get() == "v2"
    stats = cache.statistics()
    assert (stats.hits, stats.misses) == (1, 2)


async def test_package_ttl_zero_is_stale_at_once_and_none_never() -> None:
    stale, forever = package_key("ttl0"), package_key("ttl-none")
    fetch = Fetcher()
    try:
        assert await get_or_refresh(stale, fetch, ttl_s=0) == "v1"
        assert await get_or_refresh(stale, fetch, ttl_s=0) == "v2"
        assert await get_or_refresh(forever, fetch, ttl_s=None) == "v3"
        assert await get_or_refresh(forever, fetch, ttl_s=None) == "v3"
    finally:
        default_cache().invalidate(stale)
        default_cache().invalidate(forever)


async def test_fetch_errors_on_a_miss_have_no_lookup_context() -> None:
    # The hit paths look entries up in try/except KeyError; a miss must be fetched
    # outside that except block, or every fetch error would read "During handling
    # of the above exception (KeyError) ...".
    cache: RefreshCache[str, str] = RefreshCache(clock=ManualClock())

    @cached
    async def load_one(key: str) -> str:
        raise Boom(key)

    @cached
    async def load_pair(a: object, b: object) -> str:
        raise Boom(a)

    calls: list[Callable[[], Awaitable[Any]]] = [
        lambda: cache.get_or_refresh("cold", fail),
        lambda: get_or_refresh(package_key("error"), fail),
        lambda: load_one("cold"),
        lambda: load_pair((1,), 2.5),
        lambda: load_one(key="cold"),  # the general path
    ]
    for call in calls:
        with pytest.raises(Boom) as exc_info:
            await call()
        assert exc_info.value.__context__ is None
        assert exc_info.value.__cause__ is None


@pytest.mark.parametrize("path", ["method", "package", "cached"])
async def test_unhashable_keys_raise_type_error_and_change_nothing(path: str) -> None:
    cache: RefreshCache[Any, str] = RefreshCache()

    @cached
    async def load(key: object) -> str:
        return "never"

    call: Callable[[], Awaitable[Any]]
    if path == "method":
        call = lambda: cache.get_or_refresh([1], Fetcher())  # noqa: E731
    elif path == "package":
        cache = default_cache()
        call = lambda: get_or_refresh([1], Fetcher())  # type: ignore[arg-type]  # noqa: E731
    else:
        cache = load.cache
        call = lambda: load({"a": 1})  # noqa: E731
    before = cache.statistics()
    with pytest.raises(TypeError, match="unhashable"):
        await call()
    assert cache.statistics() == before


async def test_valid_explicit_arguments_still_hit() -> None:
    # Anything but the defaults goes through the validator; valid values still hit.
    cache: RefreshCache[str, str] = RefreshCache(clock=ManualClock())
    fetch = Fetcher()
    await cache.get_or_refresh("k", fetch)
    for options in (
        {"ttl_s": 30},
        {"ttl_s": None},
        {"ttl_s": math.inf},
        {"ttl_s": 10**400},
        {"timeout_ms": 0},
        {"timeout_ms": None},
        {"timeout_ms": math.inf},
        {"label": "explicit"},
    ):
        assert await cache.get_or_refresh("k", fetch, **options) == "v1", options
    assert cache.statistics().hits == 8
    assert fetch.calls == 1

    key = package_key("explicit")
    try:
        await get_or_refresh(key, fetch)
        before = default_cache().statistics().hits
        five_thousand = int("5000")  # equal to the default, not the same object
        for options in (
            {"timeout_ms": five_thousand},
            {"timeout_ms": None},
            {"timeout_ms": 0.5},
            {"ttl_s": 10**400},
            {"ttl_s": math.inf},
            {"ttl_s": 0.5},
            {"label": "explicit"},
        ):
            assert await get_or_refresh(key, fetch, **options) == "v2", options
        assert default_cache().statistics().hits - before == 7
    finally:
        default_cache().invalidate(key)


@pytest.mark.parametrize(
    ("options", "error", "text"),
    [
        ({"ttl_s": True}, TypeError, "ttl_s must be a number of seconds, got True"),
        ({"ttl_s": -0.5}, ValueError, "ttl_s must be >= 0, got -0.5"),
        ({"timeout_ms": True}, TypeError, "timeout_ms must be a number"),
        ({"timeout_ms": -1}, ValueError, "timeout_ms must be >= 0"),
        ({"label": b"x"}, TypeError, "label must be a str or None"),
    ],
)
async def test_bad_arguments_raise_on_hits_on_both_get_or_refresh(
    options: dict[str, Any], error: type[Exception], text: str
) -> None:
    cache: RefreshCache[str, str] = RefreshCache(clock=ManualClock())
    await cache.get_or_refresh("k", Fetcher())
    before = cache.statistics()
    with pytest.raises(error, match=text):
        await cache.get_or_refresh("k", Fetcher(), **options)
    assert cache.statistics() == before

    key = package_key("bad")
    try:
        await get_or_refresh(key, Fetcher())
        before = default_cache().statistics()
        with pytest.raises(error, match=text):
            await get_or_refresh(key, Fetcher(), **options)
        assert default_cache().statistics() == before
    finally:
        default_cache().invalidate(key)


class SlowClock(ManualClock):
    """A manual clock; each fetch takes one second of it (XFetch's delta)."""

    def fetcher(self, fetch: Fetcher) -> Callable[[], Awaitable[str]]:
        async def timed() -> str:
            self.now += 1.0
            return await fetch()

        return timed


@pytest.mark.parametrize("path", ["method", "cached"])
async def test_xfetch_caches_do_not_take_the_plain_shortcut(path: str) -> None:
    # With a huge beta, XFetch refreshes on the first call after a fetch (unless
    # random() returns exactly 0.0): a shortcut that skipped it would just hit.
    clock = SlowClock()
    fetch = Fetcher()
    timed = clock.fetcher(fetch)
    options: dict[str, Any] = {"ttl_s": 100, "early_refresh": 1e9, "clock": clock}
    if path == "method":
        cache: RefreshCache[str, str] = RefreshCache(**options)

        async def get() -> str:
            return await cache.get_or_refresh("k", timed)

    else:

        @cached(**options)
        async def load(key: str) -> str:
            return await timed()

        cache = load.cache

        async def get() -> str:
            return await load("k")

    assert await get() == "v1"
    assert await get() == "v2"  # refreshed early, not a plain hit
    stats = cache.statistics()
    assert (stats.early_refreshes, stats.fetches) == (1, 2)


@pytest.mark.parametrize("path", ["method", "cached"])
async def test_checkpoint_on_hit_is_kept(path: str) -> None:
    cache: RefreshCache[str, str] = RefreshCache(checkpoint_on_hit=True)
    fetch = Fetcher()

    @cached(checkpoint_on_hit=True)
    async def load(key: str) -> str:
        return await fetch()

    if path == "method":
        get: Callable[[], Awaitable[str]] = lambda: cache.get_or_refresh("k", fetch)  # noqa: E731
    else:
        cache = load.cache
        get = lambda: load("k")  # noqa: E731
    assert await get() == "v1"
    before = cache.statistics()
    with anyio.CancelScope() as scope:
        scope.cancel()
        await get()  # a hit, but a checkpoint first: cancelled, and nothing counted
    assert scope.cancelled_caught
    assert cache.statistics() == before
    assert await get() == "v1"
    assert cache.statistics().hits == before.hits + 1


@pytest.mark.parametrize(
    "options",
    [{}, {"checkpoint_on_hit": True}, {"early_refresh": 0.5}],
    ids=["plain", "checkpoint", "xfetch"],
)
async def test_decorated_keys_are_the_same_on_every_path(
    options: dict[str, Any],
) -> None:
    # The shortcut (plain caches, positional calls) and the signature-normalised
    # key agree: f(5), f(item_id=5) and a spelled-out default share one entry.
    calls: list[tuple[int, str]] = []

    @cached(clock=ManualClock(), **options)
    async def load(item_id: int, view: str = "full") -> str:
        calls.append((item_id, view))
        return f"{item_id}:{view}"

    @cached(clock=ManualClock(), **options)
    async def one(item_id: int) -> str:
        return str(item_id)

    assert await load(5) == "5:full"
    assert await load(item_id=5) == "5:full"
    assert await load(5, "full") == "5:full"
    assert await load(5, view="full") == "5:full"
    assert calls == [(5, "full")]
    assert load.cache.statistics().hits == 3
    assert await one(7) == "7"
    assert await one(item_id=7) == "7"
    assert 7 in one.cache  # one int argument is its own key, on every path
    assert one.cache.statistics().hits == 1


@cached(ttl_s=3600)
async def module_level_load(key: str) -> str:
    return f"{key}@{anyio.current_time() >= 0}"


async def shared_flight(key: tuple[str, str]) -> list[str]:
    """Ten callers of a cold key share one fetch (waiting on the default timeout)."""
    gate = anyio.Event()
    fetch = Fetcher()

    async def gated() -> str:
        await gate.wait()
        return await fetch()

    results: list[str] = []

    async def caller() -> None:
        results.append(await get_or_refresh(key, gated))

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            for _ in range(10):
                tg.start_soon(caller)
            await wait_all_tasks_blocked()
            gate.set()
    assert fetch.calls == 1
    # A hit, and the decorated module-level function, in this event loop too.
    assert await get_or_refresh(key, Fetcher()) == "v1"
    assert await module_level_load("x") == "x@True"
    return results


def test_package_cache_and_module_level_cached_serve_every_event_loop() -> None:
    # One process runs asyncio, then trio, then asyncio again (pytest's backend
    # matrix, Starlette's TestClient): the module-level cache state must not bind
    # to the first loop.
    keys = []
    try:
        for i, param in enumerate([*BACKENDS, *BACKENDS]):
            name, backend_options = param.values[0]
            key = package_key(f"loop-{i}")
            keys.append(key)
            results = anyio.run(
                shared_flight, key, backend=name, backend_options=backend_options
            )
            assert results == ["v1"] * 10, (name, backend_options)
            if i:  # a key cached under the previous loop is a hit in this one
                previous = anyio.run(
                    get_or_refresh, keys[i - 1], Fetcher(value="never"), backend=name
                )
                assert previous == "v1"
    finally:
        for key in keys:
            default_cache().invalidate(key)
        module_level_load.cache.clear()
