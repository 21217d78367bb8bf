"""A faithful local Klaviyo stand-in for tests, browser journeys and the demo store.

``FakeKlaviyo`` is a real HTTP server (standard library only) on a loopback port that answers
Create Event, Bulk Create Events and the two client endpoints the way Klaviyo does: it checks the
private key, the ``revision`` header, the content type, the size and the JSON:API body (with
``source.pointer`` on every 400), keeps the first event per (profile, metric, unique_id), resolves
and merges profiles, and can be told to throttle, fail, hang or slow down. Tests in this process
use its Python API; other processes (workers, browsers, the demo) use ``/_fake/*`` and the HTML
inspector at ``/``.

Run standalone: ``python -m flask_klaviyo.testing --port 5001 --api-key pk_test``.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import copy
import hashlib
import hmac
import html
import ipaddress
import itertools
import json
import math
import re
import secrets
import signal
import socket
import struct
import sys
import threading
import time
import traceback
import uuid
import zlib
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType, TracebackType
from typing import Any
from urllib.parse import parse_qs, urlsplit

__all__ = ["KLAVIYO_RATE_LIMITS", "FakeKlaviyo", "main"]

DEFAULT_API_KEY = "pk_test"
DEFAULT_COMPANY_ID = "PUBKEY"
DEFAULT_HOST = "127.0.0.1"

# Klaviyo's documented limits (OpenAPI revision 2026-07-15).
MAX_BODY_BYTES = 5 * 1024 * 1024
MAX_STRING_BYTES = 100 * 1024
MAX_BULK_EVENTS = 1000
MAX_PROPERTIES = 400
MAX_METRIC_NAME_CHARS = 127  # "must be less than 128 characters"
EARLIEST_EVENT_TIME = datetime(1990, 1, 1, tzinfo=UTC)  # "must be after the year 1990"
MAX_FUTURE = timedelta(days=365)  # "can only be up to 1 year in the future"

# Steady limits per minute, reported in RateLimit-* headers when no limits are enforced.
RATE_WINDOW_SECONDS = 60
STEADY_LIMITS = {
    "create_event": 3500,
    "bulk_create_events": 150,
    "create_client_event": 3500,
    "bulk_create_client_events": 150,
}

# Klaviyo's published limits (burst per second, steady per minute), for ``rate_limits="klaviyo"``.
# Klaviyo counts them in fixed windows per account and answers 429 with Retry-After past either.
KLAVIYO_RATE_LIMITS: dict[str, tuple[tuple[int, float], ...]] = {
    "create_event": ((350, 1.0), (3500, 60.0)),
    "bulk_create_events": ((10, 1.0), (150, 60.0)),
    "create_client_event": ((350, 1.0), (3500, 60.0)),
    "bulk_create_client_events": ((10, 1.0), (150, 60.0)),
}

DEFAULT_RETRY_AFTER = 1.0
DEFAULT_TIMEOUT_HOLD = 5.0
DRAIN_LIMIT_BYTES = 4 * MAX_BODY_BYTES  # an oversized body is read this far so the 413 arrives
MAX_RECORDED_REQUESTS = 2000  # the request log is bounded; accepted events are not
MAX_ERRORS = 100  # errors reported in one 400
INSPECTOR_ROWS = 500
CONNECTION_IDLE_TIMEOUT = 120.0
POLL_INTERVAL = 0.05
DEFAULT_ERROR_POINTER = "/data/"  # Klaviyo's pointer when no single field is at fault

JSON_API = "application/vnd.api+json"
ACCEPTED_MEDIA_TYPES = (JSON_API, "application/json")
AUTH_SCHEME = "Klaviyo-API-Key"

ROUTES = {
    "/api/events": "create_event",
    "/api/event-bulk-create-jobs": "bulk_create_events",
    "/client/events": "create_client_event",
    "/client/event-bulk-create": "bulk_create_client_events",
}
CLIENT_ENDPOINTS = ("create_client_event", "bulk_create_client_events")

REVISION_PATTERN = re.compile(r"^(\d{4})-(\d{2})-(\d{2})(\.[A-Za-z0-9_-]+)?$")
DATETIME_SHAPE = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}")
EMAIL_PATTERN = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s.]+$")
E164_PATTERN = re.compile(r"^\+[1-9]\d{6,14}$")

# Identifiers in the order Klaviyo trusts them when they point at different profiles.
IDENTIFIER_PRIORITY = ("id", "email", "phone_number", "external_id", "_kx", "anonymous_id")
SINGLE_VALUED = ("email", "phone_number", "external_id")  # a profile has at most one of each
PROFILE_STRING_FIELDS = (
    "email",
    "phone_number",
    "external_id",
    "anonymous_id",
    "_kx",
    "first_name",
    "last_name",
    "organization",
    "locale",
    "title",
    "image",
)
LOCATION_STRING_FIELDS = (
    "address1",
    "address2",
    "city",
    "country",
    "region",
    "zip",
    "timezone",
    "ip",
)
LOCATION_COORDINATES = ("latitude", "longitude")

STATUS_ERRORS: dict[int, tuple[str, str]] = {
    400: ("invalid", "Invalid input."),
    401: ("not_authenticated", "Authentication credentials were not provided."),
    403: ("permission_denied", "You do not have permission to perform this action."),
    404: ("not_found", "Not found."),
    405: ("method_not_allowed", "Method not allowed."),
    408: ("request_timeout", "Request timeout."),
    409: ("conflict", "Conflict."),
    413: ("payload_too_large", "Request entity too large."),
    415: ("unsupported_media_type", "Unsupported media type."),
    429: ("throttled", "Request was throttled."),
    500: ("error", "A server error occurred."),
    502: ("bad_gateway", "Bad gateway."),
    503: ("service_unavailable", "Service temporarily unavailable."),
    504: ("gateway_timeout", "Gateway timeout."),
}

_INSPECTOR_SCRIPT = (
    "setInterval(function () {"
    " if (!document.querySelector('details[open]')) { location.reload(); } }, 2000);"
)
_INSPECTOR_CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'; "
    "script-src 'sha256-"
    + base64.b64encode(hashlib.sha256(_INSPECTOR_SCRIPT.encode()).digest()).decode()
    + "'"
)


# --------------------------------------------------------------------------- plumbing types


@dataclass
class _Fault:
    """One queued misbehaviour, spent by the next API request."""

    status: int | None  # None: hold the connection, then drop it without an answer
    retry_after: float | None = None
    code: str | None = None
    detail: str | None = None
    pointer: str | None = None
    hold: float = 0.0
    reset: bool = False  # with status None: reset the connection (RST) instead of closing it


@dataclass
class _Request:
    """What the handler read off the socket, independent of http.server."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    raw: bytes
    too_large: bool = False
    parsed: Any = None
    received_at: float = field(default_factory=time.time)

    def header(self, name: str) -> str | None:
        wanted = name.lower()
        for key, value in self.headers.items():
            if key.lower() == wanted:
                return value
        return None


@dataclass
class _Answer:
    """What to write back (or, with ``drop``, to withhold)."""

    status: int
    body: bytes = b""
    headers: list[tuple[str, str]] = field(default_factory=list)
    delay: float = 0.0
    drop: bool = False
    close: bool = False
    errors: list[dict[str, Any]] = field(default_factory=list)
    reset: bool = False  # with drop: abort the connection (RST), not a clean close


@dataclass
class _Incoming:
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


@dataclass
class _Profile:
    """The stand-in's idea of a Klaviyo profile: identifiers, attributes, dedup keys."""

    id: str
    seq: int
    email: str | None = None
    phone_number: str | None = None
    external_id: str | None = None
    anonymous_ids: list[str] = field(default_factory=list)
    exchange_ids: list[str] = field(default_factory=list)
    attributes: dict[str, Any] = field(default_factory=dict)
    merged_from: list[str] = field(default_factory=list)
    seen: set[tuple[str, str]] = field(default_factory=set)

    def singles(self) -> dict[str, str]:
        return {k: v for k in SINGLE_VALUED if (v := getattr(self, k)) is not None}

    def conflicts_with(self, singles: dict[str, str]) -> bool:
        """Two different emails (or phones, external ids) are two people: never merge them."""
        return any(
            (mine := getattr(self, kind)) is not None and kind in singles and singles[kind] != mine
            for kind in SINGLE_VALUED
        )


class _Checker:
    """Collects Klaviyo-style validation problems as (pointer, detail) pairs."""

    def __init__(self) -> None:
        self.problems: list[tuple[str, str]] = []

    def fail(self, pointer: str, detail: str) -> None:
        self.problems.append((pointer, detail))

    def member(
        self, parent: dict[str, Any] | None, key: str, base: str, kind: str, *, required: bool
    ) -> Any:
        """Return parent[key] when it has the wanted JSON type, else record why and give None."""
        if parent is None:
            return None
        value = parent.get(key)
        if value is None:
            if required:
                self.fail(f"{base}/{_escape_pointer(key)}", f"'{key}' is a required field.")
            return None
        if not _has_type(value, kind):
            self.fail(
                f"{base}/{_escape_pointer(key)}",
                f"'{key}' must be {_ARTICLE[kind]}, not {_json_type(value)}.",
            )
            return None
        return value

    def resource_type(self, resource: dict[str, Any] | None, expected: str, base: str) -> None:
        value = self.member(resource, "type", base, "string", required=True)
        if value is not None and value != expected:
            self.fail(f"{base}/type", f"'type' must be '{expected}', not '{value}'.")


_ARTICLE = {
    "object": "an object",
    "array": "an array",
    "string": "a string",
    "number": "a number",
    "boolean": "a boolean",
}


def _has_type(value: Any, kind: str) -> bool:
    if kind == "object":
        return isinstance(value, dict)
    if kind == "array":
        return isinstance(value, list)
    if kind == "string":
        return isinstance(value, str)
    if kind == "number":
        return isinstance(value, int | float) and not isinstance(value, bool)
    if kind == "boolean":
        return isinstance(value, bool)
    raise ValueError(kind)


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def _escape_pointer(key: str) -> str:
    return key.replace("~", "~0").replace("/", "~1")


def _pointer(path: Sequence[str | int]) -> str:
    return "".join(f"/{_escape_pointer(str(part))}" for part in path)


# --------------------------------------------------------------------------- body validation


def _check_time(checker: _Checker, text: str, pointer: str) -> datetime | None:
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
    checker: _Checker, attrs: dict[str, Any] | None, base: str
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


def _check_profile(
    checker: _Checker, attrs: dict[str, Any] | None, base: str
) -> tuple[dict[str, Any], list[tuple[str, str]]] | None:
    """``profile.data``: a profile resource with at least one identifier."""
    profile = checker.member(attrs, "profile", base, "object", required=True)
    data_base = f"{base}/profile/data"
    data = checker.member(profile, "data", f"{base}/profile", "object", required=True)
    if data is None:
        return None
    before = len(checker.problems)
    checker.resource_type(data, "profile", data_base)
    profile_id = checker.member(data, "id", data_base, "string", required=False)
    checker.member(data, "meta", data_base, "object", required=False)
    pattrs = checker.member(data, "attributes", data_base, "object", required=True)
    if pattrs is None:
        return None
    attrs_base = f"{data_base}/attributes"
    for key in PROFILE_STRING_FIELDS:
        checker.member(pattrs, key, attrs_base, "string", required=False)
    for key in ("properties", "meta"):
        checker.member(pattrs, key, attrs_base, "object", required=False)
    location = checker.member(pattrs, "location", attrs_base, "object", required=False)
    for key in LOCATION_STRING_FIELDS:
        checker.member(location, key, f"{attrs_base}/location", "string", required=False)
    for key in LOCATION_COORDINATES:
        coordinate = (location or {}).get(key)
        if coordinate is not None and not _has_type(coordinate, "string"):
            checker.member(location, key, f"{attrs_base}/location", "number", required=False)

    email = pattrs.get("email")
    if isinstance(email, str) and email and not EMAIL_PATTERN.match(email.strip()):
        checker.fail(f"{attrs_base}/email", f"Invalid email address: '{email[:64]}'.")
    phone = pattrs.get("phone_number")
    if isinstance(phone, str) and phone and not E164_PATTERN.match(phone):
        checker.fail(
            f"{attrs_base}/phone_number",
            f"Invalid phone number format: '{phone[:32]}'. Use E.164, e.g. +15005550006.",
        )
    if len(checker.problems) > before:
        return None

    sent = {key: value for key, value in pattrs.items() if value is not None}
    if profile_id:
        sent["id"] = profile_id
    identifiers: list[tuple[str, str]] = []
    for kind in IDENTIFIER_PRIORITY:
        value = sent.get(kind)
        if isinstance(value, str) and value.strip():
            identifiers.append((kind, value.strip().lower() if kind == "email" else value))
    if not identifiers:
        checker.fail(
            attrs_base,
            "A profile identifier is required: one of id, email, phone_number, external_id, "
            "anonymous_id or _kx.",
        )
        return None
    return sent, identifiers


def _incoming(
    parts: dict[str, Any],
    profile: tuple[dict[str, Any], list[tuple[str, str]]],
    raw: dict[str, Any],
    pointer: str,
    group_backfill: bool | None = None,
) -> _Incoming:
    backfill = parts["backfill"] if parts["backfill"] is not None else group_backfill
    return _Incoming(
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


def _check_single(checker: _Checker, body: dict[str, Any]) -> list[_Incoming]:
    """Create Event / Create Client Event: ``{"data": {"type": "event", ...}}``."""
    data = checker.member(body, "data", "", "object", required=True)
    checker.resource_type(data, "event", "/data")
    attrs = checker.member(data, "attributes", "/data", "object", required=True)
    parts = _check_event_attributes(checker, attrs, "/data/attributes")
    profile = _check_profile(checker, attrs, "/data/attributes")
    if parts is None or profile is None or data is None:
        return []
    return [_incoming(parts, profile, data, "/data")]


def _check_group(checker: _Checker, group: Any, base: str) -> list[_Incoming]:
    """One ``event-bulk-create`` resource: a profile and its events."""
    if not isinstance(group, dict):
        checker.fail(base, f"Each entry must be an object, not {_json_type(group)}.")
        return []
    checker.resource_type(group, "event-bulk-create", base)
    attrs = checker.member(group, "attributes", base, "object", required=True)
    attrs_base = f"{base}/attributes"
    group_backfill = checker.member(attrs, "backfill", attrs_base, "boolean", required=False)
    profile = _check_profile(checker, attrs, attrs_base)
    events = checker.member(attrs, "events", attrs_base, "object", required=True)
    entries = checker.member(events, "data", f"{attrs_base}/events", "array", required=True)
    found: list[_Incoming] = []
    for index, entry in enumerate(entries or []):
        pointer = f"{attrs_base}/events/data/{index}"
        if not isinstance(entry, dict):
            checker.fail(pointer, f"Each event must be an object, not {_json_type(entry)}.")
            continue
        checker.resource_type(entry, "event", pointer)
        entry_attrs = checker.member(entry, "attributes", pointer, "object", required=True)
        parts = _check_event_attributes(checker, entry_attrs, f"{pointer}/attributes")
        if parts is not None and profile is not None:
            found.append(_incoming(parts, profile, entry, pointer, group_backfill))
    return found


def _check_bulk(checker: _Checker, body: dict[str, Any]) -> list[_Incoming]:
    """Bulk Create Events: an ``event-bulk-create-job`` holding profile groups."""
    data = checker.member(body, "data", "", "object", required=True)
    checker.resource_type(data, "event-bulk-create-job", "/data")
    attrs = checker.member(data, "attributes", "/data", "object", required=True)
    wrapper = checker.member(
        attrs, "events-bulk-create", "/data/attributes", "object", required=True
    )
    groups_base = "/data/attributes/events-bulk-create"
    groups = checker.member(wrapper, "data", groups_base, "array", required=True) or []
    found: list[_Incoming] = []
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


def _check_client_bulk(checker: _Checker, body: dict[str, Any]) -> list[_Incoming]:
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


def _check_string_sizes(checker: _Checker, body: Any, raw: bytes | None = None) -> None:
    """No string (value or key) anywhere in the body may exceed 100 KB.

    ``raw`` (the JSON text) lets the common case skip the walk: see :func:`_longest_string`.
    """
    if raw is not None and _longest_string(raw) <= MAX_STRING_BYTES:
        return
    stack: list[tuple[Any, tuple[str | int, ...]]] = [(body, ())]
    while stack and len(checker.problems) < MAX_ERRORS:
        value, path = stack.pop()
        if isinstance(value, str):
            if len(value) * 4 > MAX_STRING_BYTES and len(value.encode()) > MAX_STRING_BYTES:
                checker.fail(_pointer(path), "Strings must not be larger than 100 KB.")
        elif isinstance(value, dict):
            for key, item in value.items():
                if len(key) * 4 > MAX_STRING_BYTES and len(key.encode()) > MAX_STRING_BYTES:
                    checker.fail(_pointer((*path, key)), "Keys must not be larger than 100 KB.")
                stack.append((item, (*path, key)))
        elif isinstance(value, list):
            stack.extend((item, (*path, index)) for index, item in enumerate(value))


def _longest_string(raw: bytes) -> int:
    """An upper bound of the UTF-8 size of the longest string (or key) in a JSON text.

    Each two-byte escape that could hide a quote (``\\\\``, ``\\"``) becomes one byte, the
    size it decodes to; then every quote left delimits a string, and no string decodes to more
    bytes than its text between the quotes. C-speed, unlike a walk of the parsed body.
    """
    flat = raw.replace(b"\\\\", b"x").replace(b'\\"', b"x")
    return max(map(len, flat.split(b'"')))


VALIDATORS = {
    "create_event": _check_single,
    "create_client_event": _check_single,
    "bulk_create_events": _check_bulk,
    "bulk_create_client_events": _check_client_bulk,
}


# --------------------------------------------------------------------------- answers


def _error_object(
    status: int,
    *,
    code: str | None = None,
    title: str | None = None,
    detail: str | None = None,
    pointer: str | None = None,
    parameter: str | None = None,
) -> dict[str, Any]:
    default_code, default_title = STATUS_ERRORS.get(status, ("error", _phrase(status)))
    source: dict[str, str] = (
        {"parameter": parameter} if parameter else {"pointer": pointer or DEFAULT_ERROR_POINTER}
    )
    return {
        "id": str(uuid.uuid4()),
        "status": status,
        "code": code or default_code,
        "title": title or default_title,
        "detail": detail or title or default_title,
        "source": source,
        "meta": {},
    }


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase + "."
    except ValueError:
        return "Error."


def _error_answer(status: int, errors: list[dict[str, Any]], **extra: Any) -> _Answer:
    body = json.dumps({"errors": errors}).encode()
    return _Answer(status, body, [("Content-Type", JSON_API)], errors=errors, **extra)


def _one_error(status: int, **kwargs: Any) -> _Answer:
    return _error_answer(status, [_error_object(status, **kwargs)])


def _json_answer(status: int, payload: Any) -> _Answer:
    body = json.dumps(payload, ensure_ascii=False, default=str).encode()
    return _Answer(status, body, [("Content-Type", "application/json")])


def _seconds_text(seconds: int) -> str:
    return f"{seconds} second" if seconds == 1 else f"{seconds} seconds"


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _mint_profile_id() -> str:
    """A ULID-like id (26 Crockford base32 characters), the shape Klaviyo's profile ids have."""
    alphabet = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
    number = (int(time.time() * 1000) << 80) | secrets.randbits(80)
    chars = []
    for _ in range(26):
        number, digit = divmod(number, 32)
        chars.append(alphabet[digit])
    return "".join(reversed(chars))


def _parse_limits(limits: Any) -> dict[str, tuple[tuple[int, float], ...]]:
    """``{endpoint: [[limit, seconds], ...]}`` (or ``"klaviyo"``, or None) checked and frozen."""
    if limits is None:
        return {}
    if limits == "klaviyo":
        return dict(KLAVIYO_RATE_LIMITS)
    if not isinstance(limits, dict):
        raise ValueError("rate limits must map endpoints to [[limit, seconds], ...]")
    parsed: dict[str, tuple[tuple[int, float], ...]] = {}
    for endpoint, windows in limits.items():
        if endpoint not in STEADY_LIMITS:
            raise ValueError(f"no endpoint {endpoint!r}; one of {sorted(STEADY_LIMITS)}")
        frozen = []
        for window in windows:
            limit, period = window
            if (
                isinstance(limit, bool)
                or not isinstance(limit, int)
                or limit < 1
                or isinstance(period, bool)
                or not isinstance(period, int | float)
                or not period > 0
            ):
                raise ValueError(f"{endpoint}: a window is [limit >= 1, seconds > 0], not {window}")
            frozen.append((limit, float(period)))
        parsed[endpoint] = tuple(frozen)
    return parsed


def _loopback_host(host: str) -> str:
    """The stand-in has no real security: refuse to listen anywhere but loopback."""
    if host == "localhost":
        return "127.0.0.1"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        address = None
    if address is None or address.version != 4 or not address.is_loopback:
        raise ValueError(f"FakeKlaviyo only listens on an IPv4 loopback address, not {host!r}")
    return host


# --------------------------------------------------------------------------- the stand-in


class FakeKlaviyo:
    """A local Klaviyo for Create Event, Bulk Create Events and the client endpoints.

    Start it (``with FakeKlaviyo() as fake`` or ``.start()``), point the code under test at
    ``fake.url`` and assert on ``fake.events``. Everything is thread-safe.
    """

    def __init__(
        self,
        *,
        api_key: str = DEFAULT_API_KEY,
        company_id: str = DEFAULT_COMPANY_ID,
        host: str = DEFAULT_HOST,
        port: int = 0,
        rate_limits: Any = None,
        time_scale: float = 1.0,
        keep_events: bool = True,
    ) -> None:
        """``rate_limits``: ``{endpoint: [(limit, seconds), ...]}`` enforced in fixed windows like
        Klaviyo (429 with Retry-After past any of them), or ``"klaviyo"`` for the published
        limits; None (the default) enforces nothing. ``time_scale`` runs those windows (and the
        Retry-After / RateLimit-Reset answers) that many times faster. ``keep_events=False``
        counts and dedups accepted events without keeping them, for long benchmarks."""
        if not api_key:
            raise ValueError("api_key must not be empty")
        self.keep_events = bool(keep_events)
        self.api_key = api_key
        self.company_id = company_id
        self.host = _loopback_host(host)
        self.port = port
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._secret = secrets.token_bytes(32)
        self._exchange: dict[str, str] = {}  # minted _kx token -> email (survives reset)
        self._latency = 0.0
        self._limits: dict[str, tuple[tuple[int, float], ...]] = {}
        self._time_scale = 1.0
        self._clear()
        self.set_rate_limits(rate_limits, time_scale=time_scale)

    def _clear(self) -> None:
        with self._lock:
            self._events: list[dict[str, Any]] = []
            self._requests: deque[dict[str, Any]] = deque(maxlen=MAX_RECORDED_REQUESTS)
            self._faults: deque[_Fault] = deque()
            self._profiles: dict[str, _Profile] = {}
            self._index: dict[tuple[str, str], str] = {}
            self._redirects: dict[str, str] = {}
            self._sequence = itertools.count()
            self._windows: dict[str, tuple[float, int]] = {}
            self._duplicates = 0
            self._rejected = 0
            self._request_count = 0
            self._accepted = 0
            self._throttled = 0
            self._limit_state: dict[tuple[str, int], tuple[float, int]] = {}

    # ---- lifecycle

    def start(self) -> FakeKlaviyo:
        """Bind (port 0 picks a free port) and serve from a daemon thread."""
        if self._server is not None:
            return self
        self._stopping.clear()
        server = _Server((self.host, self.port), self)
        thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": POLL_INTERVAL},
            name=f"FakeKlaviyo:{server.server_address[1]}",
            daemon=True,
        )
        self._server, self._thread = server, thread
        thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and cut open connections, so nothing keeps answering after a test."""
        server, thread = self._server, self._thread
        if server is None:
            return
        self._stopping.set()
        server.shutdown()
        server.close_connections()
        server.server_close()
        if thread is not None:
            thread.join(timeout=5)
        self._server = self._thread = None

    def __enter__(self) -> FakeKlaviyo:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        where = self.url if self._server is not None or self.port else "not started"
        return f"<FakeKlaviyo {where} events={len(self._events)}>"

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT`` (no trailing slash)."""
        if self._server is not None:
            return f"http://{self.host}:{self._server.server_address[1]}"
        if self.port:
            return f"http://{self.host}:{self.port}"
        raise RuntimeError("FakeKlaviyo(port=0) has no URL until start()")

    # ---- inspection

    @property
    def events(self) -> list[dict[str, Any]]:
        """Accepted events, deduplicated, in arrival order (a copy)."""
        with self._lock:
            return copy.deepcopy(self._events)

    @property
    def requests(self) -> list[dict[str, Any]]:
        """Every API request received (not control or inspector ones), with the status answered."""
        with self._lock:
            return copy.deepcopy(list(self._requests))

    @property
    def duplicates(self) -> int:
        """Events answered 202 but dropped because (profile, metric, unique_id) was known."""
        with self._lock:
            return self._duplicates

    def events_for(
        self, metric: str | None = None, *, email: str | None = None
    ) -> list[dict[str, Any]]:
        """Accepted events of one metric and/or of the profile that (now) has this email."""
        wanted = email.strip().lower() if email is not None else None
        with self._lock:
            found = [
                event
                for event in self._events
                if (metric is None or event["metric"] == metric)
                and (wanted is None or self._profiles[event["profile_id"]].email == wanted)
            ]
            return copy.deepcopy(found)

    def profile_of(self, event: dict[str, Any]) -> dict[str, Any]:
        """The merged profile an accepted event belongs to, with every identifier known."""
        with self._lock:
            profile_id = event["profile_id"]
            while profile_id in self._redirects:
                profile_id = self._redirects[profile_id]
            if profile_id not in self._profiles:
                raise LookupError(f"no profile {event['profile_id']!r} (was the fake reset?)")
            return self._profile_dict(self._profiles[profile_id])

    def profiles(self) -> list[dict[str, Any]]:
        """Every profile the stand-in knows, oldest first."""
        with self._lock:
            ordered = sorted(self._profiles.values(), key=lambda p: p.seq)
            return [self._profile_dict(profile) for profile in ordered]

    def _profile_dict(self, profile: _Profile) -> dict[str, Any]:
        minted = [token for token, email in self._exchange.items() if email == profile.email]
        return {
            "id": profile.id,
            "email": profile.email,
            "phone_number": profile.phone_number,
            "external_id": profile.external_id,
            "anonymous_ids": list(profile.anonymous_ids),
            "exchange_ids": [*minted, *profile.exchange_ids],
            "attributes": copy.deepcopy(profile.attributes),
            "merged_from": list(profile.merged_from),
        }

    def exchange_id_for(self, email: str) -> str:
        """A ``_kx`` token that resolves to this email's profile, like Klaviyo's exchange id.

        Opaque, stable per email for this stand-in, and (like the real one) full of characters
        that must be URL-encoded in a link: ``base64.COMPANYID``.
        """
        normalized = email.strip().lower()
        if not EMAIL_PATTERN.match(normalized):
            raise ValueError(f"not an email address: {email!r}")
        digest = hmac.new(self._secret, normalized.encode(), hashlib.sha256).digest()[:16]
        token = f"{base64.b64encode(digest).decode()}.{self.company_id}"
        with self._lock:
            self._exchange[token] = normalized
            self._resolve([("email", normalized)], {})
        return token

    def stats(self) -> dict[str, int]:
        """The inspector's counters, also at ``GET /_fake/stats`` for other processes."""
        with self._lock:
            return {
                "accepted": self._accepted,
                "duplicates": self._duplicates,
                "rejected": self._rejected,
                "requests": self._request_count,
            }

    def wait_for(
        self, count: int, *, metric: str | None = None, timeout: float = 10.0
    ) -> list[dict[str, Any]]:
        """Block until ``count`` accepted events (of ``metric``) exist; return them all."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                found = [e for e in self._events if metric is None or e["metric"] == metric]
                if len(found) >= count:
                    return copy.deepcopy(found)
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    have = [(e["metric"], e["unique_id"]) for e in self._events]
                    what = f" {metric!r}" if metric else ""
                    raise AssertionError(
                        f"waited {timeout}s for {count}{what} event(s), have {len(found)}; "
                        f"all accepted (metric, unique_id): {have}; duplicates: "
                        f"{self._duplicates}; rejected requests: {self._rejected}"
                    )
                self._changed.wait(remaining)

    # ---- driving

    @property
    def latency(self) -> float:
        """Seconds added before every API answer."""
        with self._lock:
            return self._latency

    @latency.setter
    def latency(self, seconds: float) -> None:
        if not isinstance(seconds, int | float) or isinstance(seconds, bool) or seconds < 0:
            raise ValueError(f"latency must be a number of seconds >= 0, got {seconds!r}")
        with self._lock:
            self._latency = float(seconds)

    @property
    def throttled(self) -> int:
        """429s answered because an enforced rate limit was exceeded (not ``fail_next`` ones)."""
        with self._lock:
            return self._throttled

    @property
    def rate_limits(self) -> dict[str, list[list[float]]]:
        """The enforced limits, ``{endpoint: [[limit, seconds], ...]}`` in Klaviyo's seconds."""
        with self._lock:
            return {name: [list(w) for w in windows] for name, windows in self._limits.items()}

    @property
    def time_scale(self) -> float:
        with self._lock:
            return self._time_scale

    def set_rate_limits(self, limits: Any, *, time_scale: float | None = None) -> None:
        """Enforce ``limits`` from now on (None: none); fresh windows, the 429 count kept."""
        parsed = _parse_limits(limits)
        if time_scale is not None and (
            isinstance(time_scale, bool)
            or not isinstance(time_scale, int | float)
            or not math.isfinite(time_scale)
            or time_scale <= 0
        ):
            raise ValueError(f"time_scale must be a number > 0, got {time_scale!r}")
        with self._lock:
            self._limits = parsed
            if time_scale is not None:
                self._time_scale = float(time_scale)
            self._limit_state = {}

    def fail_next(
        self,
        status: int,
        *,
        count: int = 1,
        retry_after: float | None = None,
        code: str | None = None,
        detail: str | None = None,
        pointer: str | None = None,
    ) -> None:
        """Answer the next ``count`` API requests with ``status`` (queued after earlier faults)."""
        if not isinstance(status, int) or not 400 <= status <= 599:
            raise ValueError(f"status must be a 4xx or 5xx code, got {status!r}")
        if count < 1:
            raise ValueError("count must be at least 1")
        if retry_after is not None and retry_after < 0:
            raise ValueError("retry_after must be >= 0")
        if status == 429 and retry_after is None:
            retry_after = DEFAULT_RETRY_AFTER
        fault = _Fault(status, retry_after, code, detail, pointer)
        with self._lock:
            self._faults.extend(copy.copy(fault) for _ in range(count))

    def timeout_next(self, *, count: int = 1, hold: float = DEFAULT_TIMEOUT_HOLD) -> None:
        """Read the next ``count`` API requests, say nothing for ``hold`` s, then hang up."""
        if count < 1:
            raise ValueError("count must be at least 1")
        if hold < 0:
            raise ValueError("hold must be >= 0")
        with self._lock:
            self._faults.extend(_Fault(None, hold=hold) for _ in range(count))

    def reset_next(self, *, count: int = 1) -> None:
        """Read the next ``count`` API requests, then reset the connection (a TCP RST, no answer).

        Nothing is recorded as accepted: the events of a reset request are not kept.
        """
        if count < 1:
            raise ValueError("count must be at least 1")
        with self._lock:
            self._faults.extend(_Fault(None, reset=True) for _ in range(count))

    def reset(self) -> None:
        """Forget events, profiles, requests, faults and latency (minted _kx tokens stay valid)."""
        with self._lock:
            self._clear()
            self._latency = 0.0
            self._changed.notify_all()

    # ---- request handling (called from handler threads)

    def _dispatch(self, request: _Request) -> _Answer:
        path = request.path.rstrip("/") or "/"
        if path.startswith("/_fake"):
            return self._control(request, path)
        if path in ("/", "/index.html"):
            if request.method != "GET":
                return _json_answer(405, {"error": "GET only"})
            return self._inspector()
        if path == "/favicon.ico":
            return _Answer(204)
        endpoint = ROUTES.get(path)
        if endpoint in CLIENT_ENDPOINTS and request.method == "OPTIONS":
            return _Answer(204, headers=_cors_headers(preflight=True))
        if endpoint is None:
            answer = _one_error(404, detail=f"No such endpoint: {request.path}")
        elif request.method != "POST":
            answer = _one_error(405, detail=f"Method {request.method} is not allowed here.")
        else:
            answer = self._api(endpoint, request)
        if endpoint in CLIENT_ENDPOINTS:
            answer.headers.extend(_cors_headers(preflight=False))
        self._record(request, endpoint, answer)
        return answer

    def _api(self, endpoint: str, request: _Request) -> _Answer:
        with self._lock:
            fault = self._faults.popleft() if self._faults else None
            latency = self._latency
        if fault is not None and fault.status is None:
            return _Answer(0, delay=latency + fault.hold, drop=True, reset=fault.reset)
        if fault is not None:
            answer = self._fault_answer(fault)
            limit_headers = None
        else:
            throttled, limit_headers = self._take_rate_slot(endpoint)
            answer = throttled or self._handle_events(endpoint, request)
        answer.delay = latency
        if answer.status != 429:
            answer.headers.extend(limit_headers or self._rate_headers(endpoint))
        return answer

    def _scaled(self, klaviyo_seconds: float) -> str:
        """Whole Klaviyo seconds (as Klaviyo answers), divided by the time scale."""
        whole = max(1, math.ceil(klaviyo_seconds - 1e-9))
        if self._time_scale == 1.0:
            return str(whole)
        return f"{whole / self._time_scale:.6g}"

    def _take_rate_slot(self, endpoint: str) -> tuple[_Answer | None, list[tuple[str, str]] | None]:
        """Fixed windows, like Klaviyo: count this request, or answer 429 with Retry-After.

        Returns (the 429 or None, the RateLimit-* headers for the longest window or None when
        this endpoint is not limited).
        """
        with self._lock:
            windows = self._limits.get(endpoint)
            if not windows:
                return None, None
            now = time.monotonic()
            scale = self._time_scale
            states = []
            blocked_for = 0.0
            for index, (limit, period) in enumerate(windows):
                length = period / scale
                start, used = self._limit_state.get((endpoint, index), (now, 0))
                if now - start >= length:
                    start, used = now, 0
                states.append((index, limit, length, start, used))
                if used >= limit:
                    blocked_for = max(blocked_for, (start + length - now) * scale)
            if blocked_for > 0:
                self._throttled += 1
                seconds = self._scaled(blocked_for)
                answer = _one_error(
                    429,
                    detail="Request was throttled. Expected available in "
                    f"{_seconds_text(math.ceil(blocked_for - 1e-9))}.",
                )
                answer.headers.append(("Retry-After", seconds))
                for index, _, _, start, used in states:
                    self._limit_state[(endpoint, index)] = (start, used)
                return answer, None
            for index, _, _, start, used in states:
                self._limit_state[(endpoint, index)] = (start, used + 1)
            _, limit, length, start, used = max(states, key=lambda state: state[2])
            reset = (start + length - now) * scale
            return None, [
                ("RateLimit-Limit", str(limit)),
                ("RateLimit-Remaining", str(max(0, limit - used - 1))),
                ("RateLimit-Reset", self._scaled(reset)),
            ]

    def _fault_answer(self, fault: _Fault) -> _Answer:
        assert fault.status is not None
        headers: list[tuple[str, str]] = []
        detail = fault.detail
        if fault.retry_after is not None:
            seconds = math.ceil(fault.retry_after)
            headers.append(("Retry-After", str(seconds)))
            if fault.status == 429 and detail is None:
                detail = f"Request was throttled. Expected available in {_seconds_text(seconds)}."
        error = _error_object(fault.status, code=fault.code, detail=detail, pointer=fault.pointer)
        answer = _error_answer(fault.status, [error])
        answer.headers.extend(headers)
        return answer

    def _handle_events(self, endpoint: str, request: _Request) -> _Answer:
        if endpoint in CLIENT_ENDPOINTS:
            company = request.query.get("company_id")
            if company != self.company_id:
                detail = (
                    "'company_id' is a required query parameter."
                    if not company
                    else f"Invalid company_id '{company[:64]}'."
                )
                return _one_error(400, detail=detail, parameter="company_id")
        else:
            refused = self._check_auth(request.header("Authorization"))
            if refused is not None:
                return refused
        revision = request.header("revision")
        if not _valid_revision(revision):
            detail = (
                "The 'revision' header is required (format YYYY-MM-DD[.suffix])."
                if not revision
                else f"Invalid revision '{revision[:40]}': expected a released YYYY-MM-DD[.suffix]."
            )
            return _one_error(400, detail=detail, parameter="revision")
        media = (request.header("Content-Type") or "").split(";", 1)[0].strip().lower()
        if media not in ACCEPTED_MEDIA_TYPES:
            return _one_error(415, detail=f"Unsupported media type '{media[:64]}': use {JSON_API}.")
        if request.too_large:
            return _one_error(
                413, detail=f"The request body must not exceed 5 MB ({MAX_BODY_BYTES} bytes)."
            )
        encoding = (request.header("Content-Encoding") or "identity").strip().lower()
        try:
            raw = _decompress(request.raw, encoding)
        except LookupError:
            return _one_error(415, detail=f"Unsupported Content-Encoding '{encoding[:32]}'.")
        except ValueError as exc:
            return _one_error(400, code="parse_error", title="Malformed request.", detail=str(exc))
        if raw is None:
            return _one_error(
                413, detail=f"The decompressed body must not exceed 5 MB ({MAX_BODY_BYTES} bytes)."
            )
        try:
            body = json.loads(raw.decode("utf-8"), parse_constant=_reject_constant)
        except (UnicodeDecodeError, ValueError, RecursionError) as exc:
            return _one_error(
                400,
                code="parse_error",
                title="Malformed request.",
                detail=f"JSON parse error - {str(exc)[:200]}",
            )
        request.parsed = body

        checker = _Checker()
        if not isinstance(body, dict):
            checker.fail("/data", f"The body must be a JSON object, not {_json_type(body)}.")
            incoming: list[_Incoming] = []
        else:
            incoming = VALIDATORS[endpoint](checker, body)
            _check_string_sizes(checker, body, raw)
        if not checker.problems:
            self._commit(checker, endpoint, incoming, request.received_at)
        if checker.problems:
            errors = [
                _error_object(400, detail=detail, pointer=pointer)
                for pointer, detail in checker.problems[:MAX_ERRORS]
            ]
            return _error_answer(400, errors)
        return _Answer(202)

    def _check_auth(self, header: str | None) -> _Answer | None:
        scheme, _, key = (header or "").strip().partition(" ")
        if scheme != AUTH_SCHEME or not key.strip():
            return _one_error(
                401,
                detail="Missing or invalid authorization scheme. Please use Klaviyo-API-Key.",
            )
        if not hmac.compare_digest(key.strip().encode(), self.api_key.encode()):
            return _one_error(
                401,
                code="authentication_failed",
                title="Incorrect authentication credentials.",
                detail="Incorrect authentication credentials.",
            )
        return None

    def _rate_headers(self, endpoint: str) -> list[tuple[str, str]]:
        limit = STEADY_LIMITS[endpoint]
        now = time.monotonic()
        with self._lock:
            start, used = self._windows.get(endpoint, (now, 0))
            if now - start >= RATE_WINDOW_SECONDS:
                start, used = now, 0
            used += 1
            self._windows[endpoint] = (start, used)
        reset = max(1, math.ceil(start + RATE_WINDOW_SECONDS - now))
        return [
            ("RateLimit-Limit", str(limit)),
            ("RateLimit-Remaining", str(max(0, limit - used))),
            ("RateLimit-Reset", str(reset)),
        ]

    def _commit(
        self, checker: _Checker, endpoint: str, incoming: list[_Incoming], received_at: float
    ) -> None:
        """Resolve profiles, dedup and record, all or nothing, under the lock."""
        with self._lock:
            translated = [self._translate(event.identifiers) for event in incoming]
            if endpoint in ("bulk_create_events", "bulk_create_client_events"):
                seen: set[tuple[Any, str, str]] = set()
                for event, identifiers in zip(incoming, translated, strict=True):
                    if event.unique_id is None:
                        continue
                    key = (self._peek(identifiers), event.metric, event.unique_id)
                    if key in seen:
                        checker.fail(
                            f"{event.pointer}/attributes/unique_id",
                            f"Duplicate unique_id '{event.unique_id[:64]}' for the same profile "
                            f"and metric '{event.metric}' in one bulk request.",
                        )
                        return
                    seen.add(key)
            for event, identifiers in zip(incoming, translated, strict=True):
                profile = self._resolve(identifiers, event.profile)
                unique_id = event.unique_id
                if unique_id is None:
                    moment = event.moment or datetime.fromtimestamp(received_at, UTC)
                    unique_id = moment.astimezone(UTC).replace(microsecond=0).isoformat()
                if (event.metric, unique_id) in profile.seen:
                    self._duplicates += 1
                    continue
                profile.seen.add((event.metric, unique_id))
                self._accepted += 1
                if not self.keep_events:
                    continue
                # The parsed body belongs to this request alone and nothing here mutates it;
                # every accessor hands out deep copies, so the record can share its parts.
                self._events.append(
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
            self._changed.notify_all()

    # ---- profiles (call with the lock held)

    def _translate(self, identifiers: list[tuple[str, str]]) -> list[tuple[str, str]]:
        """A minted ``_kx`` stands for its email (unless the event names an email itself)."""
        has_email = any(kind == "email" for kind, _ in identifiers)
        result: list[tuple[str, str]] = []
        for kind, value in identifiers:
            if kind == "_kx" and value in self._exchange:
                if not has_email:
                    result.append(("email", self._exchange[value]))
                continue
            result.append((kind, value))
        result.sort(key=lambda item: IDENTIFIER_PRIORITY.index(item[0]))
        return result

    def _peek(self, identifiers: list[tuple[str, str]]) -> Any:
        """Who these identifiers are now, without changing anything (for bulk repeat checks)."""
        for key in identifiers:
            if key in self._index:
                return self._index[key]
        return identifiers[0]

    def _resolve(self, identifiers: list[tuple[str, str]], sent: dict[str, Any]) -> _Profile:
        """Find, create or merge the profile these identifiers name (oldest profile survives)."""
        wanted = {kind: value for kind, value in identifiers if kind in SINGLE_VALUED}
        target: _Profile | None = None
        for key in identifiers:
            owner = self._index.get(key)
            if owner is None:
                continue
            candidate = self._profiles[owner]
            if candidate is target or candidate.conflicts_with(wanted):
                continue
            if target is None:
                target = candidate
            elif not candidate.conflicts_with(target.singles()):
                target = self._merge(target, candidate)
        if target is None:
            explicit = next((value for kind, value in identifiers if kind == "id"), None)
            usable = explicit and explicit not in self._profiles and explicit not in self._redirects
            target = _Profile(explicit if usable else _mint_profile_id(), next(self._sequence))
            self._profiles[target.id] = target
            self._index[("id", target.id)] = target.id
        for kind, value in identifiers:
            if (kind, value) in self._index or kind == "id":
                continue
            if kind in SINGLE_VALUED:
                if getattr(target, kind) not in (None, value):
                    continue
                setattr(target, kind, value)
            elif kind == "anonymous_id":
                target.anonymous_ids.append(value)
            else:
                target.exchange_ids.append(value)
            self._index[(kind, value)] = target.id
        for key, value in sent.items():
            if key not in IDENTIFIER_PRIORITY and value is not None:
                target.attributes[key] = copy.deepcopy(value)
        return target

    def _merge(self, first: _Profile, second: _Profile) -> _Profile:
        """Fold the younger profile into the older one, with its identifiers and events."""
        keep, gone = (first, second) if first.seq <= second.seq else (second, first)
        for kind in SINGLE_VALUED:
            if getattr(keep, kind) is None:
                setattr(keep, kind, getattr(gone, kind))
        keep.anonymous_ids.extend(x for x in gone.anonymous_ids if x not in keep.anonymous_ids)
        keep.exchange_ids.extend(x for x in gone.exchange_ids if x not in keep.exchange_ids)
        for key, value in gone.attributes.items():
            keep.attributes.setdefault(key, value)
        keep.seen |= gone.seen
        keep.merged_from.extend([gone.id, *gone.merged_from])
        for key, owner in list(self._index.items()):
            if owner == gone.id:
                self._index[key] = keep.id
        for event in self._events:
            if event["profile_id"] == gone.id:
                event["profile_id"] = keep.id
        for old, new in list(self._redirects.items()):
            if new == gone.id:
                self._redirects[old] = keep.id
        self._redirects[gone.id] = keep.id
        del self._profiles[gone.id]
        return keep

    # ---- recording

    def _record(self, request: _Request, endpoint: str | None, answer: _Answer) -> None:
        status = None if answer.drop else answer.status
        with self._lock:
            self._request_count += 1
            if status is None or status >= 400:
                self._rejected += 1
            self._requests.append(
                {
                    "method": request.method,
                    "path": request.path,
                    "query": dict(request.query),
                    "headers": dict(request.headers),
                    "body": request.parsed if self.keep_events else None,
                    "status": status,
                    "endpoint": endpoint,
                    "errors": answer.errors,
                    "received_at": request.received_at,
                }
            )

    # ---- control endpoints (for other processes) and the inspector

    def _control(self, request: _Request, path: str) -> _Answer:
        name = path[len("/_fake") :].strip("/")
        method = request.method
        try:
            if method == "GET" and name == "events":
                return _json_answer(
                    200,
                    self.events_for(request.query.get("metric"), email=request.query.get("email")),
                )
            if method == "GET" and name == "requests":
                return _json_answer(200, self.requests)
            if method == "GET" and name == "profiles":
                return _json_answer(200, self.profiles())
            if method == "GET" and name == "stats":
                return _json_answer(200, self.stats())
            if method == "GET" and name == "exchange-id":
                email = request.query.get("email", "")
                return _json_answer(200, {"email": email, "_kx": self.exchange_id_for(email)})
            if method == "POST" and name == "reset":
                self.reset()
                return _json_answer(200, {"reset": True})
            if method == "POST" and name == "faults":
                return _json_answer(200, self._control_faults(_control_json(request)))
            if name == "rate-limits" and method in ("GET", "POST"):
                if method == "POST":
                    spec = _control_json(request)
                    self.set_rate_limits(spec.get("limits"), time_scale=spec.get("time_scale"))
                return _json_answer(
                    200,
                    {
                        "limits": self.rate_limits,
                        "time_scale": self.time_scale,
                        "throttled": self.throttled,
                    },
                )
            if method == "POST" and name == "latency":
                seconds = _control_json(request).get("seconds")
                self.latency = seconds
                return _json_answer(200, {"latency": self.latency})
        except (ValueError, TypeError) as exc:
            return _json_answer(400, {"error": str(exc)})
        return _json_answer(404, {"error": f"no control endpoint {method} {request.path}"})

    def _control_faults(self, spec: dict[str, Any]) -> dict[str, Any]:
        count = spec.get("count", 1)
        if not isinstance(count, int) or isinstance(count, bool):
            raise ValueError("'count' must be an integer")
        if spec.get("reset"):
            self.reset_next(count=count)
        elif spec.get("timeout"):
            self.timeout_next(count=count, hold=float(spec.get("hold", DEFAULT_TIMEOUT_HOLD)))
        else:
            status = spec.get("status")
            if not isinstance(status, int) or isinstance(status, bool):
                raise ValueError("give 'status' (an HTTP code), 'timeout': true or 'reset': true")
            retry_after = spec.get("retry_after")
            self.fail_next(
                status,
                count=count,
                retry_after=None if retry_after is None else float(retry_after),
                code=spec.get("code"),
                detail=spec.get("detail"),
                pointer=spec.get("pointer"),
            )
        with self._lock:
            return {"queued": len(self._faults)}

    def _inspector(self) -> _Answer:
        with self._lock:
            recent = copy.deepcopy(self._events[-INSPECTOR_ROWS:])
            stats = self.stats()
            labels = [self._label(self._profiles.get(e["profile_id"]), e) for e in recent]
        rows = []
        for event, label in zip(reversed(recent), reversed(labels), strict=True):
            value = "" if event["value"] is None else f"{event['value']} "
            value += event["value_currency"] or ""
            props = json.dumps(event["properties"], indent=2, ensure_ascii=False, default=str)
            received = datetime.fromtimestamp(event["received_at"], UTC).strftime("%H:%M:%S")
            flags = " (backfill)" if event["backfill"] else ""
            cells = [
                received,
                event["time"] or "",
                event["metric"] + flags,
                label,
                value,
                event["unique_id"],
                event["endpoint"],
            ]
            tds = "".join(f"<td>{html.escape(str(cell))}</td>" for cell in cells)
            rows.append(
                f"<tr>{tds}<td><details><summary>{len(event['properties'])} properties"
                f"</summary><pre>{html.escape(props)}</pre></details></td></tr>"
            )
        table = (
            "<table><thead><tr><th>received (UTC)</th><th>time</th><th>metric</th>"
            "<th>profile</th><th>value</th><th>unique_id</th><th>endpoint</th>"
            "<th>properties</th></tr></thead><tbody>" + "".join(rows) + "</tbody></table>"
            if rows
            else "<p class=empty>No events yet.</p>"
        )
        counts = "".join(
            f"<span>{html.escape(name)}: <strong>{number}</strong></span> "
            for name, number in (
                ("accepted", stats["accepted"]),
                ("duplicates", stats["duplicates"]),
                ("rejected requests", stats["rejected"]),
                ("requests", stats["requests"]),
            )
        )
        page = (
            "<!doctype html><html lang=en><head><meta charset=utf-8>"
            "<title>Klaviyo stand-in</title><style>"
            "body{font:14px system-ui,sans-serif;margin:1.5rem;color:#222}"
            "table{border-collapse:collapse;width:100%}"
            "th,td{border-bottom:1px solid #ddd;padding:.35rem .5rem;text-align:left;"
            "vertical-align:top}th{background:#f5f5f5}pre{margin:.3rem 0;font-size:12px}"
            ".counts span{margin-right:1.2rem}code{background:#f2f2f2;padding:0 .2rem}"
            "</style></head><body><h1>Klaviyo stand-in</h1>"
            f"<p class=counts>{counts}</p>"
            f"<p>What Klaviyo would have received at <code>{html.escape(self.url)}</code> "
            f"(company_id <code>{html.escape(self.company_id)}</code>), newest first. JSON: "
            "<code>/_fake/events</code>, <code>/_fake/requests</code>.</p>"
            f"{table}<script>{_INSPECTOR_SCRIPT}</script></body></html>"
        )
        headers = [
            ("Content-Type", "text/html; charset=utf-8"),
            ("Content-Security-Policy", _INSPECTOR_CSP),
            ("X-Content-Type-Options", "nosniff"),
            ("Cache-Control", "no-store"),
        ]
        return _Answer(200, page.encode(), headers)

    @staticmethod
    def _label(profile: _Profile | None, event: dict[str, Any]) -> str:
        if profile is not None:
            for value in (profile.email, profile.phone_number, profile.external_id):
                if value:
                    return value
            if profile.anonymous_ids:
                return f"anonymous {profile.anonymous_ids[0]}"
        sent = event["profile"]
        return str(next((sent[k] for k in IDENTIFIER_PRIORITY if sent.get(k)), ""))


def _valid_revision(revision: str | None) -> bool:
    """``YYYY-MM-DD[.suffix]`` naming a real day that has already come (no revision from the
    future exists); the stand-in accepts every released date, Klaviyo accepts most of them."""
    match = REVISION_PATTERN.match(revision or "")
    if match is None:
        return False
    try:
        day = date(int(match[1]), int(match[2]), int(match[3]))
    except ValueError:
        return False
    return day <= datetime.now(UTC).date() + timedelta(days=1)


def _decompress(raw: bytes, encoding: str) -> bytes | None:
    """Undo Content-Encoding; None when the result would exceed the 5 MB limit."""
    if encoding in ("", "identity"):
        return raw
    if encoding not in ("gzip", "deflate"):
        raise LookupError(encoding)
    wbits = 16 + zlib.MAX_WBITS if encoding == "gzip" else zlib.MAX_WBITS
    decoder = zlib.decompressobj(wbits)
    try:
        out = decoder.decompress(raw, MAX_BODY_BYTES + 1)
    except zlib.error as exc:
        raise ValueError(f"Could not decode the {encoding} body: {exc}") from exc
    if len(out) > MAX_BODY_BYTES:
        return None
    if not decoder.eof:
        raise ValueError(f"Truncated {encoding} body.")
    return out


def _cors_headers(*, preflight: bool) -> list[tuple[str, str]]:
    """klaviyo.js calls the client endpoints cross-origin; so may a browser test."""
    headers = [("Access-Control-Allow-Origin", "*")]
    if preflight:
        headers += [
            ("Access-Control-Allow-Methods", "POST, OPTIONS"),
            ("Access-Control-Allow-Headers", "Content-Type, Accept, revision"),
            ("Access-Control-Max-Age", "600"),
        ]
    return headers


def _control_json(request: _Request) -> dict[str, Any]:
    try:
        payload = json.loads(request.raw or b"{}")
    except ValueError as exc:
        raise ValueError(f"the body must be JSON: {exc}") from exc
    if not isinstance(payload, dict):
        raise ValueError("the body must be a JSON object")
    return payload


# --------------------------------------------------------------------------- HTTP server


class _Server(ThreadingHTTPServer):
    """One thread per connection; stopping cuts keep-alive connections too."""

    daemon_threads = True
    block_on_close = False

    def __init__(self, address: tuple[str, int], fake: FakeKlaviyo) -> None:
        self.fake = fake
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def track(self, connection: socket.socket, *, open_: bool) -> None:
        with self._connections_lock:
            if open_:
                self._connections.add(connection)
            else:
                self._connections.discard(connection)

    def close_connections(self) -> None:
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)


class _BadFraming(Exception):
    """The request body could not be delimited (bad chunked encoding or Content-Length)."""


class _Handler(BaseHTTPRequestHandler):
    """Reads a request off the socket, writes the answer; keep-alive, like Klaviyo."""

    protocol_version = "HTTP/1.1"
    server_version = "FakeKlaviyo/1.0"
    sys_version = ""
    timeout = CONNECTION_IDLE_TIMEOUT
    server: _Server

    def setup(self) -> None:
        super().setup()
        self.server.track(self.connection, open_=True)

    def finish(self) -> None:
        self.server.track(self.connection, open_=False)
        with contextlib.suppress(OSError):
            super().finish()

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the inspector and ``requests`` are the log."""

    def do_GET(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def do_PUT(self) -> None:
        self._serve()

    def do_PATCH(self) -> None:
        self._serve()

    def do_DELETE(self) -> None:
        self._serve()

    def do_OPTIONS(self) -> None:
        self._serve()

    def _serve(self) -> None:
        fake = self.server.fake
        split = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(split.query, keep_blank_values=True).items()}
        try:
            raw, too_large = self._read_body()
        except (_BadFraming, ValueError):
            self.close_connection = True
            self._write(_one_error(400, detail="Malformed request body framing."))
            return
        request = _Request(
            self.command, split.path, query, dict(self.headers.items()), raw, too_large
        )
        try:
            answer = fake._dispatch(request)
        except Exception as exc:  # a bug in the stand-in must show, not hang the client
            traceback.print_exc()
            answer = _one_error(500, detail=f"FakeKlaviyo internal error: {exc!r}")
        if answer.delay:
            fake._stopping.wait(answer.delay)
        if answer.drop:
            self.close_connection = True
            if answer.reset:  # SO_LINGER 0: closing sends a RST instead of a FIN
                with contextlib.suppress(OSError):
                    self.connection.setsockopt(
                        socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                    )
                    self.connection.close()
            return
        if too_large:
            answer.close = True
        self._write(answer)

    def _read_body(self) -> tuple[bytes, bool]:
        """Read the whole body (draining an oversized one so the 413 can be delivered)."""
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            return self._read_chunked()
        length_text = self.headers.get("Content-Length")
        length = int(length_text) if length_text else 0
        if length < 0:
            raise _BadFraming("negative Content-Length")
        if length > DRAIN_LIMIT_BYTES:
            self.close_connection = True
            return b"", True
        if length > MAX_BODY_BYTES:
            remaining = length
            while remaining > 0:
                chunk = self.rfile.read(min(remaining, 1 << 16))
                if not chunk:
                    break
                remaining -= len(chunk)
            return b"", True
        return self.rfile.read(length), False

    def _read_chunked(self) -> tuple[bytes, bool]:
        parts: list[bytes] = []
        total = 0
        while True:
            line = self.rfile.readline(1024)
            try:
                size = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError as exc:
                raise _BadFraming("bad chunk size") from exc
            if size == 0:
                while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                    pass
                break
            total += size
            if total > DRAIN_LIMIT_BYTES:
                self.close_connection = True
                return b"", True
            chunk = self.rfile.read(size)
            self.rfile.readline(1024)
            if total <= MAX_BODY_BYTES:
                parts.append(chunk)
        if total > MAX_BODY_BYTES:
            return b"", True
        return b"".join(parts), False

    def _write(self, answer: _Answer) -> None:
        try:
            self.send_response(answer.status)
            for name, value in answer.headers:
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(answer.body)))
            if answer.close:
                self.send_header("Connection", "close")
                self.close_connection = True
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(answer.body)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True


# --------------------------------------------------------------------------- CLI


def main(argv: Sequence[str] | None = None) -> int:
    """Run the stand-in in the foreground until Ctrl-C or SIGTERM."""
    parser = argparse.ArgumentParser(
        prog="python -m flask_klaviyo.testing",
        description="A local Klaviyo stand-in (Events API + client endpoints) with an inspector.",
    )
    parser.add_argument("--port", type=int, default=0, help="port to listen on (0: any free)")
    parser.add_argument("--api-key", default=DEFAULT_API_KEY, help="private key to accept")
    parser.add_argument("--company-id", default=DEFAULT_COMPANY_ID, help="public key / company id")
    parser.add_argument("--host", default=DEFAULT_HOST, help="loopback address to bind")
    parser.add_argument(
        "--rate-limits",
        default=None,
        help='enforce limits: "klaviyo" (the published ones) or JSON '
        '{"bulk_create_events": [[10, 1], [150, 60]], ...}',
    )
    parser.add_argument(
        "--time-scale", type=float, default=1.0, help="run the rate-limit windows N times faster"
    )
    parser.add_argument(
        "--no-keep-events",
        action="store_true",
        help="count and dedup accepted events without keeping them (long benchmarks)",
    )
    args = parser.parse_args(argv)
    limits = args.rate_limits
    if limits not in (None, "klaviyo"):
        try:
            limits = json.loads(limits)
        except ValueError as exc:
            print(f"--rate-limits: not JSON: {exc}", file=sys.stderr)
            return 2

    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous: dict[int, Any] = {}
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(ValueError):  # not the main thread: Ctrl-C stays default
            previous[signum] = signal.signal(signum, on_signal)
    try:
        fake = FakeKlaviyo(
            api_key=args.api_key,
            company_id=args.company_id,
            host=args.host,
            port=args.port,
            rate_limits=limits,
            time_scale=args.time_scale,
            keep_events=not args.no_keep_events,
        ).start()
    except (OSError, ValueError) as exc:
        print(f"Klaviyo stand-in could not start: {exc}", file=sys.stderr)
        return 2
    print(f"Klaviyo stand-in listening on {fake.url} (inspector at /)", flush=True)
    try:
        while not stop.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        fake.stop()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    return 0


if __name__ == "__main__":
    sys.exit(main())
