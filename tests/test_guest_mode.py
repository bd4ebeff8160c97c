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

from anyio_mutex import MutexLoopError, RefreshCache

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
