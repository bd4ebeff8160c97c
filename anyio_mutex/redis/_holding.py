"""hold(): a lease renewed while a body runs; shared by RedisMutex and RedisSemaphore."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, Awaitable, Callable
from contextlib import asynccontextmanager

import anyio

from ._errors import LockLostError, LockUnavailableError
from ._lease import RedisLease
from ._scripts import _MIN_BLOCK_S


async def _keep_alive(lease: RedisLease, body: anyio.CancelScope) -> None:
    # Renews until cancelled. The body's scope has the lease's own deadline (minus
    # the drift margin): each confirmed renewal moves it, so with no answer the
    # body is cancelled in time whatever the network does. A "not yours" answer
    # cancels it at once.
    owner = lease._mutex
    interval = owner._renew_s
    while True:
        await anyio.sleep(interval)
        remaining = lease.valid_until - anyio.current_time()
        try:
            renewed = await owner._renew(lease, remaining)
        except LockUnavailableError:  # no answer in time, or a refusal
            # Try again while the lease lasts; the deadline stops us otherwise.
            interval = max(min(owner._renew_s, remaining / 4), _MIN_BLOCK_S)
            continue
        except Exception as exc:
            # An error the client adapter does not know (a library's own, a bug):
            # end the body with LockLostError, as a refusal does. Escaping this task
            # it would leave the group wrapped in an ExceptionGroup.
            lease._lose(f"renewal failed: {type(exc).__name__}: {exc}")
            body.cancel()
            return
        if renewed:
            body.deadline = lease.valid_until
            interval = owner._renew_s
            continue
        lease._lose("renewal found the key no longer holding this lease")
        body.cancel()
        return


@asynccontextmanager
async def _hold(
    acquire: Callable[[], Awaitable[RedisLease]],
) -> AsyncGenerator[RedisLease, None]:
    """Acquire with ``acquire()``, renew while the body runs, release on exit.

    See ``RedisMutex.hold()`` for the guarantees.
    """
    lease = await acquire()
    if lease._turn is not None:
        lease._turn.renewed = True
    owner = lease._mutex
    body_error: BaseException | None = None
    try:
        async with anyio.create_task_group() as tg:
            tg.cancel_scope.deadline = lease.valid_until
            tg.start_soon(_keep_alive, lease, tg.cancel_scope)
            try:
                yield lease
            except anyio.get_cancelled_exc_class():
                raise  # ours (lease lost) stops at the group; others leave as is
            except BaseException as exc:
                # Kept out of the group, which would wrap it in an ExceptionGroup;
                # re-raised below as the very same object.
                body_error = exc
            finally:
                tg.cancel_scope.cancel()  # stop renewing
    except BaseException:
        # Cancelled from outside: free the key, and the cancellation still wins.
        await _end_hold(lease, quiet=True)
        raise
    if (
        tg.cancel_scope.cancelled_caught
        and not lease.lost
        and anyio.current_time() >= lease.valid_until
    ):
        lease._lose(
            "no renewal was confirmed before the lease's deadline "
            f"(less a {owner._drift_s * 1000:g} ms drift margin)"
        )
    try:
        await _end_hold(lease, quiet=body_error is not None)
        if body_error is not None:
            raise body_error
    finally:
        body_error = None  # no reference cycle through the traceback


async def _end_hold(lease: RedisLease, *, quiet: bool) -> None:
    # quiet: the body raised, and its exception wins over any release failure.
    owner = lease._mutex
    if not (lease.lost or quiet):
        await lease.release()
        return
    if lease.lost and anyio.current_time() >= lease.valid_until:
        # Ended by its deadline: the key is gone or about to be, and the server
        # did not answer in time; asking again would only delay the exit.
        lease._released = True
        if lease._turn is not None:
            owner._end_turn(lease._turn)
    else:
        # Safe to try: the compare-and-delete never touches a new holder's key.
        with contextlib.suppress(LockLostError, LockUnavailableError):
            await lease.release()
    if lease.lost and not quiet:
        raise LockLostError(owner.name, lease.label, lease.fence, lease._reason)
