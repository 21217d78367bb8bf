"""Create Back In Stock Subscription (``POST /api/back-in-stock-subscriptions``).

ServerBISSubscriptionCreateQuery: ``channels`` (EMAIL, PUSH, SMS, WHATSAPP; at least one), the
profile (``attributes.profile.data.attributes``: an email for EMAIL, an E.164 phone number for
SMS and WHATSAPP, or an external id / profile id), and ``relationships.variant`` naming a
variant of the catalog. A problem is a 400 with its pointer; a variant the catalog does not
have is a 400 at ``/data/relationships/variant/data/id``. Accepted: 202 with no body, the
profile resolved (created if new) and the subscription kept (``fake.back_in_stock()``).
"""

from __future__ import annotations

import logging
from typing import Any

from .jsonapi import Answer, Checker, check_string_sizes, iso, one_error
from .jsonapi import problems_answer as problems
from .profile_checks import E164_PATTERN, EMAIL_PATTERN
from .state import Call

log = logging.getLogger(__name__)

TYPE = "back-in-stock-subscription"
CHANNELS = ("EMAIL", "PUSH", "SMS", "WHATSAPP")
PROFILE_BASE = "/data/attributes/profile/data"
VARIANT_POINTER = "/data/relationships/variant/data/id"


def handle(call: Call) -> Answer:
    checker = Checker()
    asked = _check(checker, call.body)
    if not checker.problems:
        check_string_sizes(checker, call.body, call.raw)
    if checker.problems or asked is None:
        return problems(checker.problems)
    channels, who, variant = asked
    state = call.state
    with state.lock:
        state.jobs.settle_due()  # a variant created by a job Klaviyo has finished exists
        if variant not in state.catalog_variants:
            return one_error(
                400,
                detail=f"The catalog variant {variant[:200]} does not exist.",
                pointer=VARIANT_POINTER,
            )
        identifiers = [(kind, who[kind]) for kind in ("email", "phone_number", "external_id")]
        identifiers = [(kind, value) for kind, value in identifiers if value]
        if who.get("id") and state.profiles.current(who["id"]) is not None:
            profile_id = state.profiles.current(who["id"]).id
        elif identifiers:
            profile_id = state.profiles.resolve(identifiers, {}).id
        else:
            return one_error(
                404, detail=f"No profile {who['id'][:64]}.", pointer=f"{PROFILE_BASE}/id"
            )
        state.back_in_stock.append(
            {
                "email": who.get("email"),
                "phone_number": who.get("phone_number"),
                "external_id": who.get("external_id"),
                "profile_id": profile_id,
                "variant": variant,
                "item": state.catalog_variants[variant]["item"],
                "channels": channels,
                "received_at": iso(call.request.received_at),
            }
        )
        state.changed.notify_all()
    return Answer(202)


def _check(checker: Checker, body: Any) -> tuple[list[str], dict[str, Any], str] | None:
    """(channels, profile identifiers, variant id), or None after recording why not."""
    attrs = checker.resource(body, TYPE)
    channels = checker.member(attrs, "channels", "/data/attributes", "array", required=True)
    for index, channel in enumerate(channels or []):
        if channel not in CHANNELS:
            checker.fail(
                f"/data/attributes/channels/{index}",
                f"'{str(channel)[:20]}' is not a valid channel: one of {', '.join(CHANNELS)}.",
            )
    if channels == []:
        checker.fail("/data/attributes/channels", "At least one channel is required.")
    who = _profile(checker, attrs, channels or [])
    data = body.get("data") if isinstance(body, dict) else None
    relationships = checker.member(
        data if isinstance(data, dict) else None, "relationships", "/data", "object", required=True
    )
    holder = checker.member(
        relationships, "variant", "/data/relationships", "object", required=True
    )
    variant = checker.member(holder, "data", "/data/relationships/variant", "object", required=True)
    checker.resource_type(variant, "catalog-variant", "/data/relationships/variant/data")
    variant_id = checker.member(
        variant, "id", "/data/relationships/variant/data", "string", required=True
    )
    if checker.problems or who is None or variant_id is None or channels is None:
        return None
    return list(dict.fromkeys(channels)), who, variant_id


def _profile(
    checker: Checker, attrs: dict[str, Any] | None, channels: list[str]
) -> dict[str, Any] | None:
    profile = checker.member(attrs, "profile", "/data/attributes", "object", required=True)
    data = checker.member(profile, "data", "/data/attributes/profile", "object", required=True)
    checker.resource_type(data, "profile", PROFILE_BASE)
    profile_id = checker.member(data, "id", PROFILE_BASE, "string", required=False)
    pattrs = checker.member(data, "attributes", PROFILE_BASE, "object", required=True)
    if pattrs is None:
        return None
    base = f"{PROFILE_BASE}/attributes"
    who: dict[str, Any] = {"id": profile_id}
    for key in ("email", "phone_number", "external_id"):
        who[key] = checker.member(pattrs, key, base, "string", required=False)
    if who["email"] is not None:
        who["email"] = who["email"].strip().lower()
        if not EMAIL_PATTERN.match(who["email"]):
            checker.fail(f"{base}/email", f"Invalid email address '{who['email'][:80]}'.")
    if who["phone_number"] is not None and not E164_PATTERN.match(who["phone_number"]):
        checker.fail(f"{base}/phone_number", "'phone_number' must be in E.164 format.")
    if "EMAIL" in channels and not who["email"]:
        checker.fail(f"{base}/email", "An email address is required for the EMAIL channel.")
    if ("SMS" in channels or "WHATSAPP" in channels) and not who["phone_number"]:
        checker.fail(
            f"{base}/phone_number", "A phone number is required for the SMS and WHATSAPP channels."
        )
    if not any(who.values()):
        checker.fail(base, "The profile needs an id, email, phone_number or external_id.")
    return who
