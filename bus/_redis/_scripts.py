"""Lua scripts for the steps that must be atomic on Redis 7.0 (no XACKDEL, no IDMP there)."""

from __future__ import annotations

__all__ = ["COMPARE_AND_SET", "COMPLETE", "RECLAIM", "TOUCH"]

TOUCH = """
-- KEYS[1] stream; ARGV: group, consumer, idle_ms, ids...
-- Reset (or raise) the idle time of entries, but only those the consumer still owns: a bare
-- XCLAIM ... JUSTID would steal an entry another consumer has reclaimed meanwhile.
local owned = {}
for i = 4, #ARGV do
  local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1)
  if p[1] and p[1][2] == ARGV[2] then
    redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[i], 'IDLE', ARGV[3], 'JUSTID')
    owned[#owned + 1] = ARGV[i]
  end
end
return owned
"""

RECLAIM = """
-- KEYS[1] stream; ARGV: group, consumer, min_idle_ms, start, count, kept ids...
-- XAUTOCLAIM, after making the consumer's own kept entries fresh in the same atomic step: a pass
-- that runs late (its event loop starved past the idle limit) cannot claim work still running here.
for i = 6, #ARGV do
  local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1)
  if p[1] and p[1][2] == ARGV[2] then
    redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[i], 'IDLE', 0, 'JUSTID')
  end
end
return redis.call('XAUTOCLAIM', KEYS[1], ARGV[1], ARGV[2], ARGV[3], ARGV[4], 'COUNT', ARGV[5])
"""

COMPLETE = """
-- KEYS[1] stream, KEYS[2] result key, KEYS[3] reply stream
-- ARGV: group, entry_id, result, result_ttl_ms, reply_maxlen, reply_ttl_ms, reply fields...
-- Store the result only if no one has; publish the reply only if we stored it; always ack.
local stored = redis.call('SET', KEYS[2], ARGV[3], 'NX', 'PX', ARGV[4])
if stored then
  local fields = {}
  for i = 7, #ARGV do fields[#fields + 1] = ARGV[i] end
  redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[5], '*', unpack(fields))
  redis.call('PEXPIRE', KEYS[3], ARGV[6])
  redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
  return {1}
end
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
return {0, redis.call('GET', KEYS[2])}
"""

COMPARE_AND_SET = """
-- KEYS[1] key; ARGV: expect_absent (1/0), expected, delete (1/0), value, ttl_ms (0: none)
-- GET then SET/DEL as one step, so a lease is only renewed or released by its holder.
local current = redis.call('GET', KEYS[1])
if ARGV[1] == '1' then
  if current then return 0 end
elseif current ~= ARGV[2] then
  return 0
end
if ARGV[3] == '1' then
  redis.call('DEL', KEYS[1])
elseif ARGV[5] ~= '0' then
  redis.call('SET', KEYS[1], ARGV[4], 'PX', ARGV[5])
else
  redis.call('SET', KEYS[1], ARGV[4])
end
return 1
"""
