"""Every lock under ``asyncio.eager_task_factory`` (Python 3.12+).

An eager task runs its first steps inside ``create_task()``, before the creator
resumes: it queues on a held lock (or takes a free one) while another task is still
in the middle of its own step. asyncio-only (trio has no such factory); the cache's
single flight is covered at the end.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio
import pytest

from anyio_mutex import RefreshCache, SingleFlight

from ._locks import ALL_HOLDS, SHARED_KINDS, LockKind
from .test_native_cancel import ASYNCIO_BACKENDS, assert_idle_and_usable

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.skipif(
        sys.version_info < (3, 12), reason="asyncio.eager_task_factory is 3.12+"
    ),
]


@pytest.fixture(params=ASYNCIO_BACKENDS)
def anyio_backend(request: pytest.FixtureRequest) -> Any:
    return request.param


def eager_task(loop: Any, coro: Any, **kwargs: Any) -> Any:
    """``asyncio.eager_task_factory``, also under uvloop 0.23 on 3.13.0.

    uvloop passes ``eager_start=`` to the factory, which 3.13.0's own factory does
    not accept; ``asyncio.Task`` itself does (3.12+).
    """
    kwargs["eager_start"] = True
    return asyncio.Task(coro, loop=loop, **kwargs)


@pytest.fixture(autouse=True)
async def eager() -> AsyncIterator[None]:
    # The loop outlives the test (anyio's runner keeps it): put its factory back.
    loop = asyncio.get_running_loop()
    before = loop.get_task_factory()
    loop.set_task_factory(eager_task)
    yield
    loop.set_task_factory(before)


async def hold_exclusively(kind: LockKind, lock: Any) -> Callable[[], None]:
    """Hold ``lock`` so that every other acquisition of this kind waits."""
    if kind.name == "RWLock-read":  # readers share: a writer excludes them
        release: Callable[[], None] = await lock.acquire_write(label="main")
        return release
    releases = [await kind.acquire(lock, label="main") for _ in range(kind.limit)]

    def release_all() -> None:
        for release in releases:
            release()

    return release_all


@pytest.mark.parametrize("kind", [*ALL_HOLDS, *SHARED_KINDS], ids=str)
async def test_eager_tasks_queue_in_creation_order_and_take_turns(
    kind: LockKind,
) -> None:
    lock = kind.make()
    release_main = await hold_exclusively(kind, lock)
    order: list[int] = []
    inside = peak = 0

    async def worker(i: int) -> None:
        nonlocal inside, peak
        async with kind.hold(lock, label=f"w{i}"):
            order.append(i)
            inside += 1
            peak = max(peak, inside)
            await asyncio.sleep(0)
            inside -= 1

    # Each task runs into the held lock inside create_task(): queued at once.
    tasks = [asyncio.create_task(worker(i)) for i in range(10)]
    assert not any(t.done() for t in tasks)
    assert kind.waiting(lock) == 10
    release_main()
    with anyio.fail_after(5):
        await asyncio.gather(*tasks)
    assert order == list(range(10))
    shared = kind.name == "RWLock-read"
    assert peak == (10 if shared else kind.limit)
    await assert_idle_and_usable(kind, lock)


@pytest.mark.parametrize("kind", ALL_HOLDS, ids=str)
async def test_an_eager_task_takes_a_free_lock_inside_create_task(
    kind: LockKind,
) -> None:
    lock = kind.make()
    entered = anyio.Event()
    leave = anyio.Event()

    async def holder() -> None:
        async with kind.hold(lock, label="eager"):
            entered.set()
            await leave.wait()

    task = asyncio.create_task(holder())
    # The task-owned locks took it before create_task() returned (then yielded once,
    # unless fast_acquire); a semaphore yields first and takes a free permit after.
    assert kind.locked(lock) is (kind.task_owned or "fast" in kind.name)
    with anyio.fail_after(5):
        await entered.wait()
    assert kind.owner(lock) == "eager"
    leave.set()
    with anyio.fail_after(5):
        await task
    await assert_idle_and_usable(kind, lock)


@pytest.mark.parametrize("kind", ALL_HOLDS, ids=str)
async def test_task_cancel_of_an_eager_waiter_before_it_ever_resumed(
    kind: LockKind,
) -> None:
    lock = kind.make()
    release_main = await hold_exclusively(kind, lock)

    async def victim() -> None:
        async with kind.hold(lock, label="victim"):
            pytest.fail("a cancelled waiter got the lock")

    task = asyncio.create_task(victim())  # parked in the queue already
    assert kind.waiting(lock) == 1
    task.cancel()
    with anyio.fail_after(5):
        await asyncio.gather(task, return_exceptions=True)
    assert task.cancelled()
    assert kind.waiting(lock) == 0
    release_main()
    await assert_idle_and_usable(kind, lock)


async def test_eager_callers_of_one_key_share_one_fetch() -> None:
    flight: SingleFlight[str, int] = SingleFlight()
    cache: RefreshCache[str, int] = RefreshCache(ttl_s=60)
    calls = 0
    gate = anyio.Event()

    async def fetch() -> int:
        nonlocal calls
        calls += 1
        mine = calls
        await gate.wait()
        return mine

    flights = [asyncio.create_task(flight.do("k", fetch)) for _ in range(20)]
    cached = [asyncio.create_task(cache.get_or_refresh("k", fetch)) for _ in range(20)]
    assert calls == 2  # one fetch each, started inside the first create_task()
    gate.set()
    with anyio.fail_after(5):
        assert set(await asyncio.gather(*flights)) == {1}
        assert set(await asyncio.gather(*cached)) == {2}
    assert calls == 2
