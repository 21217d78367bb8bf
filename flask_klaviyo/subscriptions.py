"""Subscriptions with explicit, recorded consent: what ``klaviyo.subscribe(...)`` and
``klaviyo.unsubscribe(...)`` queue.

Consent is never inferred (not from an order, not from an account): the caller says which
channels the person agreed to. Email marketing needs an email address; SMS needs an E.164 phone
number and its own consent. A ``consented_at`` in the past is a historical import (Klaviyo
records that consent without asking again); one in the future is an error. Whether Klaviyo asks
the person to confirm (double opt-in) is the list's setting in Klaviyo: the answer says
``confirmation_sent`` unless the list is named in ``KLAVIYO_SINGLE_OPT_IN_LISTS``.

Klaviyo's rule for unsubscribing: a profile that is not in the given list is unsubscribed from
that channel's marketing everywhere (globally), not just from the list.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from .delivery.operations import Operation
from .exceptions import KlaviyoSchemaError
from .profiles import MAX_TEXT, email_of, phone_of

__all__ = [
    "CHANNELS",
    "Subscription",
    "subscribe_payload",
    "unsubscribe_payload",
]

SUBJECT = "subscription"
CHANNELS = ("email", "sms")
CLOCK_SKEW = timedelta(minutes=5)  # a consent time this far ahead is our clock, not the future
IfNotOnList = Literal["unsubscribe_everywhere"]


@dataclass(frozen=True)
class Subscription:
    """What ``subscribe`` did: ``status`` is what to tell the person."""

    status: Literal["subscribed", "confirmation_sent"]
    list_id: str
    channels: tuple[str, ...]
    historical: bool
    operation: Operation | None = None


def _channels(channels: Any) -> tuple[str, ...]:
    if isinstance(channels, str) or not isinstance(channels, Iterable):
        raise KlaviyoSchemaError(SUBJECT, "channels", 'must be a list such as ("email", "sms")')
    chosen = tuple(dict.fromkeys(channels))
    unknown = [c for c in chosen if c not in CHANNELS]
    if not chosen or unknown:
        raise KlaviyoSchemaError(
            SUBJECT, "channels", f"must name some of {', '.join(CHANNELS)}, got {channels!r}"
        )
    return chosen


def _list_id(list_id: Any) -> str:
    if not isinstance(list_id, str) or not list_id.strip() or len(list_id) > MAX_TEXT:
        raise KlaviyoSchemaError(SUBJECT, "list_id", f"must be a Klaviyo list id, got {list_id!r}")
    return list_id.strip()


def _contacts(email: Any, phone_number: Any, channels: tuple[str, ...]) -> dict[str, str]:
    profile: dict[str, str] = {}
    if email is not None:
        profile["email"] = email_of(email)
    if phone_number is not None:
        profile["phone_number"] = phone_of(phone_number)
    if "email" in channels and "email" not in profile:
        raise KlaviyoSchemaError(SUBJECT, "email", "email marketing needs an email address")
    if "sms" in channels and "phone_number" not in profile:
        raise KlaviyoSchemaError(
            SUBJECT, "phone_number", "SMS marketing needs an E.164 phone number"
        )
    return profile


def _consent_time(consented_at: Any, now: datetime) -> datetime | None:
    if consented_at is None:
        return None
    if isinstance(consented_at, str):
        try:
            consented_at = datetime.fromisoformat(consented_at)
        except ValueError:
            raise KlaviyoSchemaError(
                SUBJECT, "consented_at", f"must be a date and time, got {consented_at!r}"
            ) from None
    if not isinstance(consented_at, datetime):
        raise KlaviyoSchemaError(SUBJECT, "consented_at", "must be a datetime")
    when = consented_at if consented_at.tzinfo else consented_at.replace(tzinfo=UTC)
    if when > now + CLOCK_SKEW:
        raise KlaviyoSchemaError(SUBJECT, "consented_at", "is in the future")
    return when.astimezone(UTC)


def subscribe_payload(
    *,
    email: Any,
    phone_number: Any,
    list_id: Any,
    channels: Any,
    source: Any,
    consented_at: Any,
    now: datetime | None = None,
) -> tuple[dict[str, Any], str]:
    """The ``subscribe`` payload and its key (list and person: a double submit is one)."""
    chosen = _channels(channels)
    profile: dict[str, Any] = _contacts(email, phone_number, chosen)
    when = _consent_time(consented_at, now or datetime.now(UTC))
    marketing: dict[str, Any] = {"consent": "SUBSCRIBED"}
    if when is not None:
        marketing["consented_at"] = when.isoformat()
    profile["subscriptions"] = {channel: {"marketing": dict(marketing)} for channel in chosen}
    payload: dict[str, Any] = {"list_id": _list_id(list_id), "profile": profile}
    if source is not None:
        if not isinstance(source, str) or not source.strip() or len(source) > MAX_TEXT:
            raise KlaviyoSchemaError(SUBJECT, "source", f"must be short text, got {source!r}")
        payload["custom_source"] = source.strip()
    if when is not None:
        payload["historical_import"] = True
    person = profile.get("email") or profile["phone_number"]
    return payload, f"{payload['list_id']} {person}"


def unsubscribe_payload(
    *,
    email: Any,
    phone_number: Any,
    list_id: Any,
    channels: Any,
    if_not_on_list: Any,
) -> tuple[dict[str, Any], str]:
    """The ``unsubscribe`` payload. ``if_not_on_list`` spells Klaviyo's rule out at the call:
    a profile not in the list is unsubscribed from the channels' marketing everywhere."""
    if if_not_on_list != "unsubscribe_everywhere":
        raise KlaviyoSchemaError(
            SUBJECT,
            "if_not_on_list",
            "Klaviyo unsubscribes a profile that is not in the list from all marketing on "
            "those channels; only 'unsubscribe_everywhere' says what happens",
        )
    chosen = _channels(channels)
    profile: dict[str, Any] = _contacts(email, phone_number, chosen)
    profile["subscriptions"] = {
        channel: {"marketing": {"consent": "UNSUBSCRIBED"}} for channel in chosen
    }
    payload = {"list_id": _list_id(list_id), "profile": profile}
    person = profile.get("email") or profile["phone_number"]
    return payload, f"{payload['list_id']} {person}"
