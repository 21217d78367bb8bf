"""Every Lua script the extension runs in Redis, with its KEYS and ARGV.

Scripts make a multi-step change atomic (a request's operations and the drain flag; a rate-limit
slot in every window at once, with Klaviyo's word on what is left) and save round trips. Each is
a module constant; callers register it with ``connection.register_script`` (EVALSHA, falling
back to EVAL after a flush).
"""

from __future__ import annotations

import hashlib

__all__ = [
    "ADD_DRAIN",
    "BACKFILL_PUSH",
    "KEEP_DRAIN",
    "PARK",
    "PUSH",
    "PUSH_COUNTED",
    "PUSH_JOURNALED",
    "RATE_ACQUIRE",
    "RATE_BLOCK",
    "SWEEP_PARKED",
    "TAKE_PARKED",
    "TAKE_PARKED_JOURNALED",
    "sha",
    "source_of",
]

# The inspector's journal, a Lua function the journaled scripts below start with.
# Its KEYS: [..., journal list, minute hash] at positions ``jl`` and ``jl + 1``; ``records`` are
# JSON strings and ``fields`` the minute hash's counters, one per record; ``max`` records are
# kept (newest first), the list lives ``ttl`` seconds after its last write, the minute ``mttl``.
_JOURNAL = """
local function journal(jl, records, fields, max, ttl, mttl)
  if #records == 0 then return end
  for i = 1, #records do
    redis.call('LPUSH', KEYS[jl], records[i])
    redis.call('HINCRBY', KEYS[jl + 1], fields[i], 1)
  end
  redis.call('LTRIM', KEYS[jl], 0, tonumber(max) - 1)
  redis.call('EXPIRE', KEYS[jl], ttl)
  redis.call('EXPIRE', KEYS[jl + 1], mttl)
end
"""

# The outbox push. KEYS: [stream, drain-scheduled flag]; ARGV: [flag TTL, entry JSON...]
# (an entry is an event's or an operation's JSON, stored in the field ``e``).
# All of a request's events land together (a drain never reads between two of them); returns 1
# when the flag was newly set, i.e. no drain is scheduled and the caller must enqueue one.
PUSH = """
for i = 2, #ARGV do redis.call('XADD', KEYS[1], '*', 'e', ARGV[i]) end
if redis.call('SET', KEYS[2], '1', 'NX', 'EX', ARGV[1]) then return 1 end
return 0
"""

# The outbox push while the inspector is on: PUSH plus one journal record per entry, in the
# same round trip. KEYS: [stream, flag, journal list, minute hash(, metrics hash)]
# ARGV: [flag TTL, entry count n, journal max, journal ttl, minute ttl, n entries, n records,
# n counter fields(, n metrics fields)]: with KLAVIYO_METRICS on too, the fifth key's fields
# (``queued|kind|metric``, see PUSH_COUNTED) count up. Returns what PUSH returns.
PUSH_JOURNALED = (
    _JOURNAL
    + """
local n = tonumber(ARGV[2])
local records, fields = {}, {}
for i = 6, 5 + n do
  redis.call('XADD', KEYS[1], '*', 'e', ARGV[i])
  records[#records + 1] = ARGV[i + n]
  fields[#fields + 1] = ARGV[i + 2 * n]
end
journal(3, records, fields, ARGV[3], ARGV[4], ARGV[5])
if KEYS[5] then
  for i = 6 + 3 * n, 5 + 4 * n do redis.call('HINCRBY', KEYS[5], ARGV[i], 1) end
end
if redis.call('SET', KEYS[2], '1', 'NX', 'EX', ARGV[1]) then return 1 end
return 0
"""
)

# The outbox push while KLAVIYO_METRICS is on: PUSH plus one Prometheus counter per entry.
# KEYS: [stream, flag, metrics hash]; ARGV: [flag TTL, entry count n, n entries, n fields]
# (a field names what an entry is: ``queued|kind|metric``). Returns what PUSH returns.
PUSH_COUNTED = """
local n = tonumber(ARGV[2])
for i = 3, 2 + n do
  redis.call('XADD', KEYS[1], '*', 'e', ARGV[i])
  redis.call('HINCRBY', KEYS[3], ARGV[i + n], 1)
end
if redis.call('SET', KEYS[2], '1', 'NX', 'EX', ARGV[1]) then return 1 end
return 0
"""

# A backfill's chunk and its checkpoint, atomically: a run stopped anywhere resumes exactly after
# the last chunk that reached the outbox (nothing twice, nothing skipped).
# KEYS: [stream, drain-scheduled flag, checkpoint hash, rejected list]
# ARGV: [flag TTL, position, rejected kept at most, counter count C, reason count R,
#        C pairs (counter field, increment), R rejected-record JSONs, entry JSON...]
# Returns {1 when entries were added and the flag newly set (the caller enqueues a drain), else
# 0; the first entry's id, or ""}.
BACKFILL_PUSH = """
local c, r = tonumber(ARGV[4]), tonumber(ARGV[5])
local i = 6
for _ = 1, c do
  redis.call('HINCRBY', KEYS[3], ARGV[i], ARGV[i + 1])
  i = i + 2
end
for _ = 1, r do
  redis.call('RPUSH', KEYS[4], ARGV[i])
  i = i + 1
end
if r > 0 then redis.call('LTRIM', KEYS[4], 0, tonumber(ARGV[3]) - 1) end
redis.call('HSET', KEYS[3], 'position', ARGV[2])
local first = ''
for j = i, #ARGV do
  local id = redis.call('XADD', KEYS[1], '*', 'e', ARGV[j])
  if j == i then first = id end
end
if #ARGV >= i and redis.call('SET', KEYS[2], '1', 'NX', 'EX', ARGV[1]) then return {1, first} end
return {0, first}
"""

# KEYS: [drains zset, stream]; ARGV: [concurrency, lease seconds, new member, group]
# Reserves a place for one more drain when fewer than ``concurrency`` hold a live lease and some
# entries were never handed to any drain. Returns 1 when reserved.
ADD_DRAIN = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[1]) then return 0 end
local ok, pending = pcall(redis.call, 'XPENDING', KEYS[2], ARGV[4])
if not ok then return 0 end
if redis.call('XLEN', KEYS[2]) - tonumber(pending[1]) <= 0 then return 0 end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[3])
redis.call('EXPIRE', KEYS[1], math.ceil(tonumber(ARGV[2])) * 2)
return 1
"""

# KEYS: [drains zset]; ARGV: [lease seconds, member]: (re)new one drain's lease.
KEEP_DRAIN = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[1]), ARGV[2])
redis.call('EXPIRE', KEYS[1], math.ceil(tonumber(ARGV[1])) * 2)
return 1
"""

# The rate limiter's acquire, Klaviyo's model: fixed windows. KEYS: [blocked-until, last-send,
# the steady window (a hash), the bulk-work mark, a log per other window (a list, newest first)...]
# ARGV: [cost, pace, want-pace (0/1), dry-run (0/1), steady limit, steady period, spread,
#        Klaviyo's word (0/1), its window id, its RateLimit-Remaining, its RateLimit-Reset, its
#        age in seconds, bulk reserve (slots), (limit, span, kept back) per other window...]
# Returns {seconds to wait as a string ("0": a slot was taken, or would be on a dry run), the id
# of the steady window}.
# The steady window is a fixed window like Klaviyo's: ``ours`` counts the slots taken, ``others``
# what Klaviyo's RateLimit-Remaining says was spent beyond them (other integrations on the
# account), ``prev`` what others spent of the window before (-1: unknown, that window was not
# synced or not the one just before), and ``end`` comes from RateLimit-Reset (the earliest end
# Klaviyo's answers allow, so never before Klaviyo's own). Klaviyo's word is applied only to the
# window it was answered in.
# Inside the window the last ``paced`` slots are spread: a slot is taken while what is left
# after it, plus ``ahead`` slots, covers the rest of the window at ``paced`` slots a window; the
# rest go at the burst rate. Normally ``paced`` is the whole limit and ``ahead`` the spread (a
# fresh window lets ``spread`` go at once, the last slot goes ``spread`` slots before the end:
# never all of it in a burst at the start). Bulk work (the mark is set) in a window Klaviyo has
# confirmed (``synced``: its phase and what others spent are Klaviyo's word): ``paced`` is only
# the reserve left to other integrations (twice what they spent of this window or the last, at
# least the bulk reserve; half the window while what they spent of the last is unknown) and
# ``ahead`` the slot itself, so the rest of the budget goes at the burst rate, the reserve evenly
# over the window
# (its last slot one reserve interval before the end); and while others spend, each shorter
# window keeps back its ``kept back`` slots for them (its burst is theirs too).
# Other windows (the burst; a daily one) are kept as a log of the last ``limit`` slots: no
# ``span`` (the window's period plus a margin) holds more than ``limit`` of them, whatever phase
# Klaviyo's own window has.
RATE_ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local cost = tonumber(ARGV[1])
local pace = tonumber(ARGV[2])
local limit = tonumber(ARGV[5])
local period = tonumber(ARGV[6])
local spread = tonumber(ARGV[7])
local w = redis.call('HMGET', KEYS[3], 'id', 'end', 'ours', 'others', 'synced', 'prev')
local id = w[1] or ''
local wend = tonumber(w[2] or '0')
local ours = tonumber(w[3] or '0')
local others = tonumber(w[4] or '0')
local synced = w[5] == '1'
local prev = tonumber(w[6] or '-1')
local changed = false
if ARGV[8] == '1' and ARGV[9] == id and wend > now then
  local said_end = now - tonumber(ARGV[12]) + tonumber(ARGV[11])
  if (not synced) or said_end < wend then wend = said_end end
  synced = true
  local spent = limit - tonumber(ARGV[10])
  if spent - ours > others then others = spent - ours end
  changed = true
end
if wend <= now then
  if synced and wend > now - period then prev = others else prev = -1 end
  id = string.format('%.6f', now)
  wend = now + period
  ours = 0
  others = 0
  synced = false
  changed = true
end
local wait = 0
local blocked = tonumber(redis.call('GET', KEYS[1]) or '0')
if blocked > now then wait = blocked - now end
if ARGV[3] == '1' and pace > 0 then
  local last = tonumber(redis.call('GET', KEYS[2]) or '0')
  if last + pace - now > wait then wait = last + pace - now end
end
local left = limit - ours - others
local bulk = synced and redis.call('EXISTS', KEYS[4]) == 1
local sharing = bulk and (others > 0 or prev > 0)
if cost > left then
  if wend - now > wait then wait = wend - now end
else
  local paced, ahead = limit, spread
  if bulk then
    paced = math.max(tonumber(ARGV[13]), 2 * math.max(others, prev))
    if prev < 0 and paced < limit / 2 then paced = math.ceil(limit / 2) end
    if paced > limit then paced = limit end
    ahead = cost
  end
  local allow_at = wend - (left - cost + ahead) * period / paced
  if allow_at - now > wait then wait = allow_at - now end
end
for i = 5, #KEYS do
  local wlimit = tonumber(ARGV[14 + 3 * (i - 5)])
  local span = tonumber(ARGV[15 + 3 * (i - 5)])
  if sharing then wlimit = math.max(cost, wlimit - tonumber(ARGV[16 + 3 * (i - 5)])) end
  local oldest = redis.call('LINDEX', KEYS[i], wlimit - cost)
  if oldest then
    local at = tonumber(oldest) + span
    if at - now > wait then wait = at - now end
  end
end
local ttl = math.ceil((wend - now + period) * 1000)
if wait > 0 or ARGV[4] == '1' then
  if changed then
    redis.call('HSET', KEYS[3], 'id', id, 'end', tostring(wend), 'ours', ours,
      'others', others, 'synced', synced and '1' or '0', 'prev', prev)
    redis.call('PEXPIRE', KEYS[3], ttl)
  end
  return {tostring(wait), id}
end
redis.call('HSET', KEYS[3], 'id', id, 'end', tostring(wend), 'ours', ours + cost,
  'others', others, 'synced', synced and '1' or '0', 'prev', prev)
redis.call('PEXPIRE', KEYS[3], ttl)
for i = 5, #KEYS do
  local wlimit = tonumber(ARGV[14 + 3 * (i - 5)])
  local span = tonumber(ARGV[15 + 3 * (i - 5)])
  for _ = 1, cost do redis.call('LPUSH', KEYS[i], tostring(now)) end
  redis.call('LTRIM', KEYS[i], 0, wlimit - 1)
  redis.call('PEXPIRE', KEYS[i], math.ceil(span * 1000) + 1000)
end
if pace > 0 then
  redis.call('SET', KEYS[2], tostring(now), 'PX', math.ceil(pace * 1000) + 1000)
end
return {'0', id}
"""

# The rate limiter's block. KEYS: [blocked-until]; ARGV: [seconds]: everyone waits that long
# (a later "until" than the one stored wins). Returns the new "until" as a string.
RATE_BLOCK = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local until_ = now + tonumber(ARGV[1])
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
if until_ > current then
  redis.call('SET', KEYS[1], tostring(until_), 'PX', math.ceil(tonumber(ARGV[1]) * 1000) + 1000)
end
return tostring(until_)
"""

# Parking: append a visitor's events (bounded, expiring), counting expired visitors on the way.
# KEYS: list, index (zset anonymous id -> expiry), counts (hash), stats (hash)
# ARGV: anonymous id, max events, ttl seconds, now, key prefix, events...
PARK = """
local now = tonumber(ARGV[4])
local expired = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, 100)
for _, anon in ipairs(expired) do
  if redis.call('EXISTS', ARGV[5] .. anon) == 0 then
    local n = tonumber(redis.call('HGET', KEYS[3], anon) or '0')
    if n > 0 then redis.call('HINCRBY', KEYS[4], 'expired', n) end
    redis.call('HDEL', KEYS[3], anon)
    redis.call('ZREM', KEYS[2], anon)
  end
end
local added = #ARGV - 5
for i = 6, #ARGV do redis.call('RPUSH', KEYS[1], ARGV[i]) end
local len = redis.call('LLEN', KEYS[1])
local limit = tonumber(ARGV[2])
if len > limit then
  redis.call('LTRIM', KEYS[1], len - limit, -1)
  redis.call('HINCRBY', KEYS[4], 'dropped', len - limit)
  len = limit
end
local ttl = tonumber(ARGV[3])
redis.call('EXPIRE', KEYS[1], ttl)
redis.call('ZADD', KEYS[2], now + ttl, ARGV[1])
redis.call('HSET', KEYS[3], ARGV[1], len)
redis.call('HINCRBY', KEYS[4], 'parked', added)
return len
"""

# Parking: remove and return a visitor's events, atomically (one request gets them).
# KEYS: list, index, counts, stats; ARGV: anonymous id
_TAKE = """
local items = redis.call('LRANGE', KEYS[1], 0, -1)
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('HDEL', KEYS[3], ARGV[1])
if #items > 0 then redis.call('HINCRBY', KEYS[4], 'released', #items) end
"""
TAKE_PARKED = _TAKE + "return items\n"

# TAKE_PARKED while the inspector is on: one "released" journal record per event taken, naming
# whom it was released to. KEYS: list, index, counts, stats, journal list, minute hash
# ARGV: anonymous id, released to, now, journal max, journal ttl, minute ttl
TAKE_PARKED_JOURNALED = (
    _JOURNAL
    + _TAKE
    + """
local records, fields = {}, {}
for _, raw in ipairs(items) do
  local ok, event = pcall(cjson.decode, raw)
  if ok and type(event) == 'table' then
    local metric = tostring(event['metric'])
    records[#records + 1] = cjson.encode({at = tonumber(ARGV[3]), stage = 'released',
      kind = 'event', what = metric, unique_id = event['unique_id'],
      anonymous_id = ARGV[1], to = ARGV[2]})
    fields[#fields + 1] = 'released|' .. metric
  end
end
journal(5, records, fields, ARGV[4], ARGV[5], ARGV[6])
return items
"""
)

# Parking: count visitors whose events expired unreleased.
# KEYS: index, counts, stats; ARGV: now, key prefix
SWEEP_PARKED = """
local expired = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', tonumber(ARGV[1]), 'LIMIT', 0, 1000)
for _, anon in ipairs(expired) do
  if redis.call('EXISTS', ARGV[2] .. anon) == 0 then
    local n = tonumber(redis.call('HGET', KEYS[2], anon) or '0')
    if n > 0 then redis.call('HINCRBY', KEYS[3], 'expired', n) end
    redis.call('HDEL', KEYS[2], anon)
    redis.call('ZREM', KEYS[1], anon)
  end
end
return #expired
"""


def sha(source: str) -> str:
    """The SHA1 Redis knows a script by (what EVALSHA names)."""
    return hashlib.sha1(source.encode()).hexdigest()


def source_of(digest: str) -> str:
    """The push script whose SHA1 is ``digest``: a flushed or restarted Redis forgot it, and
    the push is sent again with EVAL and the source."""
    for source in (PUSH, PUSH_JOURNALED, PUSH_COUNTED):
        if sha(source) == digest:
            return source
    raise LookupError(f"no push script has the SHA1 {digest}")
