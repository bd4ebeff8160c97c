"""One process, two backends: module-level locks used under asyncio, trio, asyncio.

anyio's pytest plugin over both backends, Starlette's ``TestClient(backend="trio")``
and scripts that call ``anyio.run()`` twice all reuse module-level locks across event
loops. A free lock moves to the next loop; a busy one says so (MutexLoopError)
instead of failing deep in the backend or waiting forever.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import anyio
import pytest
from anyio.lowlevel import checkpoint

from anyio_mutex import (
    AsyncMutex,
    KeyedMutex,
    Mutex,
    MutexLoopError,
    MutexReleaseError,
    RWLock,
)

from ._locks import BY_NAME, TASK_OWNED, LockKind
from .conftest import BACKENDS

MODULE_MUTEX = Mutex("module-mutex")
MODULE_FAST_MUTEX = Mutex("module-fast-mutex", fast_acquire=True)
MODULE_ASYNC_MUTEX = AsyncMutex("module-async-mutex")
MODULE_KEYED: KeyedMutex[str] = KeyedMutex("module-keyed")
MODULE_RWLOCK = RWLock("module-rwlock")

MODULE_LOCKS: dict[str, tuple[LockKind, Any]] = {
    "Mutex": (BY_NAME["Mutex"], MODULE_MUTEX),
    "Mutex-fast": (BY_NAME["Mutex-fast"], MODULE_FAST_MUTEX),
    "AsyncMutex": (BY_NAME["AsyncMutex"], MODULE_ASYNC_MUTEX),
    "KeyedMutex": (BY_NAME["KeyedMutex"], MODULE_KEYED),
    "RWLock-write": (BY_NAME["RWLock-write"], MODULE_RWLOCK),
    "RWLock-read": (BY_NAME["RWLock-read"], MODULE_RWLOCK),
}
SEQUENCE = [
    ("asyncio", {}),
    ("trio", {}),
    ("asyncio", {}),
    ("trio", {}),
    ("asyncio", {"use_uvloop": True}),
    ("asyncio", {}),
]


def current_task_object() -> object:
    """The running task itself (not anyio's TaskInfo), on either backend."""
    import sniffio

    if sniffio.current_async_library() == "trio":
        import trio

        return trio.lowlevel.current_task()
    import asyncio

    return asyncio.current_task()


def backend_id(backend: tuple[str, dict[str, Any]]) -> str:
    name, options = backend
    return name + ("+uvloop" if options.get("use_uvloop") else "")


async def contended_use(kind: LockKind, lock: Any) -> int:
    """Many tasks through the lock, each holding it across a checkpoint."""
    counter = 0

    async def bump(i: int) -> None:
        nonlocal counter
        async with kind.hold(lock, label=f"t{i}"):
            if kind.name == "RWLock-read":  # shared: only count the holds
                await checkpoint()
                counter += 1
            else:  # exclusive: a lost update would show
                value = counter
                await checkpoint()
                counter = value + 1

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            for i in range(20):
                tg.start_soon(bump, i)
        release = await kind.acquire(lock, timeout_ms=0)  # and plain acquire/release
        release()
    return counter


def run(fn: Callable[..., Any], *args: Any, backend: tuple[str, dict[str, Any]]) -> Any:
    name, options = backend
    if options.get("use_uvloop"):
        pytest.importorskip("uvloop")
    return anyio.run(fn, *args, backend=name, backend_options=options)


@pytest.mark.parametrize("name", list(MODULE_LOCKS))
def test_module_level_lock_moves_between_backends_while_free(name: str) -> None:
    # Regression: a module-level Mutex/AsyncMutex used under asyncio and then trio
    # failed with "RuntimeError: no running event loop" deep inside anyio.
    kind, lock = MODULE_LOCKS[name]
    for backend in SEQUENCE:
        assert run(contended_use, kind, lock, backend=backend) == 20, backend
        assert not kind.locked(lock)
        assert kind.owner(lock) is None


@pytest.mark.parametrize("name", list(MODULE_LOCKS))
@pytest.mark.parametrize("anyio_backend", BACKENDS)
@pytest.mark.anyio
async def test_module_level_lock_under_the_pytest_backend_matrix(name: str) -> None:
    # The same module-level instances, once per backend of the matrix, in one run.
    kind, lock = MODULE_LOCKS[name]
    assert await contended_use(kind, lock) == 20


@pytest.mark.parametrize("kind", TASK_OWNED, ids=str)
@pytest.mark.parametrize(
    ("first", "second"),
    [
        (("asyncio", {}), ("trio", {})),
        (("trio", {}), ("asyncio", {})),
        (("asyncio", {}), ("asyncio", {})),
        (("trio", {}), ("trio", {})),
    ],
    ids=lambda b: backend_id(b),
)
def test_lock_left_held_in_another_loop_raises_instead_of_hanging(
    kind: LockKind, first: Any, second: Any
) -> None:
    lock = kind.make("left")
    # anyio's task ids are object ids, which Python reuses once a task is gone: keep
    # the finished holder alive, or RWLock (which records task ids) could take a new
    # task for it. (A known limit, for holds leaked by tasks that no longer exist.)
    keep_alive: list[object] = []

    async def leave_it_held() -> None:
        await kind.acquire(lock, label="gone")  # the loop ends; the hold remains
        keep_alive.append(current_task_object())

    async def contend() -> list[str]:
        seen = []
        with anyio.fail_after(5):
            for timeout_ms in (None, 50, 0):
                with pytest.raises(MutexLoopError) as exc_info:
                    await kind.acquire(lock, timeout_ms=timeout_ms, label="here")
                seen.append(str(exc_info.value))
        return seen

    run(leave_it_held, backend=first)
    if kind.name == "RWLock-read":  # readers share: a writer is who has to wait
        kind = BY_NAME["RWLock-write"]
    messages = run(contend, backend=second)
    assert messages[0] == (
        "Cannot use lock {!r}: it is held or waited for in another event loop; "
        "a lock moves to a new event loop or backend only while it is free and "
        "nobody waits for it"
    ).format(kind.error_label("left"))
    assert kind.locked(lock)


@pytest.mark.parametrize("cls", [Mutex, AsyncMutex])
def test_release_in_another_loop_changes_nothing(cls: type[Mutex]) -> None:
    m = cls("left")

    async def leave_it_held() -> None:
        await m.acquire(label="gone")

    async def release_here() -> None:
        with pytest.raises(MutexReleaseError, match="does not hold it"):
            m.release()
        with pytest.raises(MutexLoopError):
            m.acquire_nowait()

    run(leave_it_held, backend=("asyncio", {}))
    run(release_here, backend=("trio", {}))
    assert m.current_owner == "gone"


@pytest.mark.parametrize("cls", [Mutex, AsyncMutex])
def test_acquire_nowait_moves_a_free_lock_too(cls: type[Mutex]) -> None:
    m = cls("free")

    async def take_and_release() -> str | None:
        m.acquire_nowait(label="nowait")
        owner = m.current_owner
        m.release()
        return owner

    for backend in SEQUENCE:
        assert run(take_and_release, backend=backend) == "nowait", backend
    assert not m.locked()
