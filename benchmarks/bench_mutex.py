"""Mutex overhead next to the locks it competes with, in one process run.

    python benchmarks/bench_mutex.py            # full run (about a minute)
    python benchmarks/bench_mutex.py --quick    # smoke run

Prints, per backend, median ns/op over interleaved repeats and ratios against the
anyio.Lock that AsyncMutex wraps (same mode):
  - uncontended acquire+release, untimed and with a 5000 ms timeout;
  - contended hand-off: 100 tasks x N cycles, each holding across one checkpoint;
    and 50 tasks, untimed and each acquiring with timeout_ms=5000;
  - the clock: anyio.current_time() (the public API the contended and timed paths
    use) next to the backend's own clock (what a private anyio import would reach).
"""

from __future__ import annotations

import asyncio
import functools
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio

sys.path.insert(0, str(Path(__file__).parent))
from _harness import Row, measure, parse_args, ratio, run_on_backends, table

from anyio_mutex import (
    AsyncMutex,
    disable_deadlock_detection,
    enable_deadlock_detection,
)

TARGETS = [
    # (case, baseline, limit)
    ("AsyncMutex", "anyio.Lock", 1.10),
    ("AsyncMutex fast_acquire", "anyio.Lock fast_acquire", 1.25),
    ("AsyncMutex timeout_ms=5000", "AsyncMutex", 1.15),
    ("AsyncMutex fast_acquire timeout_ms=5000", "AsyncMutex fast_acquire", 1.15),
    ("hand-off AsyncMutex", "hand-off anyio.Lock", 1.10),
    ("hand-off AsyncMutex fast_acquire", "hand-off anyio.Lock fast_acquire", 1.10),
    (
        "timed hand-off AsyncMutex timeout_ms=5000",
        "timed hand-off AsyncMutex",
        1.20,
    ),
]
TIMED_TASKS = 50  # issue 14: 50 contending tasks, each acquiring with a timeout


def native(backend: str) -> tuple[Any, Callable[[], Awaitable[None]], Any]:
    """The backend's own lock class, checkpoint and fail_after."""
    if backend == "trio":
        import trio

        return trio.Lock, trio.lowlevel.checkpoint, trio.fail_after

    # asyncio.timeout() is an async context manager, and only exists on 3.11+.
    fail_after = getattr(asyncio, "timeout", None)
    return asyncio.Lock, lambda: asyncio.sleep(0), fail_after


def uncontended_rows(backend: str) -> list[Row]:
    lock_cls, _, native_fail_after = native(backend)
    native_name = "trio.Lock" if backend == "trio" else "asyncio.Lock"
    rows: list[Row] = []

    def plain_lock(lock: Any) -> Callable[[int], Awaitable[None]]:
        async def run(n: int) -> None:
            for _ in range(n):
                await lock.acquire()
                lock.release()

        return run

    def async_mutex(
        m: AsyncMutex, timeout_ms: float | None
    ) -> Callable[[int], Awaitable[None]]:
        async def run(n: int) -> None:
            for _ in range(n):
                release = await m.acquire(timeout_ms=timeout_ms)
                release()

        return run

    def scoped_lock(lock: Any, fail_after: Any) -> Callable[[int], Awaitable[None]]:
        async def run(n: int) -> None:
            for _ in range(n):
                if backend != "trio" and fail_after is native_fail_after:
                    async with fail_after(5):
                        await lock.acquire()
                else:
                    with fail_after(5):
                        await lock.acquire()
                lock.release()

        return run

    rows.append(Row(native_name, plain_lock(lock_cls()), "anyio.Lock"))
    for fast, suffix in ((False, ""), (True, " fast_acquire")):
        base = f"anyio.Lock{suffix}"
        rows.append(Row(base, plain_lock(anyio.Lock(fast_acquire=fast))))
        rows.append(
            Row(
                f"AsyncMutex{suffix}",
                async_mutex(AsyncMutex(fast_acquire=fast), None),
                base,
            )
        )
    if native_fail_after is not None:
        rows.append(
            Row(
                f"{native_name} + native timeout",
                scoped_lock(lock_cls(), native_fail_after),
                native_name,
            )
        )
    for fast, suffix in ((False, ""), (True, " fast_acquire")):
        base = f"anyio.Lock{suffix}"
        rows.append(
            Row(
                f"{base} + anyio.fail_after",
                scoped_lock(anyio.Lock(fast_acquire=fast), anyio.fail_after),
                base,
            )
        )
        rows.append(
            Row(
                f"AsyncMutex{suffix} timeout_ms=5000",
                async_mutex(AsyncMutex(fast_acquire=fast), 5000),
                f"AsyncMutex{suffix}",
            )
        )
    return rows


def clock_rows(backend: str) -> list[Row]:
    if backend == "trio":
        import trio

        native_clock: Callable[[], float] = trio.current_time
    else:
        native_clock = asyncio.get_running_loop().time

    def calls(clock: Callable[[], float]) -> Callable[[int], Awaitable[None]]:
        async def run(n: int) -> None:
            for _ in range(n):
                clock()

        return run

    return [
        Row("backend clock", calls(native_clock)),
        Row("anyio.current_time()", calls(anyio.current_time), "backend clock"),
    ]


def handoff_rows(backend: str, tasks: int) -> list[Row]:
    lock_cls, checkpoint, _ = native(backend)
    native_name = "trio.Lock" if backend == "trio" else "asyncio.Lock"

    def contended(
        make: Callable[[], Any],
        is_mutex: bool,
        timeout_ms: float | None = None,
        tasks: int = tasks,
    ) -> Callable[[int], Awaitable[None]]:
        async def run(n: int) -> None:
            lock = make()
            cycles = max(1, n // tasks)

            async def worker() -> None:
                for _ in range(cycles):
                    if is_mutex:
                        release = await lock.acquire(timeout_ms=timeout_ms)
                        await checkpoint()
                        release()
                    else:
                        await lock.acquire()
                        await checkpoint()
                        lock.release()

            async with anyio.create_task_group() as tg:
                for _ in range(tasks):
                    tg.start_soon(worker)

        return run

    rows = [
        Row(
            f"hand-off {native_name}", contended(lock_cls, False), "hand-off anyio.Lock"
        )
    ]
    for fast, suffix in ((False, ""), (True, " fast_acquire")):
        base = f"hand-off anyio.Lock{suffix}"
        rows.append(
            Row(
                base, contended(functools.partial(anyio.Lock, fast_acquire=fast), False)
            )
        )
        rows.append(
            Row(
                f"hand-off AsyncMutex{suffix}",
                contended(functools.partial(AsyncMutex, fast_acquire=fast), True),
                base,
            )
        )

    # The same hand-off without deadlock detection (on by default): what of the
    # gap to anyio.Lock is the detector's (bench_deadlock.py) and what the mutex's.
    async def undetected(n: int) -> None:
        disable_deadlock_detection()
        try:
            await contended(AsyncMutex, True)(n)
        finally:
            enable_deadlock_detection()

    rows.append(
        Row("hand-off AsyncMutex, detection off", undetected, "hand-off anyio.Lock")
    )
    # Every waiter timed: the cost of the per-waiter timer on the contended path.
    timed_base = "timed hand-off AsyncMutex"
    rows.append(Row(timed_base, contended(AsyncMutex, True, None, TIMED_TASKS)))
    rows.append(
        Row(
            f"{timed_base} timeout_ms=5000",
            contended(AsyncMutex, True, 5000, TIMED_TASKS),
            timed_base,
        )
    )
    return rows


async def bench(backend: str, quick: bool, repeats: int) -> list[str]:
    ops, cycles, tasks = (200, 5, 10) if quick else (20_000, 1000, 100)
    uncontended = uncontended_rows(backend)
    await measure(uncontended, ops, repeats)
    handoff = handoff_rows(backend, tasks)
    await measure(handoff, tasks * cycles, repeats)
    clocks = clock_rows(backend)
    await measure(clocks, ops, repeats)
    rows = uncontended + handoff
    print(table(f"== {backend}: uncontended acquire+release", uncontended))
    print(
        table(
            f"== {backend}: contended hand-off, {tasks} tasks x {cycles} cycles",
            handoff,
        )
    )
    print(table(f"== {backend}: one clock reading", clocks))
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
