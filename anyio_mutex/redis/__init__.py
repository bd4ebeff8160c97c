"""The mutex and the cache refresh on Redis or Valkey, across processes and machines.

Needs the ``redis`` extra (``pip install 'anyio_mutex[redis]'``): the client is
`coredis <https://coredis.readthedocs.io>`_ 6.x, which is built on anyio, so this
module runs unchanged on asyncio and trio. ``import anyio_mutex`` never imports it.

Guarantees and their limits:

- Every acquisition gets a lease (there is no lease-less lock) and a random token
  that lives in the acquisition's :class:`RedisLease`, never on the shared mutex.
  A release is an atomic compare-and-delete: it never touches another holder's key.
- A lease is a timing assumption. If the holder stalls longer than the lease (a GC
  pause, a lost network, a stopped VM), the key expires and another client may
  acquire while the first still believes it holds it. ``hold()`` renews the lease and
  cancels its body with :class:`LockLostError` when renewal fails, which narrows the
  window but cannot close it. Where two holders at once would corrupt data, pass
  :attr:`RedisLease.fence` to the protected resource and have it reject any fence
  lower than one it has seen: fencing tokens strictly increase per lock name.
- One Redis server is one point of failure: this is not Redlock. With replication,
  a failover can lose a just-granted lock.
"""

from __future__ import annotations

from ._client import _ensure_coredis

_ensure_coredis()

from ._cache import (  # noqa: E402
    RedisRefreshCache,
    RedisRefreshCacheStatistics,
    key_to_str,
)
from ._errors import (  # noqa: E402
    LockLostError,
    LockRefusedError,
    LockUnavailableError,
)
from ._mutex import RedisLease, RedisMutex, RedisMutexStatistics  # noqa: E402

__all__ = [
    "LockLostError",
    "LockRefusedError",
    "LockUnavailableError",
    "RedisLease",
    "RedisMutex",
    "RedisMutexStatistics",
    "RedisRefreshCache",
    "RedisRefreshCacheStatistics",
    "key_to_str",
]

for _name in __all__:
    globals()[_name].__module__ = __name__
del _name
