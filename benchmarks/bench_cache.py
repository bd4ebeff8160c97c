"""Cache refresh next to its peers and a hand-written floor, in one process run.

    python benchmarks/bench_cache.py              # full run (a minute or two)
    python benchmarks/bench_cache.py --quick      # smoke run
    python benchmarks/bench_cache.py --all-peers  # cashews, aiocache in bursts too

Peers (async-lru, cashews, aiocache) run on asyncio only, which is all they support;
they come from the ``bench`` extra and are skipped, with a note, if missing.
  - warm hit: ns per call, against a dict.get + time.monotonic() floor (inline, and
    wrapped in an async def, the fairer floor for an awaited API); @cached also
    called by keyword (keys are normalised over the signature) and as a method;
  - stampede: N concurrent callers on one cold key, 10 ms fetch: fetches, wall time;
  - many keys: K cold keys x 10 callers, 10 ms fetch: wall time, against a
    hand-written floor (one anyio.Event per key; first caller fetches, rest wait).
Both bursts run RefreshCache untimed, with the default timeout_ms=5000 and with
60000, interleaved with the floor, each run after a gc.collect(). Deadlock detection
is on (the default) except in one more row, timeout_ms=5000 with it off, which
shows what the detector's registration of every waiter costs.
A missed target prints a note: by how much, and what the cost pays for.
"""

from __future__ import annotations

import gc
import importlib.util
import os
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio

sys.path.insert(0, str(Path(__file__).parent))
from _harness import Row, measure, parse_args, ratio, run_on_backends, table

from anyio_mutex import (
    RefreshCache,
    cached,
    default_cache,
    disable_deadlock_detection,
    enable_deadlock_detection,
    get_or_refresh,
)

FETCH_S = 0.01
TARGETS = [
    ("RefreshCache", "floor: async def", 2.5),
    ("get_or_refresh", "floor: async def", 2.5),
    ("@cached", "floor: async def", 2.5),
]
# What a missed target's extra cost pays for, printed under its MISS line.
NOTES = {
    "@cached": (
        "@cached is an object (.cache, .invalidate, bound per instance as a "
        "method), and calling an instance costs CPython more than calling a "
        "function: an args tuple, a __call__ lookup, *args packed again (two more "
        "objects for the garbage collector per call than the floor's coroutine). "
        "Its own work: the kwargs/arity test and the int/str key rule (f(5) and "
        "f(item_id=5) are one key), the lookup, the LRU bump, the hit counter."
    ),
    "burst": (
        "with deadlock detection on (the default) every waiter registers in the "
        "wait-for graph before it parks (anyio.get_current_task() and a cycle "
        "check); the 'no deadlock detection' row shows the cost without it."
    ),
}
NO_DETECTION = "RefreshCache timeout_ms=5000, no deadlock detection"


def have(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def peers(ttl: float) -> dict[str, Callable[[Callable[[Any], Awaitable[Any]]], Any]]:
    """Decorators of the asyncio-only peers that are installed, keyed by name."""
    found: dict[str, Any] = {}
    if have("async_lru"):
        from async_lru import alru_cache

        found["async-lru"] = alru_cache(maxsize=100_000, ttl=ttl)
    if have("cashews"):
        from cashews import Cache

        cashews_cache = Cache()
        cashews_cache.setup("mem://?size=100000")
        found["cashews (mem, lock=True)"] = cashews_cache(ttl=ttl, lock=True)
    if have("aiocache"):
        from aiocache import cached_stampede

        found["aiocache (memory, stampede)"] = lambda fn: cached_stampede(
            ttl=ttl, lease=2
        )(fn)
    return found


def hit_rows(backend: str) -> list[Row]:
    store: dict[str, tuple[str, float]] = {"k": ("v", time.monotonic() + 3600)}
    monotonic = time.monotonic

    async def floor_inline(n: int) -> None:
        for _ in range(n):
            entry = store.get("k")
            if entry is not None and monotonic() < entry[1]:
                entry[0]

    async def floor_get(key: str) -> str | None:
        entry = store.get(key)
        if entry is not None and monotonic() < entry[1]:
            return entry[0]
        return None

    async def floor_async(n: int) -> None:
        for _ in range(n):
            await floor_get("k")

    async def fetch() -> str:
        return "v"

    cache: RefreshCache[str, str] = RefreshCache(ttl_s=3600)

    async def ours(n: int) -> None:
        for _ in range(n):
            await cache.get_or_refresh("k", fetch)

    async def package_level(n: int) -> None:
        for _ in range(n):
            await get_or_refresh("bench-hit", fetch, 3600.0)

    @cached(ttl_s=3600)
    async def load(key: str) -> str:
        return "v"

    async def decorated(n: int) -> None:
        for _ in range(n):
            await load("k")

    async def decorated_keyword(n: int) -> None:
        for _ in range(n):
            await load(key="k")  # as FastAPI calls: normalised to load("k")'s key

    class Repo:
        @cached(ttl_s=3600)
        async def load(self, key: str) -> str:
            return "v"

    repo = Repo()

    async def decorated_method(n: int) -> None:
        for _ in range(n):
            await repo.load("k")  # binds per instance on each lookup

    rows = [
        Row("floor: inline", floor_inline),
        Row("floor: async def", floor_async),
        Row("RefreshCache", ours, "floor: async def"),
        Row("get_or_refresh", package_level, "floor: async def"),
        Row("@cached", decorated, "floor: async def"),
        Row("@cached, keyword call", decorated_keyword, "floor: async def"),
        Row("@cached method", decorated_method, "floor: async def"),
    ]
    if backend != "trio":
        for name, decorator in peers(3600).items():

            @decorator
            async def peer_load(key: str) -> str:
                return "v"

            async def peer(n: int, fn: Any = peer_load) -> None:
                for _ in range(n):
                    await fn("k")

            rows.append(Row(name, peer, "floor: async def"))
    return rows


class Floor:
    """The hand-written floor: one Event per key, the first caller fetches."""

    def __init__(self) -> None:
        self.values: dict[Any, Any] = {}
        self.pending: dict[Any, anyio.Event] = {}

    async def get(self, key: Any, fetch: Callable[[], Awaitable[Any]]) -> Any:
        if key in self.values:
            return self.values[key]
        event = self.pending.get(key)
        if event is not None:
            await event.wait()
            return self.values[key]
        event = self.pending[key] = anyio.Event()
        try:
            self.values[key] = await fetch()
        finally:
            del self.pending[key]
            event.set()
        return self.values[key]


async def burst(
    keys: int,
    callers: int,
    make_get: Callable[[Callable[[], Awaitable[Any]]], Callable[[Any], Awaitable[Any]]],
) -> tuple[float, int]:
    """Run keys x callers concurrent calls; return (wall seconds, fetch count)."""
    fetches = 0

    async def fetch() -> str:
        nonlocal fetches
        fetches += 1
        await anyio.sleep(FETCH_S)
        return "v"

    get = make_get(fetch)
    start = time.perf_counter()
    async with anyio.create_task_group() as tg:
        for _ in range(callers):
            for key in range(keys):
                tg.start_soon(get, key)  # type: ignore[arg-type]  # returns an awaitable
    return time.perf_counter() - start, fetches


BurstMaker = Callable[[Callable[[], Awaitable[Any]]], Callable[[Any], Awaitable[Any]]]


def burst_contenders(backend: str, all_peers: bool) -> dict[str, BurstMaker]:
    def ours(timeout_ms: float | None) -> BurstMaker:
        def make(
            fetch: Callable[[], Awaitable[Any]],
        ) -> Callable[[Any], Awaitable[Any]]:
            cache: RefreshCache[Any, Any] = RefreshCache(
                max_entries=100_000, timeout_ms=timeout_ms
            )
            return lambda key: cache.get_or_refresh(key, fetch)

        return make

    def make_floor(
        fetch: Callable[[], Awaitable[Any]],
    ) -> Callable[[Any], Awaitable[Any]]:
        floor = Floor()
        return lambda key: floor.get(key, fetch)

    found: dict[str, BurstMaker] = {
        "floor: Event per key": make_floor,
        "RefreshCache timeout_ms=None": ours(None),
        "RefreshCache timeout_ms=5000": ours(5000),  # the default
        "RefreshCache timeout_ms=60000": ours(60000),
    }
    if os.environ.get("ANYIO_MUTEX_DEADLOCK", "").strip().lower() not in (
        "0",
        "off",
        "false",
    ):  # on, as by default: one more row without it
        found[NO_DETECTION] = ours(5000)
    if backend != "trio":
        for name, decorator in peers(3600).items():
            if not all_peers and name != "async-lru":
                continue  # the slow peers take seconds per burst: --all-peers

            def make_peer(
                fetch: Callable[[], Awaitable[Any]], decorator: Any = decorator
            ) -> Any:
                async def load(key: Any) -> Any:
                    return await fetch()

                return decorator(load)

            found[name] = make_peer
    return found


BURST_TARGETS = [
    ("RefreshCache timeout_ms=None", 1.2),
    ("RefreshCache timeout_ms=5000", 1.3),
]


async def run_burst(
    name: str, keys: int, callers: int, make: BurstMaker
) -> tuple[float, int]:
    """Run one burst; the NO_DETECTION row with deadlock detection switched off."""
    if name != NO_DETECTION:
        return await burst(keys, callers, make)
    disable_deadlock_detection()
    try:
        return await burst(keys, callers, make)
    finally:
        enable_deadlock_detection()


def verdict(line: str, ok: bool, note: str | None = None) -> list[str]:
    """The verdict line, and under a MISS the note saying what the cost pays for."""
    if ok:
        return [f"{line} ok"]
    return [f"{line} MISS"] + ([f"         note: {note}"] if note else [])


async def bench(backend: str, quick: bool, repeats: int, all_peers: bool) -> list[str]:
    hits = hit_rows(backend)
    await measure(hits, 200 if quick else 50_000, repeats)
    print(table(f"== {backend}: warm hit", hits))
    verdicts = []
    for case, baseline, limit in TARGETS:
        r = ratio(hits, case, baseline)
        verdicts += verdict(
            f"{backend:8} warm hit {case} vs {baseline}: {r:.2f}x (target <= {limit:.2f}x)",
            r <= limit,
            NOTES.get(case),
        )
    by_name = {row.name: row for row in hits}
    if "async-lru" in by_name:
        for case, _, _ in TARGETS:
            r = by_name[case].median_ns / by_name["async-lru"].median_ns
            verdicts += verdict(
                f"{backend:8} warm hit {case} vs async-lru: {r:.2f}x (target < 0.50x)",
                r < 0.5,
                NOTES.get(case),
            )

    callers = 200 if quick else 10_000
    keys, per_key = (20, 10) if quick else (1000, 10)
    for title, k, c in (
        (f"stampede: {callers} callers, 1 cold key", 1, callers),
        (f"many keys: {keys} cold keys x {per_key} callers", keys, per_key),
    ):
        print(f"\n== {backend}: {title}, {FETCH_S * 1000:.0f} ms fetch")
        print(f"{'case':<52}{'wall ms':>10}{'fetches':>10}  vs floor")
        contenders = burst_contenders(backend, all_peers)
        runs: dict[str, list[tuple[float, int]]] = {name: [] for name in contenders}
        for name, make in contenders.items():  # warm-up
            await run_burst(name, k, max(2, c // 10), make)
        for _ in range(repeats):  # interleaved, so load changes hit every case alike
            for name, make in contenders.items():
                gc.collect()  # no case pays for the garbage of the one before
                runs[name].append(await run_burst(name, k, c, make))
        results = {
            name: (statistics.median(r[0] for r in rs), max(r[1] for r in rs))
            for name, rs in runs.items()
        }
        floor_wall = results["floor: Event per key"][0]
        for name, (wall, fetches) in results.items():
            print(
                f"{name:<52}{wall * 1000:>10.1f}{fetches:>10}  {wall / floor_wall:7.2f}x"
            )
        short = title.split(":")[0]
        for case, limit in BURST_TARGETS:
            r = results[case][0] / floor_wall
            note = NOTES["burst"]
            if NO_DETECTION in results:
                off = results[NO_DETECTION][0] / floor_wall
                note += f" Here: {off:.2f}x with timeout_ms=5000."
            verdicts += verdict(
                f"{backend:8} {short} {case} vs floor: {r:.2f}x (target <= {limit:.2f}x)",
                r <= limit,
                note,
            )
        verdicts.append(
            f"{backend:8} {short} RefreshCache fetches: {results['RefreshCache timeout_ms=5000'][1]} (expected {k})"
        )
    default_cache().clear()
    return verdicts


def main() -> None:
    missing = [m for m in ("async_lru", "cashews", "aiocache") if not have(m)]
    if missing:
        print(f"peers not installed (pip install -e '.[bench]'): {', '.join(missing)}")
    args = parse_args(__doc__ or "", all_peers=True)
    run_on_backends(bench, args, args.all_peers)


if __name__ == "__main__":
    main()
