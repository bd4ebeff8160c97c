"""examples/trio_service.py: clients over loopback against the running service.

These tests run on trio only: the example is a trio program written with trio's own
API (that is what it demonstrates), so there is no asyncio version of it to run.
"""

from __future__ import annotations

import contextlib
import importlib.util
import pathlib
import select
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
import trio
import trio.testing

EXAMPLE = pathlib.Path(__file__).parent.parent / "examples" / "trio_service.py"

pytestmark = pytest.mark.anyio


def _load() -> Any:
    spec = importlib.util.spec_from_file_location("trio_service", EXAMPLE)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


service_module = _load()


@pytest.fixture
def anyio_backend() -> str:
    return "trio"


class Client:
    """One connection speaking the line protocol: a request, then its reply."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.buffer = b""

    async def ask(self, line: str) -> str:
        await self.stream.send_all(line.encode() + b"\n")
        while b"\n" not in self.buffer:
            data = await self.stream.receive_some(4096)
            assert data, "the server closed the connection"
            self.buffer += data
        reply, self.buffer = self.buffer.split(b"\n", 1)
        return reply.decode()


@contextlib.asynccontextmanager
async def running(service: Any) -> AsyncIterator[int]:
    async with trio.open_nursery() as nursery:
        port = await nursery.start(service_module.serve, service)
        yield port
        nursery.cancel_scope.cancel()


@contextlib.asynccontextmanager
async def connect(port: int) -> AsyncIterator[Client]:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        yield Client(stream)


async def test_concurrent_increments_from_many_clients_are_not_lost() -> None:
    # The store yields between read and write; without the KeyedMutex concurrent
    # clients would read the same value and lose increments.
    service = service_module.CounterService()
    replies: list[int] = []
    with trio.fail_after(20):
        async with running(service) as port:

            async def client(n: int) -> None:
                async with connect(port) as conn:
                    for _ in range(20):
                        replies.append(int(await conn.ask("INCR shared")))
                        assert await conn.ask(f"INCR own-{n}") != ""

            async with trio.open_nursery() as nursery:
                for n in range(10):
                    nursery.start_soon(client, n)
            async with connect(port) as conn:
                assert await conn.ask("GET shared") == "200"
                assert await conn.ask("GET own-3") == "20"
                assert await conn.ask("STATS") == "lookups=0 locked_keys=0"
    assert sorted(replies) == list(range(1, 201))
    assert service.locks.statistics().contended_acquisitions > 0


async def test_a_lookup_runs_once_for_concurrent_clients() -> None:
    gate = trio.Event()

    async def gated_lookup(name: str) -> str:
        await gate.wait()
        return f"{name} is here"

    service = service_module.CounterService(gated_lookup)
    replies: list[str] = []
    with trio.fail_after(20):
        async with running(service) as port:

            async def client() -> None:
                async with connect(port) as conn:
                    replies.append(await conn.ask("LOOKUP example.org"))

            async with trio.open_nursery() as nursery:
                for _ in range(20):
                    nursery.start_soon(client)
                # Until all 20 requests have reached the cache (one fetching, the
                # rest waiting for that fetch), let the server run.
                while service.cache.statistics().misses < 20:
                    await trio.testing.wait_all_tasks_blocked()
                assert service.lookups == 1
                gate.set()
            async with connect(port) as conn:
                assert await conn.ask("LOOKUP example.org") == "example.org is here"
                assert await conn.ask("STATS") == "lookups=1 locked_keys=0"
    assert replies == ["example.org is here"] * 20


async def test_a_key_held_too_long_answers_busy_with_its_holder() -> None:
    service = service_module.CounterService(lock_timeout_ms=50)
    held, done = trio.Event(), trio.Event()

    async def maintenance() -> None:
        async with service.locks.hold("apples", label="maintenance"):
            held.set()
            await done.wait()

    with trio.fail_after(20):
        async with running(service) as port, trio.open_nursery() as nursery:
            nursery.start_soon(maintenance)
            await held.wait()
            async with connect(port) as conn:
                assert await conn.ask("INCR apples") == "ERR busy, held by maintenance"
                assert await conn.ask("INCR pears") == "1"
                done.set()
                assert await conn.ask("INCR apples") == "1"
                assert await conn.ask("FROB x") == "ERR unknown command 'FROB x'"


async def test_a_client_that_vanishes_does_not_stop_the_server() -> None:
    service = service_module.CounterService()
    with trio.fail_after(20):
        async with running(service) as port:
            with socket.create_connection(("127.0.0.1", port)) as raw:
                raw.setsockopt(  # close with a reset, not a clean end of stream
                    socket.SOL_SOCKET,
                    socket.SO_LINGER,
                    b"\x01\x00\x00\x00\x00\x00\x00\x00",
                )
                raw.sendall(b"INCR a\n")
            async with connect(port) as conn:
                assert await conn.ask("INCR b") == "1"


def test_main_serves_on_the_port_it_prints() -> None:
    with subprocess.Popen(
        [sys.executable, str(EXAMPLE), "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    ) as proc:
        try:
            assert proc.stdout is not None
            # 60 s is generous for starting Python and importing trio on a loaded machine.
            ready, _, _ = select.select([proc.stdout], [], [], 60)
            assert ready, "the service printed nothing within 60 s"
            line = proc.stdout.readline()
            assert line.startswith("listening on 127.0.0.1:"), line
            port = int(line.rsplit(":", 1)[1])
            with socket.create_connection(("127.0.0.1", port), timeout=30) as conn:
                conn.sendall(b"INCR a\nINCR a\nGET a\nQUIT\n")
                received = b""
                deadline = time.monotonic() + 30
                while data := conn.recv(4096):
                    received += data
                    assert time.monotonic() < deadline
            assert received == b"1\n2\n2\n"
        finally:
            proc.kill()
            proc.wait(timeout=30)
