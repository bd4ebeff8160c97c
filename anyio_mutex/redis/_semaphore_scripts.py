"""RedisSemaphore's Lua scripts: each runs atomically at the server, one round trip.

The keys of a semaphore (``<tag>`` is ``<key_prefix>{<name>}``, one cluster slot):

- ``<tag>:permits``: a sorted set, token -> the permit's expiry (server ms);
- ``<tag>:owners``: a hash, token -> ``"<fence>:<label>"``;
- ``<tag>:queue``: a sorted set of waiting tickets, ``"<client>:<token>"`` -> ticket
  number (arrival order);
- ``<tag>:beats``: a sorted set, ticket -> its expiry (server ms), pushed back by the
  waiting process while it lives;
- ``<tag>:woken``: a set of the tickets with a wake-up pending;
- ``<tag>:passed``: a hash, ticket -> how many later callers were granted ahead of it;
- ``<tag>:fence``: the last fence;
- ``<tag>:wake:<client>``: a list per RedisSemaphore object, of the tokens of its
  waiters that may take a permit now (built from ``<tag>``: same slot);
- ``<tag>:released:<token>``: a marker that a release happened (retries count as
  released), living ``2 * op_timeout_ms``.

Times are the server's (``TIME``), so client clocks never matter. Numbers passed back
to Redis go through ``string.format('%d')``: Lua's default format keeps 14 digits.
"""

from __future__ import annotations

from typing import Final

# KEYS[1..6]: permits, owners, queue, beats, woken, passed (every script below).
_COMMON: Final = """
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function forget(m)
  redis.call('ZREM', KEYS[3], m)
  redis.call('ZREM', KEYS[4], m)
  redis.call('SREM', KEYS[5], m)
  redis.call('HDEL', KEYS[6], m)
end
-- Drop expired permits and the tickets of waiters that stopped beating.
local function sweep(now)
  while true do
    local gone = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, 100)
    if #gone == 0 then break end
    redis.call('ZREM', KEYS[1], unpack(gone))
    redis.call('HDEL', KEYS[2], unpack(gone))
  end
  while true do
    local gone = redis.call('ZRANGEBYSCORE', KEYS[4], '-inf', now, 'LIMIT', 0, 100)
    if #gone == 0 then break end
    redis.call('ZREM', KEYS[3], unpack(gone))
    redis.call('ZREM', KEYS[4], unpack(gone))
    redis.call('SREM', KEYS[5], unpack(gone))
    redis.call('HDEL', KEYS[6], unpack(gone))
  end
end
-- Whether no ticket among the first n has been passed `cap` times already.
local function passable(n, cap)
  if n <= 0 then return true end
  for _, m in ipairs(redis.call('ZRANGE', KEYS[3], 0, n - 1)) do
    if tonumber(redis.call('HGET', KEYS[6], m) or '0') >= cap then return false end
  end
  return true
end
-- Push a wake-up to each waiter that may take a permit now and has none pending:
-- the first `free` tickets, up to the first one that later callers may not pass.
local function wake(free, cap, tag, ttl)
  if free <= 0 then return end
  for _, m in ipairs(redis.call('ZRANGE', KEYS[3], 0, free - 1)) do
    if redis.call('SADD', KEYS[5], m) == 1 then
      local client, token = string.match(m, '^([^:]*):(.*)$')
      local list = tag .. ':wake:' .. client
      redis.call('RPUSH', list, token)
      redis.call('PEXPIRE', list, ttl)
    end
    if tonumber(redis.call('HGET', KEYS[6], m) or '0') >= cap then return end
  end
end
"""

# KEYS[7]: fence. ARGV: client, token, lease ms, label, limit, ticket ms, cap, tag,
# then the tokens of the client's other waiters (their tickets are beaten too).
# Returns {1, fence} when granted, else {0, ms until the next expiry or -1}.
# A first call takes a ticket (arrival order); a ticket among the first
# (limit - held) is granted unless that passes a ticket `cap` times. Idempotent: a
# client's retry of a grant that already happened finds its own permit.
_ACQUIRE: Final = (
    _COMMON
    + """
local now = now_ms()
sweep(now)
local client, token = ARGV[1], ARGV[2]
local lease, limit = tonumber(ARGV[3]), tonumber(ARGV[5])
local ttl, cap = tonumber(ARGV[6]), tonumber(ARGV[7])
local member = client .. ':' .. token
local beat = string.format('%d', now + ttl)
for i = 9, #ARGV do
  local other = client .. ':' .. ARGV[i]
  redis.call('ZADD', KEYS[4], 'XX', beat, other)
  redis.call('SREM', KEYS[5], other)  -- a lost wake-up is sent again below
end
if redis.call('ZSCORE', KEYS[1], token) then
  redis.call('ZADD', KEYS[1], string.format('%d', now + lease), token)
  local held = redis.call('HGET', KEYS[2], token) or '0:'
  return {1, tonumber(string.match(held, '^(%d+):'))}
end
local rank = redis.call('ZRANK', KEYS[3], member)
if not rank then
  local last = redis.call('ZRANGE', KEYS[3], -1, -1, 'WITHSCORES')
  local ticket = 1
  if last[2] then ticket = tonumber(last[2]) + 1 end
  redis.call('ZADD', KEYS[3], string.format('%d', ticket), member)
  rank = redis.call('ZCARD', KEYS[3]) - 1
end
redis.call('ZADD', KEYS[4], beat, member)
redis.call('SREM', KEYS[5], member)
local free = limit - redis.call('ZCARD', KEYS[1])
if rank < free and passable(rank, cap) then
  for _, m in ipairs(rank > 0 and redis.call('ZRANGE', KEYS[3], 0, rank - 1) or {}) do
    redis.call('HINCRBY', KEYS[6], m, 1)
  end
  forget(member)
  local t = redis.call('TIME')
  local fence = tonumber(t[1]) * 1000000 + tonumber(t[2])
  local last = tonumber(redis.call('GET', KEYS[7]))
  if last and last >= fence then fence = last + 1 end
  local text = string.format('%d', fence)
  redis.call('SET', KEYS[7], text)
  redis.call('ZADD', KEYS[1], string.format('%d', now + lease), token)
  redis.call('HSET', KEYS[2], token, text .. ':' .. ARGV[4])
  wake(free - 1, cap, ARGV[8], ttl)
  return {1, fence}
end
wake(free, cap, ARGV[8], ttl)
local soonest = -1
for _, key in ipairs({KEYS[1], KEYS[4]}) do
  local first = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
  if first[2] then
    local left = tonumber(first[2]) - now
    if soonest < 0 or left < soonest then soonest = left end
  end
end
return {0, soonest}
"""
)

# KEYS[7]: the release marker. ARGV: client, token, limit, cap, tag, ticket ms,
# marker ms, "1" to return the oldest holder's label.
# Gives back the permit (compare-and-delete by token) and leaves the queue, then
# wakes the waiters that may take a permit now. Returns {released, oldest label or
# false}: released is 1 if the permit was held, or was released by an earlier try.
_RELEASE: Final = (
    _COMMON
    + """
local now = now_ms()
sweep(now)
local token = ARGV[2]
local released = 0
if redis.call('ZREM', KEYS[1], token) == 1 then
  redis.call('HDEL', KEYS[2], token)
  redis.call('SET', KEYS[7], '1', 'PX', ARGV[7])
  released = 1
else
  released = redis.call('EXISTS', KEYS[7])
end
forget(ARGV[1] .. ':' .. token)
local cap = tonumber(ARGV[4])
wake(tonumber(ARGV[3]) - redis.call('ZCARD', KEYS[1]), cap, ARGV[5], tonumber(ARGV[6]))
local oldest, lowest = false, nil
if ARGV[8] == '1' then
  for _, value in ipairs(redis.call('HVALS', KEYS[2])) do
    local fence, label = string.match(value, '^(%d+):(.*)$')
    if fence and (lowest == nil or tonumber(fence) < lowest) then
      oldest, lowest = label, tonumber(fence)
    end
  end
end
return {released, oldest}
"""
)

# KEYS[1]: permits. ARGV: token, lease ms. Extends a live permit; never the fence.
_RENEW: Final = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local expiry = redis.call('ZSCORE', KEYS[1], ARGV[1])
if expiry and tonumber(expiry) > now then
  redis.call('ZADD', KEYS[1], string.format('%d', now + tonumber(ARGV[2])), ARGV[1])
  return 1
end
return 0
"""

# KEYS[1..2]: permits, owners. Returns the "<fence>:<label>" of each live permit.
_HOLDERS: Final = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local out = {}
for _, token in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. now, '+inf')) do
  out[#out + 1] = redis.call('HGET', KEYS[2], token) or '0:'
end
return out
"""
