"""The wait-for registry and the deadlock walk, driven directly with stand-in locks."""

from __future__ import annotations

import gc
import io
import os
import pickle
import signal
import subprocess
import sys
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import anyio
import pytest

from anyio_mutex import DeadlockError, DeadlockStep, MutexError
from anyio_mutex import _waitgraph as wg
from anyio_mutex._hold import current_task
from anyio_mutex._waitgraph import Holder, LockView


class FakeLock:
    """A lock that only describes itself: its holders are set by the test."""

    __slots__ = ("__weakref__", "holders", "kind", "label")

    def __init__(self, label: str, kind: str = "Mutex") -> None:
        self.label = label
        self.kind = kind
        self.holders: list[Holder] = []
        wg.track(self)

    def hold(self, task: FakeTask, label: str | None = None) -> None:
        self.holders.append(Holder(task.id, task.name, label or f"{task.name}-owns"))

    def _wg_holders(self, key: object) -> Sequence[Holder]:
        return self.holders

    def _wg_label(self, key: object) -> str:
        return self.label

    def _wg_locks(self) -> Iterable[LockView]:
        yield LockView(self.kind, self.label, self, None, self.holders)


class FakeTask:
    """A stand-in for a native task: the registry knows a task by id() and name."""

    def __init__(self, name: str) -> None:
        self.name = name

    @property
    def id(self) -> int:
        return id(self)


def task(n: int, name: str) -> FakeTask:
    return FakeTask(name)


A, B, C, D = task(1, "A"), task(2, "B"), task(3, "C"), task(4, "D")


@pytest.fixture(autouse=True)
def _clean_registry() -> Iterator[None]:
    wg.registry.waiting.clear()
    yield
    wg.registry.waiting.clear()
    wg.enable_deadlock_detection()


def park(t: FakeTask, lock: FakeLock, **kwargs: Any) -> wg._Wait:
    wait = wg.enter_wait(lock, None, f"{t.name}-wants", task=t, **kwargs)
    assert wait is not None
    return wait


def test_wait_for_a_running_holder_is_not_a_deadlock() -> None:
    m = FakeLock("m")
    m.hold(A)
    wait = park(B, m)
    assert wg.registry.waiting[B.id] is wait
    wg.leave_wait(wait)
    assert wg.registry.waiting == {}


def test_two_tasks_crossing_raise_in_the_last_one_to_park() -> None:
    a, b = FakeLock("lock-a"), FakeLock("lock-b")
    a.hold(A)
    b.hold(B)
    park(A, b)  # A waits for B's lock: fine, B is running
    with pytest.raises(DeadlockError) as info:
        park(B, a)
    err = info.value
    assert isinstance(err, MutexError)
    assert isinstance(err, RuntimeError)
    assert err.cycle == (
        DeadlockStep("B", "lock-a", "A-owns", "A"),
        DeadlockStep("A", "lock-b", "B-owns", "B"),
    )
    assert "'lock-a'" in str(err)
    assert "'lock-b'" in str(err)
    assert "task 'A'" in str(err)
    assert "task 'B'" in str(err)
    # The raising task was not registered; the other still waits.
    assert set(wg.registry.waiting) == {A.id}


def test_three_locks_in_a_cycle() -> None:
    x, y, z = FakeLock("x"), FakeLock("y"), FakeLock("z")
    x.hold(A)
    y.hold(B)
    z.hold(C)
    park(A, y)
    park(B, z)
    with pytest.raises(DeadlockError) as info:
        park(C, x)
    assert [s.task for s in info.value.cycle] == ["C", "A", "B"]
    assert [s.waits_for for s in info.value.cycle] == ["x", "y", "z"]


def test_waiting_for_what_the_task_itself_holds_is_a_one_step_cycle() -> None:
    fetch = FakeLock("the fetch of key 1", kind="fetch")
    fetch.hold(A, "leader")
    with pytest.raises(DeadlockError) as info:
        park(A, fetch)
    assert info.value.cycle == (DeadlockStep("A", "the fetch of key 1", "leader", "A"),)


def test_timeouts_do_not_break_a_cycle() -> None:
    # A's wait would end only by failing (a timeout): the cycle is still certain.
    a, b = FakeLock("a"), FakeLock("b")
    a.hold(A)
    b.hold(B)
    park(A, b, bounded=True)
    with pytest.raises(DeadlockError):
        park(B, a)


def test_own_timeout_does_not_hide_a_certain_cycle() -> None:
    a, b = FakeLock("a"), FakeLock("b")
    a.hold(A)
    b.hold(B)
    park(A, b)
    with pytest.raises(DeadlockError):
        park(B, a, bounded=True)  # it could only end by timing out


def test_handoff_window_counts_as_granted() -> None:
    # A was handed lock b (it is b's holder) but has not resumed: still listed as
    # waiting for b. B, waiting for A's lock a, is not deadlocked: A will run.
    a, b = FakeLock("a"), FakeLock("b")
    a.hold(A)
    park(A, b)
    b.hold(A)
    park(B, a)


def test_stuck_behind_a_cycle_it_is_not_part_of_parks() -> None:
    # B and C deadlocked while detection was off; A waiting for B's lock waits
    # forever, but it closes no cycle of its own: it parks (snapshot shows it).
    p, q, _r = FakeLock("p"), FakeLock("q"), FakeLock("r")
    p.hold(B)
    q.hold(C)
    park(B, q)
    # C parks unchecked, as a lock does with detection off.
    wg.registry.waiting[C.id] = wg._Wait(C, p, None, None, False, True, None)
    park(A, p)
    assert set(wg.registry.waiting) == {A.id, B.id, C.id}


def test_any_holder_semantics_needs_every_holder_stuck() -> None:
    sem = FakeLock("sem", kind="Semaphore")
    sem.hold(A)
    sem.hold(B)
    m = FakeLock("m")
    m.hold(C)
    park(A, m)  # permit holder A waits for C
    park(C, sem, need_all=False)  # C needs one permit: B still runs, so fine
    wg.leave_wait(wg.registry.waiting[C.id])
    # Now B waits for C too: every permit holder waits for C.
    park(B, m)
    with pytest.raises(DeadlockError) as info:
        park(C, sem, need_all=False)
    assert info.value.cycle[0].task == "C"
    assert info.value.cycle[0].waits_for == "sem"


def test_all_holder_semantics_one_stuck_reader_blocks_a_writer() -> None:
    # A writer (C) waits for readers A and B; reader A waits for a lock C holds.
    rw = FakeLock("rw", kind="RWLock")
    rw.hold(A, "reader-a")
    rw.hold(B, "reader-b")
    m = FakeLock("m")
    m.hold(C)
    park(A, m)
    with pytest.raises(DeadlockError) as info:
        park(C, rw)  # B runs, but A never leaves: the writer needs both gone
    assert [s.task for s in info.value.cycle] == ["C", "A"]
    assert info.value.cycle[0].held_by == "reader-a"


def test_a_semaphore_without_holders_is_never_reported() -> None:
    sem = FakeLock("sem", kind="Semaphore")  # permits taken by no known task
    park(A, sem, need_all=False)


def test_nested_waits_of_one_task_restore_the_outer_one() -> None:
    m, n = FakeLock("m"), FakeLock("n")
    m.hold(B)
    n.hold(C)
    outer = park(A, m)
    inner = park(A, n)
    assert wg.registry.waiting[A.id] is inner
    wg.leave_wait(inner)
    assert wg.registry.waiting[A.id] is outer
    wg.leave_wait(outer)
    assert wg.registry.waiting == {}


def test_deadlock_error_pickles_with_its_cycle() -> None:
    err = DeadlockError(
        (DeadlockStep("A", "x", "o", "B"), DeadlockStep("B", "y", None, None))
    )
    copy = pickle.loads(pickle.dumps(err))
    assert type(copy) is DeadlockError
    assert copy.cycle == err.cycle
    assert str(copy) == str(err)


def test_snapshot_reports_holders_and_waiters_and_forgets_collected_locks() -> None:
    m = FakeLock("snap-m")
    m.hold(A, "owner-a")
    park(B, m)
    gone = FakeLock("snap-gone")
    gone.hold(C)
    del gone
    gc.collect()
    snap = wg.snapshot()
    mine = [lock for lock in snap.locks if lock.label.startswith("snap-")]
    assert [lock.label for lock in mine] == ["snap-m"]
    (lock,) = mine
    assert lock.kind == "Mutex"
    assert [(h.task, h.label) for h in lock.holders] == [("A", "owner-a")]
    assert [(w.task, w.label) for w in lock.waiters] == [("B", "B-wants")]
    assert lock.waiters[0].waiting_for_s >= 0
    text = str(snap)
    assert "Mutex 'snap-m': held by task 'A' as 'owner-a'" in text
    assert "waiting: task 'B' as 'B-wants'" in text
    assert "snap-gone" not in text


def test_snapshot_keeps_nothing_alive() -> None:
    m = FakeLock("weak")
    m.hold(A)
    wg.snapshot()
    import weakref

    ref = weakref.ref(m)
    del m
    gc.collect()
    assert ref() is None


def test_signal_prints_the_report() -> None:
    if not hasattr(signal, "SIGUSR1"):  # pragma: no cover - Windows
        pytest.skip("no SIGUSR1")
    m = FakeLock("signalled")
    m.hold(A, "the-owner")
    out = io.StringIO()
    restore = wg.install_snapshot_signal(signal.SIGUSR1, file=out)
    try:
        os.kill(os.getpid(), signal.SIGUSR1)
        # The handler runs at the next bytecode boundary of the main thread.
        for _ in range(1000):
            if out.getvalue():
                break
    finally:
        restore()
    assert "Mutex 'signalled': held by task 'A' as 'the-owner'" in out.getvalue()


def test_install_snapshot_signal_validates_signum() -> None:
    with pytest.raises(TypeError, match="signum"):
        wg.install_snapshot_signal("USR1")  # type: ignore[arg-type]


@pytest.mark.parametrize("value", ["off", "0", "False"])
def test_environment_switches_detection_off(value: str) -> None:
    code = "from anyio_mutex import _waitgraph as w; print(w.registry.detect)"
    env = {**os.environ, "ANYIO_MUTEX_DEADLOCK": value}
    out = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == "False"


def test_environment_rejects_nonsense() -> None:
    code = "import anyio_mutex._waitgraph"
    env = {**os.environ, "ANYIO_MUTEX_DEADLOCK": "maybe"}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True
    )
    assert out.returncode != 0
    assert "ANYIO_MUTEX_DEADLOCK" in out.stderr


def test_reentry_option_leaves_own_holds_to_the_lock() -> None:
    m = FakeLock("m")
    m.hold(A)
    assert wg.enter_wait(m, None, None, reentry=True, task=A) is None
    assert wg.registry.waiting == {}


@pytest.mark.anyio
async def test_native_task_identity_is_anyios() -> None:
    # The registry knows tasks by id(native task); lock statistics know them by
    # anyio's TaskInfo.id. Both must name the same task, in every task.
    from anyio_mutex._hold import current_task, task_name

    seen: list[tuple[int, str, int, str | None]] = []

    async def record() -> None:
        info = anyio.get_current_task()
        task = current_task()
        seen.append((id(task), task_name(task), info.id, info.name))

    await record()
    async with anyio.create_task_group() as tg:
        tg.start_soon(record, name="child-task")
    assert len(seen) == 2
    for native_id, native_name, anyio_id, anyio_name in seen:
        assert native_id == anyio_id
        assert native_name == anyio_name
    assert seen[1][1] == "child-task"
    assert seen[0][0] != seen[1][0]


def test_native_task_identity_outside_a_loop_raises() -> None:
    from anyio_mutex._hold import current_task

    with pytest.raises(RuntimeError):
        current_task()


@pytest.mark.anyio
async def test_a_pending_cancellation_or_a_resuming_record_ends_a_wait() -> None:
    # A task whose scope was just cancelled, not resumed yet, leaves its wait: the
    # walk counts it as free. So does one whose record says it was woken and walks
    # again before it parks again (trio's mutex timer), or that its wait is over.
    parked = anyio.Event()
    tasks: list[Any] = []

    async def waiter(scope: anyio.CancelScope) -> None:
        with scope:
            tasks.append(current_task())
            parked.set()
            await anyio.sleep_forever()

    lock = FakeLock("m")
    scope = anyio.CancelScope()
    async with anyio.create_task_group() as tg:
        tg.start_soon(waiter, scope)
        await parked.wait()
        await anyio.wait_all_tasks_blocked()
        (native,) = tasks
        record = wg._Wait(native, lock, None, None, False, True, None)
        waiting = {id(native): record}
        assert (
            wg._ended({id(native)}, waiting, wg._pending_cancellations()) == set()
        )  # nothing pending yet
        for state in (wg._RESUMING, wg._WAIT_OVER):
            record.state = state
            assert wg._ended({id(native)}, waiting, wg._pending_cancellations()) == {
                id(native)
            }
        record.state = 0
        scope.cancel()  # pending from here until the task resumes
        assert wg._ended({id(native)}, waiting, wg._pending_cancellations()) == {
            id(native)
        }
