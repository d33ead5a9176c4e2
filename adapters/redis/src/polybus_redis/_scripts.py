"""The Lua scripts the adapter runs on Redis, each atomic and one round trip.

Every script takes the stream key as ``KEYS[1]`` (and the due-time hash as ``KEYS[2]`` where it
needs it), so that both land in one slot on a cluster. Imports nothing from polybus.

- ``ENSURE``: create an empty stream if the key is missing; refuse a key of another type.
- ``CLAIM``: ``XAUTOCLAIM`` entries idle longer than the visibility timeout (abandoned by a dead
  consumer, handed back by a closing one, or nacked), with their delivery counts; entries nacked
  with a delay longer than the visibility timeout are parked again until their due time.
- ``MOVE``: hand entries this consumer still owns to another consumer name with a given idle
  time (nack, release, and refreshing what a live consumer holds).
- ``HISTORY``: read this consumer's own pending entries (a restart under the same name).
- ``LEAVE``: delete the consumer from its group once it owns nothing.
- ``TRIM``: trim to about ``max_len`` entries, never past an entry some group has not acked.
- ``STATS``: length, and per group the pending, lag and parked counts.
"""

from __future__ import annotations

import hashlib
from typing import Any

__all__ = ["CLAIM", "ENSURE", "HISTORY", "LEAVE", "MOVE", "SCRIPTS", "STATS", "TRIM", "Script"]


class Script:
    """A Lua script, called by its SHA1 (loaded into the server's script cache when connecting)."""

    def __init__(self, name: str, text: str) -> None:
        self.name = name
        self.text = text
        self.sha = hashlib.sha1(text.encode(), usedforsecurity=False).hexdigest()

    def __repr__(self) -> str:
        return f"<Script {self.name}>"

    def command(self, keys: list[Any], args: list[Any]) -> list[Any]:
        """The ``EVALSHA`` command running this script."""
        return ["EVALSHA", self.sha, len(keys), *keys, *args]


ENSURE = Script(
    "ensure",
    """
local t = redis.call('TYPE', KEYS[1])['ok']
if t == 'none' then
  redis.call('XGROUP', 'CREATE', KEYS[1], 'polybus-ensure', '$', 'MKSTREAM')
  redis.call('XGROUP', 'DESTROY', KEYS[1], 'polybus-ensure')
  return 1
elseif t ~= 'stream' then
  return redis.error_reply('WRONGTYPE key ' .. KEYS[1] .. ' holds a ' .. t .. ', not a stream')
end
return 0
""",
)

_NOW = """
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
"""

CLAIM = Script(
    "claim",
    _NOW
    + """
-- KEYS: stream, due-hash   ARGV: group, me, parked, visibility ms, count, cursor
local stream, due = KEYS[1], KEYS[2]
local group, me, parked = ARGV[1], ARGV[2], ARGV[3]
local vt, want, cursor = tonumber(ARGV[4]), tonumber(ARGV[5]), ARGV[6]
local check_due = redis.call('EXISTS', due) == 1
local now = 0
if check_due then now = now_ms() end
local out = {}
for _ = 1, 8 do
  local res = redis.call('XAUTOCLAIM', stream, group, me, vt, cursor, 'COUNT', want - #out)
  cursor = res[1]
  for _, e in ipairs(res[2]) do
    if type(e) == 'table' and e[2] then
      local id = e[1]
      local p = redis.call('XPENDING', stream, group, id, id, 1)
      local n = 1
      if p[1] then n = p[1][4] end
      local field = group .. '/' .. id
      local d = false
      if check_due then d = redis.call('HGET', due, field) end
      if d and tonumber(d) > now then
        local idle = vt - (tonumber(d) - now)
        if idle < 0 then idle = 0 end
        redis.call('XCLAIM', stream, group, parked, 0, id, 'IDLE', idle, 'RETRYCOUNT', n - 1, 'JUSTID')
      else
        if d then redis.call('HDEL', due, field) end
        out[#out + 1] = {id, e[2], n}
      end
    end
  end
  if #out >= want or cursor == '0-0' then break end
end
return {cursor, out}
""",
)

MOVE = Script(
    "move",
    _NOW
    + """
-- KEYS: stream, due-hash   ARGV: group, me, target, idle ms, due-in ms or '', ids...
local stream, due = KEYS[1], KEYS[2]
local group, me, target, idle, due_in = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local due_at = false
if due_in ~= '' then due_at = now_ms() + tonumber(due_in) end
local moved = 0
for i = 6, #ARGV do
  local id = ARGV[i]
  local p = redis.call('XPENDING', stream, group, id, id, 1)
  if p[1] and p[1][2] == me then
    redis.call('XCLAIM', stream, group, target, 0, id, 'IDLE', idle, 'JUSTID')
    if due_at then redis.call('HSET', due, group .. '/' .. id, string.format('%d', due_at)) end
    moved = moved + 1
  end
end
return moved
""",
)

HISTORY = Script(
    "history",
    """
-- KEYS: stream   ARGV: group, me, count, after-id
local stream, group = KEYS[1], ARGV[1]
local r = redis.call('XREADGROUP', 'GROUP', group, ARGV[2], 'COUNT', ARGV[3], 'STREAMS', stream, ARGV[4])
local out = {}
local last = ''
if r and r[1] then
  for _, e in ipairs(r[1][2]) do
    local id = e[1]
    last = id
    if e[2] then
      local p = redis.call('XPENDING', stream, group, id, id, 1)
      local n = 1
      if p[1] then n = p[1][4] end
      out[#out + 1] = {id, e[2], n}
    else
      redis.call('XACK', stream, group, id)  -- trimmed away: nothing left to deliver
    end
  end
end
return {last, out}
""",
)

LEAVE = Script(
    "leave",
    """
-- KEYS: stream   ARGV: group, me
local s = redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', 1, ARGV[2])
if #s == 0 then
  redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[2])
  return 1
end
return 0
""",
)

_IDS = """
local function parse(id)
  local ms, seq = string.match(id, '^(%d+)-(%d+)$')
  return tonumber(ms), tonumber(seq)
end
local function less(a, b)
  local am, as = parse(a)
  local bm, bs = parse(b)
  return am < bm or (am == bm and as < bs)
end
"""

TRIM = Script(
    "trim",
    _IDS
    + """
-- KEYS: stream   ARGV: max length, most entries to trim in one call
local stream = KEYS[1]
local len = redis.call('XLEN', stream)
local maxlen = tonumber(ARGV[1])
if len <= maxlen then return 0 end
local excess = math.min(len - maxlen, tonumber(ARGV[2]))
local r = redis.call('XRANGE', stream, '-', '+', 'COUNT', excess + 1)
local cut = r[#r][1]
for _, g in ipairs(redis.call('XINFO', 'GROUPS', stream)) do
  local info = {}
  for i = 1, #g, 2 do info[g[i]] = g[i + 1] end
  local bound
  if tonumber(info['pending']) > 0 then
    bound = redis.call('XPENDING', stream, info['name'])[2]
  else
    local ms, seq = string.match(info['last-delivered-id'], '^(%d+)-(%d+)$')
    bound = ms .. '-' .. string.format('%d', tonumber(seq) + 1)
  end
  if less(bound, cut) then cut = bound end
end
return redis.call('XTRIM', stream, 'MINID', '~', cut)
""",
)

STATS = Script(
    "stats",
    """
-- KEYS: stream   ARGV: parked consumer name
local stream = KEYS[1]
if redis.call('EXISTS', stream) == 0 then return false end
local out = {redis.call('XLEN', stream)}
for _, g in ipairs(redis.call('XINFO', 'GROUPS', stream)) do
  local info = {}
  for i = 1, #g, 2 do info[g[i]] = g[i + 1] end
  local parked = 0
  if tonumber(info['pending']) > 0 then
    for _, c in ipairs(redis.call('XPENDING', stream, info['name'])[4]) do
      if c[1] == ARGV[1] then parked = tonumber(c[2]) end
    end
  end
  local lag = info['lag']
  if not lag then lag = -1 end
  out[#out + 1] = {info['name'], info['pending'], lag, parked}
end
return out
""",
)

SCRIPTS = (ENSURE, CLAIM, MOVE, HISTORY, LEAVE, TRIM, STATS)
"""Loaded with ``SCRIPT LOAD`` on connecting (and again after a ``NOSCRIPT`` reply)."""
