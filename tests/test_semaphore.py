"""Semaphore: at most ``limit`` permits, FIFO hand-off, no trace from a waiter that leaves.

A one-permit Semaphore also runs the shared contract suite (tests/test_contract.py),
and limits 1 and 3 run in tests/test_stress.py. Timeout tests use trio's MockClock
(virtual time: instant and exact); on asyncio they use short real deadlines and
assert bounds. Native asyncio cancellation (``Task.cancel()``, ``asyncio.timeout``),
which anyio's shield does not stop, is tested on the asyncio backends.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import pickle
import random
import sys
import threading
import weakref
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Any

import anyio
import pytest
import trio
import trio.testing
from anyio import wait_all_tasks_blocked
from anyio.lowlevel import checkpoint

from anyio_mutex import (
    MutexLoopError,
    MutexReleaseError,
    MutexTimeoutError,
    Semaphore,
    SemaphoreStatistics,
)

from .conftest import BACKENDS, asyncio_only, with_mock_clock

pytestmark = pytest.mark.anyio

# Float rounding of deadlines (uvloop's clock also has millisecond resolution).
CLOCK_SLACK_MS = 1.0
SEED = 20261130

Release = Callable[[], None]


@pytest.fixture(params=BACKENDS)
def anyio_backend(request: pytest.FixtureRequest) -> Any:
    return with_mock_clock(request.param)


def is_virtual_time(anyio_backend: Any) -> bool:
    return "clock" in anyio_backend[1]


def assert_idle(sem: Semaphore) -> None:
    stats = sem.statistics()
    assert stats.holders == ()
    assert stats.tasks_waiting == 0
    assert stats.available == stats.limit


# -- construction and validation ------------------------------------------------------


@pytest.mark.parametrize(
    ("limit", "error", "text"),
    [
        (0, ValueError, "limit must be >= 1, got 0"),
        (-3, ValueError, "limit must be >= 1, got -3"),
        (True, TypeError, "limit must be an int, got True"),
        (2.0, TypeError, "limit must be an int, got 2.0"),
        ("3", TypeError, "limit must be an int, got '3'"),
        (None, TypeError, "limit must be an int, got None"),
    ],
)
def test_bad_limit_is_rejected_naming_the_value(
    limit: Any, error: type[Exception], text: str
) -> None:
    with pytest.raises(error) as exc_info:
        Semaphore(limit)
    assert str(exc_info.value) == text
    sem = Semaphore(2)
    with pytest.raises(error) as exc_info:
        sem.limit = limit
    assert str(exc_info.value) == text
    assert sem.limit == 2  # unchanged
    assert sem.available == 2


def test_other_constructor_arguments_are_checked() -> None:
    with pytest.raises(TypeError, match="label must be a str, got 7"):
        Semaphore(1, label=7)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="fast_acquire must be a bool, got 1"):
        Semaphore(1, fast_acquire=1)  # type: ignore[arg-type]


async def test_bad_arguments_are_rejected_before_any_state_changes() -> None:
    sem = Semaphore(1)
    with pytest.raises(TypeError, match="label must be a str or None, got 1"):
        sem.acquire_nowait(label=1)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="label must be a str or None, got 1"):
        sem.hold(label=1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="got -5"):
        sem.hold(timeout_ms=-5)
    release = await sem.acquire(label="holder")
    with pytest.raises(ValueError, match="got nan"):
        await sem.acquire(timeout_ms=math.nan)
    assert sem.statistics().tasks_waiting == 0
    assert sem.holders() == ["holder"]
    release()
    assert_idle(sem)


def test_is_weak_referenceable_and_shows_its_state_in_repr() -> None:
    sem = Semaphore(3, label="api")
    ref = weakref.ref(sem)
    assert ref() is sem
    assert repr(sem) == "<Semaphore 'api' limit=3 available=3 held=0 waiting=0>"
    release = sem.acquire_nowait()
    assert repr(sem) == "<Semaphore 'api' limit=3 available=2 held=1 waiting=0>"
    release()
    del sem, release  # the releaser refers to its semaphore
    assert ref() is None


def test_timeout_error_from_a_semaphore_pickles_with_its_fields() -> None:
    err = MutexTimeoutError(
        12.5, timeout_ms=10, label="api", owner="job-1", waiting_for="a permit"
    )
    clone = pickle.loads(pickle.dumps(err))
    assert type(clone) is MutexTimeoutError
    assert (clone.waited_ms, clone.timeout_ms, clone.label, clone.owner) == (
        12.5,
        10,
        "api",
        "job-1",
    )
    assert clone.waiting_for == "a permit"
    assert str(clone) == str(err)
    release_err = MutexReleaseError(
        "api", None, reason="this permit was already released"
    )
    assert str(pickle.loads(pickle.dumps(release_err))) == str(release_err)


# -- permits up to the limit, FIFO, no barging -----------------------------------------


async def test_up_to_limit_hold_at_once_and_the_next_waits() -> None:
    sem = Semaphore(3, label="pool")
    all_in = anyio.Event()
    inside = 0
    most = 0

    async def worker(i: int) -> None:
        nonlocal inside, most
        async with sem.hold(label=f"w{i}"):
            inside += 1
            most = max(most, inside)
            if inside == 3:
                all_in.set()
            await all_in.wait()  # only possible if three hold a permit at once
            await checkpoint()
            inside -= 1

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            for i in range(10):
                tg.start_soon(worker, i)
    assert most == 3
    stats = sem.statistics()
    assert stats.total_acquisitions == 10
    assert_idle(sem)


async def test_waiters_are_served_in_arrival_order() -> None:
    # Permits are not owned, so this task releases each one; every release must go
    # to the longest waiter, named in holders() before that waiter has even run.
    sem = Semaphore(2)
    order: list[int] = []
    releases = [await sem.acquire(label="a"), await sem.acquire(label="b")]

    async def waiter(i: int) -> None:
        releases.append(await sem.acquire(label=f"w{i}"))
        order.append(i)

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            for i in range(12):
                tg.start_soon(waiter, i)
                await wait_all_tasks_blocked()  # queue them one by one, in order
            assert sem.statistics().tasks_waiting == 12
            for i in range(12):
                releases.pop(0)()
                assert sem.holders()[-1] == f"w{i}"
                await wait_all_tasks_blocked()
                assert order == list(range(i + 1))
    for release in releases:
        release()
    assert_idle(sem)


async def test_a_releaser_that_asks_again_queues_behind_the_waiter() -> None:
    sem = Semaphore(1)
    events: list[str] = []

    async def waiter() -> None:
        async with sem.hold(label="waiter"):
            events.append("waiter")

    with anyio.fail_after(5):
        release = await sem.acquire(label="barger")
        async with anyio.create_task_group() as tg:
            tg.start_soon(waiter)
            await wait_all_tasks_blocked()
            release()
            # No checkpoint in between: the permit is already the waiter's.
            with pytest.raises(anyio.WouldBlock):
                sem.acquire_nowait(label="barger")
            release = await sem.acquire(label="barger")
            events.append("barger")
            release()
    assert events == ["waiter", "barger"]
    assert_idle(sem)


async def test_acquire_nowait_takes_a_free_permit_or_raises_would_block() -> None:
    sem = Semaphore(2, label="s")
    r1 = sem.acquire_nowait(label="one")
    r2 = sem.acquire_nowait()
    assert sem.holders() == ["one", "s"]
    with pytest.raises(anyio.WouldBlock):
        sem.acquire_nowait()
    assert sem.holders() == ["one", "s"]
    r1()
    r2()
    assert sem.statistics().total_acquisitions == 2
    assert_idle(sem)


# -- releasers -------------------------------------------------------------------------


async def test_any_task_may_release_a_permit_once() -> None:
    sem = Semaphore(1, label="jobs")
    got, done = anyio.Event(), anyio.Event()
    release = await sem.acquire(label="started-here")

    async def finisher() -> None:
        release()  # not the acquiring task: allowed for permits

    async def waiter() -> None:
        async with sem.hold(label="next"):
            got.set()
            await done.wait()

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(waiter)
            await wait_all_tasks_blocked()
            tg.start_soon(finisher)
            await got.wait()
            assert sem.holders() == ["next"]
            with pytest.raises(MutexReleaseError) as exc_info:
                release()  # second call: refused, changes nothing
            assert sem.holders() == ["next"]
            done.set()
    err = exc_info.value
    assert isinstance(err, RuntimeError)
    assert str(err) == "Cannot release lock 'jobs': this permit was already released"
    assert (err.label, err.owner) == ("jobs", "next")
    assert_idle(sem)


async def test_holders_are_listed_oldest_first_whoever_releases() -> None:
    sem = Semaphore(4)
    releases = {name: await sem.acquire(label=name) for name in "abcd"}
    releases["b"]()
    assert sem.holders() == ["a", "c", "d"]
    releases["e"] = await sem.acquire(label="e")
    releases["a"]()
    assert sem.holders() == ["c", "d", "e"]
    for name in "cde":
        releases[name]()
    assert_idle(sem)


async def test_async_with_from_many_tasks_releases_each_tasks_own_permit() -> None:
    # Each body exits in a different order than it entered; holders must follow.
    sem = Semaphore(3, label="s")
    gates = [anyio.Event() for _ in range(3)]
    hold = sem.hold(label="shared-hold-object")
    entered = 0

    async def body(i: int, use_hold: bool) -> None:
        nonlocal entered
        async with hold if use_hold else sem:
            entered += 1
            await gates[i].wait()

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(body, 0, True)
            await wait_all_tasks_blocked()
            tg.start_soon(body, 1, False)
            await wait_all_tasks_blocked()
            tg.start_soon(body, 2, True)  # the same hold object, entered again
            await wait_all_tasks_blocked()
            assert sem.holders() == ["shared-hold-object", "s", "shared-hold-object"]
            gates[1].set()
            await wait_all_tasks_blocked()
            assert sem.holders() == ["shared-hold-object", "shared-hold-object"]
            gates[0].set()
            gates[2].set()
    assert entered == 3
    assert_idle(sem)


async def test_nested_holds_in_one_task_and_in_a_child_task() -> None:
    sem = Semaphore(3)
    async with sem.hold(label="outer"):
        async with sem.hold(label="inner"):
            assert sem.holders() == ["outer", "inner"]

            async def child() -> None:
                # Inherits the parent's context, but releases only its own permit.
                async with sem.hold(label="child"):
                    assert sem.holders() == ["outer", "inner", "child"]

            async with anyio.create_task_group() as tg:
                tg.start_soon(child)
            assert sem.holders() == ["outer", "inner"]
        assert sem.holders() == ["outer"]
    assert_idle(sem)


async def test_body_exception_passes_through_unchanged_and_releases() -> None:
    sem = Semaphore(1)
    boom = ValueError("boom")
    with pytest.raises(ValueError, match="boom") as exc_info:
        async with sem.hold(label="body"):
            raise boom
    assert exc_info.value is boom
    with pytest.raises(KeyError):
        async with sem:
            raise KeyError("x")
    assert_idle(sem)


async def test_exit_without_enter_raises_clearly() -> None:
    sem = Semaphore(1, label="s")
    with pytest.raises(MutexReleaseError, match="did not enter it"):
        await sem.__aexit__(None, None, None)
    assert_idle(sem)


# -- limit changes ---------------------------------------------------------------------


async def test_raising_the_limit_admits_waiters_at_once() -> None:
    sem = Semaphore(1)
    got: list[str] = []
    release = await sem.acquire(label="holder")

    async def waiter(name: str) -> None:
        async with sem.hold(label=name):
            got.append(name)
            await anyio.sleep_forever()

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            for name in ("w1", "w2", "w3"):
                tg.start_soon(waiter, name)
                await wait_all_tasks_blocked()
            sem.limit = 3
            # Granted synchronously, in arrival order, before they run.
            assert sem.holders() == ["holder", "w1", "w2"]
            assert sem.statistics().tasks_waiting == 1
            await wait_all_tasks_blocked()
            assert sorted(got) == ["w1", "w2"]  # trio may run them in either order
            sem.limit = 10
            await wait_all_tasks_blocked()
            assert sorted(got) == ["w1", "w2", "w3"]
            assert sem.available == 6
            tg.cancel_scope.cancel()
    release()
    assert_idle(sem)


async def test_lowering_the_limit_revokes_nothing_and_waits_for_returns() -> None:
    sem = Semaphore(3)
    held = [await sem.acquire(label=f"h{i}") for i in range(3)]
    got: list[str] = []

    async def waiter(name: str) -> None:
        release = await sem.acquire(label=name)
        got.append(name)
        release()

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(waiter, "w")
            await wait_all_tasks_blocked()
            sem.limit = 1
            assert sem.holders() == ["h0", "h1", "h2"]  # nothing revoked
            assert sem.available == 0  # never negative
            held[0]()
            held[1]()
            await wait_all_tasks_blocked()
            assert got == []  # 1 still held, limit 1: the waiter keeps waiting
            assert sem.statistics().tasks_waiting == 1
            held[2]()
            await wait_all_tasks_blocked()
            assert got == ["w"]
    assert sem.available == 1
    assert_idle(sem)


# -- cancellation ----------------------------------------------------------------------


@pytest.mark.parametrize("order", ["cancel-then-release", "release-then-cancel"])
async def test_waiter_cancelled_at_the_handoff_passes_the_permit_on(
    order: str, anyio_backend: Any
) -> None:
    sem = Semaphore(2)
    acquired: list[str] = []
    scope = anyio.CancelScope()
    gate = anyio.Event()

    async def first() -> None:
        with scope:
            release = await sem.acquire(label="first")
            acquired.append("first")
            try:
                await checkpoint()
            finally:
                release()

    async def second() -> None:
        async with sem.hold(label="second"):
            acquired.append("second")
            await gate.wait()

    with anyio.fail_after(5):
        keep = await sem.acquire(label="keep")
        release = await sem.acquire(label="holder")
        async with anyio.create_task_group() as tg:
            tg.start_soon(first)
            await wait_all_tasks_blocked()
            tg.start_soon(second)
            await wait_all_tasks_blocked()
            if order == "cancel-then-release":
                scope.cancel()
                release()
                if anyio_backend[0] == "trio":
                    # trio takes a cancelled waiter out of the queue at once (its
                    # abort): the permit goes straight to "second".
                    assert sem.holders() == ["keep", "second"]
                else:
                    # On asyncio the cancellation is pending when "first" is handed
                    # the permit: it wakes up cancelled, holding a permit it must
                    # pass on.
                    assert sem.holders() == ["keep", "first"]
            else:
                release()
                scope.cancel()
                assert sem.holders() == ["keep", "first"]
            await wait_all_tasks_blocked()
            assert sem.holders() == ["keep", "second"]
            assert sem.statistics().tasks_waiting == 0
            gate.set()
    if order == "cancel-then-release":
        assert acquired == ["second"]
    else:
        # A cancel scope does not interrupt a wait that already completed (on trio,
        # nor on asyncio, where anyio waits for the task to run); "first" keeps the
        # permit and is cancelled at its next checkpoint. Task.cancel() does
        # interrupt it: see the native test below.
        assert acquired == ["first", "second"]
    assert sem.statistics().total_acquisitions == 2 + len(acquired)
    keep()
    assert_idle(sem)


@asyncio_only
async def test_waiter_natively_cancelled_while_queued_or_at_the_handoff(
    anyio_backend: Any,
) -> None:
    import asyncio

    sem = Semaphore(1)
    got: list[str] = []

    async def waiter(name: str) -> None:
        async with sem.hold(label=name):
            got.append(name)

    release = await sem.acquire(label="holder")
    loop = asyncio.get_running_loop()
    queued = loop.create_task(waiter("queued"))
    handed = loop.create_task(waiter("handed"))
    last = loop.create_task(waiter("last"))
    with anyio.fail_after(5):
        await wait_all_tasks_blocked()
        assert sem.statistics().tasks_waiting == 3
        queued.cancel()  # Task.cancel(): anyio's shield does not stop it
        await wait_all_tasks_blocked()
        assert sem.statistics().tasks_waiting == 2
        release()
        assert sem.holders() == ["handed"]
        handed.cancel()  # granted but not resumed: it must pass the permit on
        await wait_all_tasks_blocked()
        await last
    for task in (queued, handed):
        assert task.cancelled()
    assert got == ["last"]
    assert sem.statistics().total_acquisitions == 2
    assert_idle(sem)


@asyncio_only
async def test_native_cancel_at_the_free_path_checkpoint_holds_nothing(
    anyio_backend: Any,
) -> None:
    import asyncio

    sem = Semaphore(1)
    task = asyncio.get_running_loop().create_task(sem.acquire(label="never"))
    await asyncio.sleep(0)  # it checkpoints with the permit free ...
    task.cancel()  # ... and is cancelled there
    with pytest.raises(asyncio.CancelledError):
        await task
    assert_idle(sem)
    assert sem.statistics().total_acquisitions == 0


@asyncio_only
async def test_native_asyncio_timeout_passes_through_and_leaves_no_trace(
    anyio_backend: Any,
) -> None:
    import asyncio

    if sys.version_info < (3, 11):
        pytest.skip("asyncio.timeout() is new in Python 3.11")
    sem = Semaphore(1)
    release = await sem.acquire(label="holder")
    with anyio.fail_after(5), pytest.raises(TimeoutError) as exc_info:
        async with asyncio.timeout(0.01):
            await sem.acquire(timeout_ms=60_000)
    assert not isinstance(exc_info.value, MutexTimeoutError)
    assert sem.statistics().tasks_waiting == 0
    assert sem.statistics().timeouts == 0
    release()
    assert_idle(sem)


@pytest.mark.parametrize("fast_acquire", [False, True])
async def test_acquire_in_a_cancelled_scope_raises_and_holds_nothing(
    fast_acquire: bool,
) -> None:
    sem = Semaphore(1, fast_acquire=fast_acquire)
    with anyio.CancelScope() as scope:
        scope.cancel()
        await sem.acquire(label="never")
        pytest.fail("acquire should have been cancelled")  # pragma: no cover
    assert_idle(sem)
    assert sem.statistics().total_acquisitions == 0


# -- checkpoints -----------------------------------------------------------------------


@pytest.mark.parametrize("fast_acquire", [False, True])
@pytest.mark.parametrize("timeout_ms", [None, 0, 5000])
async def test_every_acquire_yields_unless_fast_acquire_finds_a_free_permit(
    fast_acquire: bool, timeout_ms: float | None
) -> None:
    sem = Semaphore(1, fast_acquire=fast_acquire)
    ran = 0

    async def busy() -> None:
        nonlocal ran
        while True:
            ran += 1
            await checkpoint()

    async with anyio.create_task_group() as tg:
        tg.start_soon(busy)
        while not ran:  # "busy" never blocks, so wait_all_tasks_blocked() cannot help
            await checkpoint()
        before = ran
        for _ in range(10):
            release = await sem.acquire(timeout_ms=timeout_ms)
            release()
        # trio may run a batch in either order, so a yield lets "busy" run once
        # per acquire give or take one; without a yield it never runs.
        if fast_acquire:
            assert ran == before
        else:
            assert ran >= before + 9
        # A full semaphore: even "try once" is a checkpoint, fast or not.
        hold = sem.acquire_nowait()
        before = ran
        for _ in range(10):
            with pytest.raises(MutexTimeoutError):
                await sem.acquire(timeout_ms=0)
        assert ran >= before + 9
        hold()
        tg.cancel_scope.cancel()
    assert sem.statistics().timeouts == 10


# -- timeouts (virtual time on trio) ---------------------------------------------------


async def test_timeout_reports_the_real_wait_and_the_oldest_holder(
    anyio_backend: Any,
) -> None:
    sem = Semaphore(2, label="api")
    r1 = await sem.acquire(label="old")
    r2 = await sem.acquire(label="young")
    caught: list[MutexTimeoutError] = []

    async def contender() -> None:
        with pytest.raises(MutexTimeoutError) as exc_info:
            await sem.acquire(timeout_ms=50, label="late")
        caught.append(exc_info.value)

    start = anyio.current_time()
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(contender)
    elapsed_ms = (anyio.current_time() - start) * 1000
    err = caught[0]
    assert isinstance(err, TimeoutError)
    assert (err.timeout_ms, err.label, err.owner) == (50, "api", "old")
    assert err.waiting_for == "a permit"
    assert 50 - CLOCK_SLACK_MS <= err.waited_ms <= elapsed_ms + CLOCK_SLACK_MS
    if is_virtual_time(anyio_backend):
        assert err.waited_ms == pytest.approx(50)
    assert str(err) == (
        f"Mutex acquisition timed out after {err.waited_ms:.0f}ms waiting for a "
        "permit (timeout_ms=50, lock 'api', held by 'old')"
    )
    stats = sem.statistics()
    assert (stats.timeouts, stats.tasks_waiting, stats.holders) == (
        1,
        0,
        ("old", "young"),
    )
    r1()
    r2()
    assert_idle(sem)


async def test_zero_timeout_tries_once() -> None:
    sem = Semaphore(1, label="s")
    release = await sem.acquire(timeout_ms=0, label="holder")  # free: acquires
    with pytest.raises(MutexTimeoutError) as exc_info:
        await sem.acquire(timeout_ms=0)
    assert exc_info.value.owner == "holder"
    assert exc_info.value.timeout_ms == 0
    assert sem.statistics().tasks_waiting == 0
    release()
    assert_idle(sem)


async def test_timed_waiter_handed_a_permit_in_time_keeps_it() -> None:
    sem = Semaphore(1)
    release = await sem.acquire()
    got = anyio.Event()

    async def contender() -> None:
        async with sem.hold(timeout_ms=60_000, label="in-time"):
            assert sem.holders() == ["in-time"]
            got.set()

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(contender)
            await wait_all_tasks_blocked()
            release()
    assert got.is_set()
    stats = sem.statistics()
    assert (stats.contended_acquisitions, stats.timeouts) == (1, 0)


async def test_timeout_at_the_handoff_leaves_no_trace(anyio_backend: Any) -> None:
    # The holder releases at exactly the waiter's deadline (virtual time on trio).
    sem = Semaphore(1)
    release = await sem.acquire(label="holder")
    results: list[str] = []

    async def contender() -> None:
        try:
            inner = await sem.acquire(timeout_ms=100, label="racer")
        except MutexTimeoutError:
            results.append("timed out")
        else:
            results.append(f"acquired, holders={sem.holders()}")
            inner()

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(contender)
            await wait_all_tasks_blocked()
            await anyio.sleep(0.1)
            release()
    assert results in (["timed out"], ["acquired, holders=['racer']"])
    stats = sem.statistics()
    assert stats.total_acquisitions + stats.timeouts == 2
    assert_idle(sem)


async def test_enclosing_deadline_equal_to_own_deadline_wins(
    anyio_backend: Any,
) -> None:
    sem = Semaphore(1)
    release = await sem.acquire()
    outcome: list[str] = []

    async def contender() -> None:
        with anyio.CancelScope(deadline=anyio.current_time() + 0.05) as scope:
            await sem.acquire(timeout_ms=50)
        outcome.append(f"swallowed={scope.cancelled_caught}")

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(contender)
    if is_virtual_time(anyio_backend):
        assert outcome == ["swallowed=True"]
        assert sem.statistics().timeouts == 0
    else:  # real clocks: the two deadlines may differ by the time between readings
        assert outcome in (["swallowed=True"], [])
    assert sem.statistics().tasks_waiting == 0
    release()


async def test_hold_times_out_and_leaves_the_task_able_to_enter_again(
    anyio_backend: Any,
) -> None:
    sem = Semaphore(1, label="s")
    release = await sem.acquire(label="holder")
    for timeout_ms in (0, 20):
        with anyio.fail_after(5), pytest.raises(MutexTimeoutError) as exc_info:
            async with sem.hold(timeout_ms=timeout_ms, label="late"):
                pytest.fail("must not enter")  # pragma: no cover
        assert exc_info.value.owner == "holder"
        assert exc_info.value.timeout_ms == timeout_ms
    release()
    # Nothing was pushed for the failed entries: the next body pops its own permit.
    async with sem.hold(timeout_ms=math.inf, label="next"):
        assert sem.holders() == ["next"]
    assert sem.statistics().timeouts == 2
    assert_idle(sem)


@pytest.mark.parametrize("form", ["async with", "hold"])
async def test_body_entry_cancelled_at_the_handoff_passes_the_permit_on(
    form: str,
) -> None:
    sem = Semaphore(1)
    scope = anyio.CancelScope()
    entered: list[str] = []

    async def first() -> None:
        with scope:
            async with sem if form == "async with" else sem.hold(label="first"):
                entered.append("first")  # pragma: no cover

    async def second() -> None:
        async with sem.hold(label="second"):
            entered.append("second")
            assert sem.holders() == ["second"]

    with anyio.fail_after(5):
        release = await sem.acquire(label="holder")
        async with anyio.create_task_group() as tg:
            tg.start_soon(first)
            await wait_all_tasks_blocked()
            tg.start_soon(second)
            await wait_all_tasks_blocked()
            scope.cancel()  # pending when "first" is handed the permit
            release()
    assert entered == ["second"]
    assert sem.statistics().total_acquisitions == 2
    assert_idle(sem)


# -- statistics ------------------------------------------------------------------------


async def test_statistics_are_exact(anyio_backend: Any) -> None:
    sem = Semaphore(2, label="stats")
    assert sem.statistics() == SemaphoreStatistics(
        limit=2,
        available=2,
        tasks_waiting=0,
        holders=(),
        total_acquisitions=0,
        contended_acquisitions=0,
        timeouts=0,
        longest_wait_ms=0.0,
    )
    a = await sem.acquire(label="a")
    b = sem.acquire_nowait(label="b")

    later: list[Release] = []
    gave_up = anyio.Event()

    async def waits(name: str, timeout_ms: float | None) -> None:
        try:
            later.append(await sem.acquire(timeout_ms=timeout_ms, label=name))
        except MutexTimeoutError:
            gave_up.set()

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            # 200 ms: long enough that a loaded machine still counts three waiters
            # below (10 ms once timed out first).
            for name, timeout_ms in (("times-out", 200), ("c", None), ("d", 60_000)):
                tg.start_soon(waits, name, timeout_ms)
                await wait_all_tasks_blocked()  # in this order
            assert sem.statistics().tasks_waiting == 3
            all_waiting = anyio.current_time()
            await gave_up.wait()  # "times-out" gives up after 200 ms
            assert sem.statistics().tasks_waiting == 2
            a()  # "c" waited 200 ms
            await anyio.sleep(0.02)
            d_waited_ms = (anyio.current_time() - all_waiting) * 1000  # at least
            b()  # "d" waited 220 ms (exactly, in virtual time)
            assert sem.holders() == ["c", "d"]
    for release in later:
        release()
    x = await sem.acquire(timeout_ms=0, label="x")  # free: "try once" acquires
    y = sem.acquire_nowait(label="y")
    assert sem.statistics().holders == ("x", "y")
    with pytest.raises(MutexTimeoutError):
        await sem.acquire(timeout_ms=0)  # full: fails at once
    x()
    y()
    stats = sem.statistics()
    assert stats.limit == 2
    assert stats.available == 2
    assert stats.holders == ()
    assert stats.tasks_waiting == 0
    assert stats.total_acquisitions == 6
    assert stats.contended_acquisitions == 2
    assert stats.timeouts == 2
    assert stats.longest_wait_ms >= d_waited_ms - CLOCK_SLACK_MS
    if is_virtual_time(anyio_backend):
        assert stats.longest_wait_ms == pytest.approx(220)
    with pytest.raises(AttributeError):
        stats.limit = 3  # type: ignore[misc]


# -- event loops -----------------------------------------------------------------------

MODULE_LEVEL = Semaphore(2, label="module-level")


def test_a_free_semaphore_moves_between_backends() -> None:
    async def use() -> int:
        counter = 0

        async def bump() -> None:
            nonlocal counter
            async with MODULE_LEVEL:
                value = counter
                await checkpoint()
                counter = value + 1

        async with anyio.create_task_group() as tg:
            for _ in range(20):
                tg.start_soon(bump)
        return counter

    # 20 increments with 2 permits lose updates; what matters is that every loop
    # can queue, hand off and finish on the same object.
    for backend in ("asyncio", "trio", "asyncio"):
        anyio.run(use, backend=backend)
        assert MODULE_LEVEL.statistics().tasks_waiting == 0
        assert MODULE_LEVEL.holders() == []
    stats = MODULE_LEVEL.statistics()
    assert stats.total_acquisitions == 60
    assert stats.contended_acquisitions > 0


# -- randomized stress -----------------------------------------------------------------


async def test_random_stress_never_exceeds_the_limit(anyio_backend: Any) -> None:
    """A gauge of bodies inside never exceeds the limit, whatever gives up where.

    Tasks acquire (or enter ``hold()``) with random timeouts under random cancel
    deadlines; holders hand some releasers to a helper task that releases them later
    (permits are not owned); on asyncio, extra plain asyncio tasks are natively
    cancelled at random moments.
    """
    print(f"semaphore stress seed={SEED}")
    rng = random.Random(SEED)
    limit = 3
    sem = Semaphore(limit, label="stress")
    inside = 0
    outcomes = {"acquired": 0, "timed out": 0, "cancelled": 0}
    handed: list[Release] = []
    more = anyio.Event()
    native = anyio_backend[0] == "asyncio"

    def check() -> None:
        assert inside <= limit, f"{inside} inside, limit {limit}"
        held = len(sem.holders())
        assert inside <= held <= limit
        assert sem.available == limit - held
        if sem.statistics().tasks_waiting:
            assert held == limit  # nobody waits while a permit is free

    async def attempt_with_hold(timeout_ms: float | None) -> None:
        nonlocal inside
        try:
            async with sem.hold(timeout_ms=timeout_ms, label="h"):
                outcomes["acquired"] += 1
                inside += 1
                check()
                try:
                    for _ in range(rng.randrange(3)):
                        await checkpoint()
                        check()
                finally:
                    inside -= 1
        except MutexTimeoutError:
            outcomes["timed out"] += 1
        check()

    async def attempt() -> None:
        nonlocal inside
        timeout_ms = rng.choice([None, None, 0, 1, 3, 10])
        if rng.random() < 0.3:
            await attempt_with_hold(timeout_ms)
            return
        try:
            release = await sem.acquire(timeout_ms=timeout_ms, label="x")
        except MutexTimeoutError:
            outcomes["timed out"] += 1
            check()
            return
        outcomes["acquired"] += 1
        inside += 1
        check()
        try:
            for _ in range(rng.randrange(3)):
                await checkpoint()
                check()
        finally:
            inside -= 1
            if rng.random() < 0.3:
                handed.append(release)  # someone else will release it
                more.set()
            else:
                release()
            check()

    async def worker() -> None:
        for _ in range(40):
            with anyio.CancelScope() as scope:
                if rng.random() < 0.2:
                    scope.deadline = anyio.current_time() + rng.choice([0, 0.001])
                await attempt()
            if scope.cancelled_caught:
                outcomes["cancelled"] += 1
            check()

    async def releaser() -> None:
        nonlocal more
        while True:
            await more.wait()
            more = anyio.Event()
            while handed:
                await checkpoint()
                handed.pop(rng.randrange(len(handed)))()
                check()

    async def native_cancels() -> int:
        import asyncio

        loop = asyncio.get_running_loop()
        tasks = [loop.create_task(attempt()) for _ in range(60)]
        for task in tasks:
            for _ in range(rng.randrange(4)):
                await asyncio.sleep(0)
            task.cancel()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        return sum(isinstance(r, asyncio.CancelledError) for r in results)

    with anyio.fail_after(30):
        async with anyio.create_task_group() as tg:
            tg.start_soon(releaser)
            async with anyio.create_task_group() as workers:
                for _ in range(20):
                    workers.start_soon(worker)
                if native:
                    outcomes["cancelled"] += await native_cancels()
            while handed:
                await wait_all_tasks_blocked()
            tg.cancel_scope.cancel()
    print(f"semaphore stress seed={SEED} outcomes={outcomes}")
    assert outcomes["acquired"] > 0
    assert outcomes["timed out"] > 0
    assert outcomes["cancelled"] > 0
    stats = sem.statistics()
    assert stats.total_acquisitions == outcomes["acquired"]
    assert stats.timeouts == outcomes["timed out"]
    assert_idle(sem)


async def test_random_limit_changes_never_grant_above_the_limit() -> None:
    """Limit changes while waiters queue: a permit is granted only below the limit."""
    print(f"semaphore limit stress seed={SEED}")
    rng = random.Random(SEED)
    sem = Semaphore(2, label="resized")
    cap = 2  # the most that may be held now: the limit, or more after a lowering

    def check() -> None:
        nonlocal cap
        held = len(sem.holders())
        assert held <= max(cap, sem.limit), f"{held} held, cap {cap}"
        cap = max(sem.limit, held)  # a held excess only shrinks from here on
        if sem.statistics().tasks_waiting:
            assert held >= sem.limit

    async def worker() -> None:
        for _ in range(30):
            async with sem.hold(label="w"):
                check()
                for _ in range(rng.randrange(3)):
                    await checkpoint()
                    check()
            check()

    async def resizer() -> None:
        nonlocal cap
        for _ in range(200):
            cap = max(cap, len(sem.holders()))
            sem.limit = rng.randint(1, 5)
            check()
            await checkpoint()

    with anyio.fail_after(30):
        async with anyio.create_task_group() as tg:
            tg.start_soon(resizer)
            for _ in range(15):
                tg.start_soon(worker)
    assert sem.statistics().total_acquisitions == 15 * 30
    assert sem.holders() == []


async def test_a_worker_thread_may_release_unless_that_must_wake_a_waiter() -> None:
    # Permits are not owned, so a releaser may run anywhere, but waking a waiter sets
    # an anyio.Event, which needs the event loop: from a worker thread that raises
    # MutexLoopError (as the task-owned locks do) and changes nothing.
    sem = Semaphore(1, label="jobs")
    release = await sem.acquire(label="holder")
    await anyio.to_thread.run_sync(release)  # nobody waits: works from a thread
    assert sem.available == 1
    release = await sem.acquire(label="holder")
    got = anyio.Event()

    async def waiter() -> None:
        inner = await sem.acquire(label="waiter")
        got.set()
        inner()

    # No fail_after here: on trio's autojumping MockClock, a deadline fires as soon
    # as every task waits for the worker thread. Nothing here can hang: the waiter is
    # released below whatever happened in the thread.
    async with anyio.create_task_group() as tg:
        tg.start_soon(waiter)
        await wait_all_tasks_blocked()
        with pytest.raises(
            MutexLoopError, match="no event loop is running in this thread"
        ):
            await anyio.to_thread.run_sync(release)
        assert sem.holders() == ["holder"]
        assert sem.statistics().tasks_waiting == 1
        release()
    assert got.is_set()
    assert sem.available == 1


@pytest.mark.parametrize(
    "how", ["release function", "async with exit", "release in a loop callback"]
)
async def test_a_release_in_another_event_loop_wakes_the_waiter_in_its_own(
    how: str,
) -> None:
    # The waiter parks in this event loop; the permit is given back in an asyncio
    # loop in another thread. Waking it directly from there would race this loop
    # (and an 'async with' exit cannot be refused without losing the permit): it is
    # woken thread-safely, through its own loop or trio run.
    sem = Semaphore(1, label="jobs")
    got = anyio.Event()
    queued = threading.Event()
    release_now = threading.Event()

    async def waiter() -> None:
        async with sem.hold(label="waiter"):
            got.set()

    async def hold_there() -> None:
        if how == "release function":
            release = await sem.acquire(label="holder")
            queued.set()
            await asyncio.to_thread(release_now.wait)
            release()
        elif how == "release in a loop callback":  # a running loop, but no task
            release = await sem.acquire(label="holder")
            queued.set()
            await asyncio.to_thread(release_now.wait)
            loop = asyncio.get_running_loop()
            done: asyncio.Future[None] = loop.create_future()

            def callback() -> None:
                try:
                    release()
                except BaseException as exc:  # pragma: no cover - the test fails
                    done.set_exception(exc)
                else:
                    done.set_result(None)

            loop.call_soon(callback)
            await done
        else:
            async with sem.hold(label="holder"):
                queued.set()
                await asyncio.to_thread(release_now.wait)

    thread = threading.Thread(target=asyncio.run, args=(hold_there(),))
    thread.start()
    await anyio.to_thread.run_sync(queued.wait)
    async with anyio.create_task_group() as tg:  # no fail_after: see the test above
        tg.start_soon(waiter)
        await wait_all_tasks_blocked()
        assert sem.statistics().tasks_waiting == 1
        release_now.set()
        await anyio.to_thread.run_sync(thread.join)  # the release raised nothing
        await got.wait()  # a lost wake-up would hang here (pytest-timeout)
    assert sem.available == 1
    assert sem.statistics().total_acquisitions == 2


def trio_runs_in_threads(*mains: Callable[[], Awaitable[None]]) -> list[BaseException]:
    """Run each of ``mains`` with trio.run() in a thread of its own, all at once;
    return what they raised."""
    errors: list[BaseException] = []

    def run(main: Callable[[], Awaitable[None]]) -> None:
        try:
            trio.run(main)
        except BaseException as exc:  # pragma: no cover - returned to the test
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(main,)) for main in mains]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    return errors


def test_a_trio_waiter_is_woken_from_another_threads_trio_run() -> None:
    # Two trio runs in two threads share a module-level semaphore: run B's release
    # wakes run A's waiter through A's TrioToken (rescheduling it from B would put
    # A's task on B's run queue).
    sem = Semaphore(1, label="jobs")
    held, queued = threading.Event(), threading.Event()
    got: list[str] = []

    async def run_a() -> None:
        await trio.to_thread.run_sync(held.wait)
        async with trio.open_nursery() as nursery:

            async def waiter() -> None:
                with trio.fail_after(5):
                    async with sem.hold(label="a"):
                        got.append("a")

            nursery.start_soon(waiter)
            await trio.testing.wait_all_tasks_blocked()
            assert sem.statistics().tasks_waiting == 1
            queued.set()

    async def run_b() -> None:
        release = await sem.acquire(label="b")
        held.set()
        await trio.to_thread.run_sync(queued.wait)
        release()

    assert trio_runs_in_threads(run_a, run_b) == []
    assert got == ["a"]
    assert sem.available == 1


def test_a_trio_waiter_cancelled_before_its_wake_up_from_afar_gives_it_back() -> None:
    # Run B grants run A's waiter, and the wake-up is queued in run A; run A cancels
    # the waiter before that wake-up runs (its thread is busy meanwhile). The waiter
    # leaves cancelled, its permit comes back, and the late wake-up does nothing.
    sem = Semaphore(1, label="jobs")
    held, queued, released = threading.Event(), threading.Event(), threading.Event()
    outcome: list[str] = []

    async def run_a() -> None:
        await trio.to_thread.run_sync(held.wait)
        async with trio.open_nursery() as nursery:
            scope = trio.CancelScope()

            async def waiter() -> None:
                with scope:
                    async with sem.hold(label="a"):
                        outcome.append("granted")  # pragma: no cover - must not
                outcome.append("cancelled" if scope.cancelled_caught else "?")

            nursery.start_soon(waiter)
            await trio.testing.wait_all_tasks_blocked()
            queued.set()
            released.wait(10)  # blocks run A's thread: the wake-up cannot run yet
            assert sem.holders() == ["a"]  # granted in run B's thread
            scope.cancel()  # trio aborts the still-parked waiter at once

    async def run_b() -> None:
        release = await sem.acquire(label="b")
        held.set()
        await trio.to_thread.run_sync(queued.wait)
        release()
        released.set()

    assert trio_runs_in_threads(run_a, run_b) == []
    assert outcome == ["cancelled"]
    assert sem.available == 1
    assert sem.statistics().total_acquisitions == 1  # b's; a's was given back


async def test_raising_the_limit_wakes_a_waiter_of_another_loop_there() -> None:
    # Two waiters: the head in this event loop, the next in an asyncio loop in
    # another thread. Raising the limit by two wakes the head here and the other
    # through its own loop.
    sem = Semaphore(1, label="jobs")
    release = await sem.acquire(label="holder")
    here_got = anyio.Event()
    queued = threading.Event()
    there_got: list[str] = []

    async def here() -> None:
        async with sem.hold(label="here"):
            here_got.set()

    async def there_main() -> None:
        waiter = asyncio.create_task(sem.acquire(label="there"))
        await asyncio.sleep(0)  # the task runs up to its park (asyncio runs FIFO)
        queued.set()
        (await waiter)()
        there_got.append("there")

    async with anyio.create_task_group() as tg:  # no fail_after: see the tests above
        tg.start_soon(here)
        await wait_all_tasks_blocked()
        thread = threading.Thread(target=asyncio.run, args=(there_main(),))
        thread.start()
        await anyio.to_thread.run_sync(queued.wait)
        assert sem.statistics().tasks_waiting == 2
        sem.limit = 3
        await here_got.wait()
        await anyio.to_thread.run_sync(thread.join)
        release()
    assert there_got == ["there"]
    assert sem.available == 3


async def test_a_worker_thread_may_set_the_limit_unless_that_must_wake_a_waiter() -> (
    None
):
    # Regression: raising the limit from a worker thread handed the permit over
    # (the waiter dequeued, granted and listed as a holder) and then failed to set
    # its event, so the waiter never woke. Now it raises first and changes nothing.
    sem = Semaphore(1, label="jobs")
    release = await sem.acquire(label="holder")
    got = anyio.Event()

    def set_limit(limit: int) -> None:
        sem.limit = limit

    async def waiter() -> None:
        async with sem.hold(label="waiter"):
            got.set()

    async with anyio.create_task_group() as tg:  # no fail_after: see the test above
        tg.start_soon(waiter)
        await wait_all_tasks_blocked()
        with pytest.raises(
            MutexLoopError, match="no event loop is running in this thread"
        ):
            await anyio.to_thread.run_sync(set_limit, 2)
        assert (sem.limit, sem.holders()) == (1, ["holder"])
        assert sem.statistics().tasks_waiting == 1
        await anyio.to_thread.run_sync(set_limit, 1)  # wakes nobody: works anywhere
        sem.limit = 2  # in the event loop: the waiter gets the new permit
        await got.wait()
        release()
    assert sem.available == 2


async def test_a_generator_closed_with_aclosing_gives_its_permits_back() -> None:
    # The documented way to stop early: a generator abandoned without aclosing() is
    # closed by the event loop in another task and context, where its permits
    # (kept per context) are not found; see docs/guide/semaphore.md.
    sem = Semaphore(2, label="rows")

    async def rows() -> AsyncGenerator[int, None]:
        async with sem, sem.hold(label="rows"):
            for i in range(10):
                yield i

    async with contextlib.aclosing(rows()) as agen:
        async for row in agen:
            if row == 1:
                break
        assert sem.available == 0
    assert sem.available == 2
    assert sem.holders() == []
