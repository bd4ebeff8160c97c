"""The adapter of valkey-py's asyncio clients (``valkey.asyncio.Valkey``, ``ValkeyCluster``).

valkey-py is a fork of redis-py with the same API under other names: the redis-py
adapter serves it, with valkey's exceptions. asyncio only.
"""

from __future__ import annotations

from ._redis_py import _adapt_redis_py, _RedisPy


def _adapt_valkey_py(client: object) -> _RedisPy:
    return _adapt_redis_py(client, "valkey", "valkey-py")
