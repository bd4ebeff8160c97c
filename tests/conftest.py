"""The backend matrix: every async test runs on asyncio, trio, and asyncio+uvloop.

trio is imported unconditionally so that a missing trio fails the run instead of
silently dropping half the matrix.
"""

from __future__ import annotations

import importlib.util
from typing import Any

import pytest
import trio
import trio.testing

from ._redis_server import cluster_fixture

BACKENDS: list[Any] = [
    pytest.param(("asyncio", {}), id="asyncio"),
    pytest.param(("trio", {}), id="trio"),
]
if importlib.util.find_spec("uvloop") is not None:
    BACKENDS.append(
        pytest.param(("asyncio", {"use_uvloop": True}), id="asyncio+uvloop")
    )


ASYNCIO_BACKENDS: list[Any] = [p for p in BACKENDS if p.values[0][0] == "asyncio"]

#: For tests of asyncio's own cancellation (``Task.cancel()``, ``asyncio.timeout``),
#: which trio does not have: generated for the asyncio backends only, never skipped.
asyncio_only = pytest.mark.parametrize("anyio_backend", ASYNCIO_BACKENDS)


def pytest_collection_modifyitems(
    config: pytest.Config, items: list[pytest.Item]
) -> None:
    """Run ``@pytest.mark.heavy`` tests on asyncio and trio only, not on uvloop too.

    A heavy test (100,000 keys, a benchmark in quick mode) checks our own bookkeeping,
    which is the same on both asyncio loops; running it a third time only costs time.
    The Redis test modules are heavy as a whole: above the client adapter, the loop
    changes nothing they can see, and tests/test_redis_adapters.py drives every
    adapter call of coredis on uvloop too.
    """
    kept, dropped = [], []
    for item in items:
        callspec = getattr(item, "callspec", None)
        backend_id = callspec.id if callspec is not None else ""
        if item.get_closest_marker("heavy") and "asyncio+uvloop" in backend_id:
            dropped.append(item)
        else:
            kept.append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept


#: The session's one Redis Cluster (three primaries, ~2 s to start), shared by every
#: module that takes ``cluster``: a module-level fixture would start one per module.
cluster = cluster_fixture()


@pytest.fixture(params=BACKENDS)
def anyio_backend(request: pytest.FixtureRequest) -> Any:
    return request.param


def with_mock_clock(backend: Any) -> Any:
    """Return ``backend`` with trio on an autojumping MockClock (virtual time).

    Tests of timeouts use it so that on trio they run instantly and exactly.
    """
    name, options = backend
    if name == "trio":
        return name, {**options, "clock": trio.testing.MockClock(autojump_threshold=0)}
    return backend
