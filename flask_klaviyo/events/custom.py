"""Any metric that is not one of Klaviyo's built-in ecommerce ones: a merchant's own event."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from ..exceptions import KlaviyoSchemaError
from .ids import canonical_json, stable_id
from .model import MAX_NESTING, Event
from .values import _event_time, _jsonable, _money, _profile, _too_deep

__all__ = ["custom_event"]


def custom_event(
    metric: str,
    properties: Mapping[str, Any] | None,
    *,
    profile: Mapping[str, Any] | None,
    value: Any = None,
    unique_id: str | None = None,
    time: datetime | None = None,
    currency: str | None = None,
) -> Event:
    """Any other metric. Without a unique_id, the same properties in the same second are one
    event (a double-submitted form), different ones are two."""
    when = _event_time(metric, time)
    if _too_deep(properties):
        raise KlaviyoSchemaError(
            str(metric), "properties", f"nested deeper than {MAX_NESTING} levels (or a cycle)"
        )
    props = _jsonable(dict(properties or {}))
    if unique_id is None:
        unique_id = stable_id(metric, canonical_json(props), int(when.timestamp()))
    return Event(
        metric=metric,
        properties=props,
        profile=_profile(profile),
        time=when,
        value=_money(value),
        value_currency=currency,
        unique_id=unique_id,
    )
