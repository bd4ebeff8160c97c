"""Semaphore overhead next to anyio.Semaphore and anyio.CapacityLimiter, in one run.

    python benchmarks/bench_semaphore.py            # full run (a few minutes)
    python benchmarks/bench_semaphore.py --quick    # smoke run

Prints, per backend, median ns/op over interleaved repeats and ratios against
anyio.Semaphore in the same mode:
  - uncontended acquire+release (limit 1, never waits): the releaser form, with and
    without fast_acquire and a 5000 ms timeout, and ``async with``; plus a bare
    ``anyio.lowlevel.checkpoint()``, the floor of any semaphore built on anyio's
    public API (it looks the backend up on every call, which anyio's own classes
    do not need to);
  - contended hand-off: 100 tasks x N cycles on a limit of 4, each holding its permit
    across one checkpoint, so almost every acquisition waits and is handed a permit.
    Reported without a target: each wait builds a wait record (the deadlock
    detector's too) and reads its loop's clock twice, and each permit carries a
    label and a release function, against a bare future in anyio's semaphore.
fast_acquire is also reported without a target: its one public cancellation check
(``anyio.lowlevel.checkpoint_if_cancelled()``, with its backend lookup) costs about
as much as anyio.Semaphore's whole fast path.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel

sys.path.insert(0, str(Path(__file__).parent))
from _harness import Row, measure, parse_args, ratio, run_on_backends, table

from anyio_mutex import Semaphore

TARGETS = [
    # (case, baseline, limit)
    ("Semaphore", "anyio.Semaphore", 1.15),
    ("async with Semaphore", "async with anyio.Semaphore", 1.15),
    ("Semaphore timeout_ms=5000", "Semaphore", 1.15),  # as bench_mutex: same path
]

LIMIT = 4  # permits in the hand-off cases


def native_semaphore(backend: str) -> tuple[str, Any, Callable[[], Awaitable[None]]]:
    """The backend's own semaphore class and checkpoint."""
    if backend == "trio":
        import trio

        return "trio.Semaphore", trio.Semaphore, trio.lowlevel.checkpoint
    return "asyncio.Semaphore", asyncio.Semaphore, lambda: asyncio.sleep(0)


def uncontended_rows(backend: str) -> list[Row]:
    native_name, native_cls, _ = native_semaphore(backend)

    def plain(sem: Any) -> Callable[[int], Awaitable[None]]:
        async def run(n: int) -> None:
            for _ in range(n):
                await sem.acquire()
                sem.release()

        return run

    def with_block(sem: Any) -> Callable[[int], Awaitable[None]]:
        async def run(n: int) -> None:
            for _ in range(n):
                async with sem:
                    pass

        return run

    def releaser(
        sem: Semaphore, timeout_ms: float | None
    ) -> Callable[[int], Awaitable[None]]:
        async def run(n: int) -> None:
            for _ in range(n):
                release = await sem.acquire(timeout_ms=timeout_ms)
                release()

        return run

    async def bare_checkpoint(n: int) -> None:
        for _ in range(n):
            await anyio.lowlevel.checkpoint()

    rows = [
        Row(native_name, plain(native_cls(1)), "anyio.Semaphore"),
        Row("anyio.lowlevel.checkpoint()", bare_checkpoint, "anyio.Semaphore"),
    ]
    for fast, suffix in ((False, ""), (True, " fast_acquire")):
        base = f"anyio.Semaphore{suffix}"
        rows.append(Row(base, plain(anyio.Semaphore(1, fast_acquire=fast))))
        rows.append(
            Row(
                f"Semaphore{suffix}",
                releaser(Semaphore(1, fast_acquire=fast), None),
                base,
            )
        )
    rows.append(
        Row("anyio.CapacityLimiter", plain(anyio.CapacityLimiter(1)), "anyio.Semaphore")
    )
    rows.append(
        Row("Semaphore timeout_ms=5000", releaser(Semaphore(1), 5000), "Semaphore")
    )
    rows.append(Row("async with anyio.Semaphore", with_block(anyio.Semaphore(1))))
    rows.append(
        Row(
            "async with Semaphore",
            with_block(Semaphore(1)),
            "async with anyio.Semaphore",
        )
    )
    rows.append(
        Row(
            "async with anyio.CapacityLimiter",
            with_block(anyio.CapacityLimiter(1)),
            "async with anyio.Semaphore",
        )
    )
    return rows


def handoff_rows(backend: str, tasks: int) -> list[Row]:
    native_name, native_cls, checkpoint = native_semaphore(backend)

    def contended(
        make: Callable[[], Any], releaser: bool
    ) -> Callable[[int], Awaitable[None]]:
        async def run(n: int) -> None:
            sem = make()
            cycles = max(1, n // tasks)

            async def worker() -> None:
                for _ in range(cycles):
                    if releaser:
                        release = await sem.acquire()
                        await checkpoint()
                        release()
                    else:
                        await sem.acquire()
                        await checkpoint()
                        sem.release()

            async with anyio.create_task_group() as tg:
                for _ in range(tasks):
                    tg.start_soon(worker)

        return run

    return [
        Row(
            f"hand-off {native_name}",
            contended(lambda: native_cls(LIMIT), False),
            "hand-off anyio.Semaphore",
        ),
        Row(
            "hand-off anyio.Semaphore", contended(lambda: anyio.Semaphore(LIMIT), False)
        ),
        Row(
            "hand-off anyio.CapacityLimiter",
            contended(lambda: anyio.CapacityLimiter(LIMIT), False),
            "hand-off anyio.Semaphore",
        ),
        Row(
            "hand-off Semaphore",
            contended(lambda: Semaphore(LIMIT), True),
            "hand-off anyio.Semaphore",
        ),
    ]


async def bench(backend: str, quick: bool, repeats: int) -> list[str]:
    ops, cycles, tasks = (200, 5, 10) if quick else (20_000, 1000, 100)
    uncontended = uncontended_rows(backend)
    await measure(uncontended, ops, repeats)
    handoff = handoff_rows(backend, tasks)
    await measure(handoff, tasks * cycles, repeats)
    rows = uncontended + handoff
    print(table(f"== {backend}: uncontended acquire+release", uncontended))
    print(
        table(
            f"== {backend}: contended hand-off, limit {LIMIT}, "
            f"{tasks} tasks x {cycles} cycles",
            handoff,
        )
    )
    verdicts = []
    for case, baseline, limit in TARGETS:
        r = ratio(rows, case, baseline)
        verdict = "ok" if r <= limit else "MISS"
        verdicts.append(
            f"{backend:8} {case} vs {baseline}: {r:.2f}x (target <= {limit:.2f}x) {verdict}"
        )
    return verdicts


def main() -> None:
    run_on_backends(bench, parse_args(__doc__ or ""))


if __name__ == "__main__":
    main()
