"""A configuration read by many tasks and reloaded now and then, under an RWLock.

Readers share the lock; a reload (a writer) waits only for the readers already
inside, and readers arriving meanwhile queue behind it, so a reload is never starved
by a busy read path and readers never see a half-written config.

    python examples/rwlock.py [asyncio|trio]
"""

from __future__ import annotations

import sys

import anyio
from anyio.lowlevel import checkpoint

from anyio_mutex import RWLock


async def main() -> None:
    rw = RWLock("config")
    config = {"version": 0, "checksum": 0}
    torn_reads = 0
    max_readers = 0

    async def reader(n: int) -> None:
        nonlocal torn_reads, max_readers
        for _ in range(50):
            async with rw.read(label=f"reader-{n}"):
                max_readers = max(max_readers, rw.statistics().readers)
                version = config["version"]
                await checkpoint()
                if config["checksum"] != version * 7:
                    torn_reads += 1

    async def reloader() -> None:
        for _ in range(10):
            async with rw.write(label="reload"):
                config["version"] += 1
                await checkpoint()  # halfway through an update
                config["checksum"] = config["version"] * 7
            await checkpoint()

    async with anyio.create_task_group() as tg:
        for n in range(20):
            tg.start_soon(reader, n)
        tg.start_soon(reloader)

    stats = rw.statistics()
    print(f"reads={stats.read_acquisitions} writes={stats.write_acquisitions}")
    print(f"most readers at once: {max_readers}, torn reads: {torn_reads}")
    assert torn_reads == 0
    assert stats.write_acquisitions == 10


if __name__ == "__main__":
    anyio.run(main, backend=sys.argv[1] if len(sys.argv) > 1 else "asyncio")
