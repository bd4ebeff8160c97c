"""KeyedMutex, RWLock and the lock-order checker, next to their peers, in one run.

    python benchmarks/bench_locks.py            # full run (about a minute)
    python benchmarks/bench_locks.py --quick    # smoke run

Peers (asyncio-keyed-lock, aiorwlock) run on asyncio only, which is all they support.
  - KeyedMutex: acquire+release of a fresh key each time (create + drop the entry) and
    of one hot key, against a plain dict of anyio.Lock per key (never cleaned up) and
    asyncio-keyed-lock; a contended run (50 tasks over 10 keys);
  - RWLock: uncontended read and write, and a 90% read / 10% write mix with 50 tasks,
    against aiorwlock and a plain anyio.Lock (readers excluding each other);
  - lock-order checker: uncontended AsyncMutex with checks disabled against a copy of
    this package with the checker's hook lines removed (target: under 3% slower),
    and with checks enabled.
"""

from __future__ import annotations

import atexit
import importlib
import importlib.util
import random
import re
import shutil
import sys
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
from anyio.lowlevel import checkpoint

sys.path.insert(0, str(Path(__file__).parent))
from _harness import Row, measure, parse_args, ratio, run_on_backends, table

import anyio_mutex
from anyio_mutex import AsyncMutex, KeyedMutex, RWLock


def have(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def build_without_hooks() -> Any:
    """Import a copy of anyio_mutex whose locks carry no lock-order hook at all."""
    source = Path(anyio_mutex.__file__).parent
    scratch = tempfile.mkdtemp()
    atexit.register(shutil.rmtree, scratch, ignore_errors=True)
    target = Path(scratch) / "anyio_mutex_nohooks"
    shutil.copytree(source, target)
    mutex = target / "_mutex.py"
    lines = mutex.read_text().splitlines()
    kept: list[str] = []
    skip_next = False
    for line in lines:
        if skip_next:
            skip_next = False
            continue
        if re.match(r"\s*checker = _diagnostics\.checker$", line):
            continue
        if re.match(r"\s*if checker is not None( and [^:]*)?:", line):
            skip_next = True
            continue
        kept.append(line)
    text = "\n".join(kept) + "\n"
    code = "\n".join(line.split("#")[0] for line in kept)
    if re.search(r"\bchecker\b", code):
        raise RuntimeError("the hook lines changed shape; update build_without_hooks()")
    mutex.write_text(text)
    sys.path.insert(0, str(target.parent))
    return importlib.import_module("anyio_mutex_nohooks")


def keyed_rows(backend: str) -> list[Row]:
    counter = iter(range(10**9))

    def ours(fresh: bool) -> Callable[[int], Awaitable[None]]:
        keyed: KeyedMutex[int] = KeyedMutex()

        async def run(n: int) -> None:
            for _ in range(n):
                async with keyed.hold(next(counter) if fresh else 0):
                    pass

        return run

    def dict_of_locks(fresh: bool) -> Callable[[int], Awaitable[None]]:
        locks: dict[int, anyio.Lock] = {}

        async def run(n: int) -> None:
            for _ in range(n):
                key = next(counter) if fresh else 0
                lock = locks.get(key)
                if lock is None:
                    lock = locks[key] = anyio.Lock()
                async with lock:
                    pass

        return run

    rows = [
        Row("fresh key: anyio.Lock per key", dict_of_locks(True)),
        Row("fresh key: KeyedMutex", ours(True), "fresh key: anyio.Lock per key"),
        Row("hot key: anyio.Lock per key", dict_of_locks(False)),
        Row("hot key: KeyedMutex", ours(False), "hot key: anyio.Lock per key"),
    ]
    if backend != "trio" and have("asyncio_keyed_lock"):
        from asyncio_keyed_lock import AsyncioKeyedLock

        def peer(fresh: bool) -> Callable[[int], Awaitable[None]]:
            lock = AsyncioKeyedLock()

            async def run(n: int) -> None:
                for _ in range(n):
                    async with lock(str(next(counter) if fresh else 0)):
                        pass

            return run

        rows.insert(
            2,
            Row(
                "fresh key: asyncio-keyed-lock",
                peer(True),
                "fresh key: anyio.Lock per key",
            ),
        )
        rows.append(
            Row(
                "hot key: asyncio-keyed-lock",
                peer(False),
                "hot key: anyio.Lock per key",
            )
        )
    return rows


def keyed_contended_rows(backend: str, tasks: int) -> list[Row]:
    def contended(hold: Callable[[int], Any]) -> Callable[[int], Awaitable[None]]:
        async def run(n: int) -> None:
            async def worker(i: int) -> None:
                for _ in range(max(1, n // tasks)):
                    async with hold(i % 10):
                        await checkpoint()

            async with anyio.create_task_group() as tg:
                for i in range(tasks):
                    tg.start_soon(worker, i)

        return run

    def make_dict() -> Callable[[int], Any]:
        locks: dict[int, anyio.Lock] = {}

        def get(key: int) -> anyio.Lock:
            lock = locks.get(key)
            if lock is None:
                lock = locks[key] = anyio.Lock()
            return lock

        return get

    rows = [
        Row("contended: anyio.Lock per key", contended(make_dict())),
        Row(
            "contended: KeyedMutex",
            contended(KeyedMutex[int]().hold),
            "contended: anyio.Lock per key",
        ),
    ]
    if backend != "trio" and have("asyncio_keyed_lock"):
        from asyncio_keyed_lock import AsyncioKeyedLock

        peer = AsyncioKeyedLock()
        rows.append(
            Row(
                "contended: asyncio-keyed-lock",
                contended(lambda key: peer(str(key))),
                "contended: anyio.Lock per key",
            )
        )
    return rows


def rw_mix(
    tasks: int,
    seed: int,
    body: Callable[[], Awaitable[None]],
    read_ctx: Callable[[], Any],
    write_ctx: Callable[[], Any],
) -> Callable[[int], Awaitable[None]]:
    """``tasks`` workers doing 90% reads, 10% writes, each running ``body`` inside."""

    async def run(n: int) -> None:
        rng = random.Random(seed)

        async def worker() -> None:
            for _ in range(max(1, n // tasks)):
                async with write_ctx() if rng.random() < 0.1 else read_ctx():
                    await body()

        async with anyio.create_task_group() as tg:
            for _ in range(tasks):
                tg.start_soon(worker)

    return run


def rw_rows(backend: str, tasks: int) -> list[Row]:
    def plain(lock_ctx: Callable[[], Any]) -> Callable[[int], Awaitable[None]]:
        async def run(n: int) -> None:
            for _ in range(n):
                async with lock_ctx():
                    pass

        return run

    def mixed(read_ctx: Callable[[], Any], write_ctx: Callable[[], Any]) -> Any:
        return rw_mix(tasks, 1, checkpoint, read_ctx, write_ctx)

    rw = RWLock()
    lock = anyio.Lock()
    base = "read: anyio.Lock (exclusive)"
    mix_base = "90/10 mix: anyio.Lock (exclusive)"
    rows = [
        Row(base, plain(lambda: lock)),
        Row("read: RWLock", plain(rw.read), base),
        Row("write: RWLock", plain(rw.write), base),
        Row(mix_base, mixed(lambda: lock, lambda: lock)),
        Row("90/10 mix: RWLock", mixed(rw.read, rw.write), mix_base),
    ]
    if backend != "trio" and have("aiorwlock"):
        import aiorwlock

        peer = aiorwlock.RWLock()
        rows.insert(2, Row("read: aiorwlock", plain(lambda: peer.reader), base))
        rows.insert(4, Row("write: aiorwlock", plain(lambda: peer.writer), base))
        rows.append(
            Row(
                "90/10 mix: aiorwlock",
                mixed(lambda: peer.reader, lambda: peer.writer),
                mix_base,
            )
        )
    return rows


def rw_io_rows(backend: str, tasks: int) -> list[Row]:
    """The case RWLock exists for: readers await I/O (1 ms) while holding the lock."""

    def mixed(read_ctx: Callable[[], Any], write_ctx: Callable[[], Any]) -> Any:
        return rw_mix(tasks, 2, lambda: anyio.sleep(0.001), read_ctx, write_ctx)

    rw = RWLock()
    lock = anyio.Lock()
    base = "90/10 mix, 1 ms I/O: anyio.Lock"
    rows = [
        Row(base, mixed(lambda: lock, lambda: lock)),
        Row("90/10 mix, 1 ms I/O: RWLock", mixed(rw.read, rw.write), base),
    ]
    if backend != "trio" and have("aiorwlock"):
        import aiorwlock

        peer = aiorwlock.RWLock()
        rows.append(
            Row(
                "90/10 mix, 1 ms I/O: aiorwlock",
                mixed(lambda: peer.reader, lambda: peer.writer),
                base,
            )
        )
    return rows


def checker_rows(nohooks: Any) -> list[Row]:
    def run_mutex(m: Any, enable: bool) -> Callable[[int], Awaitable[None]]:
        async def run(n: int) -> None:
            if enable:
                anyio_mutex.enable_lock_order_checks()
            try:
                for _ in range(n):
                    release = await m.acquire()
                    release()
            finally:
                anyio_mutex.disable_lock_order_checks()

        return run

    rows = []
    for fast, suffix in ((False, ""), (True, " fast_acquire")):
        base = f"AsyncMutex{suffix}, no hook"
        rows.append(Row(base, run_mutex(nohooks.AsyncMutex(fast_acquire=fast), False)))
        rows.append(
            Row(
                f"AsyncMutex{suffix}, checks disabled",
                run_mutex(AsyncMutex(fast_acquire=fast), False),
                base,
            )
        )
        rows.append(
            Row(
                f"AsyncMutex{suffix}, checks enabled",
                run_mutex(AsyncMutex(fast_acquire=fast), True),
                base,
            )
        )
    return rows


async def bench(backend: str, quick: bool, repeats: int, nohooks: Any) -> list[str]:
    ops = 200 if quick else 20_000
    tasks = 10 if quick else 50
    sections = [
        ("KeyedMutex, uncontended acquire+release", keyed_rows(backend), ops),
        (
            f"KeyedMutex, {tasks} tasks over 10 keys",
            keyed_contended_rows(backend, tasks),
            ops,
        ),
        (f"RWLock (mix: {tasks} tasks)", rw_rows(backend, tasks), ops),
        (
            f"RWLock, readers awaiting I/O ({tasks} tasks)",
            rw_io_rows(backend, tasks),
            ops // 20,
        ),
        ("lock-order checker, uncontended AsyncMutex", checker_rows(nohooks), ops),
    ]
    verdicts = []
    for title, rows, n in sections:
        await measure(rows, n, repeats)
        print(table(f"== {backend}: {title}", rows))
        if title.startswith("lock-order"):
            for suffix in ("", " fast_acquire"):
                r = ratio(
                    rows,
                    f"AsyncMutex{suffix}, checks disabled",
                    f"AsyncMutex{suffix}, no hook",
                )
                verdicts.append(
                    f"{backend:8} checker disabled, AsyncMutex{suffix}: {(r - 1) * 100:+.1f}% (target < +3%) {'ok' if r < 1.03 else 'MISS'}"
                )
    return verdicts


def main() -> None:
    run_on_backends(bench, parse_args(__doc__ or ""), build_without_hooks())


if __name__ == "__main__":
    main()
