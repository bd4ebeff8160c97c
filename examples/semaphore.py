"""At most 3 calls to a slow API at once, with a Semaphore: fair, timed, labelled.

Twelve requests share 3 permits. They are served in arrival order; a request with a
short budget gives up with a MutexTimeoutError naming the oldest holder; a job hands
its permit's release function to another task (permits are not owned by tasks);
and raising the limit mid-run admits the queue at once.

    python examples/semaphore.py [asyncio|trio]
"""

from __future__ import annotations

import sys

import anyio

from anyio_mutex import MutexTimeoutError, Semaphore


async def main() -> None:
    api = Semaphore(3, label="api")
    busiest = 0

    async def call_api(n: int) -> None:
        nonlocal busiest
        async with api.hold(label=f"request-{n}"):
            busiest = max(busiest, len(api.holders()))
            await anyio.sleep(0.01)

    async def impatient() -> None:
        try:
            async with api.hold(timeout_ms=1, label="impatient"):
                pass
        except MutexTimeoutError as exc:
            print(f"gave up: {exc}")

    async with anyio.create_task_group() as tg:
        for n in range(12):
            tg.start_soon(call_api, n)
        await anyio.sleep(0.005)  # let the first three in and the rest queue
        print(f"{api!r}, holders {api.holders()}")
        tg.start_soon(impatient)

    # A permit taken here and given back by another task when its work is done.
    release = await api.acquire(label="upload")
    print(f"holders {api.holders()}")

    async def finish_upload() -> None:
        await anyio.sleep(0.01)
        release()  # any task may release a permit, exactly once

    async with anyio.create_task_group() as tg:
        tg.start_soon(finish_upload)
    print(f"after the upload: {api!r}")

    # Raise the limit while tasks queue: they are admitted at once.
    api.limit = 1
    gate = anyio.Event()

    async def waits(n: int) -> None:
        async with api.hold(label=f"burst-{n}"):
            await gate.wait()

    async with anyio.create_task_group() as tg:
        for n in range(4):
            tg.start_soon(waits, n)
        await anyio.wait_all_tasks_blocked()  # one holds a permit, three queue
        print(
            f"limit 1: holders {api.holders()}, waiting {api.statistics().tasks_waiting}"
        )
        api.limit = 4
        print(
            f"limit 4: holders {api.holders()}, waiting {api.statistics().tasks_waiting}"
        )
        gate.set()

    stats = api.statistics()
    print(
        f"most at once: {busiest}; acquisitions={stats.total_acquisitions} "
        f"contended={stats.contended_acquisitions} timeouts={stats.timeouts}"
    )
    assert busiest == 3
    assert stats.timeouts == 1


if __name__ == "__main__":
    anyio.run(main, backend=sys.argv[1] if len(sys.argv) > 1 else "asyncio")
