"""RefreshCache, get_or_refresh and @cached: one fetch per key per expiry.

TTLs are driven by an injected manual clock, so expiry is exact on every backend
without sleeping; one test drives them with trio's MockClock through
``clock=anyio.current_time``.
"""

from __future__ import annotations

import functools
import gc
import inspect
import math
import pickle
import random
import weakref
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import pytest
from anyio import wait_all_tasks_blocked

from anyio_mutex import (
    MutexTimeoutError,
    RefreshCache,
    cached,
    default_cache,
    get_or_refresh,
)

from .conftest import with_mock_clock

pytestmark = pytest.mark.anyio


class ManualClock:
    """A clock that moves only when told to."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Fetcher:
    """Counts calls; each call waits for the gate (if any) and returns a value."""

    def __init__(self, gate: anyio.Event | None = None, value: Any = "v") -> None:
        self.calls = 0
        self.gate = gate
        self.value = value

    async def __call__(self) -> Any:
        self.calls += 1
        if self.gate is not None:
            await self.gate.wait()
        return f"{self.value}{self.calls}"


def assert_no_fetch_state(cache: RefreshCache[Any, Any]) -> None:
    assert len(cache._flight) == 0
    assert cache._tokens == {}
    assert cache.statistics().in_flight == 0


async def stampede(
    cache: RefreshCache[Any, Any], key: Any, n: int
) -> tuple[Fetcher, set[Any]]:
    gate = anyio.Event()
    fetch = Fetcher(gate)
    values: set[Any] = set()

    async def caller() -> None:
        values.add(await cache.get_or_refresh(key, fetch))

    with anyio.fail_after(60):
        async with anyio.create_task_group() as tg:
            for _ in range(n):
                tg.start_soon(caller)
            await wait_all_tasks_blocked()  # every caller is waiting on the one fetch
            gate.set()
    return fetch, values


@pytest.mark.heavy
async def test_cold_key_stampede_of_10000_fetches_once() -> None:
    cache: RefreshCache[str, str] = RefreshCache(clock=ManualClock())
    fetch, values = await stampede(cache, "hot", 10_000)
    assert fetch.calls == 1
    assert values == {"v1"}
    stats = cache.statistics()
    assert (stats.fetches, stats.misses, stats.currsize) == (1, 10_000, 1)
    assert_no_fetch_state(cache)


@pytest.mark.heavy  # uvloop changes nothing in this bookkeeping
async def test_stampede_at_expiry_refreshes_once() -> None:
    clock = ManualClock()
    cache: RefreshCache[str, str] = RefreshCache(ttl_s=60, clock=clock)
    await cache.get_or_refresh("hot", Fetcher(value="old"))
    clock.now += 59.9
    assert await cache.get_or_refresh("hot", Fetcher(value="never")) == "old1"
    clock.now += 0.1  # exactly at expiry: stale
    fetch, values = await stampede(cache, "hot", 10_000)
    assert fetch.calls == 1
    assert values == {"v1"}
    assert await cache.get_or_refresh("hot", Fetcher(value="never")) == "v1"


async def test_slow_fetch_of_one_key_does_not_delay_another() -> None:
    cache: RefreshCache[str, str] = RefreshCache(clock=ManualClock())
    gate_a = anyio.Event()
    got_b = anyio.Event()

    async def fetch_a() -> str:
        await gate_a.wait()
        return "a"

    async def fetch_b() -> str:
        return "b"

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(cache.get_or_refresh, "A", fetch_a)
            await wait_all_tasks_blocked()

            async def get_b() -> None:
                assert await cache.get_or_refresh("B", fetch_b) == "b"
                got_b.set()

            tg.start_soon(get_b)
            await got_b.wait()  # B completed while A's fetch is still blocked
            assert "A" in cache._flight
            gate_a.set()


async def is_checkpoint(backend: Any, call: Callable[[], Awaitable[Any]]) -> bool:
    """Whether ``call()`` is a checkpoint, on any backend.

    A checkpoint raises in a cancelled scope (a cancel point) and lets other tasks
    run (a schedule point: trio's ``assert_checkpoints``; on asyncio, a ready task
    runs before this one resumes, as its queue is FIFO). Code without one does
    neither.
    """
    with anyio.CancelScope() as scope:
        scope.cancel()
        await call()
    if backend[0] == "trio":
        import trio.testing

        try:
            with trio.testing.assert_checkpoints():
                await call()
            scheduled = True
        except AssertionError:
            scheduled = False
    else:
        ran = anyio.Event()

        async def other() -> None:
            ran.set()

        async with anyio.create_task_group() as tg:
            tg.start_soon(other)
            await call()
            scheduled = ran.is_set()
    assert scheduled == scope.cancelled_caught  # both or neither
    return scheduled


async def test_hit_takes_no_lock_and_does_not_wait_behind_a_refresh(
    anyio_backend: Any,
) -> None:
    # Was checked on trio only (assert_no_checkpoints); now on every backend.
    clock = ManualClock()
    cache: RefreshCache[str, str] = RefreshCache(ttl_s=10, clock=clock)
    await cache.get_or_refresh("B", Fetcher(value="b"))
    gate = anyio.Event()
    async with anyio.create_task_group() as tg:
        tg.start_soon(cache.get_or_refresh, "A", Fetcher(gate))
        await wait_all_tasks_blocked()
        hit = functools.partial(cache.get_or_refresh, "B", Fetcher(value="x"))
        assert not await is_checkpoint(anyio_backend, hit)  # no lock, no waiting
        assert await hit() == "b1"
        assert cache.statistics().hits == 3
        gate.set()


async def test_checkpoint_on_hit_option(anyio_backend: Any) -> None:
    # Asserted nothing on asyncio before (the checked call ran on trio only).
    cache: RefreshCache[str, str] = RefreshCache(checkpoint_on_hit=True)
    await cache.get_or_refresh("k", Fetcher())
    before = cache.statistics().hits
    assert await is_checkpoint(
        anyio_backend, lambda: cache.get_or_refresh("k", Fetcher())
    )
    assert cache.statistics().hits == before + 1  # a cancelled call counts nothing


async def test_checkpoint_on_hit_keeps_its_promise_on_a_miss(
    anyio_backend: Any,
) -> None:
    # Regression: a miss whose fetcher never yields was no checkpoint at all.
    cache: RefreshCache[int, str] = RefreshCache(checkpoint_on_hit=True)
    keys = iter(range(100))
    calls = 0

    async def instant() -> str:
        nonlocal calls
        calls += 1
        return "v"

    assert await is_checkpoint(
        anyio_backend, lambda: cache.get_or_refresh(next(keys), instant)
    )
    assert calls == 1  # the cancelled call never started its fetch
    assert len(cache) == 1  # the checked call fetched and stored
    assert_no_fetch_state(cache)


async def test_fetch_error_reaches_every_waiter_and_is_never_cached() -> None:
    cache: RefreshCache[str, str] = RefreshCache(clock=ManualClock())
    gate = anyio.Event()
    calls = 0
    errors: list[BaseException] = []

    async def failing() -> str:
        nonlocal calls
        calls += 1
        await gate.wait()
        raise ConnectionError("db down")

    async def caller() -> None:
        try:
            await cache.get_or_refresh("k", failing)
        except ConnectionError as exc:
            errors.append(exc)

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            for _ in range(20):
                tg.start_soon(caller)
            await wait_all_tasks_blocked()
            gate.set()
    assert calls == 1
    assert len(errors) == 20
    assert len(cache) == 0
    assert cache.statistics().fetch_errors == 1
    assert await cache.get_or_refresh("k", Fetcher()) == "v1"  # the next caller fetches
    assert_no_fetch_state(cache)


@pytest.mark.parametrize("how", ["cancelled", "timed out"])
async def test_fetching_caller_gone_another_waiter_takes_over(how: str) -> None:
    cache: RefreshCache[str, str] = RefreshCache(clock=ManualClock())
    leader_in = anyio.Event()
    second_gate = anyio.Event()
    takeover = anyio.Event()
    fetchers: list[str] = []
    results: list[str] = []

    async def fetch_as(who: str) -> str:
        fetchers.append(who)
        if who == "leader":
            leader_in.set()
            await anyio.sleep_forever()
        takeover.set()
        await second_gate.wait()
        return f"from {who}"

    leader_scope = anyio.CancelScope()

    async def leader() -> None:
        if how == "cancelled":
            with leader_scope:
                await cache.get_or_refresh("k", lambda: fetch_as("leader"))
        else:
            with anyio.move_on_after(0.01):
                await cache.get_or_refresh("k", lambda: fetch_as("leader"))

    async def follower(name: str) -> None:
        results.append(await cache.get_or_refresh("k", lambda: fetch_as(name)))

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(leader)
            await leader_in.wait()
            for name in ("f1", "f2", "f3"):
                tg.start_soon(follower, name)
            await wait_all_tasks_blocked()
            if how == "cancelled":
                leader_scope.cancel()
            await takeover.wait()  # after the leader was cancelled or timed out
            await wait_all_tasks_blocked()
            assert len(fetchers) == 2  # one follower took over, not all three
            second_gate.set()
    assert results == [f"from {fetchers[1]}"] * 3
    assert await cache.get_or_refresh("k", Fetcher()) == f"from {fetchers[1]}"
    assert_no_fetch_state(cache)


async def test_waiter_timeout_is_its_own_and_reports_the_real_wait() -> None:
    cache: RefreshCache[str, str] = RefreshCache(clock=ManualClock())
    gate = anyio.Event()
    outcomes: list[object] = []

    async def caller(timeout_ms: float | None) -> None:
        try:
            outcomes.append(
                await cache.get_or_refresh("k", Fetcher(gate), timeout_ms=timeout_ms)
            )
        except MutexTimeoutError as exc:
            outcomes.append(exc)

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(caller, None)  # the fetching caller
            await wait_all_tasks_blocked()
            tg.start_soon(caller, None)
            async with anyio.create_task_group() as impatient:
                impatient.start_soon(caller, 20)
            gate.set()
    errors = [o for o in outcomes if isinstance(o, MutexTimeoutError)]
    assert len(errors) == 1
    assert errors[0].owner == "refresh:k"
    assert errors[0].waiting_for == "the fetch of key 'k'"
    message = str(errors[0])
    assert message.startswith("Mutex acquisition timed out after ")  # kept for ports
    assert "waiting for the fetch of key 'k'" in message
    assert "held by 'refresh:k'" in message
    assert errors[0].timeout_ms == 20
    assert errors[0].waited_ms >= 19
    assert [o for o in outcomes if o == "v1"] == ["v1", "v1"]


@pytest.mark.heavy
async def test_memory_stays_bounded_after_20000_keys_with_cancellations() -> None:
    # 20,000 keys through a 1,000-entry cache show the bound as well as 100,000 did,
    # in a third of the time (100,000 took 5-10 s per backend on a loaded 2-core box).
    keys = 20_000
    print("seed=7")
    rng = random.Random(7)
    cache: RefreshCache[int, int] = RefreshCache(max_entries=1000, clock=ManualClock())

    async def fetch_value(i: int) -> int:
        await anyio.lowlevel.checkpoint()
        return i

    cancel = [rng.random() < 0.1 for _ in range(keys)]

    async def caller(first: int) -> None:
        for i in range(first, first + 100):
            with anyio.CancelScope() as scope:
                if cancel[i]:
                    scope.cancel()  # lands inside the fetch, at its checkpoint
                await cache.get_or_refresh(i, functools.partial(fetch_value, i))

    with anyio.fail_after(60):
        async with anyio.create_task_group() as tg:
            for first in range(0, keys, 100):
                tg.start_soon(caller, first)
    stats = cache.statistics()
    stored = keys - sum(cancel)  # a cancelled fetch stores nothing
    assert len(cache) == 1000
    assert stats.fetches == keys
    assert stats.evictions == stored - 1000
    assert_no_fetch_state(cache)


async def test_invalidate_during_a_fetch_discards_its_result() -> None:
    cache: RefreshCache[str, str] = RefreshCache(clock=ManualClock())
    gate = anyio.Event()
    old = Fetcher(gate, value="old")
    async with anyio.create_task_group() as tg:
        tg.start_soon(cache.get_or_refresh, "k", old)
        await wait_all_tasks_blocked()
        assert cache.invalidate("k") is False  # nothing stored yet
        assert await cache.get_or_refresh("k", Fetcher(value="new")) == "new1"
        gate.set()
    assert await cache.get_or_refresh("k", Fetcher(value="x")) == "new1"
    assert cache.invalidate("k") is True
    assert len(cache) == 0
    assert_no_fetch_state(cache)


async def test_clear_drops_everything_and_running_fetches_are_not_stored() -> None:
    cache: RefreshCache[str, str] = RefreshCache(clock=ManualClock())
    await cache.get_or_refresh("a", Fetcher())
    gate = anyio.Event()
    async with anyio.create_task_group() as tg:
        tg.start_soon(cache.get_or_refresh, "b", Fetcher(gate))
        await wait_all_tasks_blocked()
        cache.clear()
        assert len(cache) == 0
        gate.set()
    assert len(cache) == 0
    assert_no_fetch_state(cache)


async def test_least_recently_used_entry_is_evicted() -> None:
    cache: RefreshCache[str, str] = RefreshCache(max_entries=2, clock=ManualClock())
    await cache.get_or_refresh("a", Fetcher(value="a"))
    await cache.get_or_refresh("b", Fetcher(value="b"))
    await cache.get_or_refresh("a", Fetcher(value="never"))  # a is now most recent
    await cache.get_or_refresh("c", Fetcher(value="c"))
    assert "a" in cache
    assert "b" not in cache
    assert "c" in cache
    assert cache.statistics().evictions == 1


async def test_per_call_ttl_and_none_never_expires() -> None:
    clock = ManualClock()
    cache: RefreshCache[str, str] = RefreshCache(ttl_s=60, clock=clock)
    await cache.get_or_refresh("short", Fetcher(), ttl_s=1)
    await cache.get_or_refresh("forever", Fetcher(), ttl_s=None)
    clock.now += 1e9
    assert "short" not in cache
    assert "forever" in cache


async def test_jitter_spreads_expiries_below_the_ttl() -> None:
    clock = ManualClock()
    cache: RefreshCache[int, str] = RefreshCache(ttl_s=100, jitter=0.2, clock=clock)
    cache._random.seed(1)
    for i in range(200):
        await cache.get_or_refresh(i, Fetcher())
    lifetimes = [cache._data[i].expires - clock.now for i in range(200)]
    assert all(80 < life <= 100 for life in lifetimes)
    assert max(lifetimes) - min(lifetimes) > 15  # actually spread


async def test_xfetch_refreshes_a_hot_key_once_before_expiry() -> None:
    clock = ManualClock()
    cache: RefreshCache[str, str] = RefreshCache(
        ttl_s=60, early_refresh=1.0, clock=clock
    )
    cache._random.seed(3)

    async def slow_fetch() -> str:
        clock.now += 5.0  # the fetch "takes" 5 s: XFetch's delta
        return "v"

    await cache.get_or_refresh("hot", slow_fetch)
    expires = cache._data["hot"].expires
    fetches_before = cache.statistics().fetches
    # Hammer the key as expiry approaches, 0.1 s at a time.
    while clock.now < expires - 0.1:
        clock.now += 0.1
        await cache.get_or_refresh("hot", slow_fetch)
        if cache.statistics().fetches > fetches_before:
            break
    stats = cache.statistics()
    assert stats.early_refreshes == 1
    assert stats.fetches == fetches_before + 1
    assert clock.now < expires  # refreshed before the old value expired
    assert cache._data["hot"].expires > expires


async def test_xfetch_never_refreshes_early_while_a_refresh_runs() -> None:
    clock = ManualClock()
    cache: RefreshCache[str, str] = RefreshCache(
        ttl_s=10, early_refresh=1e6, clock=clock
    )
    await cache.get_or_refresh("k", Fetcher())
    cache._data["k"].delta = 1.0
    gate = anyio.Event()
    async with anyio.create_task_group() as tg:
        tg.start_soon(cache.get_or_refresh, "k", Fetcher(gate, value="new"))
        await wait_all_tasks_blocked()
        # beta is huge, so every call would refresh early, but one already is.
        for _ in range(100):
            assert await cache.get_or_refresh("k", Fetcher()) == "v1"
        gate.set()
    assert cache.statistics().early_refreshes == 1


async def test_stale_if_error_serves_the_last_good_value_within_its_window() -> None:
    clock = ManualClock()
    cache: RefreshCache[str, str] = RefreshCache(
        ttl_s=10, stale_if_error_s=30, clock=clock
    )

    async def failing() -> str:
        raise ConnectionError("down")

    await cache.get_or_refresh("k", Fetcher(value="good"))
    clock.now += 20  # expired 10 s ago: inside the stale window
    assert await cache.get_or_refresh("k", failing) == "good1"
    clock.now += 25  # expired 35 s ago: outside it
    with pytest.raises(ConnectionError):
        await cache.get_or_refresh("k", failing)
    stats = cache.statistics()
    assert (stats.stale_served, stats.fetch_errors) == (1, 2)


@pytest.mark.parametrize(
    ("kwargs", "error", "text"),
    [
        ({"ttl_s": -1}, ValueError, "ttl_s must be >= 0, got -1"),
        ({"ttl_s": math.nan}, ValueError, "ttl_s must be >= 0, got nan"),
        ({"ttl_s": "60"}, TypeError, "ttl_s must be a number of seconds, got '60'"),
        ({"max_entries": 0}, ValueError, "max_entries must be >= 1, got 0"),
        ({"max_entries": 1.5}, TypeError, "max_entries must be an int, got 1.5"),
        ({"jitter": 0.1, "ttl_s": None}, ValueError, "jitter=0.1 needs a ttl_s"),
        ({"jitter": 1.0}, ValueError, "jitter must be in [0, 1), got 1.0"),
        ({"jitter": math.nan}, ValueError, "jitter must be in [0, 1), got nan"),
        (
            {"jitter": "0.1"},
            TypeError,
            "jitter must be a number (a fraction of ttl_s), got '0.1'",
        ),
        (
            {"early_refresh": "1"},
            TypeError,
            "early_refresh must be a number (XFetch's beta), got '1'",
        ),
        (
            {"early_refresh": math.inf},
            ValueError,
            "early_refresh must be >= 0 and finite",
        ),
        ({"early_refresh": -1}, ValueError, "early_refresh must be >= 0"),
        ({"stale_if_error_s": math.nan}, ValueError, "stale_if_error_s must be >= 0"),
        ({"timeout_ms": -5}, ValueError, "timeout_ms must be >= 0"),
        ({"clock": 3}, TypeError, "clock must be callable, got 3"),
    ],
)
def test_bad_settings_are_rejected_at_construction(
    kwargs: dict[str, Any], error: type[Exception], text: str
) -> None:
    with pytest.raises(error) as exc_info:
        RefreshCache(**kwargs)
    assert text in str(exc_info.value)
    with pytest.raises(error):
        cached(**kwargs)


async def test_bad_call_arguments_change_nothing() -> None:
    cache: RefreshCache[str, str] = RefreshCache(clock=ManualClock())
    await cache.get_or_refresh("k", Fetcher())  # a hit path exists for "k"
    before = cache.statistics()
    for key in ("k", "cold"):
        with pytest.raises(TypeError, match="fetcher must be callable, got 'nope'"):
            await cache.get_or_refresh(key, "nope")  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="ttl_s must be >= 0, got -2"):
            await cache.get_or_refresh(key, Fetcher(), ttl_s=-2)
        with pytest.raises(ValueError, match="timeout_ms must be >= 0"):
            await cache.get_or_refresh(key, Fetcher(), timeout_ms=math.nan)
        with pytest.raises(TypeError, match="label must be a str or None"):
            await cache.get_or_refresh(key, Fetcher(), label=5)  # type: ignore[arg-type]
    assert cache.statistics() == before
    assert_no_fetch_state(cache)


async def test_bad_arguments_to_the_package_get_or_refresh_raise_on_hits_too() -> None:
    # Its fast path skips the validator only for plainly valid arguments.
    key = ("test_bad_package_arguments", id(anyio))
    await get_or_refresh(key, Fetcher())  # the key is warm: a hit path exists
    before = default_cache().statistics()
    cases: list[tuple[dict[str, Any], type[Exception], str]] = [
        ({"fetcher": "nope"}, TypeError, "fetcher must be callable, got 'nope'"),
        ({"ttl_s": -2}, ValueError, "ttl_s must be >= 0, got -2"),
        ({"ttl_s": math.nan}, ValueError, "ttl_s must be >= 0"),
        ({"ttl_s": True}, TypeError, "ttl_s"),
        ({"timeout_ms": math.nan}, ValueError, "timeout_ms must be >= 0"),
        ({"timeout_ms": "5"}, TypeError, "timeout_ms"),
        ({"label": 5}, TypeError, "label must be a str or None"),
    ]
    for bad, error, text in cases:
        args: dict[str, Any] = {"fetcher": Fetcher(), **bad}
        with pytest.raises(error, match=text):
            await get_or_refresh(key, **args)
    assert default_cache().statistics() == before
    default_cache().invalidate(key)


async def test_decorator_shares_calls_and_keys_on_arguments() -> None:
    gate = anyio.Event()
    calls: list[tuple[int, str]] = []

    @cached(ttl_s=30, max_entries=10)
    async def load(user_id: int, *, view: str = "full") -> str:
        calls.append((user_id, view))
        await gate.wait()
        return f"{user_id}:{view}"

    results: list[str] = []

    async def caller(uid: int, view: str) -> None:
        results.append(await load(uid, view=view))

    async with anyio.create_task_group() as tg:
        for _ in range(10):
            tg.start_soon(caller, 1, "full")
            tg.start_soon(caller, 2, "brief")
        await wait_all_tasks_blocked()
        gate.set()
    assert sorted(calls) == [(1, "full"), (2, "brief")]
    assert sorted(set(results)) == ["1:full", "2:brief"]
    assert await load(1, view="full") == "1:full"
    assert len(calls) == 2
    assert load.invalidate(1, view="full") is True
    assert await load(1, view="full") == "1:full"
    assert len(calls) == 3
    assert load.cache.statistics().maxsize == 10
    assert load.__name__ == "load"


async def test_package_level_get_or_refresh_is_the_drop_in() -> None:
    fetch = Fetcher(value="cfg")
    key = ("test_package_level", id(fetch))
    try:
        assert await get_or_refresh(key, fetch, ttl_s=60.0) == "cfg1"
        assert await get_or_refresh(key, fetch) == "cfg1"
        assert fetch.calls == 1
        assert key in default_cache()
    finally:
        default_cache().invalidate(key)


@pytest.mark.parametrize(
    "anyio_backend", [with_mock_clock(("trio", {}))], ids=["trio-mockclock"]
)
async def test_ttl_follows_the_event_loop_clock_when_injected() -> None:
    # On trio's autojumping MockClock, sleeping an hour is instant and exact.
    cache: RefreshCache[str, str] = RefreshCache(ttl_s=3600, clock=anyio.current_time)
    fetch = Fetcher()
    assert await cache.get_or_refresh("k", fetch) == "v1"
    await anyio.sleep(3599)
    assert await cache.get_or_refresh("k", fetch) == "v1"
    await anyio.sleep(1)
    assert await cache.get_or_refresh("k", fetch) == "v2"


async def test_decorator_single_argument_keys_stay_distinct_and_invalidate() -> None:
    calls: list[object] = []

    @cached()
    async def load(x: object) -> str:
        calls.append(x)
        return repr(x)

    assert await load(1) == "1"
    assert await load("1") == "'1'"  # 1 and "1" are different keys
    assert await load((1,)) == "(1,)"  # and so is the tuple (1,)
    assert await load(1) == "1"
    assert calls == [1, "1", (1,)]
    assert load.invalidate(1) is True
    assert load.invalidate(1) is False
    assert await load(1) == "1"
    assert calls == [1, "1", (1,), 1]


async def test_decorator_positional_and_keyword_calls_never_share_a_key() -> None:
    @cached()
    async def load(*args: object, **kwargs: object) -> str:
        return f"{args}{kwargs}"

    keyword = await load(1, x=2)
    # The positional twin of the keyword call's naive key (args, items):
    positional = await load((1,), (("x", 2),))
    assert keyword != positional
    assert len(load.cache) == 2


class CallerCount:
    """Counts its calls; raises ValueError once released."""

    def __init__(self) -> None:
        self.gate = anyio.Event()
        self.calls = 0

    async def __call__(self, *args: object) -> str:
        self.calls += 1
        await self.gate.wait()
        raise ValueError("backend down")


def traceback_length(exc: BaseException) -> int:
    n, tb = 0, exc.__traceback__
    while tb is not None:
        n, tb = n + 1, tb.tb_next
    return n


@pytest.mark.parametrize("how", ["RefreshCache", "get_or_refresh", "@cached"])
async def test_shared_fetch_error_traceback_stays_bounded(how: str) -> None:
    # Regression: the shared exception's traceback grew two frames per caller.
    boom = CallerCount()
    key = ("test_shared_fetch_error_traceback_stays_bounded", how)
    cache: RefreshCache[Any, str] = RefreshCache()
    decorated = cached(boom)
    calls: dict[str, Callable[[], Awaitable[str]]] = {
        "RefreshCache": lambda: cache.get_or_refresh(key, boom),
        "get_or_refresh": lambda: get_or_refresh(key, boom),
        "@cached": lambda: decorated(key),
    }
    call = calls[how]
    lengths: list[int] = []
    errors: list[BaseException] = []

    async def caller() -> None:
        try:
            await call()
        except ValueError as exc:
            lengths.append(traceback_length(exc))
            errors.append(exc)

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            for _ in range(100):
                tg.start_soon(caller)
            await wait_all_tasks_blocked()
            boom.gate.set()
    assert boom.calls == 1
    assert len(errors) == 100
    assert all(e is errors[0] for e in errors)
    assert max(lengths) <= 16, lengths
    assert lengths[1:] == [lengths[1]] * 99, lengths


async def test_failed_early_refresh_serves_the_still_fresh_value() -> None:
    # Regression: an XFetch refresh that failed turned a fresh hit into its error.
    clock = ManualClock()
    cache: RefreshCache[str, str] = RefreshCache(
        ttl_s=10, early_refresh=1e9, clock=clock
    )
    await cache.get_or_refresh("k", Fetcher(value="good"))
    cache._data["k"].delta = 1.0  # beta is huge: every hit now refreshes early
    failures = 0

    async def failing() -> str:
        nonlocal failures
        failures += 1
        raise ConnectionError("down")

    clock.now += 5  # still fresh
    assert await cache.get_or_refresh("k", failing) == "good1"
    assert await cache.get_or_refresh("k", failing) == "good1"  # the error is not kept
    stats = cache.statistics()
    assert failures == 2
    assert (stats.early_refreshes, stats.fetch_errors, stats.stale_served) == (2, 2, 0)
    clock.now += 5  # expired now, and no stale_if_error: the error comes through
    with pytest.raises(ConnectionError):
        await cache.get_or_refresh("k", failing)
    assert_no_fetch_state(cache)


async def test_sync_fetcher_is_rejected_naming_it_and_leaves_nothing() -> None:
    cache: RefreshCache[str, int] = RefreshCache(stale_if_error_s=1e9)

    async def good() -> int:
        return 1

    def sync_fetcher() -> int:
        return 5

    before = cache.statistics()
    with pytest.raises(
        TypeError, match=r"fetcher must be an async function .*sync_fetcher"
    ):
        await cache.get_or_refresh("k", sync_fetcher)  # type: ignore[arg-type]
    after = cache.statistics()
    assert (after.fetches, after.fetch_errors, after.in_flight) == (0, 0, 0)
    assert after.misses == before.misses + 1  # it was a miss: nothing was cached
    assert_no_fetch_state(cache)
    assert await cache.get_or_refresh("k", lambda: good()) == 1  # a lambda is fine
    # Even with a stale value at hand, a sync fetcher is an error, not stale-served.
    cache.invalidate("k")
    await cache.get_or_refresh("k", good, ttl_s=0)
    with pytest.raises(TypeError, match="sync_fetcher"):
        await cache.get_or_refresh("k", sync_fetcher)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="sync_fetcher"):
        await get_or_refresh(("test_sync_fetcher", id(cache)), sync_fetcher)  # type: ignore[arg-type]
    assert_no_fetch_state(default_cache())


async def test_fetcher_failing_before_its_first_await_is_a_fetch_error() -> None:
    clock = ManualClock()
    cache: RefreshCache[str, str] = RefreshCache(
        ttl_s=10, stale_if_error_s=30, clock=clock
    )
    await cache.get_or_refresh("k", Fetcher(value="good"))
    clock.now += 20

    def broken() -> Awaitable[str]:
        raise ConnectionError("no connection")  # before any awaitable exists

    assert await cache.get_or_refresh("k", broken) == "good1"  # stale-served
    assert cache.statistics().fetch_errors == 1
    assert_no_fetch_state(cache)


def test_signatures_show_named_defaults() -> None:
    for fn in (RefreshCache.get_or_refresh, cached, get_or_refresh):
        text = str(inspect.signature(fn))
        assert "object at 0x" not in text, text
    text = str(inspect.signature(RefreshCache.get_or_refresh))
    assert "ttl_s: 'float | None' = <cache default>" in text, text
    assert "timeout_ms: 'float | None' = <cache default>" in text, text
    from anyio_mutex._refresh import _UNSET

    assert pickle.loads(pickle.dumps(_UNSET)) is _UNSET


def test_is_weak_referenceable() -> None:
    cache: RefreshCache[str, str] = RefreshCache()
    ref = weakref.ref(cache)
    assert ref() is cache
    del cache
    gc.collect()
    assert ref() is None


async def test_durations_too_large_for_a_float_mean_forever() -> None:
    # Regression: each was accepted as "forever" by the checks, then raised
    # OverflowError later: a per-call ttl_s when the value was stored (shared with
    # every waiter, nothing cached), a timeout_ms in a caller that had to wait.
    clock = ManualClock()
    cache: RefreshCache[str, str] = RefreshCache(clock=clock, timeout_ms=10**400)
    fetch = Fetcher()
    assert await cache.get_or_refresh("k", fetch, ttl_s=10**400) == "v1"
    clock.now += 1e300
    assert await cache.get_or_refresh("k", fetch) == "v1"  # never expires
    key = ("test_refresh", "huge ttl")
    try:
        assert await get_or_refresh(key, fetch, ttl_s=10**400) == "v2"
        assert await get_or_refresh(key, fetch) == "v2"
    finally:
        default_cache().invalidate(key)

    @cached(timeout_ms=10**400)
    async def slow(n: int) -> int:
        await gate.wait()
        return n

    gate = anyio.Event()
    got: list[object] = []

    async def follow(fn: Callable[[], Awaitable[object]]) -> None:
        got.append(await fn())

    slow_fetch = Fetcher(gate)
    async with anyio.create_task_group() as tg:
        tg.start_soon(cache.get_or_refresh, "slow", slow_fetch)
        tg.start_soon(slow, 7)
        await wait_all_tasks_blocked()
        tg.start_soon(follow, functools.partial(cache.get_or_refresh, "slow", fetch))
        tg.start_soon(follow, functools.partial(slow, 7))
        await wait_all_tasks_blocked()
        assert got == []
        gate.set()
    assert sorted(map(str, got)) == ["7", "v1"]
    assert_no_fetch_state(cache)
