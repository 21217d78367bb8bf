"""The consent store: one record per (profile, list, channel), written by Bulk Subscribe and
Bulk Unsubscribe, read by the Python API, the inspector and ``PATCH /api/profiles/{id}``.

Klaviyo's rules, as the stand-in models them:

- A subscribe sets the record of its list (``None``: no list named, the account's default) and
  channel to ``SUBSCRIBED`` and lifts the global flag of that record.
- An unsubscribe with a list the profile is a member of (it has a record for that list, on any
  channel) unsubscribes it from that list only.
- An unsubscribe naming no list, or a list the profile is *not* a member of, is a global
  unsubscribe for the channel: every record of that profile and channel becomes
  ``UNSUBSCRIBED`` with ``global`` set, and so does the record of the list named (Klaviyo's
  warning: "Profiles not in the specified list will be globally unsubscribed").

Callers hold the stand-in's lock; the store itself has none.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .jsonapi import iso

log = logging.getLogger(__name__)

SUBSCRIBED = "SUBSCRIBED"
UNSUBSCRIBED = "UNSUBSCRIBED"
NEVER_SUBSCRIBED = "NEVER_SUBSCRIBED"

Key = tuple[str, str | None, str]  # (profile id, list id or None, channel)


@dataclass
class Consent:
    """The consent of one profile for one list (or none) on one channel."""

    profile_id: str
    list_id: str | None
    channel: str  # "email" or "sms" (marketing)
    consent: str
    consented_at: str | None = None
    historical_import: bool = False
    custom_source: str | None = None
    is_global: bool = False
    updated: float = field(default_factory=time.time)


class SubscriptionBook:
    """Consent records in the order they were first written."""

    def __init__(self) -> None:
        self.clear()

    def clear(self) -> None:
        self.records: dict[Key, Consent] = {}

    def is_member(self, profile_id: str, list_id: str) -> bool:
        """On the list: any record for it, whatever the channel or consent (Klaviyo keeps an
        unsubscribed member on the list, with a list suppression)."""
        return any(key[0] == profile_id and key[1] == list_id for key in self.records)

    def subscribe(
        self,
        profile_id: str,
        list_id: str | None,
        channel: str,
        *,
        consented_at: str | None,
        historical_import: bool,
        custom_source: str | None,
    ) -> Consent:
        record = Consent(
            profile_id,
            list_id,
            channel,
            SUBSCRIBED,
            consented_at=consented_at,
            historical_import=historical_import,
            custom_source=custom_source,
        )
        self.records[(profile_id, list_id, channel)] = record
        return record

    def unsubscribe(self, profile_id: str, list_id: str | None, channel: str) -> bool:
        """Unsubscribe from the list, or globally (see the module docstring); True if global."""
        now = time.time()
        is_global = list_id is None or not self.is_member(profile_id, list_id)
        if is_global:
            for key, record in self.records.items():
                if key[0] == profile_id and key[2] == channel:
                    record.consent, record.is_global, record.updated = UNSUBSCRIBED, True, now
                    record.consented_at = None
        key = (profile_id, list_id, channel)
        record = self.records.get(key)
        if record is None:
            record = self.records[key] = Consent(profile_id, list_id, channel, UNSUBSCRIBED)
        record.consent, record.is_global, record.updated = UNSUBSCRIBED, is_global, now
        record.consented_at = None
        return is_global

    def repoint(self, gone: str, keep: str) -> None:
        """A merge: the survivor takes the records of the merged-away profile (its own win)."""
        for key in [key for key in self.records if key[0] == gone]:
            record = self.records.pop(key)
            record.profile_id = keep
            self.records.setdefault((keep, key[1], key[2]), record)

    def drop_profile(self, profile_id: str) -> int:
        """A deletion: forget every record of the profile; how many there were."""
        keys = [key for key in self.records if key[0] == profile_id]
        for key in keys:
            del self.records[key]
        return len(keys)

    def rows(
        self, identifiers: Callable[[str], dict[str, Any]], list_id: str | None = None
    ) -> list[dict[str, Any]]:
        """The Python API's rows; ``list_id`` keeps that list's records and the global ones
        (``list_id`` None) that apply to every list."""
        found = []
        for record in self.records.values():
            if list_id is not None and record.list_id not in (list_id, None):
                continue
            found.append(
                {
                    **identifiers(record.profile_id),
                    "profile_id": record.profile_id,
                    "list_id": record.list_id,
                    "channel": record.channel,
                    "consent": record.consent,
                    "consented_at": record.consented_at,
                    "historical_import": record.historical_import,
                    "custom_source": record.custom_source,
                    "global": record.is_global,
                    "updated": iso(record.updated),
                }
            )
        return found

    def channel_consent(self, profile_id: str, channel: str) -> Consent | None:
        """The record that decides the profile's consent on a channel: a global unsubscribe,
        else the latest subscribe, else the latest record."""
        mine = [r for k, r in self.records.items() if k[0] == profile_id and k[2] == channel]
        if not mine:
            return None
        suppressed = [r for r in mine if r.is_global and r.consent == UNSUBSCRIBED]
        subscribed = [r for r in mine if r.consent == SUBSCRIBED]
        return max(suppressed or subscribed or mine, key=lambda record: record.updated)

    def profile_subscriptions(self, profile_id: str) -> dict[str, Any]:
        """The ``subscriptions`` attribute of a profile (``additional-fields[profile]``)."""
        shown: dict[str, Any] = {}
        for channel in ("email", "sms"):
            record = self.channel_consent(profile_id, channel)
            consent = record.consent if record is not None else NEVER_SUBSCRIBED
            stamp = (record.consented_at or iso(record.updated)) if record else None
            marketing: dict[str, Any] = {
                f"can_receive_{channel}_marketing": consent == SUBSCRIBED,
                "consent": consent,
                "consent_timestamp": stamp,
                "last_updated": iso(record.updated) if record is not None else None,
                "method": "API" if record is not None else None,
            }
            if channel == "email":
                marketing["custom_method_detail"] = record.custom_source if record else None
            shown[channel] = {"marketing": marketing}
        return shown
