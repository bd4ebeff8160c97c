"""Mutex and AsyncMutex specifics: timeouts, statistics, checkpoints, anyio compatibility.

Timeout tests run trio on an autojumping MockClock, so waits there are exact and
instant; on asyncio they use short real deadlines and assert bounds.
"""

from __future__ import annotations

import pickle
from typing import Any

import anyio
import pytest
from anyio import wait_all_tasks_blocked
from anyio.lowlevel import checkpoint

from anyio_mutex import (
    AsyncMutex,
    LockOrderError,
    Mutex,
    MutexError,
    MutexLoopError,
    MutexReentryError,
    MutexReleaseError,
    MutexStatistics,
    MutexTimeoutError,
)

from .conftest import BACKENDS, with_mock_clock

pytestmark = pytest.mark.anyio

MUTEX_TYPES = [Mutex, AsyncMutex]
# Float rounding of deadlines (uvloop's clock also has millisecond resolution).
CLOCK_SLACK_MS = 1.0


@pytest.fixture(params=BACKENDS)
def anyio_backend(request: pytest.FixtureRequest) -> Any:
    return with_mock_clock(request.param)


def is_virtual_time(anyio_backend: Any) -> bool:
    return "clock" in anyio_backend[1]


@pytest.mark.parametrize("cls", MUTEX_TYPES)
async def test_timeout_reports_the_real_wait(
    cls: type[Mutex], anyio_backend: Any
) -> None:
    m = cls("db")
    await m.acquire(label="holder")
    caught: list[MutexTimeoutError] = []

    async def contender() -> None:
        with pytest.raises(MutexTimeoutError) as exc_info:
            await m.acquire(timeout_ms=50, label="late")
        caught.append(exc_info.value)

    start = anyio.current_time()
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(contender)
    elapsed_ms = (anyio.current_time() - start) * 1000
    err = caught[0]
    assert isinstance(err, TimeoutError)
    assert err.timeout_ms == 50
    assert err.label == "db"
    assert err.owner == "holder"
    assert 50 - CLOCK_SLACK_MS <= err.waited_ms <= elapsed_ms + CLOCK_SLACK_MS
    if is_virtual_time(anyio_backend):
        assert err.waited_ms == pytest.approx(50)
    assert str(err).startswith(
        f"Mutex acquisition timed out after {err.waited_ms:.0f}ms"
    )
    assert str(err).endswith("(timeout_ms=50, lock 'db', held by 'holder')")
    stats = m.statistics()
    assert (stats.timeouts, stats.tasks_waiting, stats.owner_label) == (1, 0, "holder")
    assert stats.total_acquisitions == 1
    m.release()


@pytest.mark.parametrize("cls", MUTEX_TYPES)
async def test_timed_waiter_that_gets_the_lock_in_time_succeeds(
    cls: type[Mutex],
) -> None:
    m = cls()
    await m.acquire()
    got = anyio.Event()

    async def contender() -> None:
        await m.acquire(timeout_ms=60_000, label="in-time")
        assert m.current_owner == "in-time"
        got.set()
        m.release()

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(contender)
            await wait_all_tasks_blocked()
            m.release()
    assert got.is_set()
    stats = m.statistics()
    assert (stats.contended_acquisitions, stats.timeouts) == (1, 0)


@pytest.mark.parametrize("cls", MUTEX_TYPES)
async def test_enclosing_deadline_equal_to_own_deadline_is_not_swallowed(
    cls: type[Mutex], anyio_backend: Any
) -> None:
    # Both deadlines expire together: the caller's move_on_after must still win, or
    # a MutexTimeoutError would escape a scope that promised to swallow the timeout.
    m = cls()
    await m.acquire()
    outcome: list[str] = []

    async def contender() -> None:
        deadline = anyio.current_time() + 0.05
        with anyio.CancelScope(deadline=deadline) as scope:
            await m.acquire(timeout_ms=50)
        outcome.append(f"swallowed={scope.cancelled_caught}")

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(contender)
    if is_virtual_time(anyio_backend):
        assert outcome == ["swallowed=True"]
    else:  # real clocks: the two deadlines may differ by the time between readings
        assert outcome in (["swallowed=True"], [])
    assert m.statistics().tasks_waiting == 0
    m.release()


@pytest.mark.parametrize("cls", MUTEX_TYPES)
async def test_timeout_at_the_handoff_leaves_no_trace(
    cls: type[Mutex], anyio_backend: Any
) -> None:
    # The holder releases at exactly the waiter's deadline (virtual time on trio).
    m = cls()
    await m.acquire(label="holder")
    results: list[str] = []

    async def contender() -> None:
        try:
            await m.acquire(timeout_ms=100, label="racer")
        except MutexTimeoutError:
            results.append("timed out")
        else:
            results.append(f"acquired as {m.current_owner}")
            m.release()

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(contender)
            await wait_all_tasks_blocked()  # the contender is queued
            # Not synchronisation: the release is meant to race the 100 ms deadline
            # (exactly, on trio's virtual clock; either outcome is accepted).
            await anyio.sleep(0.1)
            m.release()
    assert len(results) == 1
    assert results[0] in ("timed out", "acquired as racer")
    stats = m.statistics()
    assert not stats.locked
    assert stats.owner_label is None
    assert stats.tasks_waiting == 0
    assert stats.total_acquisitions + stats.timeouts == 2


@pytest.mark.parametrize("cls", MUTEX_TYPES)
async def test_statistics_extend_anyio_lock_statistics(cls: type[Mutex]) -> None:
    m = cls("stats")
    stats = m.statistics()
    assert isinstance(stats, anyio.LockStatistics)
    assert isinstance(stats, MutexStatistics)
    assert stats == MutexStatistics(
        locked=False,
        owner=None,
        tasks_waiting=0,
        owner_label=None,
        total_acquisitions=0,
        contended_acquisitions=0,
        timeouts=0,
        longest_wait_ms=0.0,
    )
    await m.acquire(label="me")
    stats = m.statistics()
    assert stats.locked
    assert stats.owner == anyio.get_current_task()
    assert stats.owner_label == "me"
    with pytest.raises(AttributeError):
        stats.locked = False  # type: ignore[misc]
    m.release()


@pytest.mark.parametrize("cls", MUTEX_TYPES)
async def test_longest_wait_and_contended_count(
    cls: type[Mutex], anyio_backend: Any
) -> None:
    m = cls()
    await m.acquire()

    async def contender() -> None:
        async with m:
            pass

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(contender)
            await wait_all_tasks_blocked()  # the contender is queued
            # Not synchronisation: a wait of known length to measure (only a lower
            # bound is asserted on real clocks).
            await anyio.sleep(0.03)
            m.release()
    stats = m.statistics()
    assert stats.contended_acquisitions == 1
    assert stats.total_acquisitions == 2
    assert stats.longest_wait_ms >= 30 - CLOCK_SLACK_MS
    if is_virtual_time(anyio_backend):
        assert stats.longest_wait_ms == pytest.approx(30)


@pytest.mark.parametrize("cls", MUTEX_TYPES)
async def test_works_with_anyio_condition(cls: type[Mutex]) -> None:
    m = cls()
    cond = anyio.Condition(m)
    items: list[int] = []

    async def consumer() -> None:
        async with cond:
            while not items:
                await cond.wait()
            items.pop()

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(consumer)
            await wait_all_tasks_blocked()
            async with cond:
                items.append(1)
                cond.notify()
    assert items == []
    assert not m.locked()


@pytest.mark.parametrize("cls", MUTEX_TYPES)
@pytest.mark.parametrize("fast_acquire", [False, True])
async def test_uncontended_acquire_yields_unless_fast_acquire(
    cls: type[Mutex], fast_acquire: bool, anyio_backend: Any
) -> None:
    m = cls(fast_acquire=fast_acquire)
    if anyio_backend[0] == "trio":
        import trio

        # trio.testing.assert_checkpoints() reads these same counters; fast_acquire
        # means "a cancel point but no schedule point", which it cannot express.
        task = trio.lowlevel.current_task()
        cancel_points, schedule_points = task._cancel_points, task._schedule_points
        await m.acquire()
        m.release()
        assert task._cancel_points > cancel_points
        assert (task._schedule_points > schedule_points) is (not fast_acquire)
        return
    # asyncio runs ready tasks in FIFO order: a yield lets "other" run first.
    ran = False

    async def other() -> None:
        nonlocal ran
        ran = True

    async with anyio.create_task_group() as tg:
        tg.start_soon(other)
        async with m:
            assert ran is (not fast_acquire)


@pytest.mark.parametrize("cls", MUTEX_TYPES)
@pytest.mark.parametrize("fast_acquire", [False, True])
async def test_acquire_in_a_cancelled_scope_raises_and_holds_nothing(
    cls: type[Mutex], fast_acquire: bool
) -> None:
    m = cls(fast_acquire=fast_acquire)
    with anyio.CancelScope() as scope:
        scope.cancel()
        await m.acquire(label="never")
        pytest.fail("acquire should have been cancelled")  # pragma: no cover
    assert not m.locked()
    assert m.current_owner is None
    assert m.total_acquisitions == 0


@pytest.mark.parametrize("cls", MUTEX_TYPES)
def test_constructed_outside_a_loop_then_used_on_a_backend(
    cls: type[Mutex], anyio_backend: Any
) -> None:
    m = cls("module-level")
    assert not m.locked()
    assert m.statistics().total_acquisitions == 0

    async def use() -> int:
        counter = 0

        async def bump() -> None:
            nonlocal counter
            async with m:
                value = counter
                await checkpoint()
                counter = value + 1

        async with anyio.create_task_group() as tg:
            for _ in range(10):
                tg.start_soon(bump)
        return counter

    name, options = anyio_backend
    assert anyio.run(use, backend=name, backend_options=options) == 10


async def test_async_mutex_releaser_is_single_use() -> None:
    m = AsyncMutex("once")
    release = await m.acquire(label="a")
    release()
    with pytest.raises(
        MutexReleaseError, match="this acquisition was already released"
    ):
        release()
    # a stale releaser must not release a later acquisition
    release_b = await m.acquire(label="b")
    with pytest.raises(MutexReleaseError):
        release()
    assert m.current_owner == "b"
    release_b()
    assert not m.is_locked


@pytest.mark.parametrize("cls", MUTEX_TYPES)
async def test_release_of_a_free_mutex_raises(cls: type[Mutex]) -> None:
    m = cls("free")
    with pytest.raises(
        MutexReleaseError, match="Cannot release lock 'free': it is not"
    ):
        m.release()
    async with m:
        pass
    with pytest.raises(MutexReleaseError):
        m.release()


@pytest.mark.parametrize("cls", MUTEX_TYPES)
async def test_with_lock_returns_result_and_releases_on_error(cls: type[Mutex]) -> None:
    m = cls()

    async def work() -> str:
        assert m.current_owner == "worker"
        return "done"

    assert await m.with_lock(work, label="worker") == "done"

    async def boom() -> None:
        raise KeyError("x")

    with pytest.raises(KeyError):
        await m.with_lock(boom)
    assert not m.locked()
    with pytest.raises(TypeError, match="fn must be callable, got 3"):
        await m.with_lock(3)  # type: ignore[arg-type]
    assert m.total_acquisitions == 2


@pytest.mark.parametrize("cls", MUTEX_TYPES)
async def test_acquire_nowait(cls: type[Mutex]) -> None:
    m = cls()
    m.acquire_nowait(label="now")
    assert m.current_owner == "now"
    blocked: list[bool] = []

    async def other() -> None:
        try:
            m.acquire_nowait()
        except anyio.WouldBlock:
            blocked.append(True)

    async with anyio.create_task_group() as tg:
        tg.start_soon(other)
    assert blocked == [True]
    m.release()
    assert m.total_acquisitions == 1


def test_constructor_validates() -> None:
    with pytest.raises(TypeError, match="label must be a str, got None"):
        Mutex(None)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="fast_acquire must be a bool, got 1"):
        AsyncMutex(fast_acquire=1)  # type: ignore[arg-type]


def test_errors_pickle_and_keep_fields() -> None:
    err = MutexTimeoutError(12.5, timeout_ms=10, label="l", owner="o")
    clone = pickle.loads(pickle.dumps(err))
    assert (clone.waited_ms, clone.timeout_ms, clone.label, clone.owner) == (
        12.5,
        10,
        "l",
        "o",
    )
    assert str(clone) == str(err)
    assert str(MutexTimeoutError(3.4)) == "Mutex acquisition timed out after 3ms"


@pytest.mark.parametrize(
    "err",
    [
        MutexTimeoutError(
            7.0, timeout_ms=5, label="c", owner="o", waiting_for="the fetch of key 1"
        ),
        MutexReleaseError("l", "o", reason="it is not locked"),
        MutexReentryError("l", "o"),
        MutexReentryError("l", "o", reason="it holds the read lock; upgrading"),
        MutexLoopError("l", "o", reason="no event loop"),
        LockOrderError(wanted="a", holding="b", first_seen="x.py:1", here="y.py:2"),
    ],
    ids=lambda err: type(err).__name__,
)
def test_every_error_pickles_with_its_fields(err: MutexError) -> None:
    # Regression: 5 of 6 error classes could not be unpickled (anyio.to_process,
    # multiprocessing and pickle-based log shippers broke on them).
    clone = pickle.loads(pickle.dumps(err))
    assert type(clone) is type(err)
    assert vars(clone) == vars(err)
    assert str(clone) == str(err)


def test_timeout_error_says_what_was_waited_for() -> None:
    err = MutexTimeoutError(5.0, timeout_ms=5, owner="refresh:1", waiting_for="x")
    assert str(err).startswith("Mutex acquisition timed out after 5ms waiting for x")


def test_repr() -> None:
    m = AsyncMutex("r")
    assert repr(m) == "<AsyncMutex 'r' free>"
