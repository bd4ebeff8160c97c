"""Regressions from the 1.0 hardening review: labels, Condition, shared hold objects,
worker threads, extreme numbers and the messages misuse gets."""

from __future__ import annotations

import math
from typing import Any

import anyio
import anyio.to_thread
import pytest
from anyio import wait_all_tasks_blocked

from anyio_mutex import (
    AsyncMutex,
    KeyedMutex,
    Mutex,
    MutexLoopError,
    MutexReentryError,
    MutexReleaseError,
    MutexTimeoutError,
    RefreshCache,
    RWLock,
    SingleFlight,
    cached,
    get_or_refresh,
)

from ._locks import KINDS, TASK_OWNED, LockKind

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize("kind", KINDS, ids=str)
@pytest.mark.parametrize("how", ["acquire", "acquire_nowait"])
async def test_cancelled_acquire_of_a_free_lock_keeps_the_next_holders_label(
    kind: LockKind, how: str
) -> None:
    # Regression: the cancelled acquire labelled the free lock, yielded (it was
    # cancelled), and on the way out overwrote the label of the task that took the
    # lock meanwhile: that holder was then reported under the default label.
    lock = kind.make("db")
    seen: list[str | None] = []
    y_holds = anyio.Event()

    async def cancelled_x() -> None:
        with anyio.CancelScope() as scope:
            scope.cancel()
            await kind.acquire(lock, label="x")
        assert scope.cancelled_caught

    async def y() -> None:
        if how == "acquire_nowait" and kind.name.startswith(("Mutex", "AsyncMutex")):
            lock.acquire_nowait(label="y")
            release = lock.release
        else:
            release = await kind.acquire(lock, label="y")
        y_holds.set()
        await wait_all_tasks_blocked()  # x has left by now
        seen.append(kind.owner(lock))
        release()

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(cancelled_x)
            tg.start_soon(y)
    assert seen == ["y"]
    assert kind.owner(lock) is None
    assert not kind.locked(lock)


async def test_condition_wait_keeps_the_async_mutex_releaser_working() -> None:
    # Regression: after cond.wait() the releaser said "already released" and the
    # lock stayed held.
    m = AsyncMutex("cond")
    cond = anyio.Condition(m)
    items: list[int] = []

    async def producer() -> None:
        async with cond:
            items.append(1)
            cond.notify()

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            release = await m.acquire(label="consumer")
            tg.start_soon(producer)
            while not items:
                await cond.wait()
            assert m.statistics().owner == anyio.get_current_task()  # held again
            release()
    assert not m.locked()
    with pytest.raises(MutexReleaseError, match="already released"):
        release()


@pytest.mark.parametrize("cls", [Mutex, AsyncMutex])
async def test_condition_wait_for_and_notify_all(cls: type[Mutex]) -> None:
    m = cls()
    cond = anyio.Condition(m)
    ready = 0

    async def waiter() -> None:
        async with cond:
            await cond.wait_for(lambda: ready == 3)

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            for _ in range(3):
                tg.start_soon(waiter)
            await wait_all_tasks_blocked()
            async with cond:
                ready = 3
                cond.notify_all()
    assert not m.locked()


@pytest.mark.parametrize("kind", TASK_OWNED, ids=str)
async def test_one_hold_object_entered_twice_at_once_raises(kind: LockKind) -> None:
    # Regression: a second task entering the same hold() object replaced the first
    # one's release function (RWLock, KeyedMutex) and the holds got mixed up.
    lock = kind.make()
    shared = kind.hold(lock, label="shared")
    inside = anyio.Event()
    second_done = anyio.Event()
    errors: list[BaseException] = []

    async def first() -> None:
        async with shared:
            inside.set()
            await second_done.wait()

    async def second() -> None:
        await inside.wait()
        try:
            async with shared:
                pass  # pragma: no cover
        except RuntimeError as exc:
            errors.append(exc)
        second_done.set()

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(first)
            tg.start_soon(second)
    assert len(errors) == 1
    assert "already entered" in str(errors[0])
    assert not kind.locked(lock)
    async with shared:  # reusable once it has been left
        assert kind.locked(lock)
    assert not kind.locked(lock)


@pytest.mark.parametrize("kind", TASK_OWNED, ids=str)
async def test_release_from_a_worker_thread_says_so_and_changes_nothing(
    kind: LockKind,
) -> None:
    lock = kind.make("jobs")
    release = await kind.acquire(lock, label="holder")
    with pytest.raises(MutexLoopError, match="no event loop is running in this thread"):
        await anyio.to_thread.run_sync(release)
    assert kind.owner(lock) == "holder"
    release()
    assert not kind.locked(lock)


@pytest.mark.parametrize("cls", [Mutex, AsyncMutex])
async def test_acquire_nowait_from_a_worker_thread_is_not_called_reentry(
    cls: type[Mutex],
) -> None:
    # Regression: anyio's RuntimeError from a thread was reported as re-entry.
    m = cls("jobs")
    for held in (False, True):
        if held:
            await m.acquire(label="holder")
        with pytest.raises(MutexLoopError) as exc_info:
            await anyio.to_thread.run_sync(m.acquire_nowait)
        assert not isinstance(exc_info.value, MutexReentryError)
        assert exc_info.value.label == "jobs"
    assert m.current_owner == "holder"
    m.release()


@pytest.mark.parametrize("kind", KINDS, ids=str)
async def test_huge_and_negative_zero_timeouts(kind: LockKind) -> None:
    # Regression: 10**400 raised OverflowError from deep inside the lock.
    lock = kind.make()
    release = await kind.acquire(lock, timeout_ms=10**400, label="huge")
    release()
    release = await kind.acquire(lock, timeout_ms=-0.0, label="holder")  # try once
    got = anyio.Event()

    async def patient() -> None:
        inner = await kind.acquire(lock, timeout_ms=10**400)  # waits: forever
        got.set()
        inner()

    async def try_once() -> None:
        with pytest.raises(MutexTimeoutError):
            await kind.acquire(lock, timeout_ms=-0.0)

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(try_once)
            await wait_all_tasks_blocked()
            tg.start_soon(patient)
            await wait_all_tasks_blocked()
            assert not got.is_set()
            release()
    assert got.is_set()
    for bad in (-(10**400), -math.inf, math.nan):
        with pytest.raises(ValueError, match="timeout_ms must be >= 0"):
            await kind.acquire(lock, timeout_ms=bad)
    assert not kind.locked(lock)


@pytest.mark.parametrize("kind", KINDS, ids=str)
async def test_huge_timeout_in_async_with_waits_forever(kind: LockKind) -> None:
    # Regression: Semaphore.hold(timeout_ms=10**400) raised OverflowError when it
    # had to wait (acquire() did not).
    lock = kind.make()
    release = await kind.acquire(lock, label="holder")
    entered = anyio.Event()

    async def patient() -> None:
        async with kind.hold(lock, timeout_ms=10**400):
            entered.set()

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(patient)
            await wait_all_tasks_blocked()
            assert not entered.is_set()
            release()
    assert entered.is_set()
    assert not kind.locked(lock)


async def test_rwlock_upgrade_and_downgrade_say_what_they_are() -> None:
    rw = RWLock("config")
    release = await rw.acquire_read(label="reader")
    with pytest.raises(MutexReentryError) as exc_info:
        await rw.acquire_write()
    assert str(exc_info.value) == (
        "Lock 'config' is already held by the current task (held as 'reader'); "
        "it holds the read lock; upgrading to write is not supported"
    )
    with pytest.raises(MutexReentryError, match=r"it is not re-entrant$"):
        await rw.acquire_read()
    release()
    release = await rw.acquire_write(label="writer")
    with pytest.raises(MutexReentryError, match="downgrading to read is not supported"):
        await rw.acquire_read()
    with pytest.raises(MutexReentryError, match=r"it is not re-entrant$"):
        await rw.acquire_write()
    release()


def test_constructors_name_the_bad_label() -> None:
    for make in (Mutex, AsyncMutex, KeyedMutex, RWLock):
        with pytest.raises(TypeError, match="label must be a str, got 3"):
            make(3)  # type: ignore[arg-type]


def test_keyed_mutex_names_its_keys_for_the_order_checker_by_argument() -> None:
    m = AsyncMutex("x", _order_node=("node", 1))
    assert m._order_node == ("node", 1)
    assert AsyncMutex("y")._order_node is not None


async def test_hold_is_typed_as_a_public_context_manager(anyio_backend: Any) -> None:
    from contextlib import AbstractAsyncContextManager

    m = Mutex()
    keyed: KeyedMutex[str] = KeyedMutex()
    rw = RWLock()
    for cm in (m.hold(), AsyncMutex().hold(), keyed.hold("k"), rw.read(), rw.write()):
        assert isinstance(cm, AbstractAsyncContextManager)


async def _answer() -> int:
    return 42


class _Repo:
    @cached
    async def get(self, item: object) -> object:
        return item


@cached
async def _load(item: object, scale: int = 1) -> object:
    return item


def _unhashable_calls() -> dict[str, Any]:
    """Each public way to pass a key, as an async function of the key."""
    keyed: KeyedMutex[Any] = KeyedMutex()
    flight: SingleFlight[Any, int] = SingleFlight()
    plain: RefreshCache[Any, int] = RefreshCache()
    checked: RefreshCache[Any, int] = RefreshCache(checkpoint_on_hit=True)

    async def hold(key: Any) -> None:
        async with keyed.hold(key):
            pass

    return {
        "KeyedMutex.hold": hold,
        "KeyedMutex.acquire": keyed.acquire,
        "SingleFlight.do": lambda key: flight.do(key, _answer),
        "RefreshCache.get_or_refresh": lambda key: plain.get_or_refresh(key, _answer),
        "checkpoint_on_hit": lambda key: checked.get_or_refresh(key, _answer),
        "get_or_refresh": lambda key: get_or_refresh(key, _answer),
    }


@pytest.mark.parametrize("call", list(_unhashable_calls()))
async def test_an_unhashable_key_is_named(call: str) -> None:
    # The bare "unhashable type: 'list'" named neither the parameter nor the value.
    pattern = (
        r"^key must be hashable, got \['not', 'hashable'\]: unhashable type: 'list'$"
    )
    with pytest.raises(TypeError, match=pattern):
        await _unhashable_calls()[call](["not", "hashable"])


@pytest.mark.parametrize(
    ("call", "given"),
    [
        (lambda: _load([1]), r"\(\[1\]\)"),
        (lambda: _load(item=[1]), r"\(item=\[1\]\)"),
        (lambda: _load([1], 2), r"\(\[1\], 2\)"),
        (lambda: _Repo().get({"a": 1}), r"\(\{'a': 1\}\)"),
    ],
)
async def test_cached_names_unhashable_arguments(call: Any, given: str) -> None:
    with pytest.raises(
        TypeError,
        match=rf"^the arguments of @cached \S+ must be hashable, got {given}: unhash",
    ):
        await call()
    assert _load.cache.statistics().misses == 0


async def test_an_unhashable_key_is_shown_short_and_safely() -> None:
    # A big dict passed by mistake is not printed whole, and a key whose __repr__
    # fails still gets the TypeError (not the __repr__'s error).
    class Broken(list[int]):
        def __repr__(self) -> str:
            raise AttributeError("no repr")

    flight: SingleFlight[Any, int] = SingleFlight()
    with pytest.raises(TypeError) as info:
        await flight.do({n: n for n in range(100_000)}, _answer)
    assert len(str(info.value)) < 200
    with pytest.raises(TypeError, match=r"got <[^>]*Broken[^>]*>: unhashable"):
        await flight.do(Broken(), _answer)
