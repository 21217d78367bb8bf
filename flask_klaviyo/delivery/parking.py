"""Parking: anonymous events wait in Redis until their visitor is known.

An event of a visitor nobody knows yet would create an orphan profile in Klaviyo that never
merges, so it waits here under the visitor's anonymous id and is released (with its original
``time`` and ``unique_id``) once the visitor is known.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import redis

from . import keys, scripts

if TYPE_CHECKING:
    from ..inspect.journal import Journal

__all__ = ["Parking"]

log = logging.getLogger(__name__)


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

    PREFIX = keys.PARKED_PREFIX
    INDEX_KEY = keys.PARKED_INDEX
    COUNTS_KEY = keys.PARKED_COUNTS
    STATS_KEY = keys.PARKED_STATS

    def __init__(
        self,
        connection: redis.Redis,
        *,
        max_events: int = 50,
        ttl: int = 2592000,
        journal: Journal | None = None,
    ):
        self.connection = connection
        self.max_events = max_events
        self.ttl = ttl
        self.journal = journal  # the inspector's (development only): parks and releases too

    def key(self, anonymous_id: str) -> str:
        return self.PREFIX + anonymous_id

    def park(self, anonymous_id: str, events: Sequence[Mapping[str, Any]]) -> int:
        """Append ``events`` (``Event.to_dict()`` forms); returns how many the visitor has."""
        if not events:
            return self.count(anonymous_id)
        payloads = [json.dumps(dict(e), default=str, separators=(",", ":")) for e in events]
        script = self.connection.register_script(scripts.PARK)
        cells = [self.key(anonymous_id), self.INDEX_KEY, self.COUNTS_KEY, self.STATS_KEY]
        args = [anonymous_id, self.max_events, self.ttl, int(time.time()), self.PREFIX]
        if self.journal is None:
            return int(script(keys=cells, args=[*args, *payloads]))
        pipe = self.connection.pipeline(transaction=False)  # the same round trip
        pipe.evalsha(script.sha, len(cells), *cells, *args, *payloads)
        records = [self.journal.record("parked", e, anonymous_id=anonymous_id) for e in events]
        self.journal.add(pipe, records)
        try:
            return int(pipe.execute()[0])
        except redis.exceptions.NoScriptError:  # a flushed Redis: journaled; now load and park
            return int(script(keys=cells, args=[*args, *payloads]))

    def take(self, anonymous_id: str, *, to: str | None = None) -> list[dict[str, Any]]:
        """Remove and return the visitor's parked events (atomically: one request gets them).
        ``to``: whom they are released to, for the inspector's journal."""
        cells = [self.key(anonymous_id), self.INDEX_KEY, self.COUNTS_KEY, self.STATS_KEY]
        args: list[Any] = [anonymous_id]
        if self.journal is None:
            script = self.connection.register_script(scripts.TAKE_PARKED)
        else:
            script = self.connection.register_script(scripts.TAKE_PARKED_JOURNALED)
            more_keys, args = self.journal.take_keys_args(anonymous_id, to or "")
            cells += more_keys
        events = []
        for raw in script(keys=cells, args=args):
            try:
                events.append(json.loads(raw))
            except ValueError:
                log.error("klaviyo: a parked event of %s was not JSON; dropped", anonymous_id)
        return events

    def count(self, anonymous_id: str) -> int:
        return int(self.connection.llen(self.key(anonymous_id)))

    def stats(self, *, now: float | None = None) -> dict[str, int]:
        """Counters, after accounting for visitors whose events expired; ``waiting`` is now."""
        sweep = self.connection.register_script(scripts.SWEEP_PARKED)
        when = int(time.time() if now is None else now)
        sweep(keys=[self.INDEX_KEY, self.COUNTS_KEY, self.STATS_KEY], args=[when, self.PREFIX])
        raw = self.connection.hgetall(self.STATS_KEY)
        stats = {name: 0 for name in ("parked", "released", "dropped", "expired")}
        stats.update({k.decode(): int(v) for k, v in raw.items()})
        stats["visitors"] = int(self.connection.hlen(self.COUNTS_KEY))
        stats["waiting"] = sum(int(v) for v in self.connection.hvals(self.COUNTS_KEY))
        return stats
