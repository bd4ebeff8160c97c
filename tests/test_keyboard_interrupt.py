"""Ctrl-C (SIGINT) while a task is parked on a lock.

trio delivers a KeyboardInterrupt into the main task at the await it is parked on
(its abort callback runs, as for a cancellation, but the exception is not a
Cancelled): whatever the lock queued for that wait must go, so the lock is usable in
the next run of the process. asyncio's runner turns SIGINT into a cancellation of the
main task, which tests/test_native_cancel.py covers.
"""

from __future__ import annotations

import asyncio
import signal
import threading
import traceback
from collections.abc import Iterator
from typing import Any

import pytest
import trio
import trio.lowlevel
import trio.testing

from anyio_mutex._waitgraph import registry

from ._locks import ALL_HOLDS, LockKind
from .test_native_cancel import assert_idle_and_usable


def only_keyboard_interrupts(exc: BaseException) -> bool:
    # The nursery wraps it in a BaseExceptionGroup (trio's strict groups).
    if isinstance(exc, KeyboardInterrupt):
        return True
    inner = getattr(exc, "exceptions", None)
    return inner is not None and all(only_keyboard_interrupts(e) for e in inner)


@pytest.fixture(autouse=True)
def trio_can_catch_sigint() -> Iterator[None]:
    # trio installs its SIGINT handler only over the default one, in the main thread.
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("SIGINT is delivered to the main thread only")
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, before)


@pytest.mark.parametrize("kind", ALL_HOLDS, ids=str)
def test_ctrl_c_while_parked_on_trio_leaves_the_lock_usable(kind: LockKind) -> None:
    lock = kind.make()
    parked: list[str] = []

    async def holder(task_status: Any) -> None:
        if kind.name == "RWLock-read":  # readers share: a writer excludes them
            hold: Any = lock.write(label="holder")
        else:
            hold = kind.hold(lock, label="holder")
        async with hold:
            task_status.started()
            await trio.sleep_forever()

    # KI-protected, as trio's own code is: the signal is not raised here but
    # delivered to the main task, at the await it is parked on.
    @trio.lowlevel.enable_ki_protection
    async def interrupt() -> None:
        await trio.testing.wait_all_tasks_blocked()
        parked.append(f"{kind.waiting(lock)} waiting")
        signal.raise_signal(signal.SIGINT)

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(holder)
            nursery.start_soon(interrupt)
            async with kind.hold(lock, label="main"):  # the main task parks here
                pytest.fail("the interrupted waiter got the lock")

    with pytest.raises(BaseException) as info:  # noqa: PT011 - checked just below
        trio.run(main)
    assert only_keyboard_interrupts(info.value), info.value
    # It came out of the lock's wait in the main task, not out of interrupt().
    ki = info.value
    while not isinstance(ki, KeyboardInterrupt):
        ki = ki.exceptions[0]  # type: ignore[attr-defined]
    frames = [f.name for f in traceback.extract_tb(ki.__traceback__)]
    assert "main" in frames, frames
    assert "interrupt" not in frames, frames
    assert parked == ["1 waiting"]
    assert registry.waiting == {}
    asyncio.run(assert_idle_and_usable(kind, lock))
