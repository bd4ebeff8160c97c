"""A separate OS process for the cross-process Redis tests.

    python tests/redis_worker.py counter  PORT NAME N BACKEND   # N locked increments
    python tests/redis_worker.py stampede PORT KEY N BACKEND    # N concurrent cache calls
    python tests/redis_worker.py both     PORT NAME N BACKEND   # both at once (5N calls)
    python tests/redis_worker.py listen   PORT KEY 0 BACKEND    # time an invalidation

BACKEND is asyncio, trio or asyncio+uvloop. PORT may be ``cluster:PORT``: a Redis
Cluster reached through one of its nodes (a coredis.RedisCluster client).

Each first pops a token from the list "go:<name>" (BLPOP), which the test fills once
every worker is running, so the processes start together.
"""

from __future__ import annotations

import sys
import time
from typing import Any

import anyio
import coredis
from anyio.lowlevel import checkpoint

from anyio_mutex.redis import RedisMutex, RedisRefreshCache


async def wait_for_go(client: coredis.Redis[bytes], name: str) -> None:
    print("ready", flush=True)
    if await client.blpop([f"go:{name}"], timeout=30) is None:
        raise SystemExit("no go signal within 30 s")


async def counter(client: coredis.Redis[bytes], name: str, n: int) -> None:
    mutex = RedisMutex(client, name, lease_ms=5000)
    for _ in range(n):
        async with mutex.hold(timeout_ms=30_000, label=f"pid-{sys.argv[0]}"):
            value = int(await client.get(f"counter:{name}") or 0)
            await checkpoint()
            await client.set(f"counter:{name}", str(value + 1))


async def stampede(client: coredis.Redis[bytes], key: str, n: int) -> None:
    cache: RedisRefreshCache[int] = RedisRefreshCache(client, ttl_s=60)

    async def fetch() -> int:
        await client.incr(f"fetches:{key}")
        await anyio.sleep(0.2)  # a slow backend
        return 42

    results: list[int] = []

    async def caller() -> None:
        results.append(await cache.get_or_refresh(key, fetch, timeout_ms=30_000))

    async with anyio.create_task_group() as tg:
        for _ in range(n):
            tg.start_soon(caller)
    print(f"results={sorted(set(results))} count={len(results)}")


async def listen(client: Any, key: str) -> None:
    # Holds the value locally, listens for invalidations, and prints when (on the
    # shared wall clock) the local copy was dropped.
    cache: RedisRefreshCache[int] = RedisRefreshCache(client, ttl_s=60)

    async def fetch() -> int:
        return 1

    async with anyio.create_task_group() as tg:
        await tg.start(cache.listen)
        await cache.get_or_refresh(key, fetch)
        assert key in cache.local
        print("ready", flush=True)
        for _ in range(30_000):  # a bounded poll, 1 ms resolution: a measurement
            if key not in cache.local:
                break
            await anyio.sleep(0.001)
        else:
            raise SystemExit("not invalidated within 30 s")
        print(f"dropped_at={time.time()!r}", flush=True)
        tg.cancel_scope.cancel()


async def main(mode: str, port: str, name: str, n: int) -> None:
    kind, _, number = port.rpartition(":")
    client: Any = (
        coredis.RedisCluster(host="127.0.0.1", port=int(number))
        if kind == "cluster"
        else coredis.Redis(host="127.0.0.1", port=int(number))
    )
    async with client:
        if mode == "listen":
            await listen(client, name)
            return
        await wait_for_go(client, name)
        if mode == "both":
            async with anyio.create_task_group() as tg:
                tg.start_soon(counter, client, name, n)
                tg.start_soon(stampede, client, name, 5 * n)
        else:
            await {"counter": counter, "stampede": stampede}[mode](client, name, n)


if __name__ == "__main__":
    mode, port, name, n, backend = sys.argv[1:6]
    name_, _, extra = backend.partition("+")  # "asyncio+uvloop": asyncio on uvloop
    options = {"use_uvloop": True} if extra == "uvloop" else {}
    anyio.run(main, mode, port, name, int(n), backend=name_, backend_options=options)
