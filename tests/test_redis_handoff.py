"""The cross-process hand-off of RedisMutex: what a woken waiter costs, and its safety.

A waiter pipelines each try behind its BLPOP, so the server runs the try the moment a
release wakes it (issue 14): no round trip of its own after the wake-up. These tests
count the server's commands, give back a grant that a cancelled waiter received, and
check that a grant made after a long block keeps its whole lease on the local clock.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import anyio
import pytest

from anyio_mutex.redis import LockLostError, RedisLease, RedisMutex

from ._redis_server import (
    RedisClusterServers,
    RedisServer,
    client_matrix,
    cluster_fixture,
    connect_as,
    connect_cluster,
    over_clients,
    server_fixture,
    unique,
)
from ._tcp_proxy import TcpProxy

pytestmark = pytest.mark.anyio

server = server_fixture()
cluster = cluster_fixture()

SCRIPTS = ("evalsha", "eval")
ROUND_TRIPS = (*SCRIPTS, "blpop", "script|load", "hello", "client|setinfo")


async def blocked_at_the_server(server: RedisServer, count: int = 1) -> None:
    """Return once ``count`` clients are blocked (in BLPOP) at the server.

    No event exists for "another client is parked at the server": a bounded poll of
    the server's own counter (the caller's fail_after bounds it too).
    """
    for _ in range(2000):
        info = server.command("INFO", "clients").decode()
        if f"blocked_clients:{count}\r" in info:
            return
        await anyio.sleep(0.005)
    raise AssertionError(f"{count} client(s) never blocked at the server")


def pending_bytes_of_the_blocked_client(server: RedisServer) -> int:
    """The unread query buffer of the one client blocked at the server: what it sent
    behind its BLPOP, which the server runs as soon as the BLPOP returns."""
    listing = server.command("CLIENT", "LIST").decode()
    blocked = [line for line in listing.splitlines() if " flags=b " in line]
    assert len(blocked) == 1, listing
    fields = dict(part.split("=", 1) for part in blocked[0].split() if "=" in part)
    assert fields["cmd"] == "blpop", blocked
    return int(fields["qbuf"])


def calls(server: RedisServer) -> dict[str, int]:
    found = server.command_calls()
    return {name: found.get(name, 0) for name in ROUND_TRIPS}


@over_clients
async def test_a_woken_waiter_sends_no_round_trip_after_the_wake_up(
    server: RedisServer, family: str
) -> None:
    name = unique("trips")
    async with connect_as(server, family) as a, connect_as(server, family) as b:
        holder = RedisMutex(a, name, lease_ms=30_000)
        waiter = RedisMutex(b, name, lease_ms=30_000, poll_ms=30_000)
        # Load the scripts (on another lock: a release leaves a wake-up behind,
        # which the waiter's first BLPOP would take) and connect the waiter, so
        # that only the hand-off is counted.
        await (await RedisMutex(a, unique("warm")).acquire()).release()
        await waiter.locked()
        lease = await holder.acquire()
        got: list[RedisLease] = []

        async def wait() -> None:
            got.append(await waiter.acquire(timeout_ms=20_000))

        with anyio.fail_after(15):
            async with anyio.create_task_group() as tg:
                start = calls(server)
                tg.start_soon(wait)
                await blocked_at_the_server(server)
                # The try is already at the server, queued behind the BLPOP: the
                # wake-up will not wait for another round trip of the waiter's.
                assert pending_bytes_of_the_blocked_client(server) > 0
                before = calls(server)
                await lease.release()
            after = calls(server)
        # The server counts a command when it has run: while waiting, only the
        # plain try has; from the release on, the holder's release, the BLPOP and
        # the try behind it. Three commands of the waiter per contended grant.
        waiting = {k: before[k] - start[k] for k in ROUND_TRIPS}
        assert sum(waiting.values()) == 1, waiting
        assert sum(waiting[k] for k in SCRIPTS) == 1, waiting
        handoff = {k: after[k] - before[k] for k in ROUND_TRIPS}
        assert sum(handoff[k] for k in SCRIPTS) == 2, handoff
        assert handoff["blpop"] == 1, handoff
        assert sum(handoff.values()) == 3, handoff
        assert got[0].fence > lease.fence
        assert await waiter.owner() == waiter.label
        await got[0].release()
        assert not await holder.locked()


@over_clients
async def test_a_waiter_cancelled_as_the_release_grants_it_gives_the_grant_back(
    server: RedisServer, family: str
) -> None:
    # The release wakes the waiter, whose pipelined try grants it at the server; a
    # proxy holds that answer back, and the waiter is cancelled before reading it.
    # It must give the lock back at once, not hold it for its 30 s lease.
    name = unique("cancelgrant")
    proxy = TcpProxy(server.port)
    async with (
        proxy.running(),
        connect_as(server, family) as a,
        connect_as(proxy.port, family) as b,
    ):
        holder = RedisMutex(a, name, lease_ms=30_000)
        waiter = RedisMutex(b, name, lease_ms=30_000, poll_ms=30_000)
        lease = await holder.acquire()
        scope = anyio.CancelScope()
        outcome: list[str] = []

        async def wait() -> None:
            with scope:
                await waiter.acquire(timeout_ms=20_000)
                outcome.append("acquired")  # pragma: no cover - must not happen
            outcome.append(f"cancelled={scope.cancelled_caught}")

        with anyio.fail_after(15):
            async with anyio.create_task_group() as tg:
                tg.start_soon(wait)
                await blocked_at_the_server(server)
                proxy.blackhole()  # the grant's answer will not reach the waiter
                await lease.release()
                fence = int(await a.get("{" + name + "}:fence") or 0)
                assert fence > lease.fence  # the waiter was granted at the server
                scope.cancel()
                await anyio.wait_all_tasks_blocked()  # its give-back is in the proxy
                proxy.heal()
            assert outcome == ["cancelled=True"]
            assert not await holder.locked()  # given back at once
            assert waiter.statistics().total_acquisitions == 0
            again = await holder.acquire(timeout_ms=0)
        assert again.fence > fence
        await again.release()


@over_clients
async def test_a_grant_after_a_long_block_keeps_its_whole_lease(
    server: RedisServer, family: str
) -> None:
    # The try is sent with the BLPOP but runs when the release wakes it: counting
    # the lease from the send would cut it short by the whole wait (here 0.6 s of
    # a 2 s lease). It is placed on the local clock by the server's own clock.
    name = unique("wholelease")
    async with connect_as(server, family) as a, connect_as(server, family) as b:
        holder = RedisMutex(a, name, lease_ms=30_000)
        waiter = RedisMutex(b, name, lease_ms=2000, poll_ms=30_000)
        lease = await holder.acquire()
        got: list[RedisLease] = []

        async def wait() -> None:
            got.append(await waiter.acquire(timeout_ms=20_000))

        with anyio.fail_after(15):
            async with anyio.create_task_group() as tg:
                tg.start_soon(wait)
                await blocked_at_the_server(server)
                await anyio.sleep(0.6)  # the wait whose length is the point
                released_at = anyio.current_time()
                await lease.release()
        granted = got[0]
        # No later than the server's expiry: the grant ran after released_at was
        # read, and its answer had arrived by now.
        assert granted.expires_at <= anyio.current_time() + 2.0
        # Not cut short by the wait (0.6 s): at most 1% of it (the clock-rate
        # margin) and the anchoring try's round trip, which a loaded 2-core machine
        # stretched past 0.1 s once (CI, Python 3.12, trio): 0.3 s still tells the
        # two apart.
        assert granted.expires_at >= released_at + 2.0 - 0.3
        await granted.release()


@over_clients
async def test_scripts_flushed_from_the_server_are_loaded_again(
    server: RedisServer, family: str
) -> None:
    # The coredis adapter sends EVALSHA itself (not through a registered Script):
    # a server that lost its script cache (a restart, SCRIPT FLUSH) answers NOSCRIPT,
    # and the script is loaded and run again, for a grant, a release and a wait.
    name = unique("flushed")
    async with connect_as(server, family) as a, connect_as(server, family) as b:
        holder = RedisMutex(a, name, lease_ms=30_000)
        waiter = RedisMutex(b, name, lease_ms=30_000, poll_ms=30_000)
        await (await holder.acquire()).release()
        assert server.command("SCRIPT", "FLUSH") == b"+OK\r\n"
        lease = await holder.acquire()
        got: list[RedisLease] = []

        async def wait() -> None:
            got.append(await waiter.acquire(timeout_ms=20_000))

        with anyio.fail_after(15):
            async with anyio.create_task_group() as tg:
                tg.start_soon(wait)
                await blocked_at_the_server(server)
                assert server.command("SCRIPT", "FLUSH") == b"+OK\r\n"
                await lease.release()
        assert got[0].fence > lease.fence
        assert server.command("SCRIPT", "FLUSH") == b"+OK\r\n"
        await got[0].release()
        assert not await holder.locked()


# asyncio's own Task.cancel(), which anyio's shield does not stop: asyncio only (trio
# has no second cancellation system; its cancel scope is the test above).
ASYNCIO_CLIENTS = [p for p in client_matrix() if p.values[0][0] == "asyncio"]


@pytest.mark.parametrize(("anyio_backend", "family"), ASYNCIO_CLIENTS)
async def test_a_native_task_cancel_of_a_granted_waiter_gives_the_grant_back(
    server: RedisServer, family: str, anyio_backend: Any
) -> None:
    name = unique("nativegrant")
    proxy = TcpProxy(server.port)
    async with (
        proxy.running(),
        connect_as(server, family) as a,
        connect_as(proxy.port, family) as b,
    ):
        holder = RedisMutex(a, name, lease_ms=30_000)
        waiter = RedisMutex(b, name, lease_ms=30_000, poll_ms=30_000)
        lease = await holder.acquire()
        task = asyncio.get_running_loop().create_task(waiter.acquire(timeout_ms=20_000))
        with anyio.fail_after(15):
            await blocked_at_the_server(server)
            proxy.blackhole()  # the grant's answer will not reach the waiter
            await lease.release()
            fence = int(await a.get("{" + name + "}:fence") or 0)
            assert fence > lease.fence  # the waiter was granted at the server
            task.cancel()
            await anyio.wait_all_tasks_blocked()  # its give-back is in the proxy
            proxy.heal()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert not await holder.locked()  # given back at once
            assert waiter.statistics().total_acquisitions == 0


@pytest.mark.heavy  # the suite's cluster: asyncio and trio are enough
async def test_on_a_coredis_cluster_the_try_waits_behind_the_blpop_too(
    cluster: RedisClusterServers,
) -> None:
    # coredis's cluster pipeline sends one slot's commands to its node on one
    # connection, in order: the hand-off needs no round trip after the wake-up
    # there either. (redis-py's and valkey-py's cluster pipelines are not used.)
    name = "}" + unique("clusterpipe")
    async with (
        connect_cluster(cluster, "coredis") as a,
        connect_cluster(cluster, "coredis") as b,
    ):
        holder = RedisMutex(a, name, lease_ms=30_000)
        waiter = RedisMutex(b, name, lease_ms=30_000, poll_ms=30_000)
        node = cluster.nodes[cluster.node_of(holder._keys[0])]
        lease = await holder.acquire()
        got: list[RedisLease] = []

        async def wait() -> None:
            got.append(await waiter.acquire(timeout_ms=20_000))

        with anyio.fail_after(15):
            async with anyio.create_task_group() as tg:
                tg.start_soon(wait)
                await blocked_at_the_server(node)
                assert pending_bytes_of_the_blocked_client(node) > 0
                await lease.release()
        assert got[0].fence > lease.fence
        await got[0].release()
        assert not await holder.locked()


@pytest.mark.heavy  # real time by nature: asyncio and trio, one client family
@pytest.mark.parametrize(
    ("anyio_backend", "family"), client_matrix(leave_out=("redis-py", "valkey-py"))
)
async def test_a_long_wait_re_anchors_the_clock_once_per_lease(
    server: RedisServer, family: str
) -> None:
    # A grant behind a BLPOP is placed on the local clock from the last plain try
    # (the anchor), by the server's clock, counted 1% short: over a wait of many
    # leases that 1% would eat the lease. So a waiter whose anchor is older than a
    # lease sends a plain try (EVALSHA) before its next pipelined one (EVAL).
    name = unique("anchor")
    async with connect_as(server, family) as a, connect_as(server, family) as b:
        holder = RedisMutex(a, name, lease_ms=30_000)
        waiter = RedisMutex(b, name, lease_ms=150, poll_ms=50)
        await (await RedisMutex(a, unique("warm")).acquire()).release()
        await waiter.locked()
        lease = await holder.acquire()
        got: list[RedisLease] = []

        async def wait() -> None:
            granted = await waiter.acquire(timeout_ms=20_000)
            got.append(granted)
            # A 150 ms lease may run out on a loaded machine before this release:
            # the release is not what is tested here.
            with contextlib.suppress(LockLostError):
                await granted.release()

        with anyio.fail_after(15):
            async with anyio.create_task_group() as tg:
                before = calls(server)
                tg.start_soon(wait)
                await blocked_at_the_server(server)
                await anyio.sleep(0.75)  # five leases of waiting: the point
                released_at = anyio.current_time()
                await lease.release()
        after = calls(server)
        sent = {k: after[k] - before[k] for k in ROUND_TRIPS}
        # About one plain try per 150 ms (at least 3 besides the first), and the
        # pipelined ones in between (a BLPOP times out every 50 ms).
        assert sent["evalsha"] >= 1 + 3, sent
        assert sent["eval"] >= 5, sent
        assert got[0].expires_at >= released_at + 0.15 - 0.05


async def test_a_pipelined_grant_is_never_placed_after_it_ran() -> None:
    # The pipelined try ran at the server some time before its answer arrived; the
    # lease is placed from an anchor plus the server's elapsed time, 1% short.
    now = anyio.current_time()
    anchor = (now - 5.0, 1_000_000_000)  # a plain try sent 5 s ago, server µs then
    sent_at = now - 0.30  # the BLPOP and its try went out 0.30 s ago
    # It ran 4.75 s after the anchor on the server's clock: placed 1% earlier.
    ran = RedisMutex._granted_at(anchor, sent_at, anchor[1] + 4_750_000)
    assert ran == pytest.approx(now - 5.0 + 4.75 * 0.99)
    assert sent_at <= ran <= now
    # The server's clock stepped forward by 1 s meanwhile: it claims 5.75 s passed
    # where only 5 s did here. Not trusted: the grant is placed at its sending.
    stepped = RedisMutex._granted_at(anchor, sent_at, anchor[1] + 5_750_000)
    assert stepped == sent_at
    # A server clock that claims the try ran before the pipeline was sent.
    early = RedisMutex._granted_at(anchor, sent_at, anchor[1] + 1_000_000)
    assert early == sent_at
