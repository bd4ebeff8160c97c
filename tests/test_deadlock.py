"""Deadlock detection through the real locks and fetches, on every backend."""

from __future__ import annotations

import gc
import random
from collections.abc import Callable, Iterator
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from typing import Any

import anyio
import anyio.lowlevel
import pytest
import trio
import trio.lowlevel
import trio.testing
from anyio import wait_all_tasks_blocked

from anyio_mutex import (
    AsyncMutex,
    DeadlockError,
    KeyedMutex,
    Mutex,
    MutexTimeoutError,
    RefreshCache,
    RWLock,
    Semaphore,
    SingleFlight,
    disable_deadlock_detection,
    enable_deadlock_detection,
    snapshot,
)
from anyio_mutex._hold import current_task
from anyio_mutex._waitgraph import _Wait, add_wait, leave_wait, registry

from ._locks import ALL_HOLDS, BY_NAME, LockKind
from .conftest import asyncio_only

pytestmark = pytest.mark.anyio


@pytest.fixture(autouse=True)
def _registry_left_clean() -> Iterator[None]:
    yield
    assert registry.waiting == {}, "a wait was left registered"


# --- fetches ----------------------------------------------------------------------


async def test_fetch_awaiting_its_own_key_raises_at_once() -> None:
    cache: RefreshCache[str, int] = RefreshCache(label="users")

    async def fetch() -> int:
        # A long timeout: without detection this would hang for a minute.
        return await cache.get_or_refresh("u1", fetch, timeout_ms=60_000)

    with anyio.fail_after(5):
        with pytest.raises(DeadlockError) as info:
            await cache.get_or_refresh("u1", fetch)
    (step,) = info.value.cycle
    assert step.waits_for == "users: the fetch of key 'u1'"
    assert step.task == step.holder_task


async def test_two_fetchers_waiting_for_each_others_keys() -> None:
    cache: RefreshCache[str, str] = RefreshCache(label="pair")
    a_started, b_started = anyio.Event(), anyio.Event()
    errors: list[DeadlockError] = []

    async def fetch_a() -> str:
        a_started.set()
        await b_started.wait()  # "b" has its own leader now
        b = await cache.get_or_refresh("b", fetch_b)
        return "a+" + b

    async def fetch_b() -> str:
        b_started.set()
        await wait_all_tasks_blocked()  # the leader of "a" is parked on "b" now
        try:
            return "b+" + await cache.get_or_refresh("a", fetch_a)
        except DeadlockError as exc:
            errors.append(exc)
            return "b"  # give up on "a": the leader of "a" then gets this value

    results: dict[str, str] = {}

    async def get(key: str) -> None:
        results[key] = await cache.get_or_refresh(
            key, fetch_a if key == "a" else fetch_b
        )

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(get, "a")
            await a_started.wait()
            tg.start_soon(get, "b")
    (error,) = errors
    assert {s.waits_for for s in error.cycle} == {
        "pair: the fetch of key 'a'",
        "pair: the fetch of key 'b'",
    }
    assert results == {"a": "a+b", "b": "b"}


async def test_fetch_waits_with_timeout_still_time_out_without_a_cycle() -> None:
    cache: RefreshCache[str, int] = RefreshCache(label="slow")
    release = anyio.Event()

    async def slow() -> int:
        await release.wait()
        return 1

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(cache.get_or_refresh, "k", slow)
            await wait_all_tasks_blocked()
            with pytest.raises(MutexTimeoutError):
                await cache.get_or_refresh("k", slow, timeout_ms=20)
            release.set()


# --- locks ------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ALL_HOLDS, ids=str)
@pytest.mark.parametrize("way", ["acquire", "async with"])
async def test_a_wait_inside_an_outer_one_is_stacked_and_unstacked(
    kind: LockKind, way: str
) -> None:
    # The contended paths register and remove their wait inline; a wait already
    # registered for the task (a lock built on a lock) stays under it, as with
    # add_wait() and leave_wait().
    lock = kind.make("inner")
    held, done = anyio.Event(), anyio.Event()
    # A reader waits only for a writer.
    take = (
        BY_NAME["RWLock-write"].acquire if kind.name == "RWLock-read" else kind.acquire
    )
    outers: list[_Wait] = []

    async def holder() -> None:
        release = await take(lock)
        held.set()
        await done.wait()
        release()

    async def waiter() -> None:
        me = current_task()
        outer = add_wait(_Wait(me, AsyncMutex("outer"), None, None, False, True, None))
        outers.append(outer)
        try:
            if way == "acquire":
                release = await kind.acquire(lock)
                release()
            else:
                async with kind.hold(lock):
                    pass
            assert registry.waiting[id(me)] is outer
        finally:
            leave_wait(outer)

    async with anyio.create_task_group() as tg:
        tg.start_soon(holder)
        await held.wait()
        tg.start_soon(waiter)
        await wait_all_tasks_blocked()
        (inner,) = registry.waiting.values()
        assert inner is not outers[0]
        assert inner.prev is outers[0]
        done.set()


Hold = Callable[[Any], AbstractAsyncContextManager[Any]]


def _mutexes(kind: str) -> tuple[Callable[[str], Any], Hold]:
    """A factory of named locks of ``kind`` and how to hold one."""
    if kind == "Mutex":
        return Mutex, lambda lock: lock
    if kind == "AsyncMutex":
        return AsyncMutex, lambda lock: lock.hold()
    keyed: KeyedMutex[str] = KeyedMutex(label="km")
    return (lambda name: name), lambda key: keyed.hold(key)


LOCK_KINDS = ["Mutex", "AsyncMutex", "KeyedMutex"]


@pytest.mark.parametrize("kind", LOCK_KINDS)
async def test_two_tasks_crossing_one_gets_the_error_the_other_completes(
    kind: str,
) -> None:
    make, hold = _mutexes(kind)
    a, b = make("A"), make("B")
    a_held, b_held = anyio.Event(), anyio.Event()
    errors: dict[str, DeadlockError] = {}
    completed: list[str] = []

    async def first() -> None:
        async with hold(a):
            a_held.set()
            await b_held.wait()
            async with hold(b):  # parks: "second" holds B
                completed.append("first")

    async def second() -> None:
        async with hold(b):
            b_held.set()
            await wait_all_tasks_blocked()  # "first" is parked on B now
            try:
                async with hold(a):
                    completed.append("second")  # pragma: no cover - must not happen
            except DeadlockError as exc:
                errors["second"] = exc

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(first, name="first")
            await a_held.wait()
            tg.start_soon(second, name="second")
    assert completed == ["first"]
    (error,) = errors.values()
    assert [step.task for step in error.cycle] == ["second", "first"]
    labels = [step.waits_for for step in error.cycle]
    if kind == "KeyedMutex":
        assert labels == ["km['A']", "km['B']"]
    else:
        assert labels == ["A", "B"]
        assert [step.held_by for step in error.cycle] == ["A", "B"]
    assert "'first'" in str(error)
    assert "'second'" in str(error)


@pytest.mark.parametrize("kind", LOCK_KINDS)
async def test_three_locks_in_a_cycle(kind: str) -> None:
    make, hold = _mutexes(kind)
    locks = [make(name) for name in "XYZ"]
    held = [anyio.Event() for _ in locks]
    errors: list[DeadlockError] = []
    completed: list[int] = []

    async def worker(i: int) -> None:
        async with hold(locks[i]):
            held[i].set()
            for event in held:
                await event.wait()
            if i == 2:
                await wait_all_tasks_blocked()  # 0 and 1 are parked
            try:
                async with hold(locks[(i + 1) % 3]):
                    completed.append(i)
            except DeadlockError as exc:
                errors.append(exc)

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            for i in range(2):
                tg.start_soon(worker, i, name=f"w{i}")
            await wait_all_tasks_blocked()
            tg.start_soon(worker, 2, name="w2")
    (error,) = errors
    assert [step.task for step in error.cycle] == ["w2", "w0", "w1"]
    assert sorted(completed) == [0, 1]


async def test_rwlock_reader_waiting_for_a_lock_of_a_task_waiting_to_write() -> None:
    rw = RWLock("rw")
    m = Mutex("m")
    read_held, m_held = anyio.Event(), anyio.Event()
    errors: list[DeadlockError] = []
    wrote: list[bool] = []

    async def reader() -> None:
        async with rw.read(label="the-reader"):
            read_held.set()
            await m_held.wait()
            await wait_all_tasks_blocked()  # the writer is parked on rw
            try:
                async with m:
                    pass  # pragma: no cover - must not happen
            except DeadlockError as exc:
                errors.append(exc)

    async def writer() -> None:
        async with m:
            m_held.set()
            async with rw.write(label="the-writer"):
                wrote.append(True)

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(reader, name="reader")
            await read_held.wait()
            tg.start_soon(writer, name="writer")
    (error,) = errors
    assert [(s.task, s.waits_for, s.held_by) for s in error.cycle] == [
        ("reader", "m", "m"),
        ("writer", "rw", "the-reader"),
    ]
    assert wrote == [True]


@pytest.mark.parametrize("held_as", ["read", "write"])
async def test_rwlock_writer_closing_the_cycle_raises(held_as: str) -> None:
    # The writer's own wait closes it: the holder of rw (a reader, or the writer)
    # already waits for the mutex the new writer holds.
    rw = RWLock("rw")
    m = Mutex("m")
    rw_held, m_held, m_waited = anyio.Event(), anyio.Event(), anyio.Event()
    errors: list[DeadlockError] = []
    got_m: list[bool] = []

    async def holder() -> None:
        async with (
            rw.read(label="holder") if held_as == "read" else rw.write(label="holder")
        ):
            rw_held.set()
            await m_held.wait()
            m_waited.set()
            async with m:
                got_m.append(True)

    async def writer() -> None:
        async with m:
            m_held.set()
            await m_waited.wait()
            await wait_all_tasks_blocked()  # the holder is parked on m
            try:
                async with rw.write(label="writer"):
                    pass  # pragma: no cover - must not happen
            except DeadlockError as exc:
                errors.append(exc)

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(holder, name="holder")
            await rw_held.wait()
            tg.start_soon(writer, name="writer")
    (error,) = errors
    assert [(s.task, s.waits_for, s.held_by) for s in error.cycle] == [
        ("writer", "rw", "holder"),
        ("holder", "m", "m"),
    ]
    assert got_m == [True]  # the writer let m go, so the holder went on


async def test_rwlock_reader_queued_behind_a_writer_closing_the_cycle_raises() -> None:
    # The reader is not admitted beside the holding reader: a writer is queued ahead
    # of it (FIFO). It waits for that writer, which waits for the holder, which
    # waits for the mutex the reader holds.
    rw = RWLock("rw")
    m = Mutex("m")
    rw_held, m_held = anyio.Event(), anyio.Event()
    errors: list[DeadlockError] = []
    done: list[str] = []

    async def holder() -> None:
        async with rw.read(label="holder"):
            rw_held.set()
            await m_held.wait()
            async with m:
                done.append("holder")

    async def writer() -> None:
        async with rw.write(label="writer"):
            done.append("writer")

    async def reader() -> None:
        async with m:
            m_held.set()
            await wait_all_tasks_blocked()  # the holder on m, the writer on rw
            assert rw.statistics().writers_waiting == 1
            try:
                async with rw.read(label="reader"):
                    pass  # pragma: no cover - must not happen
            except DeadlockError as exc:
                errors.append(exc)

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(holder, name="holder")
            await rw_held.wait()
            tg.start_soon(writer, name="writer")
            await wait_all_tasks_blocked()
            tg.start_soon(reader, name="reader")
    (error,) = errors
    assert [(s.task, s.waits_for, s.held_by) for s in error.cycle] == [
        ("reader", "rw", "writer"),
        ("writer", "rw", "holder"),
        ("holder", "m", "m"),
    ]
    assert done == ["holder", "writer"]


#: Lock B in the tests of waiters that are already leaving: each kind's own hold.
LEAVING_KINDS = ["Mutex", "KeyedMutex", "RWLock-write", "Semaphore"]


def _other_lock(
    kind: str,
) -> Callable[[str, float | None], AbstractAsyncContextManager[Any]]:
    """A hold of lock B of the given kind (tests/_locks.py), by label and timeout_ms."""
    lock_kind = BY_NAME[kind]
    lock = lock_kind.make("B")
    return lambda label, ms: lock_kind.hold(lock, label=label, timeout_ms=ms)


async def _cancel_a_waiter_then_wait_for_its_lock(
    kind: str, cancel: Callable[[anyio.CancelScope, Any], None], timed: bool
) -> list[str]:
    # W holds A and waits for B, which X holds. X cancels W's wait, then at once
    # waits for A: W has not resumed yet, but it will let go of A as soon as it does.
    # That is no deadlock, whatever W's wait record still says. Timed: W waits with
    # a timeout of its own (on trio, the mutex's lone timed waiter parks in the
    # timer's scope, and its cancellation must still count).
    a = AsyncMutex("A")
    hold_b = _other_lock(kind)
    b_held = anyio.Event()
    parked: list[tuple[anyio.CancelScope, Any]] = []
    got: list[str] = []

    async def w() -> None:
        async with a.hold(label="W"):
            await b_held.wait()
            try:
                with anyio.CancelScope() as scope:
                    parked.append((scope, current_task()))
                    async with hold_b("W", 60_000 if timed else None):
                        got.append("W got B")  # pragma: no cover - cancelled first
            except anyio.get_cancelled_exc_class():  # Task.cancel(): not the scope's
                pass  # W goes on, out of its hold of A
            got.append("W cancelled")

    async def x() -> None:
        async with hold_b("X", None):
            b_held.set()
            await wait_all_tasks_blocked()  # W is parked on B
            cancel(*parked[0])
            async with a.hold(label="X"):  # no DeadlockError: W lets go of A
                got.append("X got A")

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(w, name="W")
            tg.start_soon(x, name="X")
    return got


@pytest.mark.parametrize("timed", [False, True], ids=["untimed", "timed"])
@pytest.mark.parametrize("kind", LEAVING_KINDS)
async def test_a_waiter_whose_scope_was_just_cancelled_is_not_in_a_cycle(
    kind: str, timed: bool
) -> None:
    got = await _cancel_a_waiter_then_wait_for_its_lock(
        kind, lambda scope, task: scope.cancel(), timed
    )
    assert got == ["W cancelled", "X got A"]


@asyncio_only
@pytest.mark.parametrize("timed", [False, True], ids=["untimed", "timed"])
@pytest.mark.parametrize("kind", LEAVING_KINDS)
async def test_a_waiter_cancelled_natively_is_not_in_a_cycle(
    kind: str, timed: bool
) -> None:
    got = await _cancel_a_waiter_then_wait_for_its_lock(
        kind, lambda scope, task: task.cancel(), timed
    )
    assert got == ["W cancelled", "X got A"]


@pytest.mark.parametrize("kind", LEAVING_KINDS)
async def test_a_wait_closing_a_cycle_in_a_cancelled_scope_is_cancelled(
    kind: str,
) -> None:
    # X holds B and waits for A; W holds A and, in a scope already cancelled, waits
    # for B. The cancellation wins, as at any checkpoint: W leaves cancelled (and
    # lets go of A), instead of getting a DeadlockError.
    a = AsyncMutex("A")
    hold_b = _other_lock(kind)
    b_held = anyio.Event()
    got: list[str] = []

    async def x() -> None:
        async with hold_b("X", None):
            b_held.set()
            async with a.hold(label="X"):
                got.append("X got A")

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg, a.hold(label="W"):
            tg.start_soon(x, name="X")
            await b_held.wait()
            await wait_all_tasks_blocked()  # X waits for A
            with anyio.CancelScope() as scope:
                scope.cancel()
                async with hold_b("W", None):
                    got.append("W got B")  # pragma: no cover - cancelled
            assert scope.cancelled_caught
            got.append("W cancelled")
    assert got == ["W cancelled", "X got A"]


@pytest.mark.parametrize("kind", LEAVING_KINDS)
async def test_a_waiter_past_its_deadline_is_not_in_a_cycle(kind: str) -> None:
    # W holds A and waits for B with a short timeout; X holds B, lets W's deadline
    # pass without yielding (a busy event loop), then waits for A. The lock's timer
    # has not timed W out yet, but W's wait is over: it fails and lets go of A.
    a = AsyncMutex("A")
    hold_b = _other_lock(kind)
    b_held = anyio.Event()
    got: list[str] = []

    async def w() -> None:
        async with a.hold(label="W"):
            await b_held.wait()
            try:
                async with hold_b("W", 50):
                    got.append("W got B")  # pragma: no cover - X holds B
            except MutexTimeoutError:
                got.append("W timed out")

    async def x() -> None:
        async with hold_b("X", None):
            b_held.set()
            await wait_all_tasks_blocked()  # W is parked on B, timed
            deadline = anyio.current_time() + 0.06
            while anyio.current_time() < deadline:  # the loop is busy: no yield
                pass
            async with a.hold(label="X"):
                got.append("X got A")

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(w, name="W")
            tg.start_soon(x, name="X")
    assert got == ["W timed out", "X got A"]


# trio's mutex times its timed waiters out with one timer: the first timed waiter (the
# "role") parks in a cancel scope at the earliest deadline in the queue, also when that
# deadline is another waiter's; when it fires, the role wakes, times that waiter out
# and parks again. These runs make the role wake in the same scheduler step as X, the
# holder of B, and repeat so that trio's batch order puts X first in some of them.
_ROLE_RUNS = 30


async def _role_woken_with_x(cancel_w: bool) -> tuple[list[str], int]:
    clock = trio.lowlevel.current_clock()
    assert isinstance(clock, trio.testing.MockClock)
    a, b = AsyncMutex("A"), Mutex("B")
    b_held = anyio.Event()
    outer = anyio.CancelScope()
    got: list[str] = []
    x_first = 0

    async def w() -> None:
        async with a.hold(label="W"):
            await b_held.wait()
            with outer:
                try:
                    async with b.hold(label="W", timeout_ms=60_000):  # the role
                        got.append("W got B")
                except DeadlockError:
                    got.append("W DeadlockError")
            if outer.cancel_called:
                got.append("W cancelled")

    async def v() -> None:  # the role's timer now fires at V's deadline
        with pytest.raises(MutexTimeoutError):
            async with b.hold(label="V", timeout_ms=10):
                pass  # pragma: no cover - X holds B
        got.append("V timed out")

    async def jump() -> None:  # past V's deadline and X's sleep: both fire at once
        await wait_all_tasks_blocked()
        clock.jump(1)

    async def x() -> None:
        nonlocal x_first
        async with b.hold(label="X"):
            b_held.set()
            await wait_all_tasks_blocked()  # W is parked on B, the role
            tg.start_soon(v, name="V")
            await wait_all_tasks_blocked()  # V is parked behind it
            tg.start_soon(jump)
            await anyio.sleep(0.5)
            # Woken in the same step as the role: it may not have run yet (then
            # its fired timer scope is still in place).
            scope = b._role_scope
            x_first += scope is not None and scope.cancel_called
            if cancel_w:
                outer.cancel()
            try:
                async with a.hold(label="X"):
                    got.append("X got A")
            except DeadlockError:
                got.append("X DeadlockError")

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(w, name="W")
            tg.start_soon(x, name="X")
    return got, x_first


@pytest.mark.parametrize(
    "anyio_backend", [pytest.param(("trio", {"clock": trio.testing.MockClock()}))]
)
async def test_trio_timer_role_cancelled_in_its_timers_step_is_not_in_a_cycle() -> None:
    # W holds A and, as the role, waits for B; X holds B. The role's timer fires for
    # V, and in the same step X cancels W and waits for A. W leaves (its cancellation
    # comes on top of the timer's), so X must get A, not a DeadlockError.
    x_first = 0
    for _ in range(_ROLE_RUNS):
        got, first = await _role_woken_with_x(cancel_w=True)
        assert sorted(got) == ["V timed out", "W cancelled", "X got A"]
        x_first += first
    assert x_first > 0  # the interleaving under test happened


@pytest.mark.parametrize(
    "anyio_backend", [pytest.param(("trio", {"clock": trio.testing.MockClock()}))]
)
async def test_trio_timer_role_in_a_real_cycle_is_reported_whichever_runs_first() -> (
    None
):
    # The same, without the cancellation: W (waiting for B) and X (waiting for A)
    # deadlock. Whichever of the two runs first after the timer's step, exactly one
    # gets DeadlockError and the other completes.
    outcomes = set()
    for _ in range(_ROLE_RUNS):
        got, first = await _role_woken_with_x(cancel_w=False)
        assert "V timed out" in got
        assert sorted(got) in (
            ["V timed out", "W DeadlockError", "X got A"],
            ["V timed out", "W got B", "X DeadlockError"],
        )
        outcomes.add((first, got[-1]))
    assert any(first for first, _ in outcomes)


async def test_a_fetch_waiter_whose_scope_was_just_cancelled_is_not_in_a_cycle() -> (
    None
):
    # The fetch's leader X cancels W, which holds m and waits for the fetch, then
    # takes m inside the fetch.
    flight: SingleFlight[str, int] = SingleFlight("sf")
    m = AsyncMutex("m")
    leading = anyio.Event()
    scopes: list[anyio.CancelScope] = []
    got: list[str] = []

    async def fetch() -> int:
        leading.set()
        await wait_all_tasks_blocked()  # W holds m and waits for this fetch
        scopes[0].cancel()
        async with m.hold(label="X"):
            got.append("X got m")
        return 1

    async def w() -> None:
        await leading.wait()
        async with m.hold(label="W"):
            with anyio.CancelScope() as scope:
                scopes.append(scope)
                await flight.do("k", fetch)
            got.append("W cancelled")

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(flight.do, "k", fetch, name="X")
            tg.start_soon(w, name="W")
    assert got == ["W cancelled", "X got m"]


async def test_a_fetch_waiter_past_its_deadline_is_not_in_a_cycle() -> None:
    # W holds m and waits for the fetch with a short timeout; the fetch's leader X
    # lets W's deadline pass without yielding, then takes m inside the fetch. W's
    # timer has not fired yet, but its wait is over: it fails and lets go of m.
    flight: SingleFlight[str, int] = SingleFlight("sf")
    m = AsyncMutex("m")
    leading = anyio.Event()
    got: list[str] = []

    async def fetch() -> int:
        leading.set()
        await wait_all_tasks_blocked()  # W holds m and waits for this fetch
        deadline = anyio.current_time() + 0.06
        while anyio.current_time() < deadline:  # the loop is busy: no yield
            pass
        async with m.hold(label="X"):
            got.append("X got m")
        return 1

    async def w() -> None:
        await leading.wait()
        async with m.hold(label="W"):
            try:
                await flight.do("k", fetch, timeout_ms=50)
            except MutexTimeoutError:
                got.append("W timed out")

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(flight.do, "k", fetch, name="X")
            tg.start_soon(w, name="W")
    assert got == ["W timed out", "X got m"]


async def test_a_waiter_for_a_running_holder_is_never_reported() -> None:
    m = Mutex("m")
    order: list[str] = []

    async def other() -> None:
        async with m:
            order.append("other")

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg, m:
            tg.start_soon(other)
            await wait_all_tasks_blocked()
            assert len(registry.waiting) == 1
            order.append("me")
    assert order == ["me", "other"]


async def test_timeout_waits_still_time_out_without_a_cycle() -> None:
    m = AsyncMutex("m")
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            release = anyio.Event()

            async def holder() -> None:
                async with m.hold():
                    await release.wait()

            tg.start_soon(holder)
            await wait_all_tasks_blocked()
            with pytest.raises(MutexTimeoutError):
                await m.acquire(timeout_ms=20)
            release.set()


@pytest.mark.parametrize("seed", [20261130])
async def test_consistent_order_with_cancellations_never_deadlocks(seed: int) -> None:
    print(f"seed={seed}")
    rng = random.Random(seed)
    locks = [AsyncMutex(f"L{i}") for i in range(5)]
    outcomes = {"ok": 0, "timeout": 0, "cancelled": 0}

    async def worker() -> None:
        for _ in range(30):
            chosen = sorted(rng.sample(range(len(locks)), rng.randint(1, 3)))
            timeout = rng.choice([None, None, 1.0, 5.0])
            with anyio.CancelScope() as scope:
                if rng.random() < 0.2:
                    scope.deadline = anyio.current_time() + rng.random() * 0.003
                try:
                    async with AsyncExitStack() as stack:
                        for i in chosen:
                            await stack.enter_async_context(
                                locks[i].hold(timeout_ms=timeout)
                            )
                            await anyio.lowlevel.checkpoint()
                    outcomes["ok"] += 1
                except MutexTimeoutError:
                    outcomes["timeout"] += 1
            if scope.cancelled_caught:
                outcomes["cancelled"] += 1

    with anyio.fail_after(30):
        async with anyio.create_task_group() as tg:
            for _ in range(12):
                tg.start_soon(worker)
    assert sum(outcomes.values()) == 12 * 30
    assert outcomes["ok"] > 0
    assert all(not lock.locked() for lock in locks)


async def test_snapshot_of_a_held_and_waited_lock() -> None:
    m = AsyncMutex("snap-lock")
    gone = Mutex("snap-gone")
    release = anyio.Event()

    async def holder() -> None:
        async with m.hold(label="the-holder"):
            await release.wait()

    async def waiter() -> None:
        async with m.hold(label="the-waiter"):
            pass

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(holder, name="holder-task")
            await wait_all_tasks_blocked()
            tg.start_soon(waiter, name="waiter-task")
            await wait_all_tasks_blocked()
            async with gone:
                pass
            del gone
            gc.collect()
            snap = snapshot()
            release.set()
    (lock,) = [lock for lock in snap.locks if lock.label.startswith("snap-")]
    assert lock.label == "snap-lock"
    assert lock.kind == "AsyncMutex"
    assert [(h.task, h.label) for h in lock.holders] == [("holder-task", "the-holder")]
    assert [(w.task, w.label) for w in lock.waiters] == [("waiter-task", "the-waiter")]
    text = str(snap)
    assert "AsyncMutex 'snap-lock': held by task 'holder-task' as 'the-holder'" in text
    assert "waiting: task 'waiter-task' as 'the-waiter'" in text


async def test_detection_off_parks_as_before() -> None:
    disable_deadlock_detection()
    try:
        m = Mutex("m")
        async with m, anyio.create_task_group() as tg:
            tg.start_soon(m.acquire)
            await wait_all_tasks_blocked()
            assert registry.waiting == {}
            tg.cancel_scope.cancel()
    finally:
        enable_deadlock_detection()


@asyncio_only
async def test_native_task_cancel_leaves_no_waiter_behind() -> None:
    import asyncio

    for lock in (Mutex("m"), RWLock("rw")):
        hold = lock if isinstance(lock, Mutex) else lock.write()
        async with hold:
            task = asyncio.get_running_loop().create_task(_take(lock))
            await wait_all_tasks_blocked()
            assert len(registry.waiting) == 1
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert registry.waiting == {}


async def _take(lock: Any) -> None:
    if isinstance(lock, Mutex):
        async with lock:
            pass
    else:
        async with lock.write():
            pass


async def test_lock_order_checker_shares_the_holder_table() -> None:
    # One registry: the checker's holders are what snapshot() reads held times from.
    from anyio_mutex import disable_lock_order_checks, enable_lock_order_checks

    enable_lock_order_checks()
    try:
        m, rw = AsyncMutex("timed-m"), RWLock("timed-rw")
        async with m.hold(label="holder"), rw.read():
            assert len(registry.held) == 1
            (held,) = registry.held.values()
            assert [label for _, label, _, _ in held] == ["timed-m", "timed-rw"]
            locks = {lock.label: lock for lock in snapshot().locks}
            for label in ("timed-m", "timed-rw"):
                (holder,) = locks[label].holders
                assert holder.held_for_s is not None
                assert holder.held_for_s >= 0
            assert "held by task" in str(locks["timed-m"])
        assert registry.held == {}
    finally:
        disable_lock_order_checks()


async def test_snapshot_lists_keys_rwlocks_permits_and_fetches() -> None:
    from anyio_mutex import Semaphore

    keyed: KeyedMutex[str] = KeyedMutex(label="snapkm")
    rw, sem = RWLock("snaprw"), Semaphore(1, label="snapsem")
    cache: RefreshCache[str, int] = RefreshCache(label="snapcache")
    release = anyio.Event()

    async def holder() -> None:
        key, read, permit = (
            keyed.hold("a", label="key-owner"),
            rw.read(label="reader"),
            sem.hold(label="permit"),
        )
        async with key, read, permit:
            await release.wait()

    async def fetch() -> int:
        await release.wait()
        return 1

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(holder, name="holder")
            tg.start_soon(cache.get_or_refresh, "k", fetch, name="leader")
            await wait_all_tasks_blocked()
            tg.start_soon(keyed.acquire, "a", name="key-waiter")
            tg.start_soon(rw.acquire_write, name="writer")
            tg.start_soon(sem.acquire, name="permit-waiter")
            tg.start_soon(cache.get_or_refresh, "k", fetch, name="follower")
            await wait_all_tasks_blocked()
            snap = snapshot()
            tg.cancel_scope.cancel()
    locks = {lock.label: lock for lock in snap.locks if "snap" in lock.label}
    assert locks.keys() == {
        "snapkm['a']",
        "snaprw",
        "snapsem",
        "snapcache: the fetch of key 'k'",
    }
    assert locks["snapkm['a']"].kind == "KeyedMutex"
    assert [h.label for h in locks["snapkm['a']"].holders] == ["key-owner"]
    assert [h.label for h in locks["snaprw"].holders] == ["reader"]
    assert [h.label for h in locks["snapsem"].holders] == ["permit"]
    assert [h.task for h in locks["snapcache: the fetch of key 'k'"].holders] == [
        "leader"
    ]
    waiters = {label: [w.task for w in lock.waiters] for label, lock in locks.items()}
    assert waiters == {
        "snapkm['a']": ["key-waiter"],
        "snaprw": ["writer"],
        "snapsem": ["permit-waiter"],
        "snapcache: the fetch of key 'k'": ["follower"],
    }


# --- semaphores -------------------------------------------------------------------


async def test_semaphore_whose_every_holder_waits_for_the_waiter_raises() -> None:
    sem, m = Semaphore(1, label="pool"), AsyncMutex("m")
    m_held, permit_held = anyio.Event(), anyio.Event()
    errors: list[DeadlockError] = []
    completed: list[str] = []

    async def holder() -> None:
        async with sem.hold(label="job-a"):
            permit_held.set()
            await m_held.wait()
            async with m:  # parks: "waiter" holds m
                completed.append("holder")

    async def waiter() -> None:
        async with m:
            m_held.set()
            await wait_all_tasks_blocked()  # "holder" is parked on m now
            try:
                async with sem:
                    completed.append("waiter")  # pragma: no cover - must not happen
            except DeadlockError as exc:
                errors.append(exc)

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(holder, name="holder")
            await permit_held.wait()
            tg.start_soon(waiter, name="waiter")
    assert completed == ["holder"]
    (error,) = errors
    assert [(s.task, s.waits_for, s.held_by) for s in error.cycle] == [
        ("waiter", "pool", "job-a"),
        ("holder", "m", "m"),
    ]
    assert sem.statistics().available == 1


async def test_a_permit_taken_as_detection_is_switched_on_is_named(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # With detection off, "async with sem" does not look its task up. Switched on
    # during its checkpoint, it must still name the permit's task, or the cycle
    # below would hang instead of raising.
    import anyio_mutex._semaphore as semaphore_module

    async def switch_on_then_checkpoint() -> None:
        enable_deadlock_detection()
        await anyio.lowlevel.checkpoint()

    sem, m = Semaphore(1, label="pool"), AsyncMutex("m")
    m_held, permit_held = anyio.Event(), anyio.Event()
    errors: list[DeadlockError] = []

    async def holder() -> None:
        disable_deadlock_detection()
        with monkeypatch.context() as patch:
            patch.setattr(semaphore_module, "_checkpoint", switch_on_then_checkpoint)
            await sem.__aenter__()
        try:
            permit_held.set()
            await m_held.wait()
            async with m:
                pass
        finally:
            await sem.__aexit__(None, None, None)

    async def waiter() -> None:
        async with m:
            m_held.set()
            await wait_all_tasks_blocked()  # "holder" is parked on m now
            try:
                async with sem:
                    pass  # pragma: no cover - must not happen
            except DeadlockError as exc:
                errors.append(exc)

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(holder, name="holder")
            await permit_held.wait()
            tg.start_soon(waiter, name="waiter")
    (error,) = errors
    assert [s.task for s in error.cycle] == ["waiter", "holder"]


async def test_semaphore_waiting_for_its_own_permit_raises_at_once() -> None:
    sem = Semaphore(1, label="one")
    with anyio.fail_after(5):
        async with sem:
            with pytest.raises(DeadlockError) as info:
                await sem.acquire()
    (step,) = info.value.cycle
    assert step.waits_for == "one"
    assert step.task == step.holder_task
    assert sem.statistics().available == 1


async def test_semaphore_nested_holds_of_two_tasks_raise_in_the_second() -> None:
    # Each of two tasks holds one of two permits and nests a second hold: both wait
    # for each other. A waiter that holds another permit is not "granted" (the walk
    # once took any holder waiting on the semaphore for one in its hand-off window).
    sem = Semaphore(2, label="pair")
    both_in = anyio.Event()
    inside: list[str] = []
    errors: list[DeadlockError] = []

    async def nest(name: str) -> None:
        async with sem.hold(label=f"{name}-outer"):
            inside.append(name)
            if len(inside) == 2:
                both_in.set()
            await both_in.wait()
            try:
                async with sem.hold(label=f"{name}-inner"):
                    inside.append(f"{name}-inner")
            except DeadlockError as exc:
                errors.append(exc)

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(nest, "a", name="a")
            tg.start_soon(nest, "b", name="b")
    (error,) = errors  # the second to wait; the first gets in once it lets go
    assert len(inside) == 3
    # Each waits for the permit the other holds (not for the one it holds itself).
    steps = sorted((s.task, s.waits_for, s.held_by) for s in error.cycle)
    assert steps == [("a", "pair", "b-outer"), ("b", "pair", "a-outer")]
    assert sem.statistics().available == 2


async def test_semaphore_nested_hold_in_a_cycle_through_a_mutex_raises() -> None:
    # a holds a permit and nests; b holds the other and waits for m; c holds m and
    # waits for a permit last: c -> {a, b}, a -> the semaphore, b -> m -> c.
    sem, m = Semaphore(2, label="s"), Mutex("m")
    a_in, b_in, c_in = anyio.Event(), anyio.Event(), anyio.Event()
    errors: list[DeadlockError] = []

    async def guarded(hold: AbstractAsyncContextManager[Any]) -> None:
        try:
            async with hold:
                pass
        except DeadlockError as exc:
            errors.append(exc)

    async def a() -> None:
        async with sem.hold(label="a"):
            a_in.set()
            await b_in.wait()
            await guarded(sem.hold(label="a-inner"))

    async def b() -> None:
        async with sem.hold(label="b"):
            b_in.set()
            await c_in.wait()
            await guarded(m)

    async def c() -> None:
        async with m:
            c_in.set()
            await wait_all_tasks_blocked()  # a on the semaphore, b on m
            await guarded(sem.hold(label="c"))

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(a, name="a")
            await a_in.wait()
            tg.start_soon(b, name="b")
            await b_in.wait()
            tg.start_soon(c, name="c")
    (error,) = errors
    assert error.cycle[0].task == "c"
    assert {s.task for s in error.cycle} <= {"a", "b", "c"}
    assert sem.statistics().available == 2


async def test_semaphore_wait_after_the_limit_was_lowered_needs_every_extra_permit() -> (
    None
):
    # Two permits held, the limit lowered to 1: a waiter needs both back. One holder
    # runs (it will let go), the other waits for the waiter: still a deadlock.
    sem, m = Semaphore(2, label="s"), Mutex("m")
    held, m_held, let_go = anyio.Event(), anyio.Event(), anyio.Event()
    errors: list[DeadlockError] = []
    got: list[str] = []

    async def stuck_holder() -> None:
        async with sem.hold(label="stuck"):
            held.set()
            await m_held.wait()
            async with m:
                got.append("stuck")

    async def running_holder() -> None:
        async with sem.hold(label="running"):
            await let_go.wait()

    async def waiter() -> None:
        async with m:
            m_held.set()
            await wait_all_tasks_blocked()  # stuck_holder parked on m
            let_go.set()  # running_holder will let go; stuck_holder never will
            try:
                async with sem.hold(label="waiter"):
                    got.append("waiter")  # pragma: no cover - must not happen
            except DeadlockError as exc:
                errors.append(exc)

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(stuck_holder, name="stuck")
            tg.start_soon(running_holder, name="running")
            await held.wait()
            await wait_all_tasks_blocked()
            sem.limit = 1
            tg.start_soon(waiter, name="waiter")
    (error,) = errors
    assert [(s.task, s.waits_for, s.held_by) for s in error.cycle] == [
        ("waiter", "s", "stuck"),
        ("stuck", "m", "m"),
    ]
    assert got == ["stuck"]


@pytest.mark.parametrize("other", ["running holder", "acquire() permit"])
async def test_semaphore_wait_is_not_reported_while_a_permit_may_come_back(
    other: str,
) -> None:
    # Two permits: one held in a body by a task that waits for us, the other by a
    # running task (it will release), or from acquire() (any task may release it).
    sem, m = Semaphore(2, label="pool"), AsyncMutex("m")
    m_held, both_held, go = anyio.Event(), anyio.Event(), anyio.Event()
    got: list[str] = []

    async def stuck_holder() -> None:
        async with sem:
            await m_held.wait()
            async with m:
                got.append("stuck_holder")

    async def other_holder() -> None:
        if other == "running holder":
            async with sem:
                both_held.set()
                await go.wait()
        else:
            release = await sem.acquire()
            both_held.set()
            await go.wait()
            release()

    async def waiter() -> None:
        async with m:
            m_held.set()
            await wait_all_tasks_blocked()
            if other == "running holder":
                async with sem:  # parks until the running holder lets go
                    got.append("waiter")
            else:
                with pytest.raises(MutexTimeoutError):
                    await sem.acquire(timeout_ms=50)
                got.append("timed out")
                go.set()  # only now does the acquire() permit come back

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(stuck_holder)
            tg.start_soon(other_holder)
            await both_held.wait()
            tg.start_soon(waiter)
            if other == "running holder":
                await wait_all_tasks_blocked()  # the waiter is parked on sem
                go.set()
    if other == "running holder":
        assert got == ["waiter", "stuck_holder"]
    else:
        assert got == ["timed out", "stuck_holder"]
