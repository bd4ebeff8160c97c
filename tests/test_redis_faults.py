"""RedisMutex under network faults, through a loopback proxy in the test's event loop.

Regression tests for issue 8, defects 7 and 8: a partitioned holder's body ran past
its lease (renewals were bounded by op_timeout_ms only), and a lost reply made the
client's retry of a grant or a release misread its own earlier success.
"""

from __future__ import annotations

from typing import Any

import anyio
import coredis
import pytest

from anyio_mutex.redis import LockLostError, LockUnavailableError, RedisMutex

from ._redis_server import RedisServer, connect, server_fixture, unique
from ._tcp_proxy import TcpProxy
from .conftest import asyncio_only

# heavy: asyncio and trio; coredis on uvloop is tests/test_redis_adapters.py's.
pytestmark = [pytest.mark.anyio, pytest.mark.heavy]

server = server_fixture()


@pytest.mark.parametrize("fault", ["blackhole", "delay"])
async def test_partitioned_holder_is_cancelled_by_its_lease_deadline(
    server: RedisServer, fault: str
) -> None:
    name = unique("partition")
    proxy = TcpProxy(server.port)
    async with (
        proxy.running(),
        connect(proxy.port) as far,
        connect(server) as near,
    ):
        # op_timeout_ms far above the lease: before the fix a renewal waited that
        # long, and the body ran on after the lease had ended at the server. The lease
        # is long enough that its safety margin (1% + 2 ms = 12 ms) absorbs a timer
        # that a loaded 2-core machine fires late; at 400 ms the 6 ms margin did not.
        holder = RedisMutex(far, name, lease_ms=1000, renew_ms=250, op_timeout_ms=5000)
        other = RedisMutex(near, name, lease_ms=5000)
        body_ended: list[float] = []
        taken: list[float] = []

        async def take_over() -> None:
            lease = await other.acquire(timeout_ms=5000, label="other")
            taken.append(anyio.current_time())
            await lease.release()

        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                with pytest.raises(LockLostError) as exc_info:  # noqa: PT012
                    async with holder.hold(label="partitioned") as lease:
                        if fault == "blackhole":
                            proxy.blackhole()
                        else:
                            proxy.delay_s = 2.5  # every answer comes after the lease
                        tg.start_soon(take_over)
                        try:
                            await anyio.sleep_forever()
                        finally:
                            body_ended.append(anyio.current_time())
                valid_until = lease.valid_until
                proxy.heal()
                proxy.delay_s = 0
        assert "deadline" in exc_info.value.reason
        # Cancelled at the deadline (a loaded 2-core machine may add a few ms to a
        # timer; 150 ms is generous) and, above all, before anyone else got the lock.
        assert body_ended[0] - valid_until < 0.15
        assert body_ended[0] <= taken[0]
        assert valid_until - lease.expires_at == pytest.approx(-(0.010 + 0.002))


async def test_retried_grant_finds_its_own_token(server: RedisServer) -> None:
    name = unique("regrant")
    proxy = TcpProxy(server.port)
    async with proxy.running(), connect(proxy.port) as client:
        mutex = RedisMutex(client, name, lease_ms=5000)
        await client.ping()
        await mutex.locked()  # scripts loaded, connection up
        proxy.drop_reply_to(b"EVALSHA")
        with anyio.fail_after(3):  # before the fix: a full lease (5 s) for itself
            lease = await mutex.acquire(timeout_ms=3000, label="retried")
        assert proxy.dropped == 1
        assert await mutex.owner() == "retried"
        await lease.release()
        assert not await mutex.locked()


async def test_retried_release_counts_as_released(server: RedisServer) -> None:
    name = unique("rerelease")
    proxy = TcpProxy(server.port)
    async with proxy.running(), connect(proxy.port) as client:
        mutex = RedisMutex(client, name, lease_ms=5000)
        lease = await mutex.acquire()
        proxy.drop_reply_to(b"EVALSHA")
        with anyio.fail_after(3):
            await lease.release()  # before the fix: LockLostError
        assert proxy.dropped == 1
        assert not await mutex.locked()
        assert mutex.statistics().lost == 0


async def test_failed_acquisition_leaves_nothing_held(server: RedisServer) -> None:
    name = unique("orphan")
    proxy = TcpProxy(server.port)
    async with (
        proxy.running(),
        connect(proxy.port, retry_policy=coredis.retry.NoRetryPolicy()) as client,
        connect(server) as direct,
    ):
        mutex = RedisMutex(client, name, lease_ms=30_000)
        await mutex.locked()
        proxy.drop_reply_to(b"EVALSHA")
        with anyio.fail_after(3), pytest.raises(LockUnavailableError):
            await mutex.acquire(timeout_ms=1000)
        assert proxy.dropped == 1
        # The grant happened at the server; it was given back, not left for 30 s.
        assert not await RedisMutex(direct, name).locked()
        assert mutex.statistics().total_acquisitions == 0
        with anyio.fail_after(3):
            lease = await mutex.acquire(timeout_ms=0)  # the local turn is free too
        await lease.release()


@asyncio_only
async def test_native_task_cancel_during_the_grant_leaves_nothing_held(
    server: RedisServer, anyio_backend: Any
) -> None:
    # anyio's shield does not stop asyncio's Task.cancel(): the grant in flight
    # must still be given back, and the local turn freed.
    import asyncio

    name = unique("native")
    async with connect(server) as client:
        mutex = RedisMutex(client, name, lease_ms=30_000)
        await mutex.locked()  # connected, scripts loaded
        with anyio.fail_after(5):
            server.command("CLIENT", "PAUSE", "300")  # the grant waits at the server
            task = asyncio.ensure_future(mutex.acquire(label="cancelled"))
            await anyio.wait_all_tasks_blocked()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            # Whether the grant ran at the server (when the pause ended) or died with
            # the cancelled connection, nothing may stay held: not the 30 s lease,
            # not the local turn.
            lease = await mutex.acquire(timeout_ms=1000)
        await lease.release()
