"""A separate OS process for the cross-process RedisSemaphore tests.

    python tests/redis_semaphore_worker.py limit PORT NAME TASKS BACKEND
        TASKS tasks each hold a permit of a limit-3 semaphore once, logging each
        hold at the server: "<fence> <enter us> <exit us> <holders at enter>".
    python tests/redis_semaphore_worker.py hold PORT NAME BACKEND
        holds the one permit of a limit-1 semaphore (lease 500 ms, renewed), prints
        "held", and waits to be killed.

BACKEND is asyncio, trio or asyncio+uvloop. "limit" first pops a token from the list
"go:<name>" (BLPOP), which the test fills once every worker is running, so the
processes start together.
"""

from __future__ import annotations

import sys

import anyio
import coredis

from anyio_mutex.redis import RedisSemaphore

# The gauge: holders inside their body now, counted by the server itself (atomic with
# the server's clock). Returns {holders, time in us}; "peak" keeps the highest count.
ENTER = """
local n = redis.call('INCR', KEYS[1])
if n > tonumber(redis.call('GET', KEYS[2]) or '0') then redis.call('SET', KEYS[2], n) end
local t = redis.call('TIME')
return {n, tonumber(t[1]) * 1000000 + tonumber(t[2])}
"""
EXIT = """
redis.call('DECR', KEYS[1])
local t = redis.call('TIME')
return tonumber(t[1]) * 1000000 + tonumber(t[2])
"""


async def limit(client: coredis.Redis[bytes], name: str, tasks: int) -> None:
    print("ready", flush=True)
    if await client.blpop([f"go:{name}"], timeout=30) is None:
        raise SystemExit("no go signal within 30 s")
    sem = RedisSemaphore(client, name, limit=3, lease_ms=5000, poll_ms=500)
    enter, leave = client.register_script(ENTER), client.register_script(EXIT)
    keys = [f"gauge:{name}", f"peak:{name}"]

    async def task(i: int) -> None:
        async with sem.hold(timeout_ms=60_000, label=f"task-{i}") as lease:
            holders: int
            entered: int
            holders, entered = await enter(keys=keys)
            await anyio.sleep(0.02)  # the body
            exited: int = await leave(keys=keys)
            entry = f"{lease.fence} {entered} {exited} {holders}"
            await client.rpush(f"log:{name}", [entry])

    async with anyio.create_task_group() as tg:
        for i in range(tasks):
            tg.start_soon(task, i)
    print(f"done {sem.statistics().total_acquisitions}", flush=True)


async def hold(client: coredis.Redis[bytes], name: str) -> None:
    sem = RedisSemaphore(client, name, limit=1, lease_ms=500, renew_ms=100)
    async with sem.hold(label="doomed"):
        print("held", flush=True)
        await anyio.sleep_forever()


async def main(mode: str, port: int, name: str, *rest: str) -> None:
    client: coredis.Redis[bytes] = coredis.Redis(host="127.0.0.1", port=port)
    async with client:
        if mode == "limit":
            await limit(client, name, int(rest[0]))
        else:
            await hold(client, name)


if __name__ == "__main__":
    mode, port, name, *rest = sys.argv[1:]
    backend, _, extra = rest.pop().partition("+")  # "asyncio+uvloop"
    options = {"use_uvloop": True} if extra == "uvloop" else {}
    anyio.run(
        main, mode, int(port), name, *rest, backend=backend, backend_options=options
    )
