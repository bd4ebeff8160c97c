"""Deadlock detection: a live wait-for graph over every lock, and a dump of it.

One registry, read and written only on the slow paths:

* ``sources``: every lock-like object of the package that can describe itself, held
  weakly (a collected lock simply disappears from :func:`snapshot`);
* ``waiting``: task id -> the one thing that task is parked on now. A lock adds the
  entry just before it parks a task and removes it in a ``finally`` right after, so
  an uncontended acquire never touches the registry and a cancelled waiter (an anyio
  cancel scope or a native ``Task.cancel()``) leaves nothing behind;
* ``held``: task id -> the locks that task holds, kept only while the lock-order
  checker is enabled (it needs every acquisition; the detector does not).

A lock that parks a task first calls :func:`enter_wait`. It follows the edges "task
waits for lock -> lock is held by task -> that task waits for ..." and raises
:class:`DeadlockError` if the walk proves that the wait can never be granted; the
caller then holds nothing new and nothing else has changed.

Soundness (no false positives, whatever the interleaving). A parked task is *stuck*
if its wait can never be granted: only a timeout or a cancellation can end it (either
way the wait fails; a cycle whose members have ``timeout_ms`` is still a deadlock, it
would just end in a :class:`MutexTimeoutError` somewhere instead). The walk computes
the greatest set ``S`` of tasks, assuming the current task parks, such that each
member is parked on something blocked by ``S``:

* a wait that needs every holder gone (a mutex, an RWLock writer waiting for its
  readers, a fetch waiting for its leader) is blocked if *some* holder is in ``S``;
* a wait that needs any one holder gone (a permit) is blocked only if it has holders
  and *all* of them are in ``S``.

A task counts as free (never in ``S``) if it is not parked on one of our locks, or if
the thing it waits for already lists it as a holder: that is the hand-off window,
where a lock was granted to a waiter that has not resumed yet. The walk runs
synchronously on the event loop's thread, so no task changes state while it looks.
If every member of ``S`` is parked on something only members of ``S`` can release,
none of them can ever be granted: the current task is deadlocked if it is in ``S``
and the walk leads back to it. Waits imposed only by FIFO order (a waiter queued
behind another waiter) are not edges, so such deadlocks are missed, never invented.
"""

from __future__ import annotations

import math
import os
import signal
import sys
import time
import weakref
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from types import FrameType
from typing import Any, Final, NamedTuple, Protocol, TextIO, final

import anyio

from ._errors import DeadlockError, DeadlockStep
from ._hold import current_task, task_name, trio_parking

_ENV_VAR: Final = "ANYIO_MUTEX_DEADLOCK"


class Holder(NamedTuple):
    """One holder of a lock, as a lock reports it to the registry."""

    task_id: int
    task_name: str | None  # None if the lock does not know it
    label: str | None  # the owner label of the acquisition
    since: float | None = None  # time.monotonic() when it was granted, if known


class LockView(NamedTuple):
    """One live lock, as a source describes it for :func:`snapshot`."""

    kind: str
    label: str
    resource: object  # what waiters name in enter_wait(...)
    key: object
    holders: Sequence[Holder]


class Waitable(Protocol):
    """What a lock offers the walk: its holders and its label, per key.

    A lock may also offer ``_wg_granted(key) -> bool`` (whether the wait keyed
    ``key`` was granted, when holding it is no proof: a semaphore's waiter may hold
    another permit), ``_wg_need(key) -> int`` (how many holders a "needs any" wait
    needs gone, when one is not enough).
    """

    def _wg_holders(self, key: Any, /) -> Sequence[Holder]: ...

    def _wg_label(self, key: Any, /) -> str: ...


class Source(Protocol):
    """What a tracked object offers :func:`snapshot`: every lock it has now."""

    def _wg_locks(self) -> Iterable[LockView]: ...


class _Wait:
    """One parked task: what it waits for and since when.

    A lock may queue the record itself as its waiter (a subclass adds what else the
    lock needs), so a contended wait builds one object, not two.
    """

    __slots__ = (
        "bounded",
        "deadline",
        "fut",
        "key",
        "label",
        "need_all",
        "prev",
        "resource",
        "since",
        "state",
        "task",
        "task_id",
    )

    def __init__(
        self,
        task: Any,
        resource: Waitable,
        key: object,
        label: str | None,
        bounded: bool,
        need_all: bool,
        prev: _Wait | None,
    ) -> None:
        self.task = task  # the native task: its name is only read for a report
        self.task_id = id(task)
        self.resource = resource
        self.key = key
        self.label = label
        self.bounded = bounded
        self.need_all = need_all
        self.prev = prev  # an outer wait of the same task (a lock built on a lock)
        self.since = time.monotonic()
        # A timed wait's own deadline on its event loop's clock, set by the lock: past
        # it, the wait is over even before the lock's timer gets to it.
        self.deadline = math.inf
        # For a lock that queues the record itself (Mutex): its state, its future.
        self.state = 0
        self.fut: Any = None

    @property
    def task_name(self) -> str:
        return task_name(self.task)


@final
class _Registry:
    """The process-wide registry; see the module docstring."""

    __slots__ = ("detect", "held", "sources", "waiting")

    def __init__(self) -> None:
        self.detect = True
        # id -> weak reference; a plain dict, so a signal handler can copy it in one
        # C call (a WeakSet iterates in Python, under a guard).
        self.sources: dict[int, weakref.ref[Any]] = {}
        self.waiting: dict[int, _Wait] = {}
        # task id -> [(lock-order node, label, acquired at, lock)]; the checker's.
        self.held: dict[int, list[tuple[Any, str, float, object]]] = {}


registry: Final = _Registry()


def track(source: Source) -> None:
    """Make ``source`` visible to :func:`snapshot` (weakly: it keeps nothing alive)."""
    sources = registry.sources
    ident = id(source)

    def forget(ref: weakref.ref[Any]) -> None:
        if sources.get(ident) is ref:
            del sources[ident]

    sources[ident] = weakref.ref(source, forget)


def held_since(task_id: int, lock: object) -> float | None:
    """When ``task_id`` took ``lock``, if the lock-order checker recorded it."""
    for _, _, since, held in registry.held.get(task_id, ()):
        if held is lock:
            return since
    return None


def enable_deadlock_detection() -> None:
    """Turn deadlock detection on (it is on unless switched off).

    Before a task parks on a lock or a single-flight fetch, the wait-for graph is
    walked; a wait that closes a cycle raises :class:`DeadlockError` instead of
    hanging. An uncontended acquire costs nothing either way.
    """
    registry.detect = True


def disable_deadlock_detection() -> None:
    """Turn deadlock detection off: contended waits then skip the registry.

    :func:`snapshot` then no longer lists waiters (locks and holders still show). The
    environment variable ``ANYIO_MUTEX_DEADLOCK=off`` does this at import.
    """
    registry.detect = False


def _configure_from_environment() -> None:
    value = os.environ.get(_ENV_VAR, "").strip().lower()
    if value in ("", "1", "on", "true"):
        registry.detect = True
    elif value in ("0", "off", "false"):
        registry.detect = False
    else:
        raise ValueError(
            f"{_ENV_VAR} must be 'on' or 'off', got {os.environ[_ENV_VAR]!r}"
        )


def enter_wait(
    resource: Waitable,
    key: object,
    label: str | None,
    *,
    bounded: bool = False,
    deadline: float = math.inf,
    need_all: bool = True,
    reentry: bool = False,
    task: Any = None,
    record: _Wait | None = None,
) -> _Wait | None:
    """Check that parking the current task on ``resource[key]`` can end; register it.

    Call right before parking, and :func:`leave_wait` with the result in a
    ``finally`` right after (with no checkpoint in between, so no cancellation can
    leave the entry behind).

    :param label: the waiter's own label, for :func:`snapshot`
    :param bounded: the wait has its own timeout (shown by :func:`snapshot`; a
        timeout ends a wait by failing it, so it does not break a cycle)
    :param deadline: that timeout's deadline on the event loop's clock, if known
        (implies ``bounded``): past it, the wait counts as over
    :param need_all: ``True`` if the wait needs every holder gone, ``False`` if any
        one holder leaving lets it in (a semaphore permit)
    :param reentry: ``True`` if the caller reports a wait for what the current task
        holds itself as re-entry: then nothing is checked or registered and ``None``
        is returned (the lock raises its own error next)
    :param task: the parking task as :func:`current_task` returns it (default: the
        current task; the tests name stand-in tasks)
    :param record: the record to register, built by the caller for ``task`` and
        ``resource[key]`` (a lock that queues it); default: a new one
    :raises DeadlockError: if the wait closes a cycle; nothing is registered then
    """
    if task is None:
        task = current_task()
    task_id = id(task)
    cycle = _find_cycle(task_id, task, resource, key, need_all, reentry)
    if cycle is _REENTRY:
        return None
    if cycle:
        raise DeadlockError(cycle)
    if record is None:
        bounded = bounded or deadline != math.inf
        record = _Wait(task, resource, key, label, bounded, need_all, None)
        record.deadline = deadline
    return add_wait(record)


def add_wait(wait: _Wait) -> _Wait:
    """Register a wait the caller has proved cannot close a cycle (no walk).

    A lock whose only holder is not parked on one of our locks (or is the waiter this
    very lock was just handed to) knows that without :func:`enter_wait`'s walk.
    """
    waiting = registry.waiting
    wait.prev = waiting.get(wait.task_id)
    waiting[wait.task_id] = wait
    return wait


def recheck_wait(wait: _Wait) -> None:
    """Walk again for ``wait``, whose task was woken but waits on: it parks again.

    While it was :data:`_RESUMING`, other tasks' walks counted it as free; if one of
    them parked meanwhile and closed a cycle through it, this reports that cycle.
    Does nothing for a wait that is not registered (detection was off).

    :raises DeadlockError: if the wait closes a cycle; it stays registered (the
        caller's ``finally`` removes it)
    """
    if registry.waiting.get(wait.task_id) is wait:
        cycle = _find_cycle(
            wait.task_id, wait.task, wait.resource, wait.key, wait.need_all
        )
        if cycle:
            raise DeadlockError(cycle)


def leave_wait(wait: _Wait) -> None:
    """Remove the entry :func:`enter_wait` made (restoring an outer wait, if any)."""
    waiting = registry.waiting
    if waiting.get(wait.task_id) is wait:
        if wait.prev is None:
            del waiting[wait.task_id]
        else:
            waiting[wait.task_id] = wait.prev


def left(wait: _Wait, popped: _Wait | None) -> None:
    """Finish :func:`leave_wait` for a lock that inlined its common case,
    ``popped = registry.waiting.pop(wait.task_id, None)``, when ``popped`` is not
    ``wait`` or ``wait`` has an outer wait: put back what is not this wait's."""
    if popped is not wait:
        if popped is not None:
            registry.waiting[wait.task_id] = popped
    elif wait.prev is not None:
        registry.waiting[wait.task_id] = wait.prev


# One node of the walk: the task's wait edges (holders), "needs all" or "needs any".
class _Node(NamedTuple):
    resource: Waitable
    key: object
    holders: Sequence[Holder]
    need_all: bool
    need: int  # for need_all=False: how many holders must leave (0: none)


def _node(
    resource: Waitable, key: object, holders: Sequence[Holder], need_all: bool
) -> _Node:
    # A "needs any" wait needs one holder gone, unless the lock says more (a
    # semaphore whose limit was lowered below the permits held).
    if need_all:
        need = len(holders)
    else:
        count = getattr(resource, "_wg_need", None)
        need = count(key) if count is not None else min(1, len(holders))
    return _Node(resource, key, holders, need_all, need)


_REENTRY: Final = ()
#: A wait record's ``state`` while its task, still queued, was woken and is about to
#: run (trio's mutex timer): it either leaves or walks again (:func:`recheck_wait`)
#: before it parks again, so a walk meanwhile may count it as free.
_RESUMING: Final = 1
#: A wait record's ``state`` from which its wait is over (granted, timed out, gone).
#: Records that a lock does not queue itself (a fetch's, a Redis queue's) stay at 0.
_WAIT_OVER: Final = 2
#: The states of a record that its lock queues and wakes with :func:`wake` (a
#: semaphore's, an RWLock's; the mutex adds two of its own).
WAITING: Final = 0
GRANTED: Final = _WAIT_OVER
GONE: Final = 4  # cancelled and out of the queue


def wake(wait: _Wait) -> None:
    """Grant a queued ``wait``: mark it and wake its task.

    Its task is parked on ``wait.fut``, an asyncio future of its own loop, or (with
    ``fut`` ``None``) by trio. A future already cancelled (``Task.cancel()``) is left
    alone: its task wakes cancelled and gives back what it was granted.
    """
    wait.state = GRANTED
    fut = wait.fut
    if fut is None:
        trio_parking().reschedule(wait.task)
    elif not fut.done():
        fut.set_result(None)


def _granted(wait: _Wait, holders: Sequence[Holder] | None) -> bool:
    # Whether ``wait`` was granted what it waits for and its task has not resumed.
    # A lock that knows it says so (``_wg_granted``: a semaphore, whose waiter may
    # hold another permit of it and still wait); for the others, a task that holds
    # what it waits for was granted it.
    resource = wait.resource
    granted = getattr(resource, "_wg_granted", None)
    if granted is not None:
        return bool(granted(wait.key))
    if holders is None:
        holders = resource._wg_holders(wait.key)
    tid = wait.task_id
    return any(h.task_id == tid for h in holders)


def _find_cycle(
    me: int,
    my_task: Any,
    resource: Waitable,
    key: object,
    need_all: bool,
    reentry: bool = False,
) -> tuple[DeadlockStep, ...] | None:
    holders = resource._wg_holders(key)
    waiting = registry.waiting
    # Fast exit, the common case: no holder is parked (or the lock has none) and the
    # current task does not hold what it asks for.
    for holder in holders:
        tid = holder.task_id
        if tid == me:
            if reentry:
                return _REENTRY
            break
        its_wait = waiting.get(tid)
        if its_wait is not None and not (
            # Granted what it waits for, not resumed yet (the hand-off window): free,
            # as in the walk below.
            (its_wait.resource is resource and its_wait.key is key)
            or _granted(its_wait, None)
        ):
            break
    else:
        return None
    # Explore every task reachable from here, keeping those that may be stuck.
    nodes: dict[int, _Node] = {me: _node(resource, key, holders, need_all)}
    # Holders asked once per lock and walk (a lock's answer may cost a task lookup).
    asked: dict[tuple[int, int], Sequence[Holder]] = {(id(resource), id(key)): holders}
    names: dict[int, str] = {me: task_name(my_task)}
    todo = [h.task_id for h in holders]
    while todo:
        tid = todo.pop()
        if tid in nodes:
            continue
        wait = waiting.get(tid)
        if wait is None:
            continue  # running (or parked on something else): free
        memo = (id(wait.resource), id(wait.key))
        its_holders = asked.get(memo)
        if its_holders is None:
            its_holders = asked[memo] = wait.resource._wg_holders(wait.key)
        if _granted(wait, its_holders):
            continue  # granted, not resumed yet (the hand-off window): free
        nodes[tid] = _node(wait.resource, wait.key, its_holders, wait.need_all)
        names[tid] = wait.task_name
        todo.extend(h.task_id for h in its_holders)
    stuck = _stuck(me, nodes)
    if me not in stuck:
        return None
    # About to report. A current task with a cancellation pending never waits: it
    # parks and is cancelled at once, letting go of what it holds (the cancellation
    # wins, as it does at any checkpoint). Then drop every task whose wait has
    # already ended although it has not resumed to say so (a cancellation on its
    # way, a timeout that fired): it will let go of what it holds too. Only this
    # path asks, so its cost is no matter.
    pending = _pending_cancellations()
    if pending.get(me, False):
        return None
    ended = _ended(stuck - {me}, waiting, pending)
    if ended:
        for tid in ended:
            del nodes[tid]
        stuck = _stuck(me, nodes)
        if me not in stuck:
            return None
    return _cycle_through(me, nodes, names, stuck)


def _stuck(me: int, nodes: dict[int, _Node]) -> set[int]:
    # Greatest fixed point: drop every task whose wait some free task can end.
    stuck = set(nodes)
    changed = True
    while changed and me in stuck:
        changed = False
        for tid in list(stuck):
            node = nodes[tid]
            if node.need_all:
                blocked = any(h.task_id in stuck for h in node.holders)
            else:
                free = sum(h.task_id not in stuck for h in node.holders)
                blocked = free < node.need
            if not blocked:
                stuck.discard(tid)
                changed = True
    return stuck


def _ended(
    tids: set[int], waiting: dict[int, _Wait], pending: dict[int, bool]
) -> set[int]:
    # The tasks among ``tids`` whose wait is over though they have not resumed: a
    # mutex's record says so (granted, timed out, cancelled: its asyncio future, or
    # trio's abort), or says that its task is about to run and will walk again if
    # it parks again (_RESUMING); any task with a cancellation pending (anyio's public
    # TaskInfo.has_pending_cancellation(), for anyio cancel scopes and asyncio's
    # Task.cancel() alike) leaves its wait with it.
    ended: set[int] = set()
    now: float | None = None
    for tid in tids:
        wait = waiting.get(tid)
        if wait is None:
            continue
        fut = wait.fut
        if wait.state >= _RESUMING or (fut is not None and fut.cancelled()):
            ended.add(tid)
            continue
        if wait.deadline != math.inf:
            if now is None:
                now = anyio.current_time()
            if wait.deadline <= now:
                # Its own deadline has passed; the lock's timer has not got to it.
                ended.add(tid)
                continue
        if pending.get(tid, False):
            ended.add(tid)
    return ended


def _pending_cancellations() -> dict[int, bool]:
    # Task id -> whether a cancellation is on its way to it, for the running loop.
    try:
        tasks = anyio.get_running_tasks()
    except RuntimeError:  # pragma: no cover - the walk runs in a task
        return {}
    return {
        info.id: bool(getattr(info, "has_pending_cancellation", _no)())
        for info in tasks
    }


def _no() -> bool:  # anyio < 4.7 cannot tell
    return False


def _cycle_through(
    me: int, nodes: dict[int, _Node], names: dict[int, str], stuck: set[int]
) -> tuple[DeadlockStep, ...] | None:
    # Breadth-first from the current task, through stuck holders, back to it: the
    # shortest cycle. None if it is stuck behind a deadlock it is not part of. A
    # cycle through other tasks is preferred to a task waiting for a permit it holds
    # itself (a semaphore's nested hold): that is a cycle too, but names nobody else.
    for self_edges in (False, True):
        parent: dict[int, tuple[int, Holder]] = {}
        frontier = [me]
        while frontier:
            following: list[int] = []
            for tid in frontier:
                for holder in nodes[tid].holders:
                    nxt = holder.task_id
                    if (
                        nxt not in stuck
                        or nxt in parent
                        or (nxt == tid and not self_edges)
                    ):
                        continue
                    parent[nxt] = (tid, holder)
                    if nxt == me:
                        return _steps(me, parent, nodes, names)
                    following.append(nxt)
            frontier = following
    return None


def _steps(
    me: int,
    parent: dict[int, tuple[int, Holder]],
    nodes: dict[int, _Node],
    names: dict[int, str],
) -> tuple[DeadlockStep, ...]:
    steps: list[DeadlockStep] = []
    tid = me
    while True:
        waiter, holder = parent[tid]
        node = nodes[waiter]
        steps.append(
            DeadlockStep(
                task=names[waiter],
                waits_for=node.resource._wg_label(node.key),
                held_by=holder.label,
                holder_task=names.get(holder.task_id, holder.task_name),
            )
        )
        tid = waiter
        if tid == me:
            break
    steps.reverse()
    return tuple(steps)


# --- the dump -------------------------------------------------------------------


@final
@dataclass(frozen=True)
class HolderSnapshot:
    """A holder of a lock in a :class:`Snapshot`.

    :ivar task: the name of the holding task (``None`` if unknown)
    :ivar label: the owner label of the acquisition
    :ivar held_for_s: how long it has held the lock, in seconds; ``None`` if it took
        the lock without waiting (the fast path records no time)
    """

    task: str | None
    label: str | None
    held_for_s: float | None


@final
@dataclass(frozen=True)
class WaiterSnapshot:
    """A task waiting for a lock in a :class:`Snapshot`.

    :ivar task: the name of the waiting task
    :ivar label: the label it asked for the lock with, if any
    :ivar waiting_for_s: how long it has been waiting, in seconds
    :ivar timed: whether the wait has a ``timeout_ms`` of its own
    """

    task: str
    label: str | None
    waiting_for_s: float
    timed: bool


@final
@dataclass(frozen=True)
class LockSnapshot:
    """One live lock in a :class:`Snapshot`.

    :ivar kind: the lock's type (``"Mutex"``, ``"RWLock"``, ``"fetch"``, ...)
    :ivar label: the lock's label
    :ivar holders: who holds it
    :ivar waiters: who waits for it, longest waiting first
    """

    kind: str
    label: str
    holders: tuple[HolderSnapshot, ...]
    waiters: tuple[WaiterSnapshot, ...]

    def __str__(self) -> str:
        if self.holders:
            held = ", ".join(_holder_text(h) for h in self.holders)
        else:
            held = "free"
        lines = [f"{self.kind} {self.label!r}: {held}"]
        for waiter in self.waiters:
            label = f" as {waiter.label!r}" if waiter.label is not None else ""
            timed = " (with a timeout)" if waiter.timed else ""
            lines.append(
                f"    waiting: task {waiter.task!r}{label}"
                f" for {waiter.waiting_for_s:.3f}s{timed}"
            )
        return "\n".join(lines)


def _holder_text(holder: HolderSnapshot) -> str:
    task = f"task {holder.task!r}" if holder.task is not None else "a task"
    label = f" as {holder.label!r}" if holder.label is not None else ""
    since = f" for {holder.held_for_s:.3f}s" if holder.held_for_s is not None else ""
    return f"held by {task}{label}{since}"


@final
@dataclass(frozen=True)
class Snapshot:
    """The state of every live lock of the package at one moment.

    ``str()`` of it is a "who waits for whom" report, one paragraph per lock that is
    held or waited for.

    :ivar locks: every live lock that is held or waited for
    :ivar taken_at: ``time.monotonic()`` when it was taken
    """

    locks: tuple[LockSnapshot, ...]
    taken_at: float

    def __str__(self) -> str:
        if not self.locks:
            return "anyio_mutex: no lock is held or waited for"
        body = "\n".join(str(lock) for lock in self.locks)
        return f"anyio_mutex: {len(self.locks)} lock(s) held or waited for\n{body}"


def snapshot() -> Snapshot:
    """Return who holds and who waits for every live lock of the package, now.

    Locks are referenced weakly: a lock that was garbage collected is not reported.
    Locks that are free and unwaited are left out. Waiters are listed while deadlock
    detection is on (it is unless switched off). It reads plain data and never
    touches an event loop, so it can be called from anywhere, a signal handler
    included (see :func:`install_snapshot_signal`).

    :return: a frozen :class:`Snapshot`; ``print(snapshot())`` shows the report
    """
    now = time.monotonic()
    # list() copies in one C call each, so a weakref callback or another thread
    # cannot change a container while it is iterated.
    waits: dict[int, list[_Wait]] = {}
    for wait in list(registry.waiting.values()):
        while wait is not None:
            waits.setdefault(_ident(wait.resource, wait.key), []).append(wait)
            wait = wait.prev  # type: ignore[assignment]
    names = {tid: w.task_name for tid, w in list(registry.waiting.items())}
    locks: list[LockSnapshot] = []
    for ref in list(registry.sources.values()):
        source = ref()
        if source is None:
            continue
        for view in list(source._wg_locks()):
            waiters = sorted(
                waits.pop(_ident(view.resource, view.key), ()),
                key=lambda w: w.since,
            )
            if not view.holders and not waiters:
                continue
            locks.append(
                LockSnapshot(
                    kind=view.kind,
                    label=view.label,
                    holders=tuple(
                        HolderSnapshot(
                            task=h.task_name or names.get(h.task_id),
                            label=h.label,
                            held_for_s=None if h.since is None else now - h.since,
                        )
                        for h in view.holders
                    ),
                    waiters=tuple(
                        WaiterSnapshot(w.task_name, w.label, now - w.since, w.bounded)
                        for w in waiters
                    ),
                )
            )
    return Snapshot(tuple(locks), now)


def _ident(resource: object, key: object) -> int:
    # Identity, not equality; every lock (a fetch, a key's mutex) is its own object,
    # and the key only tells a lock which of its waiters asks (an RWLock's).
    return id(resource)


def install_snapshot_signal(
    signum: int | None = None, *, file: TextIO | None = None
) -> Callable[[], None]:
    """Print :func:`snapshot` to stderr whenever the process receives ``signum``.

    So an operator can ask a hung service what it waits for: ``kill -USR1 <pid>``.
    Works on asyncio and trio alike: the handler is a plain :func:`signal.signal`
    handler that formats the report synchronously. Python runs it on the main thread
    between two bytecodes, and every registry update is a single dict or set
    operation, so it always sees a consistent registry; it copies each container
    before iterating it and never touches an event loop. A failure while formatting
    is printed instead of propagating into the interrupted code.

    Call it from the main thread (a :mod:`signal` rule).

    :param signum: the signal, ``signal.SIGUSR1`` by default (where it exists)
    :param file: where to print (default: ``sys.stderr`` at the time of the signal)
    :return: a function that restores the previous handler
    :raises ValueError: if ``signum`` is not a valid signal, or this is not the main
        thread
    :raises TypeError: if ``signum`` is not an int
    """
    if signum is None:
        signum = getattr(signal, "SIGUSR1", None)
        if signum is None:  # pragma: no cover - Windows
            raise ValueError("signum is required where SIGUSR1 does not exist")
    if isinstance(signum, bool) or not isinstance(signum, int):
        raise TypeError(f"signum must be an int, got {signum!r}")

    def handler(signo: int, frame: FrameType | None) -> None:
        out = file if file is not None else sys.stderr
        try:
            report = str(snapshot())
        except Exception as exc:  # pragma: no cover - a dump must never crash a service
            report = f"anyio_mutex: snapshot failed: {exc!r}"
        print(report, file=out, flush=True)

    previous = signal.signal(signum, handler)

    def restore() -> None:
        signal.signal(signum, previous)

    return restore


_configure_from_environment()
