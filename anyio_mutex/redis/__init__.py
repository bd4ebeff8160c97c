"""The mutex, the semaphore and the cache refresh on Redis or Valkey, across processes.

Pass the client you already have. ``coredis.Redis`` or ``coredis.RedisCluster``
(`coredis <https://coredis.readthedocs.io>`_ 6.x, the ``redis`` extra) is built on
anyio and runs on asyncio and trio; on asyncio, redis-py's ``redis.asyncio.Redis`` /
``RedisCluster`` (the ``redis-py`` extra) and valkey-py's ``valkey.asyncio.Valkey``
(the ``valkey-py`` extra) work too. Neither ``import anyio_mutex`` nor this module
imports any client library: each is used only when your client comes from it.

Guarantees and their limits:

- Every acquisition gets a lease (there is no lease-less lock) and a random token
  that lives in the acquisition's :class:`RedisLease`, never on the shared mutex.
  A release is an atomic compare-and-delete: it never touches another holder's key.
- The lease is the truth in every process, this one included: when a holder's lease
  runs out, the next task of its own process goes to the server like any other
  client, and the late release raises :class:`LockLostError`.
- A lease is a timing assumption. ``hold()`` renews it and gives its body the
  lease's deadline on this process's clock, measured from when the grant (or the
  last confirmed renewal) was *sent*, less a drift margin of 1% of the lease plus
  2 ms: with no confirmed renewal by then (a partition, a stalled server) the body
  is cancelled and :class:`LockLostError` raised, before the server can grant the
  lock to anyone else, as long as the two clocks' rates differ by less than that
  margin. A body that never reaches a checkpoint, or a process stopped as a whole (a
  GC pause, a stopped VM), cannot be cancelled: where two holders at once would
  corrupt data, pass :attr:`RedisLease.fence` to the protected resource and have it
  reject any fence lower than one it has seen.
- Fences strictly increase per lock name. A fence is an integer, at least the
  server's clock in microseconds since the Unix epoch at the grant (Redis ``TIME``)
  and greater than the last fence stored for that lock: so it keeps increasing after
  a restart without persistence, a ``FLUSHALL`` or the eviction of the fence key, as
  long as the server's clock does not go backwards (after a failover: as long as the
  new primary's clock is not behind the old one's by more than the time between the
  last grant there and the first grant here).
- Commands are idempotent under the client's retries: a retried grant finds its own
  token, a retried release counts as released, and an acquisition that fails gives
  back a grant whose answer was lost.
- Fairness is per process: tasks of one process queue locally (first come, first
  served) and one of them at a time waits at the server, where the processes' waiters
  are served in the order they blocked. So a process with 50 waiting tasks and one
  with 1 get about the same share of grants. This keeps one waiter (and one blocked
  connection) per process at the server whatever the number of tasks.
- :class:`RedisSemaphore` keeps at most ``limit`` leased permits across processes
  (counted by the server, on its clock), with the same leases, fences and renewal.
  Its fairness is per task: each acquisition takes a FIFO ticket at the server, and
  no waiter is overtaken by more than ``limit - 1`` callers that arrived after it.
- Keys (``key_prefix`` first, for ACL patterns such as ``~app:*``):
  ``<prefix>{<name>}:lock`` holds ``<token>:<fence>:<label>`` with the lease as its
  TTL; ``...:fence`` the last fence; ``...:wake`` the wake-up list; and
  ``...:released:<token>`` a marker that lives ``2 * op_timeout_ms``. In the hash
  tag a ``}`` of the name is written ``\\]`` and a ``\\`` as ``\\\\``, so that all
  keys of one lock share one cluster slot.
- Errors: :class:`LockUnavailableError` when the server cannot be reached or does not
  answer in time, :class:`LockRefusedError` (a subclass) when it refuses (``OOM``,
  ``NOPERM``, ``READONLY``...), quoting it. A body's own exception leaves ``hold()``
  and ``with_lock()`` exactly as raised.
- One Redis server (or cluster shard) is one point of failure: this is not Redlock.
  With replication, a failover can lose a just-granted lock, unless the mutex is
  made with ``wait_replicas=N``: each grant and renewal is then confirmed by ``WAIT``
  on N replicas first, which narrows that window (it is not consensus).
"""

from __future__ import annotations

from ._cache import (
    RedisRefreshCache,
    RedisRefreshCacheStatistics,
    key_to_str,
)
from ._errors import (
    LockLostError,
    LockRefusedError,
    LockUnavailableError,
)
from ._lease import RedisLease
from ._mutex import RedisMutex, RedisMutexStatistics
from ._semaphore import RedisSemaphore, RedisSemaphoreStatistics

__all__ = [
    "LockLostError",
    "LockRefusedError",
    "LockUnavailableError",
    "RedisLease",
    "RedisMutex",
    "RedisMutexStatistics",
    "RedisRefreshCache",
    "RedisRefreshCacheStatistics",
    "RedisSemaphore",
    "RedisSemaphoreStatistics",
    "key_to_str",
]

for _name in __all__:
    globals()[_name].__module__ = __name__
del _name  # pyright: ignore[reportPossiblyUnboundVariable]  # __all__ is not empty
