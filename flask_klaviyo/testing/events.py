"""Create Event, Bulk Create Events and the two client endpoints: check, dedup, record.

Klaviyo keeps the first event per (profile, metric, unique_id); a repeat inside one bulk
request fails the whole request, a repeat of an earlier event is answered 202 and dropped.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from ._config import (
    EARLIEST_EVENT_TIME,
    MAX_BULK_EVENTS,
    MAX_FUTURE,
    MAX_METRIC_NAME_CHARS,
    MAX_PROPERTIES,
)
from .jsonapi import Answer, Checker, check_string_sizes, json_type, problems_answer
from .profile_checks import Identified, check_profile_data
from .state import Call, State

log = logging.getLogger(__name__)

DATETIME_SHAPE = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}")
BULK_ENDPOINTS = ("bulk_create_events", "bulk_create_client_events")


@dataclass
class Incoming:
    """One validated event of a request, ready to be resolved and recorded."""

    metric: str
    properties: dict[str, Any]
    profile: dict[str, Any]
    identifiers: list[tuple[str, str]]
    time: str | None
    moment: datetime | None
    value: int | float | None
    value_currency: str | None
    unique_id: str | None
    backfill: bool
    raw: dict[str, Any]
    pointer: str


# --------------------------------------------------------------------------- checks


def _check_time(checker: Checker, text: str, pointer: str) -> datetime | None:
    """ISO 8601 date-time after 1990 and at most a year ahead; naive times are UTC."""
    moment = None
    if DATETIME_SHAPE.match(text):
        with contextlib.suppress(ValueError):
            moment = datetime.fromisoformat(text)
    if moment is None:
        checker.fail(pointer, f"'time' must be an ISO 8601 date-time, got '{text[:64]}'.")
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    if moment < EARLIEST_EVENT_TIME:
        checker.fail(pointer, "'time' must be after the year 1990.")
        return None
    if moment > datetime.now(UTC) + MAX_FUTURE:
        checker.fail(pointer, "'time' can only be up to 1 year in the future.")
        return None
    return moment


def _check_event_attributes(
    checker: Checker, attrs: dict[str, Any] | None, base: str
) -> dict[str, Any] | None:
    """The attributes every event carries (single, bulk entry and client alike)."""
    if attrs is None:
        return None
    before = len(checker.problems)
    properties = checker.member(attrs, "properties", base, "object", required=True)
    if properties is not None and len(properties) > MAX_PROPERTIES:
        checker.fail(
            f"{base}/properties",
            f"An event may have at most {MAX_PROPERTIES} properties; this one has "
            f"{len(properties)}.",
        )
    metric = checker.member(attrs, "metric", base, "object", required=True)
    metric_data = checker.member(metric, "data", f"{base}/metric", "object", required=True)
    checker.resource_type(metric_data, "metric", f"{base}/metric/data")
    metric_attrs = checker.member(
        metric_data, "attributes", f"{base}/metric/data", "object", required=True
    )
    name_base = f"{base}/metric/data/attributes"
    name = checker.member(metric_attrs, "name", name_base, "string", required=True)
    if name is not None and not name.strip():
        checker.fail(f"{name_base}/name", "The metric name must not be empty.")
    elif name is not None and len(name) > MAX_METRIC_NAME_CHARS:
        checker.fail(f"{name_base}/name", "The metric name must be less than 128 characters.")
    checker.member(metric_attrs, "service", name_base, "string", required=False)

    when = checker.member(attrs, "time", base, "string", required=False)
    moment = _check_time(checker, when, f"{base}/time") if when is not None else None
    value = checker.member(attrs, "value", base, "number", required=False)
    currency = checker.member(attrs, "value_currency", base, "string", required=False)
    unique_id = checker.member(attrs, "unique_id", base, "string", required=False)
    backfill = checker.member(attrs, "backfill", base, "boolean", required=False)
    if len(checker.problems) > before:
        return None
    return {
        "metric": name,
        "properties": properties,
        "time": when,
        "moment": moment,
        "value": value,
        "value_currency": currency,
        "unique_id": unique_id,
        "backfill": backfill,
    }


def _check_profile(checker: Checker, attrs: dict[str, Any] | None, base: str) -> Identified | None:
    """``profile.data``: a profile resource with at least one identifier."""
    profile = checker.member(attrs, "profile", base, "object", required=True)
    data = checker.member(profile, "data", f"{base}/profile", "object", required=True)
    return check_profile_data(checker, data, f"{base}/profile/data")


def _incoming(
    parts: dict[str, Any],
    profile: Identified,
    raw: dict[str, Any],
    pointer: str,
    group_backfill: bool | None = None,
) -> Incoming:
    backfill = parts["backfill"] if parts["backfill"] is not None else group_backfill
    return Incoming(
        metric=parts["metric"],
        properties=parts["properties"],
        profile=profile[0],
        identifiers=profile[1],
        time=parts["time"],
        moment=parts["moment"],
        value=parts["value"],
        value_currency=parts["value_currency"],
        unique_id=parts["unique_id"],
        backfill=bool(backfill),
        raw=raw,
        pointer=pointer,
    )


def _check_single(checker: Checker, body: dict[str, Any]) -> list[Incoming]:
    """Create Event / Create Client Event: ``{"data": {"type": "event", ...}}``."""
    data = checker.member(body, "data", "", "object", required=True)
    checker.resource_type(data, "event", "/data")
    attrs = checker.member(data, "attributes", "/data", "object", required=True)
    parts = _check_event_attributes(checker, attrs, "/data/attributes")
    profile = _check_profile(checker, attrs, "/data/attributes")
    if parts is None or profile is None or data is None:
        return []
    return [_incoming(parts, profile, data, "/data")]


def _check_group(checker: Checker, group: Any, base: str) -> list[Incoming]:
    """One ``event-bulk-create`` resource: a profile and its events."""
    if not isinstance(group, dict):
        checker.fail(base, f"Each entry must be an object, not {json_type(group)}.")
        return []
    checker.resource_type(group, "event-bulk-create", base)
    attrs = checker.member(group, "attributes", base, "object", required=True)
    attrs_base = f"{base}/attributes"
    group_backfill = checker.member(attrs, "backfill", attrs_base, "boolean", required=False)
    profile = _check_profile(checker, attrs, attrs_base)
    events = checker.member(attrs, "events", attrs_base, "object", required=True)
    entries = checker.member(events, "data", f"{attrs_base}/events", "array", required=True)
    found: list[Incoming] = []
    for index, entry in enumerate(entries or []):
        pointer = f"{attrs_base}/events/data/{index}"
        if not isinstance(entry, dict):
            checker.fail(pointer, f"Each event must be an object, not {json_type(entry)}.")
            continue
        checker.resource_type(entry, "event", pointer)
        entry_attrs = checker.member(entry, "attributes", pointer, "object", required=True)
        parts = _check_event_attributes(checker, entry_attrs, f"{pointer}/attributes")
        if parts is not None and profile is not None:
            found.append(_incoming(parts, profile, entry, pointer, group_backfill))
    return found


def _check_bulk(checker: Checker, body: dict[str, Any]) -> list[Incoming]:
    """Bulk Create Events: an ``event-bulk-create-job`` holding profile groups."""
    data = checker.member(body, "data", "", "object", required=True)
    checker.resource_type(data, "event-bulk-create-job", "/data")
    attrs = checker.member(data, "attributes", "/data", "object", required=True)
    wrapper = checker.member(
        attrs, "events-bulk-create", "/data/attributes", "object", required=True
    )
    groups_base = "/data/attributes/events-bulk-create"
    groups = checker.member(wrapper, "data", groups_base, "array", required=True) or []
    found: list[Incoming] = []
    total = 0
    for index, group in enumerate(groups):
        found.extend(_check_group(checker, group, f"{groups_base}/data/{index}"))
        total += _count_events(group)
    if total > MAX_BULK_EVENTS:
        checker.fail(
            f"{groups_base}/data",
            f"A bulk request may contain at most {MAX_BULK_EVENTS} events; this one has {total}.",
        )
    return found


def _check_client_bulk(checker: Checker, body: dict[str, Any]) -> list[Incoming]:
    """Bulk Create Client Events: one ``event-bulk-create`` resource (one profile)."""
    data = checker.member(body, "data", "", "object", required=True)
    if data is None:
        return []
    found = _check_group(checker, data, "/data")
    total = _count_events(data)
    if total > MAX_BULK_EVENTS:
        checker.fail(
            "/data/attributes/events/data",
            f"A bulk request may contain at most {MAX_BULK_EVENTS} events; this one has {total}.",
        )
    return found


def _count_events(group: Any) -> int:
    with contextlib.suppress(KeyError, IndexError, TypeError):
        entries = group["attributes"]["events"]["data"]
        if isinstance(entries, list):
            return len(entries)
    return 0


VALIDATORS: dict[str, Callable[[Checker, dict[str, Any]], list[Incoming]]] = {
    "create_event": _check_single,
    "create_client_event": _check_single,
    "bulk_create_events": _check_bulk,
    "bulk_create_client_events": _check_client_bulk,
}


# --------------------------------------------------------------------------- handler


def handle(call: Call) -> Answer:
    """Every event endpoint: check the body, then record all of it or none (202, no body)."""
    checker = Checker()
    body = call.body
    if not isinstance(body, dict):
        checker.fail("/data", f"The body must be a JSON object, not {json_type(body)}.")
        incoming: list[Incoming] = []
    else:
        incoming = VALIDATORS[call.endpoint](checker, body)
        check_string_sizes(checker, body, call.raw)
    if not checker.problems:
        _commit(call.state, checker, call.endpoint, incoming, call.request.received_at)
    if checker.problems:
        return problems_answer(checker.problems)
    return Answer(202)


def _commit(
    state: State, checker: Checker, endpoint: str, incoming: list[Incoming], received_at: float
) -> None:
    """Resolve profiles, dedup and record, all or nothing, under the lock."""
    with state.lock:
        store = state.profiles
        translated = [store.translate(event.identifiers) for event in incoming]
        if endpoint in BULK_ENDPOINTS:
            seen: set[tuple[Any, str, str]] = set()
            for event, identifiers in zip(incoming, translated, strict=True):
                if event.unique_id is None:
                    continue
                key = (store.peek(identifiers), event.metric, event.unique_id)
                if key in seen:
                    checker.fail(
                        f"{event.pointer}/attributes/unique_id",
                        f"Duplicate unique_id '{event.unique_id[:64]}' for the same profile "
                        f"and metric '{event.metric}' in one bulk request.",
                    )
                    return
                seen.add(key)
        for event, identifiers in zip(incoming, translated, strict=True):
            profile = store.resolve(identifiers, event.profile)
            unique_id = event.unique_id
            if unique_id is None:
                moment = event.moment or datetime.fromtimestamp(received_at, UTC)
                unique_id = moment.astimezone(UTC).replace(microsecond=0).isoformat()
            if (event.metric, unique_id) in profile.seen:
                state.duplicates += 1
                state.dedup_hits.append(
                    {
                        "metric": event.metric,
                        "unique_id": unique_id,
                        "profile_id": profile.id,
                        "endpoint": endpoint,
                        "received_at": received_at,
                    }
                )
                continue
            profile.seen.add((event.metric, unique_id))
            state.accepted += 1
            if not state.keep_events:
                continue
            # The parsed body belongs to this request alone and nothing here mutates it;
            # every accessor hands out deep copies, so the record can share its parts.
            state.events.append(
                {
                    "metric": event.metric,
                    "properties": event.properties,
                    "profile": event.profile,
                    "profile_id": profile.id,
                    "time": event.time,
                    "value": event.value,
                    "value_currency": event.value_currency,
                    "unique_id": unique_id,
                    "backfill": event.backfill,
                    "received_at": received_at,
                    "endpoint": endpoint,
                    "raw": event.raw,
                }
            )
        state.changed.notify_all()
