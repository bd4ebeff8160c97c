"""Lock-order checking (like Linux's lockdep) and long-hold warnings, opt-in.

While enabled, every anyio_mutex lock reports to one checker: before a task waits for
lock L while holding H, the edge H -> L joins a graph of observed orders. An edge that
closes a cycle (task 1 took A then B; task 2, holding B, now asks for A) is a lock-order
inversion that can deadlock, so it is reported at once, before anything waits.
Disabled, the cost is one attribute check per acquire and release.
"""

from __future__ import annotations

import os
import sys
import time
import warnings
from dataclasses import dataclass
from typing import Any, Final, Literal, final

from ._errors import LockOrderError, LockOrderWarning
from ._hold import current_task, task_name
from ._validation import check_seconds
from ._waitgraph import registry

_PACKAGE_DIR: Final = os.path.dirname(__file__)
_ENV_VAR: Final = "ANYIO_MUTEX_LOCK_ORDER"


@final
class _State:
    """The process-wide switch the locks read: ``checker`` is ``None`` when disabled."""

    __slots__ = ("checker",)

    def __init__(self) -> None:
        self.checker: LockOrderChecker | None = None


state: Final = _State()


@final
@dataclass(frozen=True)
class _Edge:
    where: str  # "task 'name' at file:line" where the order was first seen


def _user_frame() -> tuple[Any, int]:
    # The first frame outside this package (where the user's code took the lock), and
    # its stack level as warnings.warn counts it from the caller of this function.
    frame = sys._getframe(1)
    level = 1
    while frame is not None and frame.f_code.co_filename.startswith(_PACKAGE_DIR):
        frame = frame.f_back  # type: ignore[assignment]
        level += 1
    return frame, level


def _call_site() -> str:
    frame, _ = _user_frame()
    if frame is None:  # pragma: no cover
        return "<unknown>"
    code = frame.f_code
    return f"{code.co_filename}:{frame.f_lineno} in {code.co_name}"


@final
class LockOrderChecker:
    """Records lock acquisition orders and reports inversions; see :func:`enable_lock_order_checks`."""

    __slots__ = ("_edges", "_held", "_labels", "long_hold_s", "mode")

    def __init__(
        self, mode: Literal["raise", "warn"], long_hold_s: float | None
    ) -> None:
        self.mode = mode
        self.long_hold_s = long_hold_s
        # node -> {node acquired while holding it: where that was first seen}
        self._edges: dict[Any, dict[Any, _Edge]] = {}
        self._labels: dict[Any, str] = {}
        # task id -> [(node, label, acquired at, lock)] of locks the task holds now: the
        # holder table of the one wait-for registry, which snapshot() reads too. A
        # new checker starts from an empty table.
        registry.held.clear()
        self._held = registry.held

    def before_acquire(self, node: Any, label: str) -> None:
        """Record "held -> node" for every lock the current task holds; report cycles."""
        held = self._held.get(id(current_task()))
        if not held:
            return
        for held_node, held_label, _, _ in held:
            if held_node == node or node in self._edges.get(held_node, ()):
                continue
            path = self._path(node, held_node)
            where = f"task {task_name(current_task())!r} at {_call_site()}"
            if path is not None:
                first = self._edges[path[0]][path[1]].where
                self._report(label, held_label, first, where)
                continue
            self._edges.setdefault(held_node, {})[node] = _Edge(where)
            self._labels[held_node] = held_label
            self._labels[node] = label

    def _path(self, start: Any, goal: Any) -> list[Any] | None:
        # Depth-first search for start ->* goal in the recorded order graph.
        # Nodes compare by equality: a KeyedMutex key's node is a fresh (mutex, key)
        # tuple each time the key's entry is created.
        stack: list[tuple[Any, list[Any]]] = [(start, [start])]
        seen = {start}
        while stack:
            node, path = stack.pop()
            for nxt in self._edges.get(node, ()):
                if nxt == goal:
                    return [*path, nxt]
                if nxt not in seen:
                    seen.add(nxt)
                    stack.append((nxt, [*path, nxt]))
        return None

    def _report(self, wanted: str, holding: str, first_seen: str, here: str) -> None:
        error = LockOrderError(
            wanted=wanted, holding=holding, first_seen=first_seen, here=here
        )
        if self.mode == "raise":
            raise error
        # Point at the user's line, however deep in this package the check ran.
        _, level = _user_frame()
        warnings.warn(LockOrderWarning(str(error)), stacklevel=level)

    def acquired(self, node: Any, label: str, lock: object) -> None:
        """Note that the current task now holds ``lock`` (``node`` to the checker)."""
        task_id = id(current_task())
        self._held.setdefault(task_id, []).append((node, label, time.monotonic(), lock))

    def released(self, lock: object, owner: str | None) -> None:
        """Note a release of ``lock``; warn if it was held longer than the threshold.

        The lock itself, not its order node, finds the entry: the keys of a
        ``KeyedMutex(lock_order="instance")`` share one node.
        """
        task_id = id(current_task())
        held = self._held.get(task_id)
        if not held:
            return
        for i in range(len(held) - 1, -1, -1):
            if held[i][3] is lock:
                _, label, since, _ = held.pop(i)
                break
        else:
            return
        if not held:
            del self._held[task_id]
        if self.long_hold_s is not None:
            held_s = time.monotonic() - since
            if held_s > self.long_hold_s:
                # Imported here: logging costs more at import than anyio itself.
                import logging

                logging.getLogger("anyio_mutex").warning(
                    "lock %r was held for %.0f ms by %r (threshold %.0f ms)",
                    label,
                    held_s * 1000,
                    owner,
                    self.long_hold_s * 1000,
                )


def enable_lock_order_checks(
    mode: Literal["raise", "warn"] = "raise", *, long_hold_ms: float | None = None
) -> None:
    """Start checking lock acquisition order for every anyio_mutex lock.

    Like Linux's lockdep: for each task, the order in which it takes locks while
    holding others is recorded; an acquisition that would close a cycle in that order
    (task 1 took A then B, task 2 takes B then A) raises :class:`LockOrderError` (or
    warns :class:`LockOrderWarning` with ``mode="warn"``) naming both locks and where
    each order was first seen, before any task waits, so before any deadlock. Orders
    that are always consistent never report.

    Use it in tests and staging: while enabled, each acquire and release looks up the
    current task, and the graph keeps every lock it has seen alive. The environment
    variable ``ANYIO_MUTEX_LOCK_ORDER=raise`` (or ``warn``) enables it at import.

    :param mode: ``"raise"`` or ``"warn"``
    :param long_hold_ms: also log a warning (logger ``"anyio_mutex"``) with the label and
        holder of any lock held longer than this
    :raises ValueError: if ``mode`` or ``long_hold_ms`` is invalid
    """
    if mode not in ("raise", "warn"):
        raise ValueError(f"mode must be 'raise' or 'warn', got {mode!r}")
    long_hold = check_seconds(
        long_hold_ms, "long_hold_ms", allow_none=True, unit="milliseconds"
    )
    state.checker = LockOrderChecker(
        mode, None if long_hold is None else long_hold / 1000
    )


def disable_lock_order_checks() -> None:
    """Stop checking lock order and forget every recorded order."""
    state.checker = None
    registry.held.clear()


def _enable_from_environment() -> None:
    mode = os.environ.get(_ENV_VAR, "").strip().lower()
    if mode in ("", "0", "off", "false"):
        return
    if mode in ("1", "on", "true"):
        mode = "raise"
    if mode not in ("raise", "warn"):
        raise ValueError(
            f"{_ENV_VAR} must be 'raise', 'warn' or 'off', got {os.environ[_ENV_VAR]!r}"
        )
    enable_lock_order_checks(mode)  # type: ignore[arg-type]
