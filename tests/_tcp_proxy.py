"""A loopback TCP proxy for fault tests, run in the test's own event loop (anyio).

Put it between one client and the server to make that client's network misbehave:

- ``blackhole()``: bytes in both directions are held back (not delivered, not
  dropped) until ``heal()``: a partition, or a server that stopped answering;
- ``delay_s``: every chunk is delivered this much later;
- ``drop_reply_to(b"EVALSHA")``: the server's reply to the next request containing
  these bytes is thrown away and that connection is closed, as when a connection dies
  after the server ran the command (the client then retries, or reports an error).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import anyio.abc


class TcpProxy:
    """Forwards ``127.0.0.1:port`` to the server at ``127.0.0.1:target``."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.port = 0
        self.delay_s = 0.0
        self.connections = 0
        self.dropped = 0
        self._open = anyio.Event()
        self._open.set()
        self._drop_after: bytes | None = None

    def blackhole(self) -> None:
        """Hold every byte from now on, both ways, until :meth:`heal`."""
        self._open = anyio.Event()

    def heal(self) -> None:
        """Deliver what was held, and everything after it."""
        self._open.set()

    def drop_reply_to(self, marker: bytes) -> None:
        """Lose the reply to the next request that contains ``marker``."""
        self._drop_after = marker

    async def _pump(
        self,
        source: anyio.abc.ByteStream,
        sink: anyio.abc.ByteStream,
        upstream: bool,
        state: dict[str, bool],
        done: anyio.CancelScope,
    ) -> None:
        try:
            async for chunk in source:
                await self._open.wait()
                if self.delay_s:
                    await anyio.sleep(self.delay_s)
                if upstream:
                    if self._drop_after is not None and self._drop_after in chunk:
                        self._drop_after = None
                        state["drop_next_reply"] = True
                elif state.get("drop_next_reply"):
                    self.dropped += 1
                    done.cancel()  # the reply is lost with the connection
                    return
                await sink.send(chunk)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
            pass
        done.cancel()

    async def _handle(self, client: anyio.abc.SocketStream) -> None:
        self.connections += 1
        async with client:
            try:
                server = await anyio.connect_tcp("127.0.0.1", self.target)
            except OSError:
                return
            async with server, anyio.create_task_group() as tg:
                state: dict[str, bool] = {}
                tg.start_soon(self._pump, client, server, True, state, tg.cancel_scope)
                tg.start_soon(self._pump, server, client, False, state, tg.cancel_scope)

    @asynccontextmanager
    async def running(self) -> AsyncIterator[TcpProxy]:
        """Listen on a free port while the block runs; close every link after."""
        listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
        self.port = listener.extra(anyio.abc.SocketAttribute.local_port)
        async with listener, anyio.create_task_group() as tg:
            tg.start_soon(listener.serve, self._handle)
            try:
                yield self
            finally:
                self.heal()
                tg.cancel_scope.cancel()
