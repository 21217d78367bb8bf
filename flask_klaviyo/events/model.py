"""The Event model and the limits every event is held to: metric names, Klaviyo's documented
limits, ``as_utc``, and the profile resource object the bodies carry.

``Event.to_dict`` is what the outbox and RQ jobs carry; ``Event.to_payload`` is the exact Create
Event body; the bulk bodies (:mod:`.bulk`) reuse ``event_attributes`` and ``_profile_data``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from ..identity.identifiers import IDENTIFIER_KEYS
from .ids import canonical_json

__all__ = [
    "ACTIVE_ON_SITE",
    "ADDED_TO_CART",
    "BULK_OPERATION",
    "CANCELED_ORDER",
    "CREATED_ACCOUNT",
    "DEFAULT_CURRENCY",
    "EARLIEST_TIME",
    "FAILED_PAYMENT",
    "FULFILLED_ORDER",
    "MAX_BULK_BYTES",
    "MAX_BULK_EVENTS",
    "MAX_FUTURE",
    "MAX_METRIC_NAME",
    "MAX_NESTING",
    "MAX_PAYLOAD_BYTES",
    "MAX_PROPERTIES",
    "MAX_STRING_BYTES",
    "ORDERED_PRODUCT",
    "PLACED_ORDER",
    "REFUNDED_ORDER",
    "RESET_PASSWORD",
    "SHIPPING_UPDATE",
    "STARTED_CHECKOUT",
    "UPDATED_ACCOUNT",
    "VIEWED_PRODUCT",
    "Event",
    "as_utc",
]

VIEWED_PRODUCT = "Viewed Product"
ADDED_TO_CART = "Added to Cart"
STARTED_CHECKOUT = "Started Checkout"
PLACED_ORDER = "Placed Order"
ORDERED_PRODUCT = "Ordered Product"
FULFILLED_ORDER = "Fulfilled Order"
CANCELED_ORDER = "Canceled Order"
REFUNDED_ORDER = "Refunded Order"
# The account notifications of seed 001's transactional section, and the onsite visit metric.
CREATED_ACCOUNT = "Created Account"
UPDATED_ACCOUNT = "Updated Account"
RESET_PASSWORD = "Reset Password"
# The order notifications of the same section.
FAILED_PAYMENT = "Failed Payment"
SHIPPING_UPDATE = "Shipping Update"
ACTIVE_ON_SITE = "Active on Site"
BULK_OPERATION = "Bulk Create Events"

DEFAULT_CURRENCY = "USD"

# Klaviyo's documented limits (Create Event / Bulk Create Events OpenAPI descriptions).
MAX_PROPERTIES = 400
# Property values nested deeper than this are refused (Klaviyo names no limit; this keeps every
# JSON encoder, ours and Klaviyo's, far from its recursion limit).
MAX_NESTING = 100
MAX_STRING_BYTES = 100 * 1024
MAX_PAYLOAD_BYTES = 5 * 1024 * 1024
MAX_METRIC_NAME = 127  # "must be less than 128 characters"
MAX_BULK_EVENTS = 1000
MAX_BULK_BYTES = 5_000_000  # "5MB": the decimal reading is the safe one
EARLIEST_TIME = datetime(1990, 1, 1, tzinfo=UTC)  # "must be after the year 1990"
MAX_FUTURE = timedelta(days=365)  # "can only be up to 1 year in the future"


def as_utc(value: datetime | date | str | float | None) -> datetime:
    """Aware UTC, whatever the storefront handed over: naive datetimes are taken as UTC,
    numbers as UNIX seconds (the legacy Track API's ``time``)."""
    if value is None:
        return datetime.now(UTC)
    if value.__class__ is datetime and value.tzinfo is UTC:
        return value  # already what we want (every event's time passes here twice)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return datetime.fromtimestamp(value, UTC)
    if isinstance(value, str):
        value = datetime.fromisoformat(value.replace("Z", "+00:00"))
    elif not isinstance(value, datetime):
        value = datetime(value.year, value.month, value.day)
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


@dataclass
class Event:
    """One Klaviyo event: ``to_dict`` is what RQ jobs carry, ``to_payload`` what Klaviyo takes."""

    metric: str
    properties: dict[str, Any]
    profile: dict[str, Any]
    time: datetime
    value: float | None = None
    value_currency: str | None = None
    unique_id: str | None = None
    backfill: bool = False

    def __post_init__(self) -> None:
        # A naive time would serialise without an offset, which Klaviyo's schema rejects.
        self.time = as_utc(self.time)

    def to_dict(self) -> dict[str, Any]:
        return {
            "metric": self.metric,
            "properties": self.properties,
            "profile": self.profile,
            "time": self.time.isoformat(),
            "value": self.value,
            "value_currency": self.value_currency,
            "unique_id": self.unique_id,
            "backfill": self.backfill,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Event:
        return cls(
            metric=data["metric"],
            properties=dict(data.get("properties") or {}),
            profile=dict(data.get("profile") or {}),
            time=as_utc(data["time"]),
            value=data.get("value"),
            value_currency=data.get("value_currency"),
            unique_id=data.get("unique_id"),
            backfill=bool(data.get("backfill", False)),
        )

    def event_attributes(self) -> dict[str, Any]:
        """The event's JSON:API attributes without the profile (a bulk entry's shape)."""
        attributes: dict[str, Any] = {
            "properties": self.properties,
            "time": self.time.isoformat(),
        }
        if self.value is not None:
            attributes["value"] = self.value
        if self.value_currency is not None:
            attributes["value_currency"] = self.value_currency
        if self.unique_id is not None:
            attributes["unique_id"] = self.unique_id
        if self.backfill:
            attributes["backfill"] = True
        attributes["metric"] = {"data": {"type": "metric", "attributes": {"name": self.metric}}}
        return attributes

    def to_payload(self) -> dict[str, Any]:
        """The exact Create Event body."""
        attributes = self.event_attributes()
        attributes["profile"] = {"data": _profile_data(self.profile, meta_inside=True)}
        return {"data": {"type": "event", "attributes": attributes}}

    def profile_key(self) -> str:
        """Canonical JSON of the identifiers: events with equal keys belong to one profile."""
        return _profile_key(self.profile)

    def dedup_key(self) -> tuple[str, str, str]:
        """What Klaviyo dedups on; without a unique_id it uses the time to the second."""
        unique = self.unique_id
        if unique is None:
            unique = "@" + self.time.replace(microsecond=0).isoformat()
        return (self.profile_key(), self.metric, unique)


def _profile_key(profile: Mapping[str, Any]) -> str:
    identifiers = {key: profile[key] for key in IDENTIFIER_KEYS if _present(profile.get(key))}
    if isinstance(identifiers.get("email"), str):
        identifiers["email"] = identifiers["email"].strip().lower()
    return canonical_json(identifiers)


def _present(value: Any) -> bool:
    """None and "" say nothing about a profile (and Klaviyo rejects an empty email)."""
    return value is not None and value != ""


def _profile_data(profile: Mapping[str, Any], *, meta_inside: bool) -> dict[str, Any]:
    """A profile resource object. ``id`` is the resource id, not an attribute; ``meta`` sits in
    the attributes for Create Event but beside them for Bulk Create Events (the two schemas
    differ)."""
    attributes = {
        key: value
        for key, value in profile.items()
        if _present(value) and key != "id" and (meta_inside or key != "meta")
    }
    data: dict[str, Any] = {"type": "profile"}
    if _present(profile.get("id")):
        data["id"] = profile["id"]
    data["attributes"] = attributes
    if not meta_inside and _present(profile.get("meta")):
        data["meta"] = profile["meta"]
    return data


def _describe(value: Any) -> str:
    """A value as an error message names it: its type and the start of its repr (builders and
    both validators say it alike)."""
    text = repr(value)
    return f"{type(value).__name__} {text[:40]}{'...' if len(text) > 40 else ''}"
