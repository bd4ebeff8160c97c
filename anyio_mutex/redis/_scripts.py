"""The Lua scripts: each runs atomically at the server, one round trip each."""

from __future__ import annotations

from typing import Final

# KEYS: lock, fence. ARGV: token, lease ms, label.
# Grants and mints the fencing token in one step, or reports the holder's PTTL.
_ACQUIRE: Final = """
if redis.call('EXISTS', KEYS[1]) == 1 then
  return {0, redis.call('PTTL', KEYS[1])}
end
local fence = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], ARGV[1] .. ':' .. fence .. ':' .. ARGV[3], 'PX', ARGV[2])
return {1, fence}
"""
# KEYS: lock, wake. ARGV: the holder's value, wake-key ms.
# Compare-and-delete, then wake one waiter (BLPOP serves the longest-blocked first).
_RELEASE: Final = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1], KEYS[2])
  redis.call('RPUSH', KEYS[2], '1')
  redis.call('PEXPIRE', KEYS[2], ARGV[2])
  return 1
end
return 0
"""
# KEYS: lock. ARGV: the holder's value, lease ms. Renewal never touches the fence.
_RENEW: Final = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""
# KEYS: value. Returns {} when missing, else {value, pttl}: one atomic round trip.
_READ: Final = """
local v = redis.call('GET', KEYS[1])
if not v then return {} end
return {v, redis.call('PTTL', KEYS[1])}
"""
_WAKE_TTL_MS: Final = 5000
_MIN_BLOCK_S: Final = 0.01  # BLPOP's timeout 0 would mean "forever"
_SERVER_TICK_S: Final = 0.1  # 1 / hz: how late a server-side blocking timeout may fire
