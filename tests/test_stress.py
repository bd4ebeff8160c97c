"""Randomized stress: many tasks, random timeouts, random cancellations.

The seed is fixed and printed (``-s`` shows it; a failure report includes it), and
every invariant is checked after every step. Cancellations come two ways: short
deadlines, and the holder cancelling a random other task's scope, which hits tasks
while queued, right at a hand-off, and inside the critical section.
"""

from __future__ import annotations

import random

import anyio
import pytest
from anyio.lowlevel import checkpoint

from anyio_mutex import MutexTimeoutError

from ._locks import KINDS, SHARED_KINDS, LockKind

pytestmark = pytest.mark.anyio

SEED = 20261124
TASKS = 40
STEPS = 60


@pytest.mark.heavy  # uvloop changes nothing in this bookkeeping
@pytest.mark.parametrize("kind", KINDS + SHARED_KINDS, ids=str)
async def test_random_timeouts_and_cancellations_keep_every_invariant(
    kind: LockKind,
) -> None:
    print(f"stress seed={SEED}")
    rng = random.Random(SEED)
    lock = kind.make("stress")
    holders: list[str] = []  # labels of the tasks inside the critical section
    outcomes = {"acquired": 0, "timed out": 0, "cancelled": 0}
    scopes: dict[int, anyio.CancelScope] = {}

    def cancel_someone(me: int) -> None:
        victim = rng.randrange(TASKS)
        if victim != me and victim in scopes and rng.random() < 0.3:
            scopes[victim].cancel()

    def check_invariants() -> None:
        assert len(holders) <= kind.limit, f"more than {kind.limit} hold it: {holders}"
        if holders:
            assert kind.locked(lock)
            if kind.limit == 1:
                assert kind.owner(lock) == holders[0]
        if not kind.locked(lock):
            assert kind.owner(lock) is None

    async def worker(n: int) -> None:
        for step in range(STEPS):
            label = f"t{n}.{step}"
            timeout_ms = rng.choice([None, None, 0, 1, 5, 20])
            cancel_after = rng.choice([None, None, None, 0.0005, 0.002])
            with anyio.CancelScope() as scope:
                scopes[n] = scope
                if cancel_after is not None:
                    scope.deadline = anyio.current_time() + cancel_after
                try:
                    release = await kind.acquire(
                        lock, timeout_ms=timeout_ms, label=label
                    )
                except MutexTimeoutError:
                    outcomes["timed out"] += 1
                    check_invariants()
                    continue
                try:
                    outcomes["acquired"] += 1
                    holders.append(label)
                    check_invariants()
                    for _ in range(rng.randrange(3)):
                        cancel_someone(n)
                        await checkpoint()
                        check_invariants()
                finally:
                    holders.remove(label)
                    release()
                    cancel_someone(n)  # often lands right at the hand-off
                    check_invariants()
            del scopes[n]
            if scope.cancelled_caught:
                outcomes["cancelled"] += 1
            check_invariants()

    with anyio.fail_after(60):
        async with anyio.create_task_group() as tg:
            for n in range(TASKS):
                tg.start_soon(worker, n)
    print(f"stress seed={SEED} outcomes={outcomes}")
    assert sum(outcomes.values()) >= TASKS * STEPS
    assert outcomes["acquired"] > 0
    assert kind.acquisitions(lock) == outcomes["acquired"]
    assert not kind.locked(lock)
    assert kind.owner(lock) is None
    assert kind.waiting(lock) == 0
