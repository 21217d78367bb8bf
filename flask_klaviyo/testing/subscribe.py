"""Bulk Subscribe Profiles (``POST /api/profile-subscription-bulk-create-jobs``).

Up to 1,000 profiles, each with its email and/or E.164 phone number and the channels it
consents to, optionally into one list. Klaviyo answers 202 with no body and works the job out
later; the stand-in checks everything first (a 400 with pointers, nothing recorded), then
records at once: it finds, creates or merges each profile and writes one consent record per
(profile, list, channel) for email and SMS marketing (the other channels are checked and
accepted, not recorded).

Consent rules from bulk_subscribe_profiles.json: ``consented_at`` is only for a historical
import ("if the historical_import flag is not included, providing any value for this field will
raise an error"); with ``historical_import: true`` every consent needs a ``consented_at``, in
the past.
"""

from __future__ import annotations

import contextlib
import logging
import re
from datetime import UTC, datetime
from typing import Any

from ._config import MAX_SUBSCRIBE_PROFILES
from .jsonapi import Answer, Checker, check_string_sizes, error_answer, error_object
from .jsonapi import problems_answer as problems
from .state import Call
from .subscription_checks import SUBSCRIBE_CHANNELS, Subscriber, check_job, check_subscriber

log = logging.getLogger(__name__)

JOB_TYPE = "profile-subscription-bulk-create-job"
DATETIME_SHAPE = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}")


def handle(call: Call) -> Answer:
    """Check the job, then subscribe every profile (202, no body)."""
    checker = Checker()
    attributes, entries, list_id = check_job(
        checker, call.body, JOB_TYPE, most=MAX_SUBSCRIBE_PROFILES
    )
    historical = checker.member(
        attributes, "historical_import", "/data/attributes", "boolean", required=False
    )
    source = checker.member(
        attributes, "custom_source", "/data/attributes", "string", required=False
    )
    subscribers = []
    if len(entries) <= MAX_SUBSCRIBE_PROFILES:
        for index, entry in enumerate(entries):
            subscriber = check_subscriber(
                checker,
                entry,
                index,
                channels=SUBSCRIBE_CHANNELS,
                consent="SUBSCRIBED",
                with_id=True,
            )
            if subscriber is not None:
                _check_consented_at(checker, subscriber, historical=bool(historical))
                subscribers.append(subscriber)
    if not checker.problems:
        check_string_sizes(checker, call.body, call.raw)
    if checker.problems:
        return problems(checker.problems)
    state = call.state
    with state.lock:
        store = state.profiles
        for subscriber in subscribers:
            if subscriber.profile_id and store.current(subscriber.profile_id) is None:
                error = error_object(
                    404,
                    detail=f"No profile with id '{subscriber.profile_id[:64]}'.",
                    pointer=f"{subscriber.pointer}/id",
                )
                return error_answer(404, [error])
        for subscriber in subscribers:
            _subscribe(call, subscriber, list_id, historical=bool(historical), source=source)
        state.changed.notify_all()
    log.debug("subscribed %d profile(s) to list %s", len(subscribers), list_id)
    return Answer(202)


def _check_consented_at(checker: Checker, subscriber: Subscriber, *, historical: bool) -> None:
    now = datetime.now(UTC)
    for wanted in subscriber.wanted:
        if wanted.message == "open_tracking":
            continue
        pointer = f"{wanted.pointer}/consented_at"
        value = wanted.params.get("consented_at")
        if value is None:
            if historical:
                checker.fail(
                    pointer, "'consented_at' is required when 'historical_import' is true."
                )
            continue
        if not isinstance(value, str):
            checker.fail(pointer, "'consented_at' must be a string (an ISO 8601 date-time).")
            continue
        if not historical:
            checker.fail(
                pointer,
                "'consented_at' may only be given for a historical import "
                "('historical_import': true).",
            )
            continue
        moment = _parse_time(value)
        if moment is None:
            checker.fail(pointer, f"'consented_at' must be an ISO 8601 date-time: '{value[:64]}'.")
        elif moment > now:
            checker.fail(pointer, "'consented_at' must be in the past for a historical import.")


def _parse_time(text: str) -> datetime | None:
    if not DATETIME_SHAPE.match(text):
        return None
    with contextlib.suppress(ValueError):
        moment = datetime.fromisoformat(text)
        return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
    return None


def _subscribe(
    call: Call,
    subscriber: Subscriber,
    list_id: str | None,
    *,
    historical: bool,
    source: str | None,
) -> None:
    """Find, create or merge the profile, then write its consent records."""
    state = call.state
    identifiers: list[tuple[str, str]] = []
    if subscriber.profile_id:
        identifiers.append(("id", subscriber.profile_id))
    if subscriber.email:
        identifiers.append(("email", subscriber.email))
    if subscriber.phone_number:
        identifiers.append(("phone_number", subscriber.phone_number))
    if not identifiers:  # a push-only profile: nothing the stand-in records
        return
    sent: dict[str, Any] = {}
    profile = state.profiles.resolve(identifiers, sent)
    for wanted in subscriber.wanted:
        channel = wanted.recorded_as
        if channel is None:
            continue
        given = wanted.params.get("consented_at")
        moment = _parse_time(given) if given else None
        state.subscriptions.subscribe(
            profile.id,
            list_id,
            channel,
            consented_at=moment.astimezone(UTC).isoformat() if moment else None,
            historical_import=historical,
            custom_source=source,
        )
