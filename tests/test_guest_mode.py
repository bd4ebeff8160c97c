"""trio in guest mode on an asyncio host (``trio.lowlevel.start_guest_run``).

The guest's tasks run inside the host loop's callbacks, in the same thread: an
asyncio loop is running, but the running task is a trio task. Locks built once, at
module level, must take turns between the two runs (each lock moves only while it is
free), and a lock held by one run must say so in the other instead of hanging.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import anyio
import anyio.lowlevel
import pytest
import trio
import trio.lowlevel

from anyio_mutex import MutexLoopError, RefreshCache, Semaphore

from ._locks import ALL_HOLDS, LockKind

T = TypeVar("T")

LOCKS = [(kind, kind.make(f"shared-{kind.name}")) for kind in ALL_HOLDS]
CACHE: RefreshCache[str, int] = RefreshCache(label="shared-cache", ttl_s=60)


async def in_guest(fn: Callable[[], Awaitable[T]]) -> T:
    """Run ``fn`` as a trio guest on the running asyncio loop; return its result."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[Any] = loop.create_future()
    trio.lowlevel.start_guest_run(
        fn,
        run_sync_soon_threadsafe=loop.call_soon_threadsafe,
        done_callback=done.set_result,
        host_uses_signal_set_wakeup_fd=True,
    )
    outcome = await done
    result: T = outcome.unwrap()
    return result


async def take_turns(kind: LockKind, lock: Any) -> list[int]:
    """Ten tasks hold ``lock`` in turn; return the order they got it in."""
    order: list[int] = []
    inside = 0

    async def worker(i: int) -> None:
        nonlocal inside
        async with kind.hold(lock, label=f"w{i}"):
            inside += 1
            assert kind.name == "RWLock-read" or inside <= kind.limit
            order.append(i)
            await anyio.lowlevel.checkpoint()
            inside -= 1

    async with anyio.create_task_group() as tg:
        for i in range(10):
            tg.start_soon(worker, i)
            await anyio.lowlevel.checkpoint()  # queue in a known order
    assert not kind.locked(lock)
    assert kind.waiting(lock) == 0
    return order


async def every_lock_and_one_fetch(tag: str) -> tuple[list[list[int]], int]:
    orders = [await take_turns(kind, lock) for kind, lock in LOCKS]
    fetches = 0

    async def fetch() -> int:
        nonlocal fetches
        fetches += 1
        await anyio.sleep(0.001)
        return 1

    async with anyio.create_task_group() as tg:
        for _ in range(10):
            tg.start_soon(CACHE.get_or_refresh, tag, fetch)
    return orders, fetches


def test_module_level_locks_take_turns_between_host_and_guest() -> None:
    async def host() -> list[tuple[list[list[int]], int]]:
        results = [await every_lock_and_one_fetch("host-before")]
        results.append(await in_guest(lambda: every_lock_and_one_fetch("guest")))
        results.append(await every_lock_and_one_fetch("host-after"))
        return results

    for orders, fetches in asyncio.run(host()):
        assert all(sorted(order) == list(range(10)) for order in orders)
        assert fetches == 1


@pytest.mark.parametrize(
    "kind", [k for k in ALL_HOLDS if "Mutex" in k.name or "RWLock" in k.name], ids=str
)
def test_a_lock_held_by_the_host_raises_in_the_guest(kind: LockKind) -> None:
    # A mutex or RWLock belongs to the event loop it is held in: the guest is told
    # so at once instead of queueing (or, as a reader, joining the host's readers),
    # and nothing of its attempt is left behind. (Semaphore permits are not tied to
    # a task or a loop.)
    lock = kind.make("held")

    async def guest() -> str:
        with pytest.raises(MutexLoopError) as info:
            await kind.acquire(lock, timeout_ms=60_000)
        return str(info.value)

    async def host() -> str:
        release = await kind.acquire(lock, label="host")
        try:
            return await in_guest(guest)
        finally:
            release()

    message = asyncio.run(host())
    assert "another event loop" in message
    assert not kind.locked(lock)
    assert kind.waiting(lock) == 0


@pytest.mark.parametrize("waiter_in", ["guest", "host"])
def test_a_semaphore_permit_passes_between_host_and_guest(waiter_in: str) -> None:
    # A semaphore binds to no event loop: a permit held by an 'async with' in one
    # run is handed to a waiter of the other when the body exits. The host wakes a
    # guest task with trio's own reschedule (it works between the guest's ticks),
    # and the guest wakes a host task with its future.
    sem = Semaphore(1, label="shared-pool")
    got: list[str] = []

    async def wait_for_it(who: str) -> None:
        async with sem.hold(label=who):
            got.append(who)

    async def hold_it(who: str, queued: Callable[[], Awaitable[None]]) -> None:
        async with sem.hold(label=who):
            await queued()
        got.append(f"{who} left")

    async def host() -> None:
        if waiter_in == "guest":
            guest_queues = asyncio.Event()

            async def guest_waits() -> None:
                with trio.fail_after(5):
                    # Queued before the host runs again: the permit is held, and
                    # a full semaphore parks a waiter with no checkpoint first.
                    guest_queues.set()
                    await wait_for_it("guest")

            async def until_guest_queued() -> None:
                await guest_queues.wait()
                assert sem.statistics().tasks_waiting == 1

            guest = asyncio.ensure_future(in_guest(guest_waits))
            await hold_it("host", until_guest_queued)
            await guest
        else:
            guest_has_it = asyncio.Event()

            async def until_host_queued() -> None:
                guest_has_it.set()  # the host loop's event, set in its own thread
                while sem.statistics().tasks_waiting == 0:
                    await trio.lowlevel.checkpoint()

            async def guest_holds() -> None:
                with trio.fail_after(5):
                    await hold_it("guest", until_host_queued)

            guest = asyncio.ensure_future(in_guest(guest_holds))
            await guest_has_it.wait()
            await asyncio.wait_for(wait_for_it("host"), 5)
            await guest

    asyncio.run(host())
    holder = "host" if waiter_in == "guest" else "guest"
    assert got == [f"{holder} left", waiter_in]
    assert sem.available == 1
