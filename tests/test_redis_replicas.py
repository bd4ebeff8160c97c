"""Replica-acknowledged grants and fences across a failover (issue 9).

The tests of this module share a primary and a replica (tests/_redis_server.py),
which they may pause with SIGSTOP (and always SIGCONT); the failover test has its own
pair, which it kills and promotes with REPLICAOF NO ONE.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager

import anyio
import pytest

from anyio_mutex import MutexTimeoutError
from anyio_mutex.redis import LockRefusedError, LockUnavailableError, RedisMutex

from ._redis_server import (
    ReplicatedServers,
    client_matrix,
    connect_as,
    over_families,
    replicated_fixture,
    unique,
)

# heavy: asyncio and trio; coredis on uvloop is tests/test_redis_adapters.py's.
pytestmark = [pytest.mark.anyio, pytest.mark.heavy]

replicated = replicated_fixture(scope="module")
own_pair = replicated_fixture("own_pair")


def lock_key(name: str) -> str:
    return "{" + name + "}:lock"


@contextmanager
def stopped(servers: ReplicatedServers) -> Iterator[None]:
    """The replica frozen with SIGSTOP (connected, but acknowledging nothing)."""
    assert servers.replica.process is not None
    pid = servers.replica.process.pid
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


@pytest.mark.heavy  # servers of its own: asyncio and trio are enough
@over_families
async def test_confirmed_grant_is_on_the_replica_with_its_fence(
    replicated: ReplicatedServers, family: str
) -> None:
    name = unique("ack")
    async with connect_as(replicated.primary, family) as client:
        mutex = RedisMutex(client, name, wait_replicas=1, wait_timeout_ms=5000)
        with anyio.fail_after(10):
            lease = await mutex.acquire(label="confirmed")
        # WAIT returned: the replica has applied the grant already, no polling.
        held = replicated.replica.command("GET", lock_key(name))
        assert f":{lease.fence}:confirmed".encode() in held, held
        fence = replicated.replica.command("GET", "{" + name + "}:fence")
        assert str(lease.fence).encode() in fence, fence
        with anyio.fail_after(10):
            await lease.renew()  # a renewal is confirmed the same way
            await lease.release()


@pytest.mark.heavy  # servers of its own: asyncio and trio are enough
@over_families
async def test_grant_unconfirmed_by_a_stopped_replica_is_given_back(
    replicated: ReplicatedServers, family: str
) -> None:
    name = unique("noack")
    async with connect_as(replicated.primary, family) as client:
        waiting = RedisMutex(
            client, name, wait_replicas=1, wait_timeout_ms=300, op_timeout_ms=2000
        )
        plain = RedisMutex(client, name)
        await plain.locked()  # connect first: the bound below is the grant's
        with stopped(replicated):
            start = anyio.current_time()
            with anyio.fail_after(10), pytest.raises(LockUnavailableError) as exc_info:
                await waiting.acquire(label="needs a replica")
            took = anyio.current_time() - start
            assert "not acknowledged by 1 replica(s) within 300 ms" in str(
                exc_info.value
            )
            # WAIT's 300 ms, the give-back, and a generous margin for a loaded
            # 2-core machine (the server times WAIT out on its 100 ms tick).
            assert 0.3 - 0.01 <= took < 1.5
            assert replicated.primary.command("EXISTS", lock_key(name)) == b":0\r\n"
            assert waiting.statistics().total_acquisitions == 0
            with anyio.fail_after(10):
                lease = await plain.acquire(timeout_ms=0)  # wait_replicas=0: as before
            await lease.release()


@pytest.mark.heavy  # servers of its own: asyncio and trio are enough
@over_families
async def test_renewal_unconfirmed_by_a_stopped_replica_is_unavailable_not_lost(
    replicated: ReplicatedServers, family: str
) -> None:
    name = unique("renew")
    async with connect_as(replicated.primary, family) as client:
        mutex = RedisMutex(client, name, wait_replicas=1, wait_timeout_ms=200)
        with anyio.fail_after(10):
            lease = await mutex.acquire()
        expires = lease.expires_at
        with stopped(replicated):
            with anyio.fail_after(10), pytest.raises(LockUnavailableError):
                await lease.renew()
            assert not lease.lost
            assert lease.expires_at == expires  # not moved by an unconfirmed renewal
        with anyio.fail_after(10):
            await lease.release()


@pytest.mark.heavy  # real lease time: asyncio and trio are enough
async def test_failover_keeps_the_lock_and_the_fence_sequence(
    own_pair: ReplicatedServers,
) -> None:
    replicated = own_pair
    # A grant confirmed by the replica survives the primary's death: on the promoted
    # replica, another client cannot take the lock while the lease lasts, and the
    # next fence is greater.
    name = unique("failover")
    async with connect_as(replicated.primary, "coredis") as a:
        first = RedisMutex(a, name, lease_ms=1000, wait_replicas=1)
        with anyio.fail_after(10):
            lease = await first.acquire(label="before failover")
        replicated.primary.stop()  # SIGKILL: no goodbye to the replica
        assert replicated.replica.command("REPLICAOF", "NO", "ONE").startswith(b"+OK")
    async with connect_as(replicated.replica, "coredis") as b:
        second = RedisMutex(b, name, lease_ms=1000)
        with pytest.raises(MutexTimeoutError) as exc_info:
            await second.acquire(timeout_ms=0)
        assert exc_info.value.owner == "before failover"
        with anyio.fail_after(10):
            after = await second.acquire(timeout_ms=5000)  # once the lease ends
        assert after.fence > lease.fence
        await after.release()


AOF = ("--appendonly", "yes", "--appendfsync", "always")
both_aof = replicated_fixture("both_aof", AOF, AOF, scope="module")
replica_without_aof = replicated_fixture("replica_without_aof", AOF, scope="module")


# valkey-py shares redis-py's adapter; a replica acknowledges its AOF about once a
# second, so this test costs ~1 s per run.
@pytest.mark.parametrize(("anyio_backend", "family"), client_matrix(("valkey-py",)))
@pytest.mark.heavy
async def test_wait_aof_confirms_a_grant_written_to_both_append_only_files(
    both_aof: ReplicatedServers, family: str
) -> None:
    name = unique("aof")
    async with connect_as(both_aof.primary, family) as client:
        mutex = RedisMutex(
            client, name, wait_replicas=1, wait_aof=True, wait_timeout_ms=5000
        )
        with anyio.fail_after(10):
            lease = await mutex.acquire(label="on disk")
        held = both_aof.replica.command("GET", lock_key(name))
        assert f":{lease.fence}:on disk".encode() in held, held
        with anyio.fail_after(10):
            await lease.release()


@pytest.mark.heavy  # servers of its own: asyncio and trio are enough
@over_families
async def test_wait_aof_gives_back_a_grant_a_replica_without_aof_cannot_confirm(
    replica_without_aof: ReplicatedServers, family: str
) -> None:
    name = unique("noaof")
    async with connect_as(replica_without_aof.primary, family) as client:
        mutex = RedisMutex(
            client, name, wait_replicas=1, wait_aof=True, wait_timeout_ms=300
        )
        with anyio.fail_after(10), pytest.raises(LockUnavailableError) as exc_info:
            await mutex.acquire()
        assert "1 replica(s) and the local AOF within 300 ms" in str(exc_info.value)
        assert not isinstance(exc_info.value, LockRefusedError)
        primary = replica_without_aof.primary
        assert primary.command("EXISTS", lock_key(name)) == b":0\r\n"
        # WAIT alone (in memory on the replica) still confirms.
        plain = RedisMutex(client, name, wait_replicas=1, wait_timeout_ms=5000)
        with anyio.fail_after(10):
            await (await plain.acquire()).release()


@pytest.mark.heavy  # servers of its own: asyncio and trio are enough
@over_families
async def test_wait_aof_without_a_local_aof_is_refused_in_the_servers_words(
    replicated: ReplicatedServers, family: str
) -> None:
    name = unique("refused")
    async with connect_as(replicated.primary, family) as client:
        mutex = RedisMutex(client, name, wait_aof=True)
        with anyio.fail_after(10), pytest.raises(LockRefusedError) as exc_info:
            await mutex.acquire()
        assert "appendonly" in str(exc_info.value), exc_info.value
        assert replicated.primary.command("EXISTS", lock_key(name)) == b":0\r\n"


@pytest.mark.heavy
@over_families
async def test_cancelled_while_waiting_for_the_replica_holds_nothing(
    replicated: ReplicatedServers, family: str
) -> None:
    # The grant is in, WAIT is pending (the replica is paused) when the caller's
    # scope is cancelled: the shielded grant runs to its end, is given back, and
    # nothing stays held.
    name = unique("cancelwait")
    async with connect_as(replicated.primary, family) as client:
        mutex = RedisMutex(client, name, wait_replicas=1, wait_timeout_ms=400)
        await mutex.locked()  # connect first
        outcome: list[str] = []
        with stopped(replicated):
            with anyio.fail_after(10):
                async with anyio.create_task_group() as tg:

                    async def acquirer() -> None:
                        with anyio.CancelScope() as scope:
                            try:
                                await mutex.acquire()
                                outcome.append("acquired")  # pragma: no cover
                            except LockUnavailableError:
                                # The shielded grant ended unconfirmed before the
                                # cancellation could be delivered: it says so.
                                outcome.append("unavailable")
                        outcome.append(f"cancelled={scope.cancelled_caught}")

                    tg.start_soon(acquirer)
                    # Blocked on the socket is not yet granted at the server: ask
                    # the server (each query is a round trip) until it has run it.
                    for _ in range(2000):
                        await anyio.wait_all_tasks_blocked()
                        exists = replicated.primary.command("EXISTS", lock_key(name))
                        if exists == b":1\r\n":
                            break  # granted, not yet confirmed: in the WAIT
                    else:  # pragma: no cover
                        pytest.fail("the grant never reached the server")
                    tg.cancel_scope.cancel()
            assert replicated.primary.command("EXISTS", lock_key(name)) == b":0\r\n"
        assert "acquired" not in outcome, outcome
        assert outcome[-1].startswith("cancelled="), outcome
        assert mutex.statistics().total_acquisitions == 0


ASYNCIO_FAMILIES = [
    pytest.param(p.values[0], p.values[1], id=p.id)
    for p in client_matrix()
    if p.values[0][0] == "asyncio" and not p.values[0][1]
]


@pytest.mark.parametrize(("anyio_backend", "family"), ASYNCIO_FAMILIES)
async def test_native_task_cancel_while_waiting_for_the_replica_holds_nothing(
    replicated: ReplicatedServers, family: str
) -> None:
    # asyncio's own Task.cancel(), which anyio's shield does not stop, arrives while
    # WAIT is pending: the grant is given back before the cancellation leaves, even
    # though the replica, resumed right after the cancellation, confirms it.
    import asyncio

    name = unique("taskcancel")
    async with connect_as(replicated.primary, family) as client:
        mutex = RedisMutex(client, name, wait_replicas=1, wait_timeout_ms=10_000)
        await mutex.locked()  # connect first
        with stopped(replicated):
            task = asyncio.ensure_future(mutex.acquire())
            await anyio.wait_all_tasks_blocked()  # in the WAIT
            assert replicated.primary.command("EXISTS", lock_key(name)) == b":1\r\n"
            task.cancel()
        with anyio.fail_after(10), pytest.raises(asyncio.CancelledError):
            await task
        assert replicated.primary.command("EXISTS", lock_key(name)) == b":0\r\n"
        assert mutex.statistics().total_acquisitions == 0
