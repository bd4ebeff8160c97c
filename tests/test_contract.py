"""The contract every exclusive lock in anyio_mutex keeps, on every backend.

Each test runs over every lock kind in ``tests/_locks.py`` and every backend in the
matrix. Ordering comes from events and ``wait_all_tasks_blocked``, never sleeps.
"""

from __future__ import annotations

import gc
import math
from typing import Any

import anyio
import pytest
from anyio import wait_all_tasks_blocked
from anyio.lowlevel import checkpoint

from anyio_mutex import MutexReentryError, MutexReleaseError, MutexTimeoutError
from anyio_mutex._waitgraph import _Wait

from ._locks import ALL_HOLDS, KINDS, TASK_OWNED_KINDS, LockKind

pytestmark = pytest.mark.anyio


@pytest.fixture(params=KINDS, ids=str)
def kind(request: pytest.FixtureRequest) -> LockKind:
    return request.param  # type: ignore[no-any-return]


def assert_idle(kind: LockKind, lock: Any) -> None:
    assert not kind.locked(lock)
    assert kind.owner(lock) is None
    assert kind.waiting(lock) == 0


@pytest.mark.parametrize("tasks", [10, 1000])
async def test_counter_example_is_exact(kind: LockKind, tasks: int) -> None:
    lock = kind.make()
    counter = 0

    async def increment() -> None:
        nonlocal counter
        async with kind.hold(lock):
            value = counter
            await checkpoint()  # every other task gets a chance to interleave here
            counter = value + 1

    with anyio.fail_after(30):
        async with anyio.create_task_group() as tg:
            for _ in range(tasks):
                tg.start_soon(increment)
    assert counter == tasks
    assert kind.acquisitions(lock) == tasks
    assert_idle(kind, lock)


async def test_waiters_are_served_in_fifo_order(kind: LockKind) -> None:
    lock = kind.make()
    order: list[int] = []

    async def waiter(i: int) -> None:
        release = await kind.acquire(lock, label=f"w{i}")
        order.append(i)
        release()

    with anyio.fail_after(5):
        release = await kind.acquire(lock, label="first")
        async with anyio.create_task_group() as tg:
            for i in range(20):
                tg.start_soon(waiter, i)
                await wait_all_tasks_blocked()  # queue them one by one, in order
            assert kind.waiting(lock) == 20
            release()
    assert order == list(range(20))
    assert_idle(kind, lock)


async def test_owner_names_the_holder_through_every_handoff(kind: LockKind) -> None:
    lock = kind.make()
    seen: list[tuple[str | None, str | None]] = []

    async def waiter(label: str) -> None:
        release = await kind.acquire(lock, label=label)
        await checkpoint()
        seen.append((label, kind.owner(lock)))
        release()
        # The next holder is named at once, before it has even resumed.
        seen.append(("after-release", kind.owner(lock)))

    with anyio.fail_after(5):
        release = await kind.acquire(lock, label="main")
        assert kind.owner(lock) == "main"
        async with anyio.create_task_group() as tg:
            for label in ("a", "b"):
                tg.start_soon(waiter, label)
                await wait_all_tasks_blocked()
            release()
            assert kind.owner(lock) == "a"  # handed off, "a" not resumed yet
    assert seen == [
        ("a", "a"),
        ("after-release", "b"),
        ("b", "b"),
        ("after-release", None),
    ]
    assert_idle(kind, lock)


async def test_default_owner_label_is_the_locks_label(kind: LockKind) -> None:
    lock = kind.make("orders")
    release = await kind.acquire(lock)
    assert kind.owner(lock) == kind.error_label("orders")
    release()
    assert kind.owner(lock) is None


@pytest.mark.parametrize("which", ["first", "second"])
async def test_cancelled_waiter_leaves_no_trace(kind: LockKind, which: str) -> None:
    lock = kind.make()
    got: list[str] = []
    scopes: dict[str, anyio.CancelScope] = {}

    async def waiter(label: str) -> None:
        with anyio.CancelScope() as scope:
            scopes[label] = scope
            release = await kind.acquire(lock, label=label)
            got.append(label)
            release()

    with anyio.fail_after(5):
        release = await kind.acquire(lock, label="holder")
        async with anyio.create_task_group() as tg:
            tg.start_soon(waiter, "first")
            await wait_all_tasks_blocked()
            tg.start_soon(waiter, "second")
            await wait_all_tasks_blocked()
            assert kind.waiting(lock) == 2
            scopes[which].cancel()
            await wait_all_tasks_blocked()
            assert kind.waiting(lock) == 1
            assert kind.owner(lock) == "holder"
            release()
    survivor = "second" if which == "first" else "first"
    assert got == [survivor]
    assert kind.acquisitions(lock) == 2
    assert_idle(kind, lock)


async def test_waiter_cancelled_right_at_the_handoff_passes_the_lock_on(
    kind: LockKind,
) -> None:
    lock = kind.make()
    events: list[str] = []
    first_scope = anyio.CancelScope()

    async def first() -> None:
        with first_scope:
            release = await kind.acquire(lock, label="first")
            # trio cannot cancel a wait that was already granted; asyncio can.
            # Either way the body must not keep the lock.
            events.append("first acquired")
            try:
                await checkpoint()
            finally:
                release()

    async def second() -> None:
        release = await kind.acquire(lock, label="second")
        events.append(f"second acquired, owner={kind.owner(lock)}")
        release()

    with anyio.fail_after(5):
        release = await kind.acquire(lock, label="holder")
        async with anyio.create_task_group() as tg:
            tg.start_soon(first)
            await wait_all_tasks_blocked()
            tg.start_soon(second)
            await wait_all_tasks_blocked()
            release()  # hands the lock to "first" ...
            assert kind.owner(lock) == "first"
            first_scope.cancel()  # ... which is cancelled before it resumes
    assert events[-1] == "second acquired, owner=second"
    assert kind.acquisitions(lock) in (2, 3)  # 3 where "first" was already granted
    assert_idle(kind, lock)


@pytest.mark.parametrize("how", ["hold", "acquire-release"])
async def test_body_cancelled_while_holding_releases(kind: LockKind, how: str) -> None:
    lock = kind.make()
    entered = anyio.Event()

    async def body() -> None:
        if how == "hold":
            async with kind.hold(lock, label="body"):
                entered.set()
                await anyio.sleep_forever()
        else:
            release = await kind.acquire(lock, label="body")
            try:
                entered.set()
                await anyio.sleep_forever()
            finally:
                release()

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(body)
            await entered.wait()
            assert kind.owner(lock) == "body"
            tg.cancel_scope.cancel()
    assert_idle(kind, lock)
    release = await kind.acquire(lock)  # and it is usable again
    release()


async def test_enclosing_fail_after_passes_through_unchanged(kind: LockKind) -> None:
    lock = kind.make()
    release = await kind.acquire(lock, label="holder")
    caught: list[BaseException] = []

    async def contender() -> None:
        try:
            with anyio.fail_after(0.01):
                await kind.acquire(lock, timeout_ms=60_000)
        except BaseException as exc:
            caught.append(exc)

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(contender)
    assert type(caught[0]) is TimeoutError  # anyio's own, not MutexTimeoutError
    assert kind.waiting(lock) == 0
    assert kind.owner(lock) == "holder"
    release()
    assert_idle(kind, lock)


async def test_enclosing_move_on_after_is_not_turned_into_an_error(
    kind: LockKind,
) -> None:
    lock = kind.make()
    release = await kind.acquire(lock, label="holder")
    outcome: list[str] = []

    async def contender() -> None:
        with anyio.move_on_after(0.01) as scope:
            await kind.acquire(lock, timeout_ms=60_000)
            outcome.append("acquired")
        outcome.append(f"cancelled_caught={scope.cancelled_caught}")

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(contender)
    assert outcome == ["cancelled_caught=True"]
    assert kind.waiting(lock) == 0
    release()
    assert_idle(kind, lock)


@pytest.mark.parametrize("kind", TASK_OWNED_KINDS, ids=str)
async def test_release_by_another_task_raises_and_changes_nothing(
    kind: LockKind,
) -> None:
    lock = kind.make("jobs")
    release = await kind.acquire(lock, label="holder")
    caught: list[BaseException] = []

    async def intruder() -> None:
        try:
            release()
        except MutexReleaseError as exc:
            caught.append(exc)

    async with anyio.create_task_group() as tg:
        tg.start_soon(intruder)
    assert len(caught) == 1
    assert isinstance(caught[0], RuntimeError)
    assert str(caught[0]) == (
        f"Cannot release lock {kind.error_label('jobs')!r}: "
        "the current task does not hold it; a lock belongs to the task that "
        "acquired it and only that task can release it (to end a hold from another "
        "task, signal the holder, for example with an anyio.Event or by cancelling "
        "its scope, and let it release)"
    )
    assert kind.locked(lock)
    assert kind.owner(lock) == "holder"
    release()
    assert_idle(kind, lock)


@pytest.mark.parametrize("kind", TASK_OWNED_KINDS, ids=str)
async def test_reacquire_by_the_holder_raises_at_once(kind: LockKind) -> None:
    lock = kind.make("jobs")
    release = await kind.acquire(lock, label="holder")
    for timeout_ms in (None, 0, 10_000):
        with anyio.fail_after(5), pytest.raises(MutexReentryError) as exc_info:
            await kind.acquire(lock, timeout_ms=timeout_ms, label="again")
        assert str(exc_info.value) == (
            f"Lock {kind.error_label('jobs')!r} is already held by the current task "
            "(held as 'holder'); it is not re-entrant"
        )
    assert kind.owner(lock) == "holder"
    assert kind.waiting(lock) == 0
    release()
    assert_idle(kind, lock)


@pytest.mark.parametrize(
    ("timeout_ms", "error", "text"),
    [
        (-1, ValueError, "timeout_ms must be >= 0 (or None to wait forever), got -1"),
        (math.nan, ValueError, "got nan"),
        (-math.inf, ValueError, "got -inf"),
        (
            "5",
            TypeError,
            "timeout_ms must be a number of milliseconds or None, got '5'",
        ),
        (True, TypeError, "got True"),
        ([1], TypeError, "got [1]"),
    ],
)
async def test_bad_timeout_is_rejected_before_any_state_changes(
    kind: LockKind, timeout_ms: Any, error: type[Exception], text: str
) -> None:
    lock = kind.make()
    for held in (False, True):
        release = await kind.acquire(lock, label="holder") if held else None
        before = (kind.locked(lock), kind.owner(lock), kind.acquisitions(lock))
        with pytest.raises(error) as exc_info:
            await kind.acquire(lock, timeout_ms=timeout_ms)
        assert text in str(exc_info.value)
        with pytest.raises(error):
            kind.hold(lock, timeout_ms=timeout_ms)
        assert (kind.locked(lock), kind.owner(lock), kind.acquisitions(lock)) == before
        assert kind.waiting(lock) == 0
        if release:
            release()
    assert_idle(kind, lock)


async def test_bad_label_is_rejected(kind: LockKind) -> None:
    lock = kind.make()
    with pytest.raises(TypeError, match="label must be a str or None, got 42"):
        await kind.acquire(lock, label=42)
    assert_idle(kind, lock)


async def test_zero_timeout_tries_once(kind: LockKind) -> None:
    lock = kind.make("jobs")
    release = await kind.acquire(lock, timeout_ms=0, label="holder")  # free: acquires
    assert kind.owner(lock) == "holder"

    caught: list[MutexTimeoutError] = []

    async def other() -> None:
        with pytest.raises(MutexTimeoutError) as exc_info:
            await kind.acquire(lock, timeout_ms=0)
        caught.append(exc_info.value)

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(other)
    assert caught[0].timeout_ms == 0
    assert caught[0].owner == "holder"
    assert kind.waiting(lock) == 0
    release()
    assert_idle(kind, lock)


async def test_infinite_timeout_waits_until_released(kind: LockKind) -> None:
    lock = kind.make()
    release = await kind.acquire(lock)
    got = anyio.Event()

    async def waiter() -> None:
        release2 = await kind.acquire(lock, timeout_ms=math.inf, label="patient")
        got.set()
        release2()

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(waiter)
            await wait_all_tasks_blocked()
            assert not got.is_set()
            release()
    assert got.is_set()
    assert_idle(kind, lock)


@pytest.mark.parametrize("end", ["granted", "timed out", "cancelled"])
async def test_a_wait_that_ended_leaves_no_reference_cycle(
    kind: LockKind, end: str
) -> None:
    # A lock that queues its wait record (keyed by itself for the deadlock walk while
    # it waits) must break that link when the wait ends: else every contended
    # acquire would leave garbage that only the cycle collector frees.
    lock = kind.make()
    gc.collect()
    gc.set_debug(gc.DEBUG_SAVEALL)  # unreachable cycles go to gc.garbage, kept
    try:
        with anyio.fail_after(5):
            release = await kind.acquire(lock, label="holder")
            async with anyio.create_task_group() as tg:

                async def waiter() -> None:
                    if end == "timed out":
                        with pytest.raises(MutexTimeoutError):
                            await kind.acquire(lock, timeout_ms=1)
                    else:
                        (await kind.acquire(lock))()

                tg.start_soon(waiter)
                await wait_all_tasks_blocked()
                if end != "timed out":  # (1 ms may be over already, under load)
                    assert kind.waiting(lock) == 1
                if end == "granted":
                    release()
                elif end == "cancelled":
                    tg.cancel_scope.cancel()
            if end != "granted":
                release()
        assert_idle(kind, lock)
        gc.collect()
        # A failed wait's record may be reachable from its exception's traceback
        # cycle; what must not be left is the record's own link to itself.
        waits = [o for o in gc.garbage if isinstance(o, _Wait)]
        assert [w for w in waits if w.key is w] == []
        if end == "granted":
            assert waits == []
    finally:
        gc.set_debug(0)
        gc.garbage.clear()


@pytest.mark.parametrize("hold_kind", ALL_HOLDS, ids=str)
@pytest.mark.parametrize("steps", range(4))
async def test_cancel_scope_on_a_free_lock_at_every_step(
    hold_kind: LockKind, steps: int
) -> None:
    # An anyio cancellation landing anywhere in an uncontended acquire (before it,
    # at its checkpoint after the grant, in the body) leaves the lock free: either
    # the grant is given back or the body's exit releases it. On trio the order
    # of the two tasks within a step varies; the outcome must not.
    lock = hold_kind.make()
    scope = anyio.CancelScope()
    entered: list[bool] = []

    async def victim() -> None:
        with scope:
            async with hold_kind.hold(lock, label="victim"):
                entered.append(True)
                await checkpoint()

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(victim)
            for _ in range(steps):
                await checkpoint()
            scope.cancel()
        assert_idle(hold_kind, lock)
        release = await hold_kind.acquire(lock, timeout_ms=0, label="after")
        assert hold_kind.owner(lock) == "after"
        release()
    assert scope.cancelled_caught or entered
