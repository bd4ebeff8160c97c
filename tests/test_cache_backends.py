"""Module-level caches used under asyncio, then trio, then asyncio again, in one process.

As anyio's pytest plugin with both backends or Starlette's ``TestClient(backend=...)``
do: objects built at import time must work on whichever event loop runs next.
"""

from __future__ import annotations

import importlib.util
from typing import Any

import anyio
from anyio import wait_all_tasks_blocked

from anyio_mutex import MutexTimeoutError, RefreshCache, SingleFlight, cached

CACHE: RefreshCache[str, str] = RefreshCache(ttl_s=None)
FLIGHT: SingleFlight[str, str] = SingleFlight()
FETCHES: list[str] = []


@cached(ttl_s=None)
async def doubled(x: int) -> int:
    await anyio.lowlevel.checkpoint()
    return 2 * x


async def exercise(run: int) -> None:
    gate = anyio.Event()

    async def fetch(tag: str) -> str:
        FETCHES.append(tag)
        await gate.wait()
        return tag

    results: list[object] = []

    async def from_cache() -> None:
        results.append(await CACHE.get_or_refresh(f"k{run}", lambda: fetch(f"c{run}")))

    async def from_flight() -> None:
        results.append(await FLIGHT.do(f"k{run}", fetch, f"f{run}"))

    async def from_decorator() -> None:
        results.append(await doubled(run))

    async def impatient() -> None:
        try:
            await CACHE.get_or_refresh(f"k{run}", lambda: fetch("never"), timeout_ms=1)
        except MutexTimeoutError as exc:
            results.append(exc.waiting_for)

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            for _ in range(10):
                tg.start_soon(from_cache)
                tg.start_soon(from_flight)
                tg.start_soon(from_decorator)
            await wait_all_tasks_blocked()
            await impatient()  # a deadline on this run's event loop
            gate.set()
    assert sorted(map(str, results)) == sorted(
        [f"c{run}"] * 10
        + [f"f{run}"] * 10
        + [str(2 * run)] * 10
        + [f"the fetch of key 'k{run}'"]
    )
    if run:  # what an earlier run (on another backend) stored is a plain hit
        assert await CACHE.get_or_refresh("k0", lambda: fetch("never")) == "c0"
        assert await doubled(0) == 0
    assert len(FLIGHT) == 0
    assert CACHE.statistics().in_flight == 0


BACKENDS: list[tuple[str, dict[str, Any]]] = [
    ("asyncio", {}),
    ("trio", {}),
    ("asyncio", {}),
]
if importlib.util.find_spec("uvloop") is not None:
    BACKENDS.append(("asyncio", {"use_uvloop": True}))


def test_module_level_caches_across_backends_in_one_process() -> None:
    for run, (backend, options) in enumerate(BACKENDS):
        anyio.run(exercise, run, backend=backend, backend_options=options)
    assert sorted(FETCHES) == sorted(
        [tag for run in range(len(BACKENDS)) for tag in (f"c{run}", f"f{run}")]
    )
    assert doubled.cache.statistics().fetches == len(BACKENDS)
