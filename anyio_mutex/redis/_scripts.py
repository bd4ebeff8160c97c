"""The Lua scripts: each runs atomically at the server, one round trip each."""

from __future__ import annotations

from typing import Final

# The lock key holds "<token>:<fence>:<label>"; the token (32 hex digits, random per
# acquisition) is what a release or a renewal must prove. redis.pcall('GET') answers
# a table instead of raising when the key holds another type: not ours, held.

# KEYS: lock, fence, wake. ARGV: token, lease ms, label.
# Grants and mints the fence in one step ({1, fence, now}), or reports the holder's
# PTTL ({0, pttl, now}); now is the server's clock in microseconds when the script
# ran, which lets a waiter whose try ran later than it was sent (pipelined behind a
# BLPOP) place the grant on its own clock (see RedisMutex._granted_at). Idempotent: a
# client's retry of a grant that already happened finds its own token and gets the
# same grant back. The fence is floored by the server's clock (microseconds since
# the epoch), so it keeps increasing when the fence key is lost to a restart without
# persistence, a FLUSHALL or an eviction, as long as that clock does not go back.
_ACQUIRE: Final = """
local now = redis.call('TIME')
local micros = tonumber(now[1]) * 1000000 + tonumber(now[2])
local held = redis.pcall('GET', KEYS[1])
if held then
  local mine = ARGV[1] .. ':'
  if type(held) == 'string' and string.sub(held, 1, #mine) == mine then
    redis.call('PEXPIRE', KEYS[1], ARGV[2])
    return {1, tonumber(string.match(held, '^[^:]*:(%d+):')), micros}
  end
  -- Held: a wake-up still in the list was pushed before this holder's grant (no
  -- one was blocked to take it). The holder's release will push a fresh one; this
  -- one would only wake the caller's next BLPOP for a try that must fail.
  redis.call('DEL', KEYS[3])
  return {0, redis.call('PTTL', KEYS[1]), micros}
end
local fence = micros
local last = tonumber(redis.pcall('GET', KEYS[2]))
if last and last >= fence then
  fence = last + 1
end
local text = string.format('%d', fence)
redis.call('SET', KEYS[2], text)
redis.call('SET', KEYS[1], ARGV[1] .. ':' .. text .. ':' .. ARGV[3], 'PX', ARGV[2])
return {1, fence, micros}
"""
# KEYS: lock, wake, released-marker. ARGV: token, wake-key ms, marker ms.
# Compare-and-delete, then wake one waiter (BLPOP serves the longest-blocked first).
# Idempotent: the marker (one short-lived key per release) lets a client's retry of
# a release that already happened count as released.
_RELEASE: Final = """
local held = redis.pcall('GET', KEYS[1])
local mine = ARGV[1] .. ':'
if type(held) == 'string' and string.sub(held, 1, #mine) == mine then
  redis.call('DEL', KEYS[1], KEYS[2])
  redis.call('RPUSH', KEYS[2], '1')
  redis.call('PEXPIRE', KEYS[2], ARGV[2])
  redis.call('SET', KEYS[3], '1', 'PX', ARGV[3])
  return 1
end
return redis.call('EXISTS', KEYS[3])
"""
# KEYS: lock. ARGV: token, lease ms. Renewal never touches the fence.
_RENEW: Final = """
local held = redis.pcall('GET', KEYS[1])
local mine = ARGV[1] .. ':'
if type(held) == 'string' and string.sub(held, 1, #mine) == mine then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""
# KEYS: lock. Returns {} when free, {1, value} for a string, {0, type} for another type.
_OWNER: Final = """
local held = redis.pcall('GET', KEYS[1])
if type(held) == 'table' then
  return {0, redis.call('TYPE', KEYS[1])['ok']}
end
if not held then return {} end
return {1, held}
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
