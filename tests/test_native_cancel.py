"""asyncio's own cancellation (``Task.cancel()``, ``asyncio.timeout``) at every await.

anyio's shield stops anyio cancel scopes, not asyncio's native cancellation, so every
lock must undo whatever it did before an await that asyncio cancels. These tests run
on the asyncio backends only (trio has no second cancellation system; anyio cancel
scopes at the same spots are covered by tests/test_contract.py and test_stress.py).

The victim task is cancelled after a given number of event-loop steps, which walks
the cancellation across each await of the acquire path, the body and the release,
deterministically.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import anyio
import pytest

from anyio_mutex import AsyncMutex, Mutex, RWLock

from ._locks import ALL_HOLDS, LockKind
from .conftest import BACKENDS

pytestmark = pytest.mark.anyio

ASYNCIO_BACKENDS = [p for p in BACKENDS if p.values[0][0] == "asyncio"]


@pytest.fixture(params=ASYNCIO_BACKENDS)
def anyio_backend(request: pytest.FixtureRequest) -> Any:
    return request.param


@pytest.fixture(params=ALL_HOLDS, ids=str)
def kind(request: pytest.FixtureRequest) -> LockKind:
    return request.param  # type: ignore[no-any-return]


async def assert_idle_and_usable(kind: LockKind, lock: Any) -> None:
    assert not kind.locked(lock)
    assert kind.owner(lock) is None
    assert kind.waiting(lock) == 0
    with anyio.fail_after(5):  # a leaked grant would make this wait forever
        release = await kind.acquire(lock, timeout_ms=0, label="after")
    assert kind.owner(lock) == "after"
    release()


async def step(n: int) -> None:
    for _ in range(n):
        await asyncio.sleep(0)


@pytest.mark.parametrize("how", ["hold", "acquire-release"])
@pytest.mark.parametrize("steps", range(5))
async def test_task_cancel_on_a_free_lock_at_every_step(
    kind: LockKind, how: str, steps: int
) -> None:
    # Regression: RWLock kept the grant when Task.cancel() landed in the shielded
    # checkpoint of its free path (steps=1), so every later writer deadlocked.
    lock = kind.make()

    async def victim() -> None:
        if how == "hold":
            async with kind.hold(lock, label="victim"):
                await asyncio.sleep(0)
        else:
            release = await kind.acquire(lock, label="victim")
            try:
                await asyncio.sleep(0)
            finally:
                release()

    task = asyncio.ensure_future(victim())
    await step(steps)
    task.cancel()
    with anyio.fail_after(5):
        await asyncio.gather(task, return_exceptions=True)
    await assert_idle_and_usable(kind, lock)


@pytest.mark.parametrize("steps", range(6))
async def test_task_cancel_of_a_waiter_at_every_step(
    kind: LockKind, steps: int
) -> None:
    # The victim queues behind "main"; main releases after one step, so the
    # cancellation lands before, at and after the hand-off.
    lock = kind.make()
    release_main = await kind.acquire(lock, label="main")
    write_lock = kind.name == "RWLock-read"
    if write_lock:  # readers share: make the victim wait behind a writer instead
        release_main()
        release_main = await lock.acquire_write(label="main")
    got: list[str] = []

    async def victim() -> None:
        async with kind.hold(lock, label="victim"):
            got.append("victim")
            await asyncio.sleep(0)

    task = asyncio.ensure_future(victim())
    for i in range(steps):
        await asyncio.sleep(0)
        if i == 1:
            release_main()
    if steps <= 1:
        release_main()
    task.cancel()
    with anyio.fail_after(5):
        await asyncio.gather(task, return_exceptions=True)
    await assert_idle_and_usable(kind, lock)


@pytest.mark.skipif(sys.version_info < (3, 11), reason="asyncio.timeout is 3.11+")
async def test_asyncio_timeout_around_a_hold_never_leaks(kind: LockKind) -> None:
    # The reproduction: a tiny asyncio.timeout around "async with rw.read()".
    lock = kind.make()
    for delay in (0, 0, 0.0001, 0.0005):
        for _ in range(20):
            try:
                async with asyncio.timeout(delay):  # type: ignore[attr-defined]
                    async with kind.hold(lock):
                        await asyncio.sleep(0)
            except TimeoutError:
                pass
    await assert_idle_and_usable(kind, lock)


@pytest.mark.parametrize("cls", [Mutex, AsyncMutex])
async def test_task_cancel_during_a_timed_wait(cls: type[Mutex]) -> None:
    # The own-deadline scope and its epilogue: asyncio's cancellation passes through.
    m = cls()
    await m.acquire(label="main")

    async def victim() -> None:
        await m.acquire(timeout_ms=60_000, label="victim")

    task = asyncio.ensure_future(victim())
    await step(3)
    task.cancel()
    with anyio.fail_after(5):
        (outcome,) = await asyncio.gather(task, return_exceptions=True)
    assert isinstance(outcome, asyncio.CancelledError)
    assert m.current_owner == "main"
    assert m.statistics().tasks_waiting == 0
    m.release()
    assert m.current_owner is None


async def test_rwlock_task_cancel_of_a_granted_reader_admits_the_writer() -> None:
    rw = RWLock()
    release_w = await rw.acquire_write(label="w")

    async def reader() -> None:
        async with rw.read(label="r"):
            await asyncio.sleep(0)

    task = asyncio.ensure_future(reader())
    await step(2)
    release_w()  # grants the queued reader ...
    assert rw.readers == ["r"]
    task.cancel()  # ... which asyncio cancels before it resumes
    with anyio.fail_after(5):
        await asyncio.gather(task, return_exceptions=True)
    assert not rw.locked()
    async with rw.write(timeout_ms=0):
        pass
