"""The inspector's journal: a bounded, expiring record in Redis of what the extension did.

Stages: ``queued`` (tracked, into the outbox), ``parked`` (an anonymous visitor's event waits),
``released`` (to whom, once the visitor is known), ``sent`` (Klaviyo's answer), ``dead`` (a dead
letter, with Klaviyo's error) and ``replayed``. Records ride on round trips delivery already
makes (the outbox push script, parking's scripts, the drain's acknowledgement) and are written
only while the inspector is on: with it off, none of this runs and production pays nothing.

``klaviyo:journal`` holds the newest ``JOURNAL_MAX`` records (JSON, newest first) for
``JOURNAL_TTL`` after the last write; ``klaviyo:journal:minute:<minute>`` counts
``stage|metric or kind`` per minute for the chart.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import logging
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

from .. import _settings
from ..delivery import keys, scripts
from ..exceptions import KlaviyoConfigError

__all__ = [
    "JOURNAL_MAX",
    "JOURNAL_TTL",
    "MINUTE_TTL",
    "STAGES",
    "Journal",
    "delivery_records",
    "describe",
    "inspector_on",
    "is_loopback_url",
]

log = logging.getLogger(__name__)

JOURNAL_MAX = 2000  # records kept, newest first
JOURNAL_TTL = 24 * 3600  # the journal goes a day after its last write
MINUTE_TTL = 2 * 3600  # a minute's counters go after two hours
STAGES = ("parked", "released", "queued", "sent", "dead", "replayed")
PUSH_JOURNALED_SHA = hashlib.sha1(scripts.PUSH_JOURNALED.encode()).hexdigest()

_compact = json.JSONEncoder(separators=(",", ":"), default=str).encode


def is_loopback_url(url: str) -> bool:
    """Whether ``url`` names this machine (the local stand-in), never a real Klaviyo."""
    host = urlsplit(url or "").hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def inspector_on(config: Mapping[str, Any]) -> bool:
    """``KLAVIYO_INSPECTOR``: ``"auto"`` is on only when ``KLAVIYO_API_URL`` is a loopback
    stand-in, so a production config (Klaviyo's URL) never has it by accident."""
    try:  # a string (config left unchecked while disabled) as the value it spells
        value = _settings.parse("KLAVIYO_INSPECTOR", config.get("KLAVIYO_INSPECTOR", "auto"))
    except KlaviyoConfigError:
        return False
    if value == "auto":
        return is_loopback_url(str(config.get("KLAVIYO_API_URL") or ""))
    return bool(value)


def _who(profile: Mapping[str, Any]) -> str | None:
    for key in ("email", "phone_number", "external_id"):
        if profile.get(key):
            return str(profile[key])
    return None


def describe(entry: Mapping[str, Any]) -> dict[str, Any]:
    """What the journal keeps of a stored entry (an event's or an operation's dict)."""
    kind = entry.get("op")
    if kind is not None:
        key = entry.get("key")
        payload = entry.get("payload") or {}
        who = next((p for p in str(key or "").split(" ") if "@" in p), None)
        if who is None and isinstance(payload, Mapping):
            who = _who(payload)
        return {"kind": str(kind), "what": str(kind), "key": key, "who": who}
    profile = entry.get("profile") or {}
    properties = entry.get("properties") or {}
    order = properties.get("OrderId") if isinstance(properties, Mapping) else None
    record = {
        "kind": "event",
        "what": str(entry.get("metric")),
        "unique_id": entry.get("unique_id"),
        "who": _who(profile),
        "anonymous_id": profile.get("anonymous_id"),
    }
    if order is not None:
        record["order"] = str(order)
    return record


EVENT_ENDPOINTS = ("create_event", "bulk_create_events")


def _identity(entry: Mapping[str, Any]) -> tuple[Any, ...]:
    """What tells stored entries apart: an event's metric and unique_id, an operation's key."""
    if "op" in entry:
        return (entry["op"], entry.get("key"))
    return (entry.get("metric"), entry.get("unique_id"))


def delivery_records(
    items: Sequence[Mapping[str, Any]],
    answers: Sequence[tuple[str, int]],
    deaths: Sequence[tuple[Mapping[str, Any], int | None, str]],
) -> list[dict[str, Any]]:
    """A drain's batch as ``sent`` records (the last answer of the endpoint that carried each
    item) or ``dead`` ones (the status and Klaviyo's error detail)."""
    dead = {_identity(entry): (status, detail) for entry, status, detail in deaths}
    events = [answer for answer in answers if answer[0] in EVENT_ENDPOINTS]
    others = [answer for answer in answers if answer[0] not in EVENT_ENDPOINTS]
    now = time.time()
    records = []
    for item in items:
        found = dead.get(_identity(item))
        if found is not None:
            status, detail = found
            records.append(Journal.record("dead", item, at=now, status=status, error=detail))
            continue
        carried = others if "op" in item else events
        endpoint, status = carried[-1] if carried else (None, None)
        records.append(Journal.record("sent", item, at=now, status=status, endpoint=endpoint))
    return records


def _field(record: Mapping[str, Any]) -> str:
    return f"{record['stage']}|{record['what']}"


class Journal:
    """Writes and reads the journal; every write piggybacks on a caller's round trip."""

    def __init__(
        self, connection: Any, *, max_records: int = JOURNAL_MAX, ttl: int = JOURNAL_TTL
    ) -> None:
        self.connection = connection
        self.max_records = max_records
        self.ttl = ttl

    @staticmethod
    def record(
        stage: str, entry: Mapping[str, Any], *, at: float | None = None, **extra: Any
    ) -> dict[str, Any]:
        """One record: ``stage`` of ``entry`` (stored form), with ``extra`` (status, error...)."""
        record = {"at": time.time() if at is None else at, "stage": stage, **describe(entry)}
        record.update({name: value for name, value in extra.items() if value is not None})
        return record

    # -- writing, on the caller's round trip ------------------------------------------------
    def push_command(
        self,
        stream: str,
        flag: str,
        flag_ttl: int,
        entries: Sequence[str],
        items: Sequence[Any],
    ) -> tuple[Any, ...]:
        """The outbox push as ``PUSH_JOURNALED``: the entries plus a ``queued`` record each."""
        now = time.time()
        records = [self.record("queued", item.to_dict(), at=now) for item in items]
        return (
            "EVALSHA",
            PUSH_JOURNALED_SHA,
            4,
            stream,
            flag,
            keys.JOURNAL,
            keys.journal_minute(int(now // 60)),
            flag_ttl,
            len(entries),
            self.max_records,
            self.ttl,
            MINUTE_TTL,
            *entries,
            *(_compact(record) for record in records),
            *(_field(record) for record in records),
        )

    def take_keys_args(self, anonymous_id: str, to: str) -> tuple[list[str], list[Any]]:
        """The journal's KEYS and ARGV of ``TAKE_PARKED_JOURNALED`` (after parking's own)."""
        now = time.time()
        return (
            [keys.JOURNAL, keys.journal_minute(int(now // 60))],
            [anonymous_id, to, now, self.max_records, self.ttl, MINUTE_TTL],
        )

    def add(self, pipe: Any, records: Sequence[Mapping[str, Any]]) -> None:
        """Queue the commands that keep ``records`` on ``pipe`` (a pipeline the caller runs)."""
        if not records:
            return
        pipe.lpush(keys.JOURNAL, *(_compact(record) for record in records))
        pipe.ltrim(keys.JOURNAL, 0, self.max_records - 1)
        pipe.expire(keys.JOURNAL, self.ttl)
        by_minute: dict[int, Counter[str]] = {}
        for record in records:
            by_minute.setdefault(int(record["at"] // 60), Counter())[_field(record)] += 1
        for minute, counts in by_minute.items():
            key = keys.journal_minute(minute)
            for name, count in counts.items():
                pipe.hincrby(key, name, count)
            pipe.expire(key, MINUTE_TTL)

    def write(self, records: Sequence[Mapping[str, Any]]) -> None:
        """Keep ``records`` in a round trip of their own (the inspector's own actions)."""
        pipe = self.connection.pipeline(transaction=False)
        self.add(pipe, records)
        pipe.execute()

    # -- reading ------------------------------------------------------------------------------
    def read(self, count: int | None = None) -> list[dict[str, Any]]:
        """The newest records first (all kept, or the newest ``count``)."""
        raw = self.connection.lrange(keys.JOURNAL, 0, -1 if count is None else count - 1)
        records = []
        for item in raw:
            try:
                records.append(json.loads(item))
            except ValueError:
                log.warning("klaviyo: a journal record was not JSON; skipped")
        return records

    def per_minute(
        self, minutes: int = 30, *, now: float | None = None
    ) -> list[tuple[int, dict[str, int]]]:
        """The last ``minutes`` minutes, oldest first: (minute, {``stage|label``: count})."""
        last = int((time.time() if now is None else now) // 60)
        span = list(range(last - minutes + 1, last + 1))
        pipe = self.connection.pipeline(transaction=False)
        for minute in span:
            pipe.hgetall(keys.journal_minute(minute))
        counts = pipe.execute()
        return [
            (minute, {k.decode(): int(v) for k, v in found.items()})
            for minute, found in zip(span, counts, strict=True)
        ]

    def clear(self) -> None:
        """Forget everything (the inspector's "clear" and tests)."""
        stale = list(self.connection.scan_iter(match=keys.journal_minute(0)[:-1] + "*"))
        self.connection.delete(keys.JOURNAL, *stale)
