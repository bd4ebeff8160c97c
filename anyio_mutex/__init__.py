"""Async locks for asyncio and trio, built on anyio.

Everything public is re-exported here; the submodules are private, except
:mod:`anyio_mutex.redis`, which needs the ``redis`` extra and is never imported here.
"""

from typing import Any as _Any

from ._diagnostics import (
    _enable_from_environment,
    disable_lock_order_checks,
    enable_lock_order_checks,
)
from ._errors import (
    DeadlockError,
    DeadlockStep,
    LockOrderError,
    LockOrderWarning,
    MutexError,
    MutexLoopError,
    MutexReentryError,
    MutexReleaseError,
    MutexTimeoutError,
)
from ._keyed import KeyedMutex, KeyedMutexStatistics
from ._mutex import AsyncMutex, Mutex, MutexStatistics
from ._refresh import (
    CachedFunction,
    CacheStatistics,
    RefreshCache,
    cached,
    default_cache,
    get_or_refresh,
)
from ._rwlock import RWLock, RWLockStatistics
from ._semaphore import Semaphore, SemaphoreStatistics
from ._singleflight import SingleFlight, SingleFlightStatistics
from ._waitgraph import (
    HolderSnapshot,
    LockSnapshot,
    Snapshot,
    WaiterSnapshot,
    disable_deadlock_detection,
    enable_deadlock_detection,
    install_snapshot_signal,
    snapshot,
)

__all__ = [
    "AsyncMutex",
    "CacheStatistics",
    "CachedFunction",
    "DeadlockError",
    "DeadlockStep",
    "HolderSnapshot",
    "KeyedMutex",
    "KeyedMutexStatistics",
    "LockOrderError",
    "LockOrderWarning",
    "LockSnapshot",
    "Mutex",
    "MutexError",
    "MutexLoopError",
    "MutexReentryError",
    "MutexReleaseError",
    "MutexStatistics",
    "MutexTimeoutError",
    "RWLock",
    "RWLockStatistics",
    "RefreshCache",
    "Semaphore",
    "SemaphoreStatistics",
    "SingleFlight",
    "SingleFlightStatistics",
    "Snapshot",
    "WaiterSnapshot",
    "cached",
    "default_cache",
    "disable_deadlock_detection",
    "disable_lock_order_checks",
    "enable_deadlock_detection",
    "enable_lock_order_checks",
    "get_or_refresh",
    "install_snapshot_signal",
    "snapshot",
]

for _name in __all__:
    globals()[_name].__module__ = __name__
del _name  # pyright: ignore[reportPossiblyUnboundVariable]  # __all__ is not empty

_enable_from_environment()  # ANYIO_MUTEX_LOCK_ORDER=raise|warn


def __getattr__(name: str) -> _Any:
    # __version__ comes from the installed metadata, read on first use: reading it
    # at import would cost more than importing anyio itself.
    if name == "__version__":
        import importlib.metadata

        try:
            version = importlib.metadata.version("anyio_mutex")
        except importlib.metadata.PackageNotFoundError:  # pragma: no cover
            version = "0+unknown"  # running from a source tree
        globals()["__version__"] = version
        return version
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
