"""examples/fastapi_service.py behaves as its docstring says.

In process through httpx's ASGI transport (on every backend: FastAPI runs on anyio),
with a fresh app, and so fresh caches and locks, for every test; and as a real
uvicorn process on a loopback port.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import importlib.util
import pathlib
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import anyio
import httpx
import pytest
from anyio import wait_all_tasks_blocked
from fastapi import FastAPI

EXAMPLE = pathlib.Path(__file__).parent.parent / "examples" / "fastapi_service.py"


def _load() -> Any:
    spec = importlib.util.spec_from_file_location("fastapi_service", EXAMPLE)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # pydantic resolves the models' annotations here
    spec.loader.exec_module(module)
    return module


service = _load()


class GatedBackend(service.Backend):  # type: ignore[misc, name-defined]
    """The example's backend, but fetches and the job wait until the test says go."""

    def __init__(self) -> None:
        super().__init__(delay_s=0)
        self.gate = anyio.Event()
        self.job_started = anyio.Event()

    async def fetch_price(self, product_id: int) -> dict[str, Any]:
        await self.gate.wait()
        return await super().fetch_price(product_id)  # type: ignore[no-any-return]

    async def reindex(self) -> int:
        self.job_started.set()
        await self.gate.wait()
        return await super().reindex()  # type: ignore[no-any-return]


@contextlib.asynccontextmanager
async def serve(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """Run the app's lifespan and talk to it in process (httpx runs no lifespan)."""
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://test"
        ) as client:
            yield client


def gated_app() -> tuple[FastAPI, GatedBackend]:
    app = service.create_app(delay_s=0)
    backend = GatedBackend()

    async def get_backend() -> GatedBackend:  # async: a def would run in a thread
        return backend

    app.dependency_overrides[service.get_backend] = get_backend
    return app, backend


class TestInProcess:
    pytestmark = pytest.mark.anyio

    async def test_concurrent_requests_query_the_slow_backend_once(self) -> None:
        app, backend = gated_app()
        responses: list[httpx.Response] = []
        with anyio.fail_after(10):
            async with serve(app) as client:

                async def get() -> None:
                    responses.append(await client.get("/prices/7"))

                async with anyio.create_task_group() as tg:
                    for _ in range(50):
                        tg.start_soon(get)
                    await wait_all_tasks_blocked()  # all 50 are waiting on one fetch
                    stats = app.state.services.prices.statistics()
                    assert (stats.misses, stats.in_flight) == (50, 1)
                    backend.gate.set()
                again = await client.get("/prices/7")
        assert backend.price_queries == 1
        assert {r.status_code for r in responses} == {200}
        assert {r.json()["price"] for r in [*responses, again]} == {10.07}

    async def test_a_failed_fetch_is_404_and_not_cached(self) -> None:
        app = service.create_app(delay_s=0)
        with anyio.fail_after(10):
            async with serve(app) as client:
                first = await client.get("/prices/999")
                second = await client.get("/prices/999")
        assert (first.status_code, second.status_code) == (404, 404)
        assert first.json() == {"detail": "no product 999"}
        assert app.state.services.backend.price_queries == 2

    async def test_job_is_409_while_running_and_free_after(self) -> None:
        app, backend = gated_app()
        first: list[httpx.Response] = []
        with anyio.fail_after(10):
            async with serve(app) as client:

                async def run_job() -> None:
                    first.append(await client.post("/jobs/reindex"))

                async with anyio.create_task_group() as tg:
                    tg.start_soon(run_job)
                    await backend.job_started.wait()
                    status = await client.get("/jobs/reindex")
                    assert status.json() == {"running": True, "held_by": "reindex job"}
                    busy = await client.post("/jobs/reindex")
                    backend.gate.set()
                after = await client.post("/jobs/reindex")
                idle = await client.get("/jobs/reindex")
        assert busy.status_code == 409
        assert busy.json()["held_by"] == "reindex job"
        assert "Retry-After" not in busy.headers
        assert first[0].status_code == after.status_code == 200
        assert first[0].json() == {"reindexed": 20}
        assert idle.json() == {"running": False, "held_by": None}

    async def test_writes_to_one_user_are_serialized(self) -> None:
        # The fake backend yields between read and write; without the per-user lock
        # every request would read version 0 and the updates would be lost.
        app = service.create_app(delay_s=0)
        responses: list[httpx.Response] = []
        with anyio.fail_after(10):
            async with serve(app) as client:

                async def put(n: int) -> None:
                    body = {"display_name": f"Alice {n}"}
                    responses.append(
                        await client.put("/users/alice/profile", json=body)
                    )

                async with anyio.create_task_group() as tg:
                    for n in range(20):
                        tg.start_soon(put, n)
        assert sorted(r.json()["version"] for r in responses) == list(range(1, 21))
        assert app.state.services.backend.profiles["alice"].version == 20
        assert len(app.state.services.profile_locks) == 0

    async def test_a_held_user_is_503_and_other_users_do_not_wait(self) -> None:
        app = service.create_app(delay_s=0, lock_timeout_ms=50)
        held, done = anyio.Event(), anyio.Event()
        with anyio.fail_after(10):
            async with serve(app) as client, anyio.create_task_group() as tg:
                locks = app.state.services.profile_locks

                async def hold_alice() -> None:
                    async with locks.hold("alice", label="a migration"):
                        held.set()
                        await done.wait()

                tg.start_soon(hold_alice)
                await held.wait()
                bob = await client.put("/users/bob/profile", json={"display_name": "B"})
                alice = await client.put(
                    "/users/alice/profile", json={"display_name": "A"}
                )
                done.set()
        assert bob.status_code == 200
        assert alice.status_code == 503
        assert alice.headers["Retry-After"] == "1"
        assert alice.json()["held_by"] == "a migration"
        assert app.state.services.backend.profiles["alice"].version == 0

    async def test_http_exception_raised_inside_the_lock_stays_404(self) -> None:
        app = service.create_app(delay_s=0)
        with anyio.fail_after(10):
            async with serve(app) as client:
                response = await client.put(
                    "/users/nobody/profile", json={"display_name": "X"}
                )
                locks = app.state.services.profile_locks
                assert (len(locks), locks.locked("nobody")) == (0, False)
        assert response.status_code == 404
        assert response.json() == {"detail": "no user 'nobody'"}


# A real uvicorn process started through the example's main().


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.contextmanager
def uvicorn_process(tmp_path: pathlib.Path, *args: str) -> Iterator[str]:
    port = _free_port()
    log = (tmp_path / "uvicorn.log").open("w+")
    proc = subprocess.Popen(
        [sys.executable, str(EXAMPLE), "--port", str(port), *args],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        # Ready once the port accepts: uvicorn listens only after lifespan startup.
        # 60 s is generous for a cold start of FastAPI on a loaded 2-core machine.
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                log.seek(0)
                pytest.fail(f"uvicorn exited early:\n{log.read()}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail("uvicorn did not listen within 60 s")
                time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        # Killed, not terminated: uvicorn's graceful shutdown would wait for the job.
        proc.kill()
        proc.wait(timeout=30)
        log.close()


def test_real_uvicorn_process(tmp_path: pathlib.Path) -> None:
    # The fetch takes 0.5 s. Requests arriving during it share it, later ones hit
    # the cache: either way the backend is queried once, however loaded the machine.
    with (
        uvicorn_process(tmp_path, "--delay-s", "0.5") as url,
        httpx.Client(base_url=url, timeout=30) as client,
    ):
        with concurrent.futures.ThreadPoolExecutor(max_workers=20) as pool:
            prices = list(pool.map(lambda _: client.get("/prices/3").json(), range(20)))
        assert prices == [{"product_id": 3, "price": 10.03}] * 20
        assert client.get("/stats").json()["price_queries"] == 1

        # Start the job (20 products x 0.5 s = 10 s) without waiting for its answer.
        with socket.create_connection(
            (client.base_url.host, client.base_url.port or 80)
        ) as job:
            job.sendall(
                b"POST /jobs/reindex HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n"
            )
            deadline = time.monotonic() + 30
            while not client.get("/jobs/reindex").json()["running"]:
                assert time.monotonic() < deadline, "the job never started"
                time.sleep(0.02)
            busy = client.post("/jobs/reindex")
        assert busy.status_code == 409
        assert busy.json()["held_by"] == "reindex job"

        missing = client.put("/users/nobody/profile", json={"display_name": "X"})
        assert missing.status_code == 404
        saved = client.put("/users/bob/profile", json={"display_name": "Robert"})
        assert saved.json() == {"display_name": "Robert", "version": 1}
