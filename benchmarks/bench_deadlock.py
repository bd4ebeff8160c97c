"""What deadlock detection costs: the same workloads with it on and off, side by side.

    python benchmarks/bench_deadlock.py            # full run (about a minute)
    python benchmarks/bench_deadlock.py --quick    # smoke run

Prints, per backend, median ns/op over interleaved repeats:
  - uncontended AsyncMutex acquire+release (detection never runs there), and an
    uncontended ``async with`` of a Semaphore(1) (detection names the permit's task:
    one task lookup, the one cost detection adds outside a wait);
  - contended hand-off: N tasks x M cycles on one AsyncMutex, each holding across one
    checkpoint, so every acquire parks and runs the check (the worst case);
  - the same hand-off on an RWLock (writers) and a Semaphore(1).
The ratio "on" vs "off" is the cost; the target is at most 1.05x on a hand-off.
"""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel

sys.path.insert(0, str(Path(__file__).parent))
from _harness import Row, measure, parse_args, ratio, run_on_backends, table

from anyio_mutex import (
    AsyncMutex,
    RWLock,
    Semaphore,
    disable_deadlock_detection,
    enable_deadlock_detection,
)

TARGETS = [
    # (case, baseline, limit)
    (
        "uncontended AsyncMutex, detection on",
        "uncontended AsyncMutex, detection off",
        1.05,
    ),
    (
        "uncontended async with Semaphore(1), detection on",
        "uncontended async with Semaphore(1), detection off",
        1.05,
    ),
    ("hand-off AsyncMutex, detection on", "hand-off AsyncMutex, detection off", 1.05),
    (
        "hand-off RWLock write, detection on",
        "hand-off RWLock write, detection off",
        1.05,
    ),
    (
        "hand-off Semaphore(1), detection on",
        "hand-off Semaphore(1), detection off",
        1.05,
    ),
]


def switched(detect: bool, run: Callable[[int], Awaitable[None]]) -> Any:
    async def case(n: int) -> None:
        (enable_deadlock_detection if detect else disable_deadlock_detection)()
        try:
            await run(n)
        finally:
            enable_deadlock_detection()

    return case


def uncontended(n: int) -> Awaitable[None]:
    lock = AsyncMutex()

    async def run() -> None:
        for _ in range(n):
            release = await lock.acquire()
            release()

    return run()


def uncontended_permit(n: int) -> Awaitable[None]:
    sem = Semaphore(1)

    async def run() -> None:
        for _ in range(n):
            async with sem:
                pass

    return run()


def handoff(make: Callable[[], Any], tasks: int) -> Callable[[int], Awaitable[None]]:
    async def run(n: int) -> None:
        acquire = make()
        cycles = max(1, n // tasks)

        async def worker() -> None:
            for _ in range(cycles):
                release = await acquire()
                await anyio.lowlevel.checkpoint()
                release()

        async with anyio.create_task_group() as tg:
            for _ in range(tasks):
                tg.start_soon(worker)

    return run


async def bench(backend: str, quick: bool, repeats: int) -> list[str]:
    ops, cycles, tasks = (200, 5, 10) if quick else (20_000, 500, 100)
    cases: list[tuple[str, Callable[[int], Awaitable[None]]]] = [
        ("uncontended AsyncMutex", uncontended),
        ("uncontended async with Semaphore(1)", uncontended_permit),
        ("hand-off AsyncMutex", handoff(lambda: AsyncMutex().acquire, tasks)),
        ("hand-off RWLock write", handoff(lambda: RWLock().acquire_write, tasks)),
        (
            "hand-off Semaphore(1)",
            handoff(lambda: Semaphore(1).acquire, tasks),
        ),
    ]
    first: list[Row] = []
    for name, run in cases[:2]:
        first.append(Row(f"{name}, detection off", switched(False, run)))
        first.append(
            Row(f"{name}, detection on", switched(True, run), f"{name}, detection off")
        )
    rest: list[Row] = []
    for name, run in cases[2:]:
        rest.append(Row(f"{name}, detection off", switched(False, run)))
        rest.append(
            Row(f"{name}, detection on", switched(True, run), f"{name}, detection off")
        )
    await measure(first, ops, repeats)
    await measure(rest, tasks * cycles, repeats)
    print(table(f"== {backend}: uncontended acquire+release", first))
    print(table(f"== {backend}: hand-off, {tasks} tasks x {cycles} cycles", rest))
    verdicts = []
    rows = first + rest
    for case, baseline, limit in TARGETS:
        r = ratio(rows, case, baseline)
        verdict = "ok" if r <= limit else "MISS"
        verdicts.append(
            f"{backend:8} {case} vs {baseline}: {r:.3f}x (target <= {limit:.2f}x) {verdict}"
        )
    return verdicts


def main() -> None:
    run_on_backends(bench, parse_args(__doc__ or ""))


if __name__ == "__main__":
    main()
