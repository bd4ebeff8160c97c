"""The counter example: ten tasks read a shared counter, yield, and write it back + 1.

Without a lock the interleaving loses updates; under AsyncMutex the result is always
exactly the number of tasks.

    python examples/counter.py [asyncio|trio] [tasks]
"""

from __future__ import annotations

import sys

import anyio
from anyio.lowlevel import checkpoint

from anyio_mutex import AsyncMutex


async def count(tasks: int, mutex: AsyncMutex | None) -> int:
    counter = 0

    async def increment(n: int) -> None:
        nonlocal counter
        if mutex is None:
            value = counter
            await checkpoint()  # another task runs here and reads the same value
            counter = value + 1
            return
        async with mutex.hold(label=f"task-{n}"):
            value = counter
            await checkpoint()
            counter = value + 1

    async with anyio.create_task_group() as tg:
        for n in range(tasks):
            tg.start_soon(increment, n)
    return counter


async def main(tasks: int = 10) -> None:
    unlocked = await count(tasks, None)
    mutex = AsyncMutex("counter")
    locked = await count(tasks, mutex)
    print(f"{tasks} tasks without a lock: counter = {unlocked}")
    print(f"{tasks} tasks with AsyncMutex: counter = {locked}")
    print(f"acquisitions: {mutex.total_acquisitions}, owner now: {mutex.current_owner}")
    assert locked == tasks


if __name__ == "__main__":
    backend = sys.argv[1] if len(sys.argv) > 1 else "asyncio"
    tasks = int(sys.argv[2]) if len(sys.argv) > 2 else 10
    anyio.run(main, tasks, backend=backend)
