"""A separate OS process for the cross-process Redis tests.

    python tests/redis_worker.py counter  PORT NAME N BACKEND   # N locked increments
    python tests/redis_worker.py stampede PORT KEY N BACKEND    # N concurrent cache calls
    python tests/redis_worker.py both     PORT NAME N BACKEND   # both at once (5N calls)

BACKEND is asyncio, trio or asyncio+uvloop.

Each first pops a token from the list "go:<name>" (BLPOP), which the test fills once
every worker is running, so the processes start together.
"""

from __future__ import annotations

import sys

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


async def main(mode: str, port: int, name: str, n: int) -> None:
    client: coredis.Redis[bytes] = coredis.Redis(host="127.0.0.1", port=port)
    async with client:
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
    anyio.run(
        main, mode, int(port), name, int(n), backend=name_, backend_options=options
    )
