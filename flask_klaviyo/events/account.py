"""Klaviyo's account notifications (seed 001, "Account Notifications"): Created Account,
Updated Account and Reset Password, their property names exactly as the guide spells them.

Each carries a deterministic unique_id (DESIGN.md, "Stable event IDs"):

    Created Account   stable_id("Created Account", account id): one per account, ever
    Updated Account   stable_id("Updated Account", account id, the change, when it happened):
                      the same change (a retry, a form submitted twice in one second) is one
                      event, another change (other values, or the same values later) another
    Reset Password    stable_id("Reset Password", link): the token in the link makes each
                      request its own event, and the same request one

Seed 001's fourth account notification, Updated Email, is no event: it is the change of a
profile's identifier (``klaviyo.change_email``).

Like every builder these only build; :func:`~flask_klaviyo.events.validate_event` names what
Klaviyo would refuse (a reset link that is not an absolute http(s) URL, say). What cannot be
built at all (no account id, new values that are no mapping) is named here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

from ..exceptions import KlaviyoSchemaError
from .ids import stable_id
from .model import (
    CREATED_ACCOUNT,
    MAX_NESTING,
    RESET_PASSWORD,
    UPDATED_ACCOUNT,
    Event,
    _describe,
)
from .values import _event_time, _jsonable, _known, _profile, _too_deep

__all__ = ["created_account", "reset_password", "updated_account"]


def _account_id(metric: str, account_id: Any) -> str:
    """The store's id of the account, as a string (42 and "42" are one account)."""
    if isinstance(account_id, int) and not isinstance(account_id, bool):
        return str(account_id)
    if isinstance(account_id, UUID):
        return str(account_id)
    if isinstance(account_id, str) and account_id.strip():
        return account_id
    if account_id is None or account_id == "":
        raise KlaviyoSchemaError(metric, "account_id", f"required for {metric} (its unique_id)")
    raise KlaviyoSchemaError(
        metric,
        "account_id",
        f"must be a non-empty string or an integer, got {_describe(account_id)}",
    )


def _plain(metric: str, field: str, values: Any) -> Any:
    """A mapping of values made JSON (dates as ISO strings, Decimals as floats); anything else
    is left as it is, for validation to name as ``field``."""
    if _too_deep(values):
        raise KlaviyoSchemaError(
            metric, field, f"nested deeper than {MAX_NESTING} levels (or a cycle)"
        )
    if isinstance(values, Mapping):
        return _jsonable(dict(values))
    return values


def _digest(*parts: Any) -> str | None:
    """stable_id of ``parts``; None when they have no JSON spelling at all (keys of mixed
    types, say): such values never pass validation, which names them."""
    try:
        return stable_id(*parts)
    except (TypeError, ValueError):
        return None


def created_account(
    profile: Mapping[str, Any] | None,
    *,
    account_id: Any,
    time: datetime | None = None,
    properties: Mapping[str, Any] | None = None,
) -> Event:
    """Created Account (a welcome flow's trigger). ``properties`` are the merchant's own (seed
    001 shows none of Klaviyo's); the unique_id is the account's, so one account is created
    once however often this is sent."""
    metric = CREATED_ACCOUNT
    account = _account_id(metric, account_id)
    when = _event_time(metric, time)
    if properties is not None and not isinstance(properties, Mapping):
        raise KlaviyoSchemaError(
            metric, "properties", f"must be a mapping, got {_describe(properties)}"
        )
    return Event(
        metric=metric,
        properties=_plain(metric, "properties", properties or {}),
        profile=_profile(profile),
        time=when,
        unique_id=stable_id(metric, account),
    )


def updated_account(
    profile: Mapping[str, Any] | None,
    *,
    account_id: Any,
    update_type: str,
    new_values: Mapping[str, Any],
    old_values: Mapping[str, Any] | None = None,
    updated_properties: Sequence[str] | None = None,
    changed_at: datetime | None = None,
    time: datetime | None = None,
) -> Event:
    """Updated Account: ``UpdateType`` (a description of the update), ``UpdatedProperties``
    (the names changed: ``new_values``' keys unless given), ``OldValues`` (when known) and
    ``NewValues``, as seed 001's table names them.

    The event's time is ``time``, else ``changed_at``, else now. The unique_id digests the
    account, the update type, the names and values old and new, and ``changed_at`` (else the
    event's time to the second): pass the account's own change time (its ``updated_at``) and a
    retried or replayed change is always the one event.
    """
    metric = UPDATED_ACCOUNT
    account = _account_id(metric, account_id)
    if not isinstance(new_values, Mapping):
        raise KlaviyoSchemaError(
            metric,
            "NewValues",
            f"new_values must be a mapping of property names to their new values, "
            f"got {_describe(new_values)}",
        )
    changed = None if changed_at is None else _event_time(metric, changed_at, "changed_at")
    when = _event_time(metric, time if time is not None else changed)
    new = _plain(metric, "NewValues", new_values)
    old = _plain(metric, "OldValues", old_values)
    if updated_properties is None:
        names: Any = list(new)
    elif isinstance(updated_properties, list | tuple):
        names = list(updated_properties)
    else:
        names = updated_properties  # (a lone string, say): validation names UpdatedProperties
    properties = _known(
        {
            "UpdateType": update_type,
            "UpdatedProperties": names,
            "OldValues": old,
            "NewValues": new,
        }
    )
    stamp = changed if changed is not None else when.replace(microsecond=0)
    return Event(
        metric=metric,
        properties=properties,
        profile=_profile(profile),
        time=when,
        unique_id=_digest(metric, account, update_type, names, old, new, stamp.isoformat()),
    )


def reset_password(
    profile: Mapping[str, Any] | None,
    *,
    link: str,
    requested_at: datetime | None = None,
    time: datetime | None = None,
) -> Event:
    """Reset Password: ``PasswordResetLink``, the absolute http(s) URL the flow email sends the
    shopper to (validation refuses anything else). The event's time is ``time``, else
    ``requested_at``, else now; the unique_id digests the link, whose token tells requests
    apart (the digest does not reveal the token)."""
    metric = RESET_PASSWORD
    if time is None and requested_at is not None:
        when = _event_time(metric, requested_at, "requested_at")
    else:
        when = _event_time(metric, time)
    return Event(
        metric=metric,
        properties=_known({"PasswordResetLink": link}),
        profile=_profile(profile),
        time=when,
        unique_id=_digest(metric, link),
    )
