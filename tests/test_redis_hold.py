"""What leaves ``hold()`` and ``with_lock()``: the body's own exception, as raised.

Regression tests for issue 8, defect 1: every exception of the body used to leave
wrapped in an ExceptionGroup by the renewal task group, so ``except ValueError`` missed
it and an ``HTTPException(404)`` became a 500.
"""

from __future__ import annotations

import pickle
from typing import Any

import anyio
import pytest

from anyio_mutex.redis import (
    LockLostError,
    LockRefusedError,
    LockUnavailableError,
    RedisMutex,
)

from ._redis_server import RedisServer, connect, server_fixture, unique
from .conftest import asyncio_only

# heavy: asyncio and trio; coredis on uvloop is tests/test_redis_adapters.py's.
pytestmark = [pytest.mark.anyio, pytest.mark.heavy]

server = server_fixture()


class HTTPException(Exception):  # the shape of Starlette's and FastAPI's
    def __init__(self, status_code: int, detail: str) -> None:
        super().__init__(status_code, detail)
        self.status_code = status_code
        self.detail = detail


class Interrupt(BaseException):  # a KeyboardInterrupt-like BaseException
    pass


BODY_ERRORS = [
    pytest.param(lambda: ValueError("bad"), id="ValueError"),
    pytest.param(lambda: KeyError("missing"), id="KeyError"),
    pytest.param(lambda: HTTPException(404, "not found"), id="HTTPException"),
    pytest.param(lambda: Interrupt("stop"), id="BaseException"),
    pytest.param(lambda: SystemExit(3), id="SystemExit"),
]


@pytest.mark.parametrize("make", BODY_ERRORS)
@pytest.mark.parametrize("via", ["hold", "with_lock"])
async def test_body_exception_leaves_as_itself_and_frees_the_key(
    server: RedisServer, make: Any, via: str
) -> None:
    error = make()
    async with connect(server) as client:
        mutex = RedisMutex(client, unique("body"), lease_ms=5000, renew_ms=20)

        async def body() -> None:
            # Raise while the renewal task runs, after one renewal: a bounded poll
            # of a counter (there is no event for "renewed").
            for _ in range(500):  # 5 s at most; fail_after below bounds it too
                if mutex.statistics().renewals:
                    break
                await anyio.sleep(0.01)
            raise error

        with anyio.fail_after(5), pytest.raises(type(error)) as exc_info:  # noqa: PT012
            if via == "hold":
                async with mutex.hold():
                    await body()
            else:
                await mutex.with_lock(body)
        assert exc_info.value is error  # the same object, not a group of it
        assert not await mutex.locked()


async def test_http_exception_is_caught_by_its_own_except(server: RedisServer) -> None:
    async with connect(server) as client:
        mutex = RedisMutex(client, unique("http"), lease_ms=5000)
        try:
            async with mutex.hold():
                raise HTTPException(404, "no such user")
        except HTTPException as exc:
            status = exc.status_code
        assert status == 404


async def test_cancelled_body_leaves_as_a_plain_cancellation(
    server: RedisServer,
) -> None:
    async with connect(server) as client:
        mutex = RedisMutex(client, unique("cancel"), lease_ms=5000, renew_ms=20)
        with anyio.fail_after(5):
            with anyio.CancelScope() as scope:
                async with mutex.hold():
                    scope.cancel()
                    await anyio.sleep_forever()
            assert scope.cancelled_caught
            with anyio.move_on_after(0.1) as timed:
                await mutex.with_lock(anyio.sleep_forever)
            assert timed.cancelled_caught
        assert not await mutex.locked()


@asyncio_only
async def test_native_task_cancel_of_the_body_frees_the_key(
    server: RedisServer, anyio_backend: Any
) -> None:
    import asyncio

    async with connect(server) as client:
        mutex = RedisMutex(client, unique("native"), lease_ms=30_000, renew_ms=20)
        entered = anyio.Event()

        async def body() -> None:
            async with mutex.hold():
                entered.set()
                await anyio.sleep_forever()

        with anyio.fail_after(5):
            task = asyncio.ensure_future(body())
            await entered.wait()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        assert not await mutex.locked()  # freed now, not in 30 s
        with anyio.fail_after(5):
            lease = await mutex.acquire(timeout_ms=0)  # and the local turn with it
        await lease.release()


async def test_lost_lease_raises_lock_lost_error_itself(server: RedisServer) -> None:
    name = unique("lost")
    async with connect(server) as client, connect(server) as thief:
        mutex = RedisMutex(client, name, lease_ms=5000, renew_ms=20)
        with anyio.fail_after(5), pytest.raises(LockLostError) as exc_info:  # noqa: PT012
            async with mutex.hold(label="victim"):
                await thief.delete(["{" + name + "}:lock"])
                await anyio.sleep_forever()
        assert type(exc_info.value) is LockLostError
        assert exc_info.value.label == "victim"


def test_errors_pickle_with_their_fields() -> None:
    lost = LockLostError("n", "job", 7, "expired")
    copy = pickle.loads(pickle.dumps(lost))
    assert (copy.name, copy.label, copy.fence, copy.reason) == (
        "n",
        "job",
        7,
        "expired",
    )
    assert str(copy) == str(lost)
    down = LockUnavailableError("n", "no answer")
    copy2 = pickle.loads(pickle.dumps(down))
    assert (copy2.name, copy2.detail, str(copy2)) == ("n", "no answer", str(down))
    refused = LockRefusedError("n", "the server refused acquire: NOPERM ...")
    copy3 = pickle.loads(pickle.dumps(refused))
    assert type(copy3) is LockRefusedError
    assert (copy3.detail, str(copy3)) == (refused.detail, str(refused))


async def test_an_unknown_renewal_error_ends_the_body_with_lock_lost_unwrapped(
    server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The renewal runs in the hold's task group: an exception escaping it (one the
    # client adapter does not turn into LockUnavailableError) used to leave hold()
    # as an ExceptionGroup. The renewal here fails as a buggy client library would,
    # against the real server.
    class ClientBug(Exception):
        pass

    async def failing_renew(self: RedisMutex, lease: Any, limit_s: Any = None) -> bool:
        raise ClientBug("decoder broke")

    async with connect(server) as client:
        mutex = RedisMutex(client, unique("bug"), lease_ms=5000, renew_ms=20)
        monkeypatch.setattr(RedisMutex, "_renew", failing_renew)
        reached_end = False
        with anyio.fail_after(5), pytest.raises(LockLostError) as exc_info:  # noqa: PT012
            async with mutex.hold():
                await anyio.sleep_forever()  # cancelled when the renewal fails
            reached_end = True  # pragma: no cover - must not happen
        assert not reached_end
        assert "ClientBug: decoder broke" in str(exc_info.value)
        monkeypatch.undo()
        assert not await mutex.locked()  # the key was given back
