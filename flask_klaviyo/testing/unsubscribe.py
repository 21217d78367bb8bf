"""Bulk Unsubscribe Profiles (``POST /api/profile-subscription-bulk-delete-jobs``).

Up to 100 profiles, each with its email and/or E.164 phone number and the channels it leaves,
optionally from one list. Klaviyo answers 202 with no body; the stand-in checks everything
first (a 400 with pointers, nothing recorded), then records at once, with Klaviyo's rule
(bulk_unsubscribe_profiles.json, in a warning box): "Profiles not in the specified list will be
globally unsubscribed". A profile the stand-in does not know yet is created, so the
unsubscribe (a suppression) is on record before anything is sent to it. Email and SMS marketing
are recorded; the other channels are checked and accepted.
"""

from __future__ import annotations

import logging

from ._config import MAX_UNSUBSCRIBE_PROFILES
from .jsonapi import Answer, Checker, check_string_sizes
from .jsonapi import problems_answer as problems
from .state import Call
from .subscription_checks import UNSUBSCRIBE_CHANNELS, check_job, check_subscriber

log = logging.getLogger(__name__)

JOB_TYPE = "profile-subscription-bulk-delete-job"


def handle(call: Call) -> Answer:
    """Check the job, then unsubscribe every profile (202, no body)."""
    checker = Checker()
    _, entries, list_id = check_job(checker, call.body, JOB_TYPE, most=MAX_UNSUBSCRIBE_PROFILES)
    subscribers = []
    if len(entries) <= MAX_UNSUBSCRIBE_PROFILES:
        for index, entry in enumerate(entries):
            subscriber = check_subscriber(
                checker,
                entry,
                index,
                channels=UNSUBSCRIBE_CHANNELS,
                consent="UNSUBSCRIBED",
                with_id=False,
            )
            if subscriber is not None:
                subscribers.append(subscriber)
    if not checker.problems:
        check_string_sizes(checker, call.body, call.raw)
    if checker.problems:
        return problems(checker.problems)
    state = call.state
    with state.lock:
        for subscriber in subscribers:
            identifiers = [
                (kind, value)
                for kind, value in (
                    ("email", subscriber.email),
                    ("phone_number", subscriber.phone_number),
                )
                if value
            ]
            if not identifiers:  # a push-only profile: nothing the stand-in records
                continue
            profile = state.profiles.resolve(identifiers, {})
            for wanted in subscriber.wanted:
                channel = wanted.recorded_as
                if channel is None:
                    continue
                if state.subscriptions.unsubscribe(profile.id, list_id, channel):
                    log.debug("%s unsubscribed globally from %s", profile.id, channel)
        state.changed.notify_all()
    return Answer(202)
