"""The mutex's own waiter queue: per-waiter deadlines on a shared timer, hand-offs.

The timed waiters of one mutex share one timer, armed at the earliest deadline: on
asyncio a TimerHandle, on trio the native cancel scope of one waiter (the role), which
fails the others when it fires and hands the role on when it leaves the queue. These
tests pin what that must not change: each waiter times out at its own deadline,
whatever the queue order, and a waiter that leaves the queue first (granted, or
cancelled while it held the role or was the one the timer was armed for) does not
take the timer with it. Only lower time bounds are asserted (a loaded machine runs
late, never early); the order of events is observed, not slept for.
"""

from __future__ import annotations

import asyncio
from typing import Any

import anyio
import anyio.lowlevel
import pytest
import trio
import trio.lowlevel
import trio.testing
from anyio import wait_all_tasks_blocked

from anyio_mutex import AsyncMutex, DeadlockError, Mutex, MutexTimeoutError
from anyio_mutex._mutex import _MutexBase

from .conftest import asyncio_only

pytestmark = pytest.mark.anyio

MUTEXES = [Mutex, AsyncMutex]


async def _release_when(m: Mutex, event: anyio.Event) -> None:
    await event.wait()
    m.release()


@pytest.mark.parametrize("cls", MUTEXES)
async def test_each_waiter_times_out_at_its_own_deadline_in_any_queue_order(
    cls: type[Mutex],
) -> None:
    m = cls("q")
    await m.acquire(label="main")
    timed_out: dict[str, tuple[float, int]] = {}  # name -> (waited_ms, still waiting)
    acquired: list[str] = []
    both_timed_out = anyio.Event()

    async def waiter(name: str, timeout_ms: float | None) -> None:
        try:
            await m.acquire(timeout_ms=timeout_ms, label=name)
        except MutexTimeoutError as exc:
            timed_out[name] = (exc.waited_ms, m.statistics().tasks_waiting)
            if len(timed_out) == 2:
                both_timed_out.set()
            return
        acquired.append(name)
        m.release()

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            # Queue order: long, short, middle, untimed; deadlines in another order
            # (200 ms leaves a loaded machine time to queue all four first).
            for name, timeout_ms in (
                ("long", 60_000),
                ("short", 200),
                ("middle", 600),
                ("untimed", None),
            ):
                tg.start_soon(waiter, name, timeout_ms)
                await wait_all_tasks_blocked()
            assert m.statistics().tasks_waiting == 4
            await both_timed_out.wait()
            assert m.current_owner == "main"
            m.release()
    assert set(timed_out) == {"short", "middle"}
    assert timed_out["short"][0] >= 200
    assert timed_out["middle"][0] >= 600
    # When "short" timed out, "middle" (and the two others) were still queued.
    assert timed_out["short"][1] == 3
    assert acquired == ["long", "untimed"]  # FIFO among those that stayed
    stats = m.statistics()
    assert (stats.timeouts, stats.total_acquisitions, stats.locked) == (2, 3, False)


@pytest.mark.parametrize("cls", MUTEXES)
async def test_cancelling_the_earliest_deadline_waiter_keeps_the_others_timed(
    cls: type[Mutex],
) -> None:
    # The timer is armed for "first"; cancelling it must not disarm "second".
    m = cls("q")
    await m.acquire(label="main")
    outcome: dict[str, Any] = {}

    async def waiter(name: str, timeout_ms: float, scope: anyio.CancelScope) -> None:
        with scope:
            try:
                await m.acquire(timeout_ms=timeout_ms, label=name)
            except MutexTimeoutError as exc:
                outcome[name] = exc
                return
            m.release()
            outcome[name] = "acquired"
        if scope.cancelled_caught:
            outcome[name] = "cancelled"

    first, second = anyio.CancelScope(), anyio.CancelScope()
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            # Deadlines long enough that a loaded machine cancels "first" in time.
            tg.start_soon(waiter, "first", 400, first)
            tg.start_soon(waiter, "second", 600, second)
            await wait_all_tasks_blocked()
            first.cancel()
            await wait_all_tasks_blocked()
            assert outcome == {"first": "cancelled"}
            assert m.statistics().tasks_waiting == 1
    assert isinstance(outcome["second"], MutexTimeoutError)
    assert outcome["second"].waited_ms >= 600
    assert m.current_owner == "main"
    assert m.statistics().tasks_waiting == 0
    m.release()
    assert not m.locked()


@asyncio_only
@pytest.mark.parametrize("cls", MUTEXES)
async def test_task_cancel_of_the_earliest_deadline_waiter_keeps_the_others_timed(
    cls: type[Mutex],
) -> None:
    # The same with asyncio's own cancellation, which anyio's shield does not stop.
    m = cls("q")
    await m.acquire(label="main")

    async def waiter(timeout_ms: float, label: str) -> None:
        await m.acquire(timeout_ms=timeout_ms, label=label)

    first = asyncio.ensure_future(waiter(400, "first"))
    second = asyncio.ensure_future(waiter(600, "second"))
    await wait_all_tasks_blocked()
    first.cancel()
    with anyio.fail_after(10):
        outcomes = await asyncio.gather(first, second, return_exceptions=True)
    assert isinstance(outcomes[0], asyncio.CancelledError)
    assert isinstance(outcomes[1], MutexTimeoutError)
    assert outcomes[1].waited_ms >= 600
    assert m.current_owner == "main"
    assert m.statistics().tasks_waiting == 0
    m.release()


@pytest.mark.parametrize("cls", MUTEXES)
async def test_a_granted_earliest_deadline_waiter_leaves_the_later_ones_timed(
    cls: type[Mutex],
) -> None:
    # "first" (the earliest deadline) is granted at once and holds past it; the
    # timer armed for it must still fail "second" at its own, later deadline.
    m = cls("q")
    await m.acquire(label="main")
    second_done = anyio.Event()
    errors: list[MutexTimeoutError] = []

    async def first() -> None:
        await m.acquire(timeout_ms=300, label="first")
        await second_done.wait()
        m.release()

    async def second() -> None:
        try:
            await m.acquire(timeout_ms=600, label="second")
        except MutexTimeoutError as exc:
            errors.append(exc)
        else:  # pragma: no cover - the assertion below reports it
            m.release()
        second_done.set()

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(first)
            await wait_all_tasks_blocked()
            tg.start_soon(second)
            await wait_all_tasks_blocked()
            m.release()  # hands the mutex to "first", before its deadline
            await wait_all_tasks_blocked()
            assert m.current_owner == "first"
    assert len(errors) == 1
    assert errors[0].waited_ms >= 600
    assert errors[0].owner == "first"
    assert not m.locked()
    assert m.statistics().timeouts == 1


@asyncio_only
async def test_no_timer_stays_armed_once_the_queue_empties() -> None:
    # White-box, asyncio: granted waiters leave their deadlines behind in the shared
    # heap; the last release drops them and the timer, so a burst of timed waits
    # leaves nothing scheduled on the loop for the next 60 seconds.
    m = Mutex("q")

    async def worker() -> None:
        for _ in range(20):
            await m.acquire(timeout_ms=60_000)
            await anyio.lowlevel.checkpoint()
            m.release()

    async with anyio.create_task_group() as tg:
        for _ in range(10):
            tg.start_soon(worker)
        await wait_all_tasks_blocked()
        assert len(m._deadlines) <= 2 * m.statistics().tasks_waiting + 17
    assert m.statistics().contended_acquisitions > 0
    assert m._deadlines == []
    assert m._timer is None


@asyncio_only
async def test_the_shared_timer_does_not_spin_on_a_coarse_clock(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # White-box: uvloop's clock counts whole ms, so a timer for a deadline inside the
    # current ms fired at once, over and over (~100 callbacks per timeout).
    calls = 0
    expire = _MutexBase._expire

    def counting(self: _MutexBase) -> None:
        nonlocal calls
        calls += 1
        expire(self)

    monkeypatch.setattr(_MutexBase, "_expire", counting)
    m = Mutex("q")
    await m.acquire()
    waited: list[float] = []

    async def waiter(timeout_ms: float) -> None:
        with pytest.raises(MutexTimeoutError) as exc_info:
            await m.acquire(timeout_ms=timeout_ms)
        waited.append(exc_info.value.waited_ms - timeout_ms)

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            for timeout_ms in (0.3, 1.5, 10.25, 10, 20.7):
                tg.start_soon(waiter, timeout_ms)
    assert len(waited) == 5
    assert min(waited) >= 0
    assert calls <= 15, f"{calls} timer callbacks for 5 timeouts"
    m.release()


# trio's shared timer is one waiter's cancel scope (the "role"). These runs make it
# fire in the same scheduler step as the holder's wake-up, and repeat so that trio's
# random batch order runs the holder first in some of them (all 30 runs go the other
# way with probability 2**-30).
_TRIO_STEP_RUNS = 30


async def _overdue_run(overdue: str, clock: trio.testing.MockClock) -> list[str]:
    m = Mutex("m")
    got: list[str] = []

    async def wait(name: str, timeout_ms: float) -> None:
        try:
            async with m.hold(label=name, timeout_ms=timeout_ms):
                got.append(f"{name} got it")
        except MutexTimeoutError:
            got.append(f"{name} timed out")

    async def jump() -> None:  # past the deadline and X's sleep: both fire
        await wait_all_tasks_blocked()
        clock.jump(1)

    r_scope = anyio.CancelScope()

    async def r() -> None:
        with r_scope:
            await wait("R", 60_000)

    async def cancel_r_then_jump() -> None:  # R's abort comes before the timer's
        await wait_all_tasks_blocked()
        r_scope.cancel()
        clock.jump(1)

    async def r_then_jump() -> None:  # R leaves; its step goes on past W's deadline
        with r_scope:
            await wait("R", 60_000)
        clock.jump(1)

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            await m.acquire(label="X")
            # Each waiter parks before the next one comes.
            if overdue == "role":
                firsts: list[Any] = [(wait, "W", 100)]
            elif overdue == "behind a cancelled role":
                firsts = [(r,), (wait, "W", 100)]
            else:  # R takes the role, then leaves it to the last timed waiter, V
                first = r_then_jump if overdue == "while the role passes on" else r
                firsts = [(first,), (wait, "W", 100), (wait, "V", 60_000)]
            for args in firsts:
                tg.start_soon(*args)
                await wait_all_tasks_blocked()
            if overdue == "behind a cancelled role":
                tg.start_soon(cancel_r_then_jump)
            elif overdue == "while the role passes on":
                # R's exit hands the role to V; before V runs, time passes W's
                # deadline and nothing fires for it (no scope is armed).
                r_scope.cancel()
            else:
                if overdue == "ahead of the role":
                    r_scope.cancel()
                    await wait_all_tasks_blocked()
                tg.start_soon(jump)
            await anyio.sleep(0.5)
            m.release()
    return got


@pytest.mark.parametrize(
    "anyio_backend",
    [pytest.param(("trio", {"clock": trio.testing.MockClock()}), id="trio")],
)
@pytest.mark.parametrize(
    "overdue",
    [
        "role",
        "ahead of the role",
        "behind a cancelled role",
        "while the role passes on",
    ],
)
async def test_trio_overdue_waiter_is_not_granted_by_a_release_in_its_timers_step(
    overdue: str,
) -> None:
    # X holds the mutex, wakes in the step in which the timer fires, and releases
    # at once. The overdue waiter W (the role itself, or the head of the queue,
    # whose deadline the role's scope keeps) must time out, as it would under its
    # own trio scope, not be granted the lock a second after its deadline.
    clock = trio.lowlevel.current_clock()
    assert isinstance(clock, trio.testing.MockClock)
    for _ in range(_TRIO_STEP_RUNS):
        assert "W timed out" in await _overdue_run(overdue, clock)


async def _cancelled_while_woken_run(clock: trio.testing.MockClock) -> list[str]:
    a, b = AsyncMutex("A"), Mutex("B")
    outer = anyio.CancelScope()
    got: list[str] = []

    async def r() -> None:
        with pytest.raises(MutexTimeoutError):
            async with b.hold(label="R", timeout_ms=100):
                pass  # pragma: no cover - X holds B
        got.append("R timed out")

    async def w() -> None:
        async with a.hold(label="W"):
            try:
                with outer:
                    async with b.hold(label="W", timeout_ms=100_000):
                        got.append("W got B")  # pragma: no cover
            except DeadlockError:  # pragma: no cover - the bug
                got.append("W DeadlockError")
            if outer.cancelled_caught:
                got.append("W cancelled")

    async def jump() -> None:
        await wait_all_tasks_blocked()
        clock.jump(1)

    async def x() -> None:
        async with b.hold(label="X"):
            tg.start_soon(r, name="R")
            await wait_all_tasks_blocked()
            tg.start_soon(w, name="W")
            await wait_all_tasks_blocked()
            tg.start_soon(jump)
            await anyio.sleep(0.5)
            outer.cancel()
            async with a.hold(label="X"):
                got.append("X got A")

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(x, name="X")
    return sorted(got)


@pytest.mark.parametrize(
    "anyio_backend",
    [pytest.param(("trio", {"clock": trio.testing.MockClock()}), id="trio")],
)
async def test_trio_waiter_cancelled_while_woken_for_the_role_is_not_reported() -> None:
    # X holds B; W holds A and waits for B inside `outer`; R, first in the queue
    # and the timer's role, times out, and the role passes to W. In that step X
    # cancels W and waits for A. W must leave cancelled (X then gets A), never get
    # a DeadlockError for a wait it was never going to resume.
    clock = trio.lowlevel.current_clock()
    assert isinstance(clock, trio.testing.MockClock)
    for _ in range(_TRIO_STEP_RUNS):
        got = await _cancelled_while_woken_run(clock)
        assert got == ["R timed out", "W cancelled", "X got A"]


@pytest.mark.parametrize(
    "anyio_backend",
    # Not uvloop: its millisecond clock makes the 0.6 ms below a matter of where the
    # ticks fall (there, as with anyio.Lock, a grant within the tick may happen).
    [
        pytest.param(("asyncio", {}), id="asyncio"),
        pytest.param(("trio", {}), id="trio"),
    ],
)
async def test_a_deadline_just_after_another_is_kept_while_the_holder_yields() -> None:
    # W1's and W2's deadlines are 0.6 ms apart. The shared timer fires for W1 and
    # re-arms at least 1 ms on (for uvloop's clock), so no timer stands at W2's
    # deadline. The holder yields all along and releases just after it: the event
    # loop had every chance to process it, so W2 must time out, as it would under
    # anyio.Lock with fail_after.
    m = Mutex("m")
    got: dict[str, str] = {}

    async def wait(name: str, timeout_ms: float) -> None:
        try:
            async with m.hold(label=name, timeout_ms=timeout_ms):
                got[name] = "granted"
        except MutexTimeoutError:
            got[name] = "timed out"

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            await m.acquire(label="X")
            tg.start_soon(wait, "W1", 50)
            tg.start_soon(wait, "W2", 50.6)
            await wait_all_tasks_blocked()
            last_deadline = max(entry[0] for entry in m._deadlines)
            # Until the timer has taken W1 out (on a loaded machine the process may
            # be descheduled past both deadlines between two loop iterations, and
            # then, as with anyio.Lock, nothing has processed them), and past W2's.
            while (
                m.statistics().tasks_waiting > 1
                or anyio.current_time() < last_deadline + 0.0001
            ):
                await anyio.lowlevel.checkpoint()
            # One more scheduler step: trio expires deadlines at the start of one,
            # so a deadline passed during this step is processed only in the next
            # (a release before that grants, as anyio.Lock under fail_after does;
            # a CI run on 3.10 once got there).
            await anyio.lowlevel.checkpoint()
            m.release()
    assert got == {"W1": "timed out", "W2": "timed out"}
