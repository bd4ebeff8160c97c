"""RedisMutex and RedisRefreshCache on a real Redis Cluster of three primaries (issue 9).

The suite starts the cluster itself (tests/_redis_server.py: one binary, slots
assigned with CLUSTER ADDSLOTSRANGE, nodes joined with CLUSTER MEET), once per session.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest

from anyio_mutex import MutexTimeoutError
from anyio_mutex.redis import RedisMutex, RedisRefreshCache, RedisSemaphore

from ._redis_server import (
    ASYNCIO_ONLY,
    RedisClusterServers,
    client_matrix,
    connect_cluster,
    over_clients,
    unique,
)

# heavy: asyncio and trio; coredis on uvloop is tests/test_redis_adapters.py's.
pytestmark = [pytest.mark.anyio, pytest.mark.heavy]

WORKER = Path(__file__).with_name("redis_worker.py")

# ``cluster``: the session's one Redis Cluster (tests/conftest.py).


def names_on_every_node(cluster: RedisClusterServers, stem: str) -> list[str]:
    """One lock name per primary; each holds a brace, the first starts with ``}``
    (which, before issue 9, split a lock's keys across slots)."""
    found: dict[int, str] = {}
    shapes = ("}%s-%d", "%s}-%d", "{%s-%d", "a}b{%s-%d")
    for i in range(200):
        name = shapes[len(found) % len(shapes)] % (stem, i)
        node = cluster.node_of(_lock_key(name))
        found.setdefault(node, name)
        if len(found) == 3:
            return [found[i] for i in range(3)]
    raise AssertionError("no names found on all three nodes")  # pragma: no cover


def _lock_key(name: str) -> str:
    # The documented key layout: <prefix>{<name, '\' and '}' escaped>}:lock
    return "{" + name.replace("\\", "\\\\").replace("}", "\\]") + "}:lock"


@pytest.mark.heavy  # servers of its own: asyncio and trio are enough
@over_clients
async def test_locks_in_three_slots_on_three_nodes(
    cluster: RedisClusterServers, family: str
) -> None:
    names = names_on_every_node(cluster, unique("slots"))
    assert any(name.startswith("}") for name in names)
    async with (
        connect_cluster(cluster, family) as a,
        connect_cluster(cluster, family) as b,
    ):
        for name in names:
            first = RedisMutex(a, name, lease_ms=10_000)
            second = RedisMutex(b, name, lease_ms=10_000)
            # Every key of one lock in one slot, whatever braces the name holds.
            assert first._keys[0] == _lock_key(name)
            slots = {cluster.keyslot(key) for key in (*first._keys, first._tag + ":x")}
            assert len(slots) == 1, (name, first._keys, slots)
            with anyio.fail_after(10):
                lease = await first.acquire(label=f"first {name}")
                with pytest.raises(MutexTimeoutError) as exc_info:
                    await second.acquire(timeout_ms=0)
                assert exc_info.value.owner == f"first {name}"
                assert await second.locked()
                await lease.release()
                again = await second.acquire()
                assert again.fence > lease.fence
                await again.release()
                assert not await first.locked()
        assert {cluster.node_of(_lock_key(n)) for n in names} == {0, 1, 2}


@pytest.mark.heavy  # servers of its own: asyncio and trio are enough
@over_clients
async def test_waiter_on_the_cluster_is_woken_by_release(
    cluster: RedisClusterServers, family: str
) -> None:
    name = "}" + unique("wake")
    async with (
        connect_cluster(cluster, family) as a,
        connect_cluster(cluster, family) as b,
    ):
        holder = RedisMutex(a, name, lease_ms=30_000)
        waiter = RedisMutex(b, name, lease_ms=30_000, poll_ms=30_000)
        lease = await holder.acquire()
        got = anyio.Event()

        async def wait() -> None:
            second = await waiter.acquire(timeout_ms=20_000)
            got.set()
            await second.release()

        async with anyio.create_task_group() as tg:
            tg.start_soon(wait)
            await anyio.sleep(0.2)  # the waiter is blocked at the server now
            released_at = anyio.current_time()
            await lease.release()
            with anyio.fail_after(5):  # without the wake-up this would take 30 s
                await got.wait()
            # Generous for a loaded 2-core machine; polling would take 30 s.
            assert anyio.current_time() - released_at < 2


@pytest.mark.heavy  # servers of its own: asyncio and trio are enough
@over_clients
async def test_semaphores_in_three_slots_on_three_nodes_are_woken_by_release(
    cluster: RedisClusterServers, family: str
) -> None:
    names = names_on_every_node(cluster, unique("sem"))
    async with (
        connect_cluster(cluster, family) as a,
        connect_cluster(cluster, family) as b,
    ):
        for name in names:
            with anyio.fail_after(10):
                await semaphore_on_the_cluster(cluster, a, b, name)
    assert {cluster.node_of(_lock_key(n)) for n in names} == {0, 1, 2}


async def semaphore_on_the_cluster(
    cluster: RedisClusterServers, a: Any, b: Any, name: str
) -> None:
    """A permit held through ``a`` is refused to ``b``, then handed to ``b``'s waiter
    by the release's wake-up (its poll_ms is 30 s)."""
    holder = RedisSemaphore(a, name, limit=1, lease_ms=30_000)
    waiter = RedisSemaphore(b, name, limit=1, lease_ms=30_000, poll_ms=30_000)
    # Every key of one semaphore in one slot, whatever braces the name holds.
    keys = (*holder._keys, holder._fence_key, holder._wake_key, waiter._wake_key)
    assert len({cluster.keyslot(key) for key in keys}) == 1, (name, keys)
    assert cluster.node_of(holder._keys[0]) == cluster.node_of(_lock_key(name))
    lease = await holder.acquire(label=f"first {name}")
    with pytest.raises(MutexTimeoutError) as exc_info:
        await waiter.acquire(timeout_ms=0)
    assert exc_info.value.owner == f"first {name}"
    got = anyio.Event()
    fences: list[int] = []

    async def wait() -> None:
        second = await waiter.acquire(timeout_ms=20_000)
        fences.append(second.fence)
        got.set()
        await second.release()

    async with anyio.create_task_group() as tg:
        tg.start_soon(wait)
        # No event exists for "the other client's ticket reached the server": poll
        # it (bounded here and by the caller's fail_after).
        for _ in range(2000):
            if int(await a.zcard(holder._keys[2])):
                break
            await anyio.sleep(0.005)
        released_at = anyio.current_time()
        await lease.release()
        await got.wait()
        # Generous for a loaded 2-core machine; polling would take 30 s.
        assert anyio.current_time() - released_at < 2
    assert fences[0] > lease.fence
    assert await holder.available() == 1


def test_cross_process_stampede_on_the_cluster_fetches_once(
    cluster: RedisClusterServers,
) -> None:
    # One worker process on asyncio and one on trio (starting Python is the slow
    # part, so both backends share one run), 50 concurrent callers each, one key on
    # the cluster: one fetch. A plain test: it only starts processes and reads keys.
    key = unique("stampede")
    command = [sys.executable, str(WORKER), "stampede", f"cluster:{cluster.port}", key]
    processes = [
        subprocess.Popen(
            [*command, "50", backend],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for backend in ("asyncio", "trio")
    ]
    try:
        for proc in processes:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            assert line.strip() == "ready", line + (
                proc.stderr.read() if proc.stderr else ""
            )
        go = f"go:{key}"
        cluster.nodes[cluster.node_of(go)].command("RPUSH", go, "go", "go")
        outputs = []
        for proc in processes:
            out, err = proc.communicate(timeout=60)
            assert proc.returncode == 0, err
            outputs.append(out)
        assert all("results=[42] count=50" in out for out in outputs), outputs
        fetches = f"fetches:{key}"
        count = cluster.nodes[cluster.node_of(fetches)].command("GET", fetches)
        assert count == b"$1\r\n1\r\n", count
    finally:
        for proc in processes:
            if proc.poll() is None:
                proc.kill()


@pytest.mark.heavy
@pytest.mark.parametrize(("anyio_backend", "family"), client_matrix(ASYNCIO_ONLY))
async def test_invalidation_on_the_cluster_reaches_another_client(
    cluster: RedisClusterServers, family: str
) -> None:
    # PUBLISH on a cluster reaches every node, so a listener on any node hears it.
    key = unique("inv")
    async with (
        connect_cluster(cluster, family) as a,
        connect_cluster(cluster, family) as b,
    ):
        first: RedisRefreshCache[int] = RedisRefreshCache(a)
        second: RedisRefreshCache[int] = RedisRefreshCache(b)

        async def fetch() -> int:
            return 1

        async with anyio.create_task_group() as tg:
            await tg.start(second.listen)
            await second.get_or_refresh(key, fetch)
            assert key in second.local
            await first.invalidate(key)
            for _ in range(5000):  # a bounded poll: this is a measurement
                if key not in second.local:
                    break
                await anyio.sleep(0.001)
            else:
                raise AssertionError("not invalidated within 5 s")
            tg.cancel_scope.cancel()


@pytest.mark.parametrize(
    ("anyio_backend", "family"),
    [p for p in client_matrix() if p.values[1] in ASYNCIO_ONLY],
)
async def test_listen_with_a_redis_py_cluster_client_says_what_to_use(
    cluster: RedisClusterServers, family: str
) -> None:
    async with connect_cluster(cluster, family) as client:
        cache: RedisRefreshCache[int] = RedisRefreshCache(client)
        with anyio.fail_after(10), pytest.raises(TypeError, match="no pub/sub here"):
            await cache.listen()
