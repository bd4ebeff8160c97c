"""Timeouts, owner labels and statistics: what a waiting caller sees.

A slow job holds the mutex; a caller with a 50 ms budget gives up with a
MutexTimeoutError that names the holder and the real wait, while a caller's own
enclosing deadline passes through as the caller's own error.

    python examples/timeouts.py [asyncio|trio]
"""

from __future__ import annotations

import sys

import anyio

from anyio_mutex import AsyncMutex, MutexTimeoutError


async def main() -> None:
    mutex = AsyncMutex("report")
    started = anyio.Event()

    async def slow_job() -> None:
        async with mutex.hold(label="nightly-export"):
            started.set()
            await anyio.sleep(0.2)

    async with anyio.create_task_group() as tg:
        tg.start_soon(slow_job)
        await started.wait()
        try:
            await mutex.acquire(timeout_ms=50, label="web-request")
        except MutexTimeoutError as exc:
            print(f"gave up: {exc}")
            print(f"  waited_ms={exc.waited_ms:.1f} owner={exc.owner!r}")
        with anyio.move_on_after(0.02) as scope:
            await mutex.acquire(timeout_ms=10_000)
        print(f"caller's own move_on_after fired first: {scope.cancelled_caught}")

    stats = mutex.statistics()
    print(
        f"acquisitions={stats.total_acquisitions} timeouts={stats.timeouts} "
        f"waiting={stats.tasks_waiting} locked={stats.locked}"
    )


if __name__ == "__main__":
    anyio.run(main, backend=sys.argv[1] if len(sys.argv) > 1 else "asyncio")
