"""A trio TCP service: per-key counters under a KeyedMutex, lookups behind a RefreshCache.

A line protocol over TCP, one command per line:

- ``INCR <key>``: add one to a counter kept in a slow store (a read, a round trip, a
  write). Clients incrementing the same key are serialized by a ``KeyedMutex``, so no
  update is lost; other keys never wait.
- ``GET <key>``: the counter's value.
- ``LOOKUP <name>``: a slow lookup, cached for a minute; however many clients ask at
  once, it runs once per expiry.
- ``STATS``: lookups run so far and the keys locked right now.

Plain trio code: the locks need nothing from the program but to be used in it.

    pip install trio
    python examples/trio_service.py [--port 7000]
    printf 'INCR apples\\nLOOKUP example.org\\n' | nc 127.0.0.1 7000
"""

from __future__ import annotations

import argparse
import contextlib
import functools
from collections.abc import Awaitable, Callable

import trio
import trio.lowlevel

from anyio_mutex import KeyedMutex, MutexTimeoutError, RefreshCache


async def slow_lookup(name: str) -> str:
    await trio.sleep(0.2)  # stands in for DNS, a directory or another service
    return f"{name} -> 10.0.{len(name)}.{sum(map(ord, name)) % 256}"


class CounterService:
    """The state of one server; each connection is served by :meth:`handle`."""

    def __init__(
        self,
        lookup: Callable[[str], Awaitable[str]] = slow_lookup,
        *,
        lock_timeout_ms: float = 1000,
    ) -> None:
        self.lookup = lookup
        self.lookups = 0
        self.store: dict[str, int] = {}
        self.locks: KeyedMutex[str] = KeyedMutex("counters")
        self.cache: RefreshCache[str, str] = RefreshCache(ttl_s=60, label="lookup")
        self.lock_timeout_ms = lock_timeout_ms

    async def _lookup(self, name: str) -> str:
        self.lookups += 1
        return await self.lookup(name)

    async def incr(self, key: str, client: str) -> int:
        async with self.locks.hold(key, timeout_ms=self.lock_timeout_ms, label=client):
            value = self.store.get(key, 0)
            await trio.lowlevel.checkpoint()  # the store's round trip: others run here
            self.store[key] = value + 1
            return value + 1

    async def execute(self, line: str, client: str) -> str:
        command, _, arg = line.strip().partition(" ")
        command = command.upper()
        try:
            if command == "INCR" and arg:
                return str(await self.incr(arg, client))
            if command == "GET" and arg:
                return str(self.store.get(arg, 0))
            if command == "LOOKUP" and arg:
                return await self.cache.get_or_refresh(arg, lambda: self._lookup(arg))
            if command == "STATS":
                return f"lookups={self.lookups} locked_keys={len(self.locks)}"
        except MutexTimeoutError as exc:
            return f"ERR busy, held by {exc.owner}"
        return f"ERR unknown command {line.strip()!r}"

    async def handle(self, stream: trio.SocketStream) -> None:
        # A client that vanishes mid-conversation must not take the server down.
        with contextlib.suppress(trio.BrokenResourceError, OSError):
            async with stream:
                host, port = stream.socket.getpeername()[:2]
                client = f"{host}:{port}"
                buffer = b""
                while data := await stream.receive_some(4096):
                    buffer += data
                    while b"\n" in buffer:
                        raw, buffer = buffer.split(b"\n", 1)
                        line = raw.decode(errors="replace")
                        if line.strip().upper() == "QUIT":
                            return
                        reply = await self.execute(line, client)
                        await stream.send_all(reply.encode() + b"\n")


async def serve(
    service: CounterService,
    port: int = 0,
    host: str = "127.0.0.1",
    *,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``service`` until cancelled; report the bound port through ``task_status``."""
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(
            functools.partial(trio.serve_tcp, service.handle, port, host=host)
        )
        task_status.started(listeners[0].socket.getsockname()[1])


async def amain(port: int) -> None:
    async with trio.open_nursery() as nursery:
        bound = await nursery.start(serve, CounterService(), port)
        print(f"listening on 127.0.0.1:{bound}", flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=7000, help="0 picks a free port")
    args = parser.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):  # Ctrl+C stops the server quietly
        trio.run(amain, args.port)


if __name__ == "__main__":
    main()
