"""The one path from the tracking API to the outbox: build under the strict rule, validate,
then queue (after the response in a request, at once outside one).

An event nobody can attach to a person yet is validated with a placeholder identity and parked
after the response (identity's settle); an operation is checked to be a registered kind with a
JSON payload. Input that cannot become an event or operation raises in strict mode; otherwise it
is logged and kept as a dead letter naming the field, and the page goes on.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, TypeVar

from flask import g, has_request_context

from ._state import tolerate
from .delivery import kinds
from .delivery.handoff import push_now
from .delivery.operations import Operation
from .events import Event, mask_profile, validate_event
from .exceptions import KlaviyoSchemaError
from .identity.rules import needs_identity, provisional

__all__ = [
    "PENDING_EVENTS",
    "PENDING_OPERATIONS",
    "build",
    "build_and_enqueue",
    "enqueue",
    "submit",
    "valid",
]

log = logging.getLogger(__name__)

T = TypeVar("T")

PENDING_EVENTS = "_klaviyo_pending"  # g: this request's events, queued after the response
PENDING_OPERATIONS = "_klaviyo_operations"  # g: this request's other operations


def build(metric: Any, builder: Callable[[], T]) -> T | None:
    """Run an event builder. Input it cannot make an event of (no order id, lines that are
    not a list, a time that is no time) raises KlaviyoSchemaError in strict mode; otherwise it
    is logged and kept as a dead letter naming the field."""
    try:
        return builder()
    except KlaviyoSchemaError as exc:
        record = {
            "metric": str(metric),
            "properties": {},
            "profile": {},
            "time": datetime.now(UTC).isoformat(),
        }
        errors = [{"code": "invalid", "detail": str(exc), "pointer": exc.field}]
        tolerate(
            "%s event not built: %s", metric, exc, record=record, errors=errors, traceback=False
        )
        return None


def valid(event: Event) -> bool:
    """Klaviyo would accept it; else the strict rule (raise, or log and keep a dead letter)."""
    try:
        validate_event(event)
    except KlaviyoSchemaError as exc:
        tolerate(
            "invalid %s event not sent: %s (%s)",
            event.metric,
            exc,
            mask_profile(event.profile),
            record=event.to_dict(),
            errors=[{"code": "invalid", "detail": exc.message, "pointer": exc.field}],
            traceback=False,
        )
        return False
    return True


def submit(event: Event) -> Event | None:
    """Validate, then queue; an anonymous event in a request is parked after the response."""
    in_request = has_request_context()
    parkable = in_request and needs_identity(event.profile)
    if not valid(provisional(event) if parkable else event):
        return None
    if in_request:
        g.setdefault(PENDING_EVENTS, []).append(event)
    else:
        push_now([event])
    return event


def enqueue(kind: str, payload: Mapping[str, Any], key: str | None = None) -> Operation | None:
    """Queue one operation of a registered kind with a JSON payload."""
    try:
        kinds.get(kind)
        operation = Operation(kind, dict(payload), key)
        json.dumps(operation.to_dict(), allow_nan=False)
    except (LookupError, TypeError, ValueError) as exc:
        tolerate("%s operation not queued: %s", kind, exc, traceback=False)
        return None
    if has_request_context():
        g.setdefault(PENDING_OPERATIONS, []).append(operation)
    else:
        push_now([operation])
    return operation


def build_and_enqueue(
    subject: str, kind: str, make: Callable[[], tuple[Mapping[str, Any], str | None]]
) -> Operation | None:
    """Make an operation's payload and key under the strict rule, then queue it."""
    made = build(subject, make)
    return None if made is None else enqueue(kind, *made)
