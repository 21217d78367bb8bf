"""The body checks Bulk Subscribe and Bulk Unsubscribe share: the job resource, its optional
list relationship, each profile's email / E.164 phone, and the channels it names.

Klaviyo's rules (bulk_subscribe_profiles.json, bulk_unsubscribe_profiles.json): every
``consent`` is the one value the endpoint supports (``SUBSCRIBED`` / ``UNSUBSCRIBED``); a profile
names at least one channel; an email channel needs the profile's ``email``, an SMS or WhatsApp
channel its ``phone_number`` (E.164). The stand-in's own email and phone rules are those of
:mod:`.profile_checks`, never the library's.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from .jsonapi import Checker, escape_pointer
from .profile_checks import E164_PATTERN, EMAIL_PATTERN

log = logging.getLogger(__name__)

# channel -> its message types that carry a ``consent`` (SubscriptionParameters and kin)
SUBSCRIBE_CHANNELS = {
    "email": ("marketing", "open_tracking"),
    "sms": ("marketing", "transactional"),
    "whatsapp": ("marketing", "transactional"),
    "push": ("marketing",),
}
UNSUBSCRIBE_CHANNELS = {
    "email": ("marketing", "open_tracking"),
    "sms": ("marketing", "transactional"),
    "whatsapp": ("marketing", "transactional", "conversational"),
    "push": ("marketing",),
}
NEEDS = {"email": "email", "sms": "phone_number", "whatsapp": "phone_number"}
RECORDED = {("email", "marketing"): "email", ("sms", "marketing"): "sms"}  # what the book keeps


@dataclass
class Wanted:
    """One consent a profile asks for: the channel, message type, its parameters and where."""

    channel: str
    message: str
    params: dict[str, Any]
    pointer: str

    @property
    def recorded_as(self) -> str | None:
        """The consent book's channel name, or None for a channel the stand-in only checks."""
        return RECORDED.get((self.channel, self.message))


@dataclass
class Subscriber:
    """One checked profile of a job."""

    index: int
    pointer: str
    profile_id: str | None
    email: str | None
    phone_number: str | None
    wanted: list[Wanted]


def check_job(
    checker: Checker, body: Any, job_type: str, *, most: int
) -> tuple[dict[str, Any] | None, list[Any], str | None]:
    """The job resource: (its attributes, the profile entries, the list id or None)."""
    attributes = checker.resource(body, job_type)
    entries = checker.listing(
        attributes, "profiles", "/data/attributes", most=most, noun="profiles"
    )
    holder = (attributes or {}).get("profiles")
    if not entries and isinstance(holder, dict) and isinstance(holder.get("data"), list):
        checker.fail("/data/attributes/profiles/data", "At least one profile is required.")
    data = body.get("data") if isinstance(body, dict) else None
    relationships = checker.member(
        data if isinstance(data, dict) else None, "relationships", "/data", "object", required=False
    )
    holder = checker.member(relationships, "list", "/data/relationships", "object", required=False)
    base = "/data/relationships/list/data"
    listed = checker.member(holder, "data", "/data/relationships/list", "object", required=True)
    checker.resource_type(listed, "list", base)
    list_id = checker.member(listed, "id", base, "string", required=True)
    if list_id is not None and not list_id.strip():
        checker.fail(f"{base}/id", "'id' must not be empty.")
        list_id = None
    return attributes, entries, list_id


def check_subscriber(
    checker: Checker,
    entry: Any,
    index: int,
    *,
    channels: dict[str, tuple[str, ...]],
    consent: str,
    with_id: bool,
) -> Subscriber | None:
    """One ``profile`` entry of the job; None after recording every problem."""
    base = f"/data/attributes/profiles/data/{index}"
    if not isinstance(entry, dict):
        checker.fail(base, "Each profile must be an object.")
        return None
    before = len(checker.problems)
    checker.resource_type(entry, "profile", base)
    profile_id = None
    if with_id:
        profile_id = checker.member(entry, "id", base, "string", required=False)
    attrs = checker.member(entry, "attributes", base, "object", required=True)
    attrs_base = f"{base}/attributes"
    email = checker.member(attrs, "email", attrs_base, "string", required=False)
    phone = checker.member(attrs, "phone_number", attrs_base, "string", required=False)
    if email is not None and not EMAIL_PATTERN.match(email.strip()):
        checker.fail(f"{attrs_base}/email", f"Invalid email address: '{email[:64]}'.")
    if phone is not None and not E164_PATTERN.match(phone):
        checker.fail(
            f"{attrs_base}/phone_number",
            f"Invalid phone number format: '{phone[:32]}'. Use E.164, e.g. +15005550006.",
        )
    subs_base = f"{attrs_base}/subscriptions"
    subscriptions = checker.member(attrs, "subscriptions", attrs_base, "object", required=True)
    wanted = _check_channels(checker, subscriptions, subs_base, channels, consent)
    if subscriptions is not None and not wanted and len(checker.problems) == before:
        names = ", ".join(channels)
        checker.fail(subs_base, f"At least one channel subscription is required: {names}.")
    for channel in dict.fromkeys(w.channel for w in wanted):
        needed = NEEDS.get(channel)
        if needed is not None and not (attrs or {}).get(needed):
            what = "an email address" if needed == "email" else "an E.164 phone number"
            checker.fail(
                f"{attrs_base}/{needed}",
                f"'{needed}' is required to change consent on the {channel} channel ({what}).",
            )
    if len(checker.problems) > before:
        return None
    return Subscriber(
        index,
        base,
        profile_id,
        email.strip().lower() if email else None,
        phone or None,
        wanted,
    )


def _check_channels(
    checker: Checker,
    subscriptions: dict[str, Any] | None,
    base: str,
    channels: dict[str, tuple[str, ...]],
    consent: str,
) -> list[Wanted]:
    wanted: list[Wanted] = []
    for channel, messages in channels.items():
        chosen = checker.member(subscriptions, channel, base, "object", required=False)
        channel_base = f"{base}/{escape_pointer(channel)}"
        if channel == "push" and chosen is not None:
            checker.member(chosen, "marketing", channel_base, "object", required=True)
            if consent == "UNSUBSCRIBED":
                checker.member(chosen, "tokens", channel_base, "array", required=True)
        for message in messages:
            params = checker.member(chosen, message, channel_base, "object", required=False)
            if params is None:
                continue
            pointer = f"{channel_base}/{message}"
            value = checker.member(params, "consent", pointer, "string", required=True)
            if value is not None and value != consent:
                checker.fail(
                    f"{pointer}/consent", f"'consent' must be '{consent}', not '{value[:32]}'."
                )
                continue
            if value is not None:
                wanted.append(Wanted(channel, message, params, pointer))
    return wanted
