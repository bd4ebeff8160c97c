"""A FastAPI service: a cached endpoint, per-user writes and a singleton job.

- ``GET /prices/{product_id}``: a slow backend behind a ``RefreshCache``; however many
  requests arrive for a product at once, the backend is asked once per expiry.
- ``PUT /users/{user_id}/profile``: a read-modify-write under a ``KeyedMutex``; writes
  to one user are serialized, different users never wait for each other.
- ``POST /jobs/reindex``: one job at a time behind an ``AsyncMutex``; a second request
  while it runs gets ``409 Conflict`` at once instead of queueing.
- One exception handler turns ``MutexTimeoutError`` into ``409`` (a try-once lock was
  taken) or ``503`` with ``Retry-After`` (a bounded wait ran out).

The backend client, the caches and the locks are created in ``lifespan`` and injected
with ``Depends``, so every app (and every test) gets fresh ones.

    pip install fastapi uvicorn
    python examples/fastapi_service.py [--port 8000] [--delay-s 0.2]
"""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass
from typing import Annotated, Any

import anyio
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from anyio_mutex import AsyncMutex, KeyedMutex, MutexTimeoutError, RefreshCache

PRODUCTS = range(1, 21)


@dataclass
class Profile:
    display_name: str
    version: int


class ProfileUpdate(BaseModel):
    display_name: str


class Backend:
    """Stands in for a database pool or an HTTP client: opened once, slow to answer."""

    def __init__(self, delay_s: float) -> None:
        self.delay_s = delay_s
        self.price_queries = 0
        self.profiles = {"alice": Profile("Alice", 0), "bob": Profile("Bob", 0)}
        self.open = False

    async def __aenter__(self) -> Backend:
        self.open = True  # a real client would connect here
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.open = False

    async def fetch_price(self, product_id: int) -> dict[str, Any]:
        self.price_queries += 1
        await anyio.sleep(self.delay_s)
        if product_id not in PRODUCTS:
            raise HTTPException(404, f"no product {product_id}")
        return {"product_id": product_id, "price": 10 + product_id / 100}

    async def read_profile(self, user_id: str) -> Profile | None:
        await anyio.sleep(self.delay_s / 10)
        profile = self.profiles.get(user_id)
        return None if profile is None else Profile(**asdict(profile))

    async def write_profile(self, user_id: str, profile: Profile) -> None:
        await anyio.sleep(self.delay_s / 10)
        self.profiles[user_id] = profile

    async def reindex(self) -> int:
        for _ in PRODUCTS:
            await anyio.sleep(self.delay_s)
        return len(PRODUCTS)


@dataclass
class Services:
    """Everything built in ``lifespan``; one per app, so tests never share state."""

    backend: Backend
    prices: RefreshCache[int, dict[str, Any]]
    profile_locks: KeyedMutex[str]
    reindex_lock: AsyncMutex
    lock_timeout_ms: float


# async def: FastAPI would run a plain def dependency in a worker thread.
async def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


async def get_backend(request: Request) -> Backend:
    services: Services = request.app.state.services
    return services.backend


ServicesDep = Annotated[Services, Depends(get_services)]
BackendDep = Annotated[Backend, Depends(get_backend)]


async def lock_busy(request: Request, exc: Exception) -> JSONResponse:
    """Map a lock timeout to HTTP: try-once means conflict, a bounded wait means busy."""
    assert isinstance(exc, MutexTimeoutError)
    body = {"detail": str(exc), "held_by": exc.owner}
    if exc.timeout_ms == 0:
        return JSONResponse(body, status_code=409)
    return JSONResponse(body, status_code=503, headers={"Retry-After": "1"})


def create_app(*, delay_s: float = 0.2, lock_timeout_ms: float = 2000) -> FastAPI:
    """Build the app; ``delay_s`` is the fake backend's latency."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with Backend(delay_s) as backend:
            app.state.services = Services(
                backend=backend,
                prices=RefreshCache(
                    ttl_s=30,
                    max_entries=10_000,
                    jitter=0.1,
                    stale_if_error_s=300,
                    timeout_ms=lock_timeout_ms,
                    label="prices",
                ),
                profile_locks=KeyedMutex("profiles"),
                reindex_lock=AsyncMutex("reindex"),
                lock_timeout_ms=lock_timeout_ms,
            )
            yield

    app = FastAPI(title="anyio_mutex example", lifespan=lifespan)
    app.add_exception_handler(MutexTimeoutError, lock_busy)

    @app.get("/prices/{product_id}")
    async def price(
        product_id: int, services: ServicesDep, backend: BackendDep
    ) -> dict[str, Any]:
        return await services.prices.get_or_refresh(
            product_id, lambda: backend.fetch_price(product_id)
        )

    @app.put("/users/{user_id}/profile")
    async def update_profile(
        user_id: str, update: ProfileUpdate, services: ServicesDep, backend: BackendDep
    ) -> Profile:
        async with services.profile_locks.hold(
            user_id, timeout_ms=services.lock_timeout_ms, label=f"PUT {user_id}"
        ):
            profile = await backend.read_profile(user_id)
            if profile is None:  # the 404 leaves the lock released
                raise HTTPException(404, f"no user {user_id!r}")
            profile = Profile(update.display_name, profile.version + 1)
            await backend.write_profile(user_id, profile)
            return profile

    @app.post("/jobs/reindex")
    async def reindex(services: ServicesDep, backend: BackendDep) -> dict[str, Any]:
        # timeout_ms=0: never queue behind a running job; the handler answers 409.
        async with services.reindex_lock.hold(timeout_ms=0, label="reindex job"):
            products = await backend.reindex()
        services.prices.clear()  # the next price requests fetch fresh values
        return {"reindexed": products}

    @app.get("/jobs/reindex")
    async def reindex_status(services: ServicesDep) -> dict[str, Any]:
        lock = services.reindex_lock
        return {"running": lock.locked(), "held_by": lock.current_owner}

    @app.get("/stats")
    async def stats(services: ServicesDep) -> dict[str, Any]:
        return {
            "price_queries": services.backend.price_queries,
            "prices": asdict(services.prices.statistics()),
            "profile_locks": asdict(services.profile_locks.statistics()),
        }

    return app


def main(argv: list[str] | None = None) -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--delay-s", type=float, default=0.2)
    args = parser.parse_args(argv)
    uvicorn.run(create_app(delay_s=args.delay_s), host=args.host, port=args.port)


if __name__ == "__main__":
    main()
