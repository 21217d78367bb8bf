"""Parking: anonymous events wait in Redis until their visitor is known.

An event of a visitor nobody knows yet would create an orphan profile in Klaviyo that never
merges, so it waits here under the visitor's anonymous id and is released (with its original
``time`` and ``unique_id``) once the visitor is known. The Lua scripts live here for now; they
move with the key names to the delivery package later.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

import redis

__all__ = ["Parking"]

log = logging.getLogger(__name__)

# KEYS: list, index (zset anonymous id -> expiry), counts (hash), stats (hash)
# ARGV: anonymous id, max events, ttl seconds, now, key prefix, events...
_PARK = """
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

# KEYS: list, index, counts, stats; ARGV: anonymous id
_TAKE = """
local items = redis.call('LRANGE', KEYS[1], 0, -1)
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('HDEL', KEYS[3], ARGV[1])
if #items > 0 then redis.call('HINCRBY', KEYS[4], 'released', #items) end
return items
"""

# KEYS: index, counts, stats; ARGV: now, key prefix
_SWEEP = """
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


class Parking:
    """Per-visitor lists of anonymous events in Redis: bounded, expiring, counted.

    ``klaviyo:parked:<anonymous id>`` holds a visitor's events (JSON, oldest first), at most
    ``max_events`` (the oldest are dropped and counted) and expiring ``ttl`` seconds after the
    last write. ``klaviyo:parked:stats`` counts ``parked``, ``released``, ``dropped`` (over the
    cap) and ``expired`` (reached the TTL unreleased; counted lazily, by the next park or
    :meth:`stats`, through an index of expiry times). Each call is one atomic Lua script: one
    round trip. The scripts name keys built from the prefix, so they need a single Redis (not
    Redis Cluster).
    """

    PREFIX = "klaviyo:parked:"
    INDEX_KEY = "klaviyo:parked-index"
    COUNTS_KEY = "klaviyo:parked-counts"
    STATS_KEY = "klaviyo:parked-stats"

    def __init__(self, connection: redis.Redis, *, max_events: int = 50, ttl: int = 2592000):
        self.connection = connection
        self.max_events = max_events
        self.ttl = ttl

    def key(self, anonymous_id: str) -> str:
        return self.PREFIX + anonymous_id

    def park(self, anonymous_id: str, events: Sequence[Mapping[str, Any]]) -> int:
        """Append ``events`` (``Event.to_dict()`` forms); returns how many the visitor has."""
        if not events:
            return self.count(anonymous_id)
        payloads = [json.dumps(dict(e), default=str, separators=(",", ":")) for e in events]
        script = self.connection.register_script(_PARK)
        keys = [self.key(anonymous_id), self.INDEX_KEY, self.COUNTS_KEY, self.STATS_KEY]
        args = [anonymous_id, self.max_events, self.ttl, int(time.time()), self.PREFIX]
        return int(script(keys=keys, args=[*args, *payloads]))

    def take(self, anonymous_id: str) -> list[dict[str, Any]]:
        """Remove and return the visitor's parked events (atomically: one request gets them)."""
        script = self.connection.register_script(_TAKE)
        keys = [self.key(anonymous_id), self.INDEX_KEY, self.COUNTS_KEY, self.STATS_KEY]
        events = []
        for raw in script(keys=keys, args=[anonymous_id]):
            try:
                events.append(json.loads(raw))
            except ValueError:
                log.error("klaviyo: a parked event of %s was not JSON; dropped", anonymous_id)
        return events

    def count(self, anonymous_id: str) -> int:
        return int(self.connection.llen(self.key(anonymous_id)))

    def stats(self, *, now: float | None = None) -> dict[str, int]:
        """Counters, after accounting for visitors whose events expired; ``waiting`` is now."""
        sweep = self.connection.register_script(_SWEEP)
        when = int(time.time() if now is None else now)
        sweep(keys=[self.INDEX_KEY, self.COUNTS_KEY, self.STATS_KEY], args=[when, self.PREFIX])
        raw = self.connection.hgetall(self.STATS_KEY)
        stats = {name: 0 for name in ("parked", "released", "dropped", "expired")}
        stats.update({k.decode(): int(v) for k, v in raw.items()})
        stats["visitors"] = int(self.connection.hlen(self.COUNTS_KEY))
        stats["waiting"] = sum(int(v) for v in self.connection.hvals(self.COUNTS_KEY))
        return stats
