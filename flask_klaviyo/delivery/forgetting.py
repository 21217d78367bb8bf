"""Forgetting a person locally: nothing queued for them is sent, and for a while nothing queued
for them later either (an event in flight re-creating a deleted profile is a privacy bug).

A forgotten person is kept as a digest of each identifier (never the address itself) with the
time until which anything for them is refused. :func:`purge` drops what waits now (outbox
entries, parked events, dead letters, the spool); the drain asks :func:`forgotten_entries` of
every batch, so what a request queues afterwards, or a spool replays, is dropped before sending.
The deletion request itself (``profile_deletion``) is the one thing still sent.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from . import keys
from .keys import CONSUMER_GROUP
from .spool import Spool

__all__ = ["DELETION_KIND", "Purged", "digest", "forgotten_entries", "identifiers_of", "purge"]

log = logging.getLogger(__name__)

DELETION_KIND = "profile_deletion"
_SALT = b"flask-klaviyo.forget:"
_SCAN = 500  # stream entries read per round trip while purging


def digest(identifier: str) -> str:
    """How a forgotten identifier is kept (lower-cased, salted, hashed)."""
    return hashlib.sha256(_SALT + identifier.strip().lower().encode()).hexdigest()[:32]


def identifiers_of(entry: Mapping[str, Any]) -> set[str]:
    """The emails and phone numbers a stored event or operation is about."""
    found: set[str] = set()
    places: list[Any] = [entry.get("profile")]
    payload = entry.get("payload")
    if isinstance(payload, Mapping):
        places += [payload, payload.get("attributes"), payload.get("profile")]
        found.update(str(payload[key]) for key in ("old_email", "new_email") if payload.get(key))
    for place in places:
        if isinstance(place, Mapping):
            found.update(str(place[key]) for key in ("email", "phone_number") if place.get(key))
    return {identifier.strip().lower() for identifier in found}


def _about(entry: Mapping[str, Any], digests: set[str]) -> bool:
    if entry.get("op") == DELETION_KIND:
        return False
    return any(digest(identifier) in digests for identifier in identifiers_of(entry))


@dataclass
class Purged:
    outbox: int = 0
    parked: int = 0
    dead_letters: int = 0
    spool: int = 0


def purge(
    connection: Any,
    identifiers: Iterable[str],
    *,
    hold: float,
    streams: Sequence[str],
    spool: Spool | None = None,
    anonymous_ids: Sequence[str] = (),
) -> Purged:
    """Remember the person for ``hold`` seconds and drop everything waiting for them."""
    digests = {digest(identifier) for identifier in identifiers}
    until = time.time() + hold
    pipe = connection.pipeline(transaction=False)
    for value in digests:
        pipe.hset(keys.FORGOTTEN, value, until)
    pipe.execute()
    _prune(connection)
    purged = Purged()
    for stream in streams:
        purged.outbox += _purge_stream(connection, stream, digests)
    for anonymous_id in anonymous_ids:
        purged.parked += int(connection.llen(keys.PARKED_PREFIX + anonymous_id))
        pipe = connection.pipeline(transaction=False)
        pipe.delete(keys.PARKED_PREFIX + anonymous_id)
        pipe.hdel(keys.PARKED_COUNTS, anonymous_id)
        pipe.zrem(keys.PARKED_INDEX, anonymous_id)
        pipe.execute()
    for record_id, raw in connection.hgetall(keys.DEAD_LETTERS).items():
        record = json.loads(raw)
        entry = record.get("operation") or record.get("event") or {}
        if _about(entry, digests):
            connection.hdel(keys.DEAD_LETTERS, record_id)
            purged.dead_letters += 1
    if spool is not None:
        purged.spool = spool.discard(lambda entry: _about(entry, digests))
    log.info("klaviyo: forgotten locally: %s", purged)
    return purged


def _purge_stream(connection: Any, stream: str, digests: set[str]) -> int:
    dropped = 0
    start = "-"
    while True:
        rows = connection.xrange(stream, min=start, count=_SCAN)
        doomed = [
            entry_id for entry_id, fields in rows if _about(json.loads(fields[b"e"]), digests)
        ]
        if doomed:
            pipe = connection.pipeline(transaction=False)
            pipe.xack(stream, CONSUMER_GROUP, *doomed)
            pipe.xdel(stream, *doomed)
            pipe.execute()
            dropped += len(doomed)
        if len(rows) < _SCAN:
            return dropped
        start = "(" + rows[-1][0].decode()


def _prune(connection: Any) -> None:
    now = time.time()
    stale = [k for k, until in connection.hgetall(keys.FORGOTTEN).items() if float(until) < now]
    if stale:
        connection.hdel(keys.FORGOTTEN, *stale)


def forgotten_entries(connection: Any, items: Sequence[Mapping[str, Any]]) -> set[int]:
    """The indexes of ``items`` about someone forgotten (one EXISTS when nobody is)."""
    if connection is None or not connection.exists(keys.FORGOTTEN):
        return set()
    wanted = {
        index: [digest(identifier) for identifier in identifiers_of(item)]
        for index, item in enumerate(items)
        if item.get("op") != DELETION_KIND
    }
    values = sorted({value for digests in wanted.values() for value in digests})
    if not values:
        return set()
    now = time.time()
    held = {
        value
        for value, until in zip(values, connection.hmget(keys.FORGOTTEN, values), strict=True)
        if until is not None and float(until) >= now
    }
    return {index for index, digests in wanted.items() if held.intersection(digests)}
