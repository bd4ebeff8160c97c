"""Async locks for asyncio and trio, built on anyio.

Everything public is re-exported here; the submodules are private, except
:mod:`anyio_mutex.redis`, which needs the ``redis`` extra and is never imported here.
"""

import importlib.metadata as _metadata

from ._errors import MutexError, MutexReentryError, MutexReleaseError, MutexTimeoutError
from ._mutex import AsyncMutex, Mutex, MutexStatistics
from ._refresh import (
    CachedFunction,
    CacheStatistics,
    RefreshCache,
    cached,
    default_cache,
    get_or_refresh,
)
from ._singleflight import SingleFlight, SingleFlightStatistics

try:
    __version__ = _metadata.version("anyio_mutex")
except _metadata.PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0+unknown"

__all__ = [
    "AsyncMutex",
    "CacheStatistics",
    "CachedFunction",
    "Mutex",
    "MutexError",
    "MutexReentryError",
    "MutexReleaseError",
    "MutexStatistics",
    "MutexTimeoutError",
    "RefreshCache",
    "SingleFlight",
    "SingleFlightStatistics",
    "cached",
    "default_cache",
    "get_or_refresh",
]

for _name in __all__:
    globals()[_name].__module__ = __name__
del _name
