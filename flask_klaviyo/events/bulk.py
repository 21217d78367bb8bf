"""Bulk Create Events: the request body (from Event objects or straight from outbox entries,
one builder behind both), the batches that fit Klaviyo's limits, and the error pointers that
lead back to the events that caused them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..exceptions import KlaviyoSchemaError
from ..identity.identifiers import IDENTIFIER_KEYS
from .ids import encoded_size
from .model import (
    BULK_OPERATION,
    MAX_BULK_BYTES,
    MAX_BULK_EVENTS,
    Event,
    _present,
    _profile_data,
    as_utc,
)

__all__ = [
    "ENTRY_OVERHEAD_BYTES",
    "ENTRY_SLACK_BYTES",
    "bulk_payload",
    "events_at_pointer",
    "locate_bulk_pointer",
    "raw_bulk_payload",
    "split_batches",
]

# Upper bound of the bytes one outbox entry adds to a bulk body beyond its own JSON: the
# event's JSON:API wrapper and the metric object, plus its profile entry's wrapper.
ENTRY_OVERHEAD_BYTES = 256


def _profile_groups(events: Sequence[Event]) -> list[list[int]]:
    """Indexes of ``events`` per distinct profile, profiles and events in first-seen order."""
    groups: dict[str, list[int]] = {}
    for index, event in enumerate(events):
        groups.setdefault(event.profile_key(), []).append(index)
    return list(groups.values())


def _merged_profile(profiles: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """One profile for a bulk entry: the first event's attributes, completed by later ones."""
    merged: dict[str, Any] = {}
    for profile in profiles:
        for key, value in profile.items():
            if key not in merged and _present(value):
                merged[key] = value
    return merged


def _bulk_entry(
    profile: Mapping[str, Any], attributes: list[dict[str, Any]], backfill: bool
) -> dict[str, Any]:
    """One profile entry: the merged profile and its events' attributes, in order. The one
    shape both :func:`bulk_payload` and :func:`raw_bulk_payload` build."""
    entry: dict[str, Any] = {
        "profile": {"data": _profile_data(profile, meta_inside=False)},
        "events": {"data": [{"type": "event", "attributes": each} for each in attributes]},
    }
    if backfill:
        entry["backfill"] = True
    return {"type": "event-bulk-create", "attributes": entry}


def _bulk_envelope(entries: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "data": {
            "type": "event-bulk-create-job",
            "attributes": {"events-bulk-create": {"data": entries}},
        }
    }


def _first_repeat(events: Sequence[Event]) -> tuple[int, int] | None:
    seen: dict[tuple[str, str, str], int] = {}
    for index, event in enumerate(events):
        key = event.dedup_key()
        if key in seen:
            return seen[key], index
        seen[key] = index
    return None


def bulk_payload(events: Sequence[Event]) -> dict[str, Any]:
    """The Bulk Create Events body: one entry per distinct profile, in first-seen order.

    Refuses what Klaviyo would fail as a whole: no events, more than 1,000, or one
    (profile, metric, unique_id) twice. :func:`split_batches` produces batches that pass.
    """
    if not events:
        raise KlaviyoSchemaError(BULK_OPERATION, "events", "no events to send")
    if len(events) > MAX_BULK_EVENTS:
        raise KlaviyoSchemaError(
            BULK_OPERATION, "events", f"{len(events)} events; at most {MAX_BULK_EVENTS} per request"
        )
    repeat = _first_repeat(events)
    if repeat is not None:
        first, again = repeat
        raise KlaviyoSchemaError(
            BULK_OPERATION,
            "events",
            f"events {first} and {again} share profile, metric ({events[again].metric!r}) and "
            f"unique_id ({events[again].unique_id!r}); Klaviyo would fail the whole request",
        )
    entries = []
    for group in _profile_groups(events):
        grouped = [events[i] for i in group]
        entries.append(
            _bulk_entry(
                _merged_profile([event.profile for event in grouped]),
                [event.event_attributes() for event in grouped],
                all(event.backfill for event in grouped),
            )
        )
    return _bulk_envelope(entries)


def _identity(profile: Mapping[str, Any]) -> tuple[tuple[str, str], ...] | None:
    """The identifiers that make a profile, as :meth:`Event.profile_key` compares them (email
    trimmed and lower-cased); None when one is not a string (the careful path handles that)."""
    found = []
    for key in IDENTIFIER_KEYS:
        value = profile.get(key)
        if value is None or value == "":
            continue
        if not isinstance(value, str):
            return None
        found.append((key, value.strip().lower() if key == "email" else value))
    return tuple(found)


def _raw_event_attributes(item: Mapping[str, Any]) -> dict[str, Any]:
    """``Event.from_dict(item).event_attributes()`` without building the Event."""
    when = item.get("time")
    if not (isinstance(when, str) and when.endswith("+00:00")):
        when = as_utc(when).isoformat()
    attributes: dict[str, Any] = {"properties": item.get("properties") or {}, "time": when}
    if item.get("value") is not None:
        attributes["value"] = item["value"]
    if item.get("value_currency") is not None:
        attributes["value_currency"] = item["value_currency"]
    if item.get("unique_id") is not None:
        attributes["unique_id"] = item["unique_id"]
    if item.get("backfill"):
        attributes["backfill"] = True
    attributes["metric"] = {"data": {"type": "metric", "attributes": {"name": item["metric"]}}}
    return attributes


def raw_bulk_payload(
    items: Sequence[Mapping[str, Any]],
    sizes: Sequence[int] | None = None,
    *,
    max_events: int = MAX_BULK_EVENTS,
    max_bytes: int = MAX_BULK_BYTES,
) -> dict[str, Any] | None:
    """The Bulk Create Events body for outbox entries (``Event.to_dict()`` form), built straight
    from them: what ``bulk_payload([Event.from_dict(i) for i in items])`` gives, at a fraction
    of the cost (no Event objects, no canonical JSON per event, no size probe per event).

    None when one request cannot be proven safe cheaply: a lone event, too many, a body that
    might pass ``max_bytes`` (``sizes``, the entries' JSON lengths, bound it), a repeated
    (profile, metric, unique_id), an event without a unique_id or a non-string identifier.
    The caller then takes the careful path (:func:`split_batches`).
    """
    if not 1 < len(items) <= max_events:
        return None
    if sizes is None or sum(sizes) + ENTRY_OVERHEAD_BYTES * (len(items) + 1) > max_bytes:
        return None
    groups: dict[tuple[tuple[str, str], ...], list[Mapping[str, Any]]] = {}
    seen: set[tuple[Any, str, str]] = set()
    for item in items:
        key = _identity(item.get("profile") or {})
        metric, unique_id = item.get("metric"), item.get("unique_id")
        if key is None or not isinstance(metric, str) or not isinstance(unique_id, str):
            return None
        repeat = (key, metric, unique_id)
        if repeat in seen:
            return None
        seen.add(repeat)
        groups.setdefault(key, []).append(item)
    return _bulk_envelope(
        [
            _bulk_entry(
                _merged_profile([item.get("profile") or {} for item in group]),
                [_raw_event_attributes(item) for item in group],
                all(item.get("backfill") for item in group),
            )
            for group in groups.values()
        ]
    )


def _parse_bulk_pointer(pointer: str) -> tuple[int, int | None] | None:
    """(profile entry, event within it or None) named by a JSON pointer into a bulk body."""
    tokens = [t.replace("~1", "/").replace("~0", "~") for t in pointer.strip().split("/")]
    if "events-bulk-create" not in tokens:
        return None
    rest = tokens[tokens.index("events-bulk-create") + 1 :]
    if len(rest) < 2 or rest[0] != "data" or not rest[1].isdigit():
        return None
    entry = int(rest[1])
    rest = rest[2:]
    if rest[:3] == ["attributes", "events", "data"] and len(rest) >= 4:
        return (entry, int(rest[3])) if rest[3].isdigit() else None
    return entry, None


def events_at_pointer(events: Sequence[Event], pointer: str) -> list[int]:
    """Indexes in ``events`` (as passed to bulk_payload) that an error pointer covers: one event,
    or every event of a profile entry. Empty when the pointer names nothing specific."""
    position = _parse_bulk_pointer(pointer)
    if position is None:
        return []
    entry, event_index = position
    groups = _profile_groups(events)
    if entry >= len(groups):
        return []
    group = groups[entry]
    if event_index is None:
        return list(group)
    return [group[event_index]] if event_index < len(group) else []


def locate_bulk_pointer(events: Sequence[Event], pointer: str) -> int | None:
    """The index of the event an error pointer names (a profile's first event for a pointer
    to the profile entry), or None."""
    covered = events_at_pointer(events, pointer)
    return covered[0] if covered else None


@dataclass
class _Batch:
    indexes: list[int] = field(default_factory=list)
    keys: set[tuple[str, str, str]] = field(default_factory=set)
    profiles: dict[str, set[str]] = field(default_factory=dict)
    size: int = 0


# Room for `,"backfill":true` on an entry and separators: sizes are upper bounds.
ENTRY_SLACK_BYTES = 32


def _added_bytes(batch: _Batch, event: Event, profile_key: str) -> int:
    """Upper bound of the bytes ``event`` adds to ``batch``'s bulk body."""
    event_bytes = encoded_size({"type": "event", "attributes": event.event_attributes()}) + 1
    known = batch.profiles.get(profile_key)
    if known is None:
        skeleton = {
            "type": "event-bulk-create",
            "attributes": {
                "profile": {"data": _profile_data(event.profile, meta_inside=False)},
                "events": {"data": []},
            },
        }
        return event_bytes + encoded_size(skeleton) + 1 + ENTRY_SLACK_BYTES
    # An existing entry only grows by the profile attributes this event adds.
    new_attributes = {k: v for k, v in event.profile.items() if _present(v) and k not in known}
    return event_bytes + (encoded_size(new_attributes) + 1 if new_attributes else 0)


def split_batches(
    events: Sequence[Event],
    *,
    max_events: int = MAX_BULK_EVENTS,
    max_bytes: int = MAX_BULK_BYTES,
) -> list[list[Event]]:
    """Batches for Bulk Create Events: within the count and byte limits and never one
    (profile, metric, unique_id) twice (a repeat goes to a later batch, where Klaviyo skips it).

    Each event goes into the first batch it fits, so repeats do not fragment the rest.
    """
    envelope = encoded_size(_bulk_envelope([]))
    batches: list[_Batch] = []
    first_open = 0  # batches before this one are full by count
    for index, event in enumerate(events):
        key = event.dedup_key()
        profile_key = key[0]
        placed = False
        for batch in batches[first_open:]:
            if len(batch.indexes) >= max_events or key in batch.keys:
                continue
            added = _added_bytes(batch, event, profile_key)
            if batch.size + added > max_bytes:
                continue
            _place(batch, index, event, key, added)
            placed = True
            break
        if not placed:
            batch = _Batch(size=envelope)
            added = _added_bytes(batch, event, profile_key)
            if envelope + added > max_bytes:
                raise KlaviyoSchemaError(
                    event.metric,
                    "payload",
                    f"one event needs {envelope + added} bytes, "
                    f"more than a bulk request's {max_bytes}",
                )
            _place(batch, index, event, key, added)
            batches.append(batch)
        while first_open < len(batches) and len(batches[first_open].indexes) >= max_events:
            first_open += 1
    return [[events[i] for i in batch.indexes] for batch in batches]


def _place(batch: _Batch, index: int, event: Event, key: tuple[str, str, str], added: int) -> None:
    batch.indexes.append(index)
    batch.keys.add(key)
    batch.profiles.setdefault(key[0], set()).update(
        k for k, v in event.profile.items() if _present(v)
    )
    batch.size += added
