"""SingleFlight's shared timer: the timed waiters of one call share one deadline.

Only one waiter (the holder) waits under a real deadline; the timeouts of the others
must stay exact all the same: each times out at its own deadline (real ``waited_ms``,
counted once), whether the holder times out, is cancelled (by anyio or natively, with
``Task.cancel()``), or sees the call end. On trio these tests run on the autojumping
MockClock, so times are exact; on asyncio they use real time with generous bounds.
"""

from __future__ import annotations

import random
from typing import Any

import anyio
import pytest
from anyio import wait_all_tasks_blocked

from anyio_mutex import MutexTimeoutError, SingleFlight

from .conftest import BACKENDS, asyncio_only, with_mock_clock

pytestmark = pytest.mark.anyio

SLACK_MS = 1.0  # float rounding of deadlines (uvloop's clock has ms resolution)
# Real-time upper bound on asyncio: a loaded 2-core machine can stall a task for a
# long while, but not for seconds; virtual time is exact.
LATE_MS = 2000.0


@pytest.fixture(params=BACKENDS)
def anyio_backend(request: pytest.FixtureRequest) -> Any:
    return with_mock_clock(request.param)


def virtual(anyio_backend: Any) -> bool:
    return "clock" in anyio_backend[1]


def check_wait(err: MutexTimeoutError, timeout_ms: float, exact: bool) -> None:
    assert err.timeout_ms == timeout_ms
    assert err.waited_ms >= timeout_ms - SLACK_MS
    assert err.waited_ms <= timeout_ms + (SLACK_MS if exact else LATE_MS)


class Flight:
    """A flight whose leader runs until ``gate`` is set, and its timed waiters."""

    def __init__(self) -> None:
        self.flight: SingleFlight[str, str] = SingleFlight("timer")
        self.gate = anyio.Event()
        self.results: dict[str, object] = {}
        self.scopes: dict[str, anyio.CancelScope] = {}
        self.changed = anyio.Event()  # set (and replaced) on each new result

    async def until(self, condition: Any) -> None:
        """Wait until ``condition()`` holds; it is checked after each result."""
        while not condition():
            self.changed = anyio.Event()
            await self.changed.wait()

    def record(self, name: str, result: object) -> None:
        self.results[name] = result
        self.changed.set()

    async def work(self) -> str:
        await self.gate.wait()
        return "value"

    async def wait(self, name: str, timeout_ms: float | None) -> None:
        with anyio.CancelScope() as scope:
            self.scopes[name] = scope
            try:
                self.record(
                    name, await self.flight.do("k", self.work, timeout_ms=timeout_ms)
                )
            except MutexTimeoutError as exc:
                self.record(name, exc)
        if scope.cancelled_caught:
            self.record(name, "cancelled")


async def test_holder_timing_out_leaves_each_sharer_its_own_deadline(
    anyio_backend: Any,
) -> None:
    f = Flight()
    timeouts = {"holder": 100, "equal": 100, "later": 200, "latest": 300}
    with anyio.fail_after(30):
        async with anyio.create_task_group() as tg:
            tg.start_soon(f.flight.do, "k", f.work)  # the leader
            await wait_all_tasks_blocked()
            for name, timeout_ms in timeouts.items():  # "holder" arrives first
                tg.start_soon(f.wait, name, timeout_ms)
                await wait_all_tasks_blocked()
            tg.start_soon(f.wait, "untimed", None)
            await f.until(lambda: len(f.results) >= len(timeouts))
            f.gate.set()
    for name, timeout_ms in timeouts.items():
        err = f.results[name]
        assert isinstance(err, MutexTimeoutError), (name, err)
        check_wait(err, timeout_ms, virtual(anyio_backend))
    assert f.results["untimed"] == "value"
    assert f.flight.statistics().timeouts == 4


async def test_cancelled_holder_hands_the_timer_on(anyio_backend: Any) -> None:
    await _cancelled_holder_hands_the_timer_on(anyio_backend, "anyio")


@asyncio_only  # Task.cancel() is asyncio's own
async def test_natively_cancelled_holder_hands_the_timer_on(anyio_backend: Any) -> None:
    await _cancelled_holder_hands_the_timer_on(anyio_backend, "native")


async def _cancelled_holder_hands_the_timer_on(anyio_backend: Any, how: str) -> None:
    f = Flight()
    timeouts = {"equal": 300, "later": 500}
    with anyio.fail_after(30):
        async with anyio.create_task_group() as tg:
            tg.start_soon(f.flight.do, "k", f.work)
            await wait_all_tasks_blocked()
            if how == "anyio":
                tg.start_soon(f.wait, "holder", 300)
            else:
                import asyncio

                task = asyncio.create_task(f.flight.do("k", f.work, timeout_ms=300))
            await wait_all_tasks_blocked()
            for name, timeout_ms in timeouts.items():
                tg.start_soon(f.wait, name, timeout_ms)
            await wait_all_tasks_blocked()
            await anyio.sleep(0.1)
            if how == "anyio":
                f.scopes["holder"].cancel()
            else:
                task.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await task
            await f.until(lambda: "equal" in f.results)
            # The flight ends before the later sharer's deadline: it gets the value.
            f.gate.set()
    if how == "anyio":
        assert f.results["holder"] == "cancelled"
    err = f.results["equal"]
    assert isinstance(err, MutexTimeoutError)
    check_wait(err, 300, virtual(anyio_backend))
    assert f.results["later"] == "value"
    assert f.flight.statistics().timeouts == 1


async def test_holder_cancelled_twice_then_sharers_still_expire_exactly(
    anyio_backend: Any,
) -> None:
    # Each cancelled holder wakes the sharers early; after two early wakes a waiter
    # keeps its own timer, and every deadline still holds.
    f = Flight()
    names = [f"w{i}" for i in range(6)]
    with anyio.fail_after(30):
        async with anyio.create_task_group() as tg:
            tg.start_soon(f.flight.do, "k", f.work)
            await wait_all_tasks_blocked()
            for i, name in enumerate(names):
                tg.start_soon(f.wait, name, 300 + 50 * i)
                await wait_all_tasks_blocked()
            for name in names[:3]:  # each is the holder when cancelled
                await anyio.sleep(0.02)
                f.scopes[name].cancel()
                await wait_all_tasks_blocked()
            await f.until(lambda: len(f.results) >= len(names))
            f.gate.set()
    for i, name in enumerate(names):
        if i < 3:
            assert f.results[name] == "cancelled"
        else:
            err = f.results[name]
            assert isinstance(err, MutexTimeoutError), (name, err)
            check_wait(err, 300 + 50 * i, virtual(anyio_backend))
    assert f.flight.statistics().timeouts == 3


async def test_the_holder_sees_the_call_end_and_nobody_times_out(
    anyio_backend: Any,
) -> None:
    f = Flight()
    with anyio.fail_after(30):
        async with anyio.create_task_group() as tg:
            tg.start_soon(f.flight.do, "k", f.work)
            await wait_all_tasks_blocked()
            for i in range(5):
                tg.start_soon(f.wait, f"w{i}", 100 + i)
            await wait_all_tasks_blocked()
            f.gate.set()
        # Long after the deadlines would have passed, nothing fires late.
        await anyio.sleep(0.3)
    assert list(f.results.values()) == ["value"] * 5
    assert f.flight.statistics().timeouts == 0
    assert len(f.flight) == 0


async def test_an_earlier_deadline_than_the_holders_keeps_its_own(
    anyio_backend: Any,
) -> None:
    f = Flight()
    with anyio.fail_after(30):
        async with anyio.create_task_group() as tg:
            tg.start_soon(f.flight.do, "k", f.work)
            await wait_all_tasks_blocked()
            tg.start_soon(f.wait, "holder", 5000)
            await wait_all_tasks_blocked()
            tg.start_soon(f.wait, "early", 100)
            await f.until(lambda: "early" in f.results)
            assert "holder" not in f.results  # still waiting, its deadline is far
            f.gate.set()
    err = f.results["early"]
    assert isinstance(err, MutexTimeoutError)
    check_wait(err, 100, virtual(anyio_backend))
    assert f.results["holder"] == "value"


async def test_an_enclosing_deadline_wins_over_a_sharers_own(
    anyio_backend: Any,
) -> None:
    f = Flight()
    outer: list[bool] = []

    async def enclosed(outer_s: float, timeout_ms: float) -> None:
        with anyio.move_on_after(outer_s) as scope:
            await f.flight.do("k", f.work, timeout_ms=timeout_ms)
        outer.append(scope.cancelled_caught)
        f.changed.set()

    with anyio.fail_after(30):
        async with anyio.create_task_group() as tg:
            tg.start_soon(f.flight.do, "k", f.work)
            await wait_all_tasks_blocked()
            tg.start_soon(f.wait, "holder", 200)
            await wait_all_tasks_blocked()
            tg.start_soon(enclosed, 0.1, 300)  # a sharer, cancelled before its own
            if virtual(anyio_backend):
                # Same instant as the holder's deadline: the cancellation still wins.
                tg.start_soon(enclosed, 0.2, 200)
            await f.until(lambda: len(outer) >= (2 if virtual(anyio_backend) else 1))
            await f.until(lambda: "holder" in f.results)
            f.gate.set()
    assert outer == [True] * len(outer)
    assert isinstance(f.results["holder"], MutexTimeoutError)
    assert f.flight.statistics().timeouts == 1  # the cancelled ones are not counted


SEED = 20261130


@pytest.mark.heavy  # uvloop changes nothing in this bookkeeping
async def test_random_waiters_timeouts_and_cancellations_stay_exact(
    anyio_backend: Any,
) -> None:
    """Rounds of one flight with timed waiters, cancelled holders and leaders.

    On virtual time every timeout must land exactly on its deadline, and every waiter
    that got the value must have got it by its deadline. Times are whole
    milliseconds and flights end at half milliseconds, so no two collide.
    """
    print(f"singleflight timer seed={SEED}")
    rng = random.Random(SEED)
    exact = virtual(anyio_backend)
    flight: SingleFlight[int, str] = SingleFlight("stress")
    counts = {"value": 0, "timed out": 0, "cancelled": 0, "holders cancelled": 0}
    errors = 0

    leaders: set[tuple[int, int]] = set()

    async def work(rnd: int, duration_ms: int, me: int) -> str:
        leaders.add((rnd, me))  # a leader's own execution is not bounded
        await anyio.sleep(duration_ms / 1000 + 0.0005)
        return f"round {rnd}"

    async def waiter(
        rnd: int,
        me: int,
        delay_ms: int,
        timeout_ms: float | None,
        duration_ms: int,
        scope: anyio.CancelScope,
    ) -> None:
        nonlocal errors
        await anyio.sleep(delay_ms / 1000)
        with scope:
            start = anyio.current_time()
            try:
                value = await flight.do(
                    rnd, work, rnd, duration_ms, me, timeout_ms=timeout_ms
                )
            except MutexTimeoutError as exc:
                errors += 1
                counts["timed out"] += 1
                assert timeout_ms is not None
                check_wait(exc, timeout_ms, exact)
                if exact:
                    now = anyio.current_time()
                    assert abs((now - start) * 1000 - timeout_ms) < SLACK_MS
                return
            assert value == f"round {rnd}"
            counts["value"] += 1
            if exact and timeout_ms is not None and (rnd, me) not in leaders:
                waited_ms = (anyio.current_time() - start) * 1000
                assert waited_ms <= timeout_ms + SLACK_MS
        if scope.cancelled_caught:
            counts["cancelled"] += 1

    async def native_waiter(rnd: int, timeout_ms: float, duration_ms: int) -> None:
        import asyncio

        task = asyncio.create_task(
            flight.do(rnd, work, rnd, duration_ms, -1, timeout_ms=timeout_ms)
        )
        await anyio.sleep(rng.randrange(1, 40) / 1000)
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            counts["holders cancelled"] += 1
        except MutexTimeoutError:
            counts["timed out"] += 1
            nonlocal errors
            errors += 1

    rounds = 12 if exact else 6
    with anyio.fail_after(60):
        for rnd in range(rounds):
            async with anyio.create_task_group() as tg:
                duration_ms = rng.randrange(5, 80)
                scopes: list[anyio.CancelScope] = []
                for i in range(rng.randrange(5, 30)):
                    scope = anyio.CancelScope()
                    scopes.append(scope)
                    timeouts = [0, 1, 5, 20, 30, 30, 60, 100, 5000]
                    if i == 0:  # the leader, first to arrive
                        delay_ms, timeout_ms = 0, None
                    elif i == 1:  # the first timed waiter: it holds the timer
                        delay_ms, timeout_ms = 1, rng.choice(timeouts[3:])
                    else:
                        delay_ms = rng.randrange(1, 50)
                        timeout_ms = rng.choice([None, *timeouts])
                    tg.start_soon(
                        waiter, rnd, i, delay_ms, timeout_ms, duration_ms, scope
                    )
                if anyio_backend[0] == "asyncio" and rng.random() < 0.5:
                    # A native Task.cancel() of a timed waiter (often the holder).
                    tg.start_soon(native_waiter, rnd, 40, duration_ms)
                await wait_all_tasks_blocked()
                for _ in range(rng.randrange(0, 4)):
                    await anyio.sleep(rng.randrange(1, 30) / 1000)
                    victim = 1 if rng.random() < 0.5 else rng.randrange(len(scopes))
                    if victim == 1:
                        counts["holders cancelled"] += 1
                    scopes[victim].cancel()  # the leader, the holder, or a sharer
    print(f"singleflight timer seed={SEED} counts={counts}")
    assert flight.statistics().timeouts == errors
    assert counts["value"] > 0
    assert counts["timed out"] > 0
    assert counts["holders cancelled"] > 0
    assert len(flight) == 0


async def test_waited_ms_is_never_below_the_timeout(anyio_backend: Any) -> None:
    # The deadline passed, so the wait lasted timeout_ms at least; on trio's exact
    # MockClock, start + 10.1 ms - start came out as 10.099999999999998 ms.
    f = Flight()
    odd = (0.3, 0.7, 1.1, 2.9, 3.3, 7.7, 10.1, 13.7, 33.3, 70.7)
    async with anyio.create_task_group() as tg:
        tg.start_soon(f.flight.do, "k", f.work)
        await wait_all_tasks_blocked()
        for timeout_ms in odd:
            with pytest.raises(MutexTimeoutError) as info:
                await f.flight.do("k", f.work, timeout_ms=timeout_ms)
            assert info.value.waited_ms >= timeout_ms
            assert info.value.waiting_for == "the call for key 'k'"
        f.gate.set()
    assert f.flight.statistics().timeouts == len(odd)


async def test_a_timeout_too_large_for_a_float_waits_forever(
    anyio_backend: Any,
) -> None:
    # Regression: 10**400 (valid: "forever") raised OverflowError in a waiter.
    f = Flight()
    async with anyio.create_task_group() as tg:
        tg.start_soon(f.flight.do, "k", f.work)
        await wait_all_tasks_blocked()
        tg.start_soon(f.wait, "huge", 10**400)
        await wait_all_tasks_blocked()
        if virtual(anyio_backend):
            await anyio.sleep(10**6)  # a million virtual seconds: still waiting
        assert f.results == {}
        f.gate.set()
    assert f.results == {"huge": "value"}
