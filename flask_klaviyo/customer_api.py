"""The customer-data half of the ``Klaviyo`` facade: profiles, the email change, subscriptions
with consent, account events, and the right to be forgotten (the work is in :mod:`.profiles`,
:mod:`.subscriptions` and :mod:`.privacy`).

Every call checks its input before anything is queued: bad input raises
:class:`~flask_klaviyo.exceptions.KlaviyoSchemaError` in strict mode, else it is logged and kept
as a dead letter naming the field, and the page goes on (``None`` is returned).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from flask import current_app, has_request_context

from . import privacy, profiles, queueing, subscriptions
from ._state import enabled
from .delivery.operations import Operation
from .events import (
    CREATED_ACCOUNT,
    RESET_PASSWORD,
    UPDATED_ACCOUNT,
    Event,
    created_account,
    reset_password,
    updated_account,
)
from .identity.settle import identify as identify_visitor
from .identity.visit import current_visit
from .subscriptions import IfNotOnList, Subscription

__all__ = ["CustomerAPI"]


class CustomerAPI:
    """Mixed into :class:`flask_klaviyo.Klaviyo`."""

    _consent_loader: Any
    resolve_profile: Callable[[Mapping[str, Any] | None], dict[str, Any]]

    def update_profile(
        self,
        *,
        email: str | None = None,
        phone_number: str | None = None,
        external_id: str | None = None,
        first_name: str | None = None,
        last_name: str | None = None,
        location: Mapping[str, Any] | None = None,
        properties: Mapping[str, Any] | None = None,
    ) -> Operation | None:
        """Create or update the profile (Create or Update Profile). Updates of one person that
        wait together are one request. Needs an email or E.164 phone number."""
        if not enabled():
            return None
        return queueing.build_and_enqueue(
            "profile",
            profiles.PROFILE_IMPORT,
            lambda: profiles.profile_import(
                email=email,
                phone_number=phone_number,
                external_id=external_id,
                first_name=first_name,
                last_name=last_name,
                location=location,
                properties=properties,
            ),
        )

    def change_email(self, old_email: str, new_email: str) -> Operation | None:
        """Klaviyo's "Updated Email" procedure: the existing profile gets the new address (its
        history stays with it; no second profile). In a request, the identity cookie follows."""
        if not enabled():
            return None
        made = queueing.build("profile", lambda: profiles.email_change(old_email, new_email))
        if made is None:
            return None
        payload, key = made
        if has_request_context():
            visit = current_visit()
            known = visit.identified if visit.identified is not None else visit.profile
            if (known or {}).get("email", "").lower() == payload["old_email"]:
                kept = {k: v for k, v in known.items() if k != "email"}
                identify_visitor({**kept, "email": payload["new_email"]}, self._consent_loader)
        return queueing.enqueue(profiles.EMAIL_CHANGE, payload, key)

    def subscribe(
        self,
        *,
        email: str | None = None,
        phone_number: str | None = None,
        list_id: str,
        channels: tuple[str, ...] = ("email",),
        source: str | None = None,
        consented_at: datetime | str | None = None,
    ) -> Subscription | None:
        """Subscribe to a list's marketing with the consent the person gave, per channel
        (``"email"``, ``"sms"``). ``consented_at`` in the past records historical consent.
        Signing up identifies the visitor. ``.status`` says what to tell them."""
        if not enabled():
            return None
        made = queueing.build(
            "subscription",
            lambda: subscriptions.subscribe_payload(
                email=email,
                phone_number=phone_number,
                list_id=list_id,
                channels=channels,
                source=source,
                consented_at=consented_at,
            ),
        )
        if made is None:
            return None
        payload, key = made
        operation = queueing.enqueue("subscribe", payload, key)
        if has_request_context():
            who = {k: v for k, v in payload["profile"].items() if k != "subscriptions"}
            identify_visitor(who, self._consent_loader)
        historical = bool(payload.get("historical_import"))
        single = payload["list_id"] in current_app.config["KLAVIYO_SINGLE_OPT_IN_LISTS"]
        return Subscription(
            "subscribed" if historical or single else "confirmation_sent",
            payload["list_id"],
            tuple(payload["profile"]["subscriptions"]),
            historical,
            operation,
        )

    def unsubscribe(
        self,
        *,
        email: str | None = None,
        phone_number: str | None = None,
        list_id: str,
        channels: tuple[str, ...] = ("email",),
        if_not_on_list: IfNotOnList = "unsubscribe_everywhere",
    ) -> Operation | None:
        """Withdraw marketing consent on ``channels`` for ``list_id``. Klaviyo's rule, spelt out
        by ``if_not_on_list``: a profile that is not in the list is unsubscribed from that
        channel's marketing everywhere."""
        if not enabled():
            return None
        return queueing.build_and_enqueue(
            "subscription",
            "unsubscribe",
            lambda: subscriptions.unsubscribe_payload(
                email=email,
                phone_number=phone_number,
                list_id=list_id,
                channels=channels,
                if_not_on_list=if_not_on_list,
            ),
        )

    def forget(
        self, *, email: str | None = None, phone_number: str | None = None
    ) -> privacy.Forgotten | None:
        """Request deletion in Klaviyo; locally drop everything not yet sent for the person and
        refuse what is queued for them for ``KLAVIYO_FORGET_HOLD`` seconds."""
        if not enabled():
            return None
        return queueing.build(
            "profile", lambda: privacy.forget(email=email, phone_number=phone_number)
        )

    # -- account events (Klaviyo's transactional section) ------------------------------------
    def account_created(
        self,
        account_id: str | int,
        *,
        profile: Mapping[str, Any] | None = None,
        properties: Mapping[str, Any] | None = None,
    ) -> Event | None:
        """Created Account, once per account (its unique_id is the account's)."""
        return self._account_event(
            CREATED_ACCOUNT,
            lambda who: created_account(who, account_id=account_id, properties=properties),
            profile,
        )

    def account_updated(
        self,
        account_id: str | int,
        *,
        update_type: str,
        new_values: Mapping[str, Any],
        old_values: Mapping[str, Any] | None = None,
        profile: Mapping[str, Any] | None = None,
    ) -> Event | None:
        """Updated Account: ``UpdateType``, ``UpdatedProperties``, ``OldValues``, ``NewValues``
        (never put a password in them)."""
        return self._account_event(
            UPDATED_ACCOUNT,
            lambda who: updated_account(
                who,
                account_id=account_id,
                update_type=update_type,
                new_values=new_values,
                old_values=old_values,
            ),
            profile,
        )

    def password_reset(
        self, link: str, *, profile: Mapping[str, Any] | None = None
    ) -> Event | None:
        """Reset Password with ``PasswordResetLink`` (absolute; Klaviyo's flow email uses it)."""
        return self._account_event(
            RESET_PASSWORD, lambda who: reset_password(who, link=link), profile
        )

    def _account_event(
        self,
        metric: str,
        builder: Callable[[dict[str, Any]], Event],
        profile: Mapping[str, Any] | None,
    ) -> Event | None:
        if not enabled():
            return None
        event = queueing.build(metric, lambda: builder(self.resolve_profile(profile)))
        return None if event is None else queueing.submit(event)
