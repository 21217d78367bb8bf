"""The reference validator: every value walked one call at a time, the payload serialised.

It says what Klaviyo would reject, misread or not recognise, naming the metric and the exact
field in a :class:`~flask_klaviyo.exceptions.KlaviyoSchemaError`; an event it accepts also fits
Klaviyo's OpenAPI request schema. The request path runs :func:`.validate_fast.validate_event`,
which must agree with :func:`_validate_event_slow` on every input
(``tests/test_validate_fast.py``) and falls back on the checks here whenever it cannot vouch.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any
from urllib.parse import urlsplit

from ..exceptions import KlaviyoSchemaError
from ..identity.identifiers import (
    E164_PATTERN,
    EMAIL_PATTERN,
    LOCATION_COORDINATE_KEYS,
    LOCATION_STRING_KEYS,
    META_KEYS,
    PROFILE_OBJECT_KEYS,
    PROFILE_STRING_KEYS,
    SENDABLE_IDENTIFIERS,
)
from .ids import encoded_size
from .model import (
    EARLIEST_TIME,
    MAX_FUTURE,
    MAX_METRIC_NAME,
    MAX_NESTING,
    MAX_PAYLOAD_BYTES,
    MAX_PROPERTIES,
    MAX_STRING_BYTES,
    Event,
    _describe,
)
from .schema import ITEM_RULES, METRIC_SCHEMAS, Rule, RuleKind

_PROFILE_KEYS = frozenset((*PROFILE_STRING_KEYS, *PROFILE_OBJECT_KEYS))
CURRENCY_PATTERN = re.compile(r"^[A-Z]{3}$")


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _url_problem(value: Any) -> str | None:
    """Why ``value`` is not an absolute http(s) URL with a host (relative, ``javascript:``,
    whitespace or controls that browsers strip to hide a scheme), or None. The URL itself is
    not quoted: a reset link carries a token that logs and dead letters must not keep."""
    if not isinstance(value, str):
        return f"got {_describe(value)}"
    if not value.isprintable() or " " in value:
        return "got a str with whitespace or control characters"
    try:
        parts = urlsplit(value)
        host = parts.hostname
        parts.port  # noqa: B018 (a port that is no port number raises)
    except ValueError:  # an unbalanced IPv6 bracket or a port past 65535, say
        return "got a str that is no URL"
    if not parts.scheme:
        return "got a relative one"
    if parts.scheme.lower() not in ("http", "https"):
        return f"got a {parts.scheme[:20].lower()!r} one"
    if not host:
        return "got one without a host"
    return None


def _rule_problem(kind: RuleKind, value: Any) -> str | None:
    """Why ``value`` does not satisfy ``kind``, or None."""
    if kind == "text":
        ok = isinstance(value, str) and value.strip() != ""
        expected = "a non-empty string"
    elif kind == "id":
        ok = (isinstance(value, str) and value.strip() != "") or (
            isinstance(value, int) and not isinstance(value, bool)
        )
        expected = "a non-empty string or an integer"
    elif kind == "number":
        ok = _is_number(value)
        expected = "a finite number"
    elif kind == "quantity":
        ok = isinstance(value, int) and not isinstance(value, bool) and value > 0
        expected = "an integer above 0"
    elif kind == "strings":
        ok = isinstance(value, list) and all(isinstance(item, str) for item in value)
        expected = "a list of strings"
    elif kind == "url":
        problem = _url_problem(value)
        return None if problem is None else f"must be an absolute http(s) URL, {problem}"
    else:
        ok = isinstance(value, Mapping)
        expected = "an object"
    return None if ok else f"must be {expected}, got {_describe(value)}"


def _check_rules(
    metric: str, container: Mapping[str, Any], rules: Mapping[str, Rule], prefix: str
) -> None:
    for name, rule in rules.items():
        path = f"{prefix}{name}"
        if name not in container or container[name] is None:
            if rule.required:
                raise KlaviyoSchemaError(metric, path, f"required for {metric}")
            continue
        problem = _rule_problem(rule.kind, container[name])
        if problem:
            raise KlaviyoSchemaError(metric, path, problem)


def _utf8_size(metric: str, value: str, path: str) -> int:
    try:
        return len(value.encode())
    except UnicodeEncodeError:  # a lone surrogate (bytes decoded with surrogateescape, say)
        raise KlaviyoSchemaError(metric, path, "not valid Unicode (a lone surrogate)") from None


def _child_path(path: str, key: str) -> str:
    """``Items[0].ItemPrice``; a key that would read as nothing (blank, dots) is quoted."""
    plain = key.strip() == key and key and "." not in key and "[" not in key
    step = key if plain else f"[{key!r}]"
    if not path:
        return step
    return f"{path}.{step}" if plain else f"{path}{step}"


def _check_json(metric: str, value: Any, path: str, depth: int = 0) -> None:
    """Everything must be plain JSON, numbers finite, strings within Klaviyo's 100 KB."""
    where = path or "properties"
    if value is None or isinstance(value, bool):
        return
    if isinstance(value, str):
        size = _utf8_size(metric, value, where)
        if size > MAX_STRING_BYTES:
            raise KlaviyoSchemaError(
                metric, where, f"string of {size} bytes exceeds {MAX_STRING_BYTES}"
            )
        return
    if isinstance(value, int):
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise KlaviyoSchemaError(metric, where, f"{value} is not a JSON number")
        return
    if isinstance(value, Mapping | list | tuple) and depth >= MAX_NESTING:
        raise KlaviyoSchemaError(
            metric, where, f"nested deeper than {MAX_NESTING} levels (or a cycle)"
        )
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                raise KlaviyoSchemaError(metric, where, f"key {key!r} is not a string")
            if _utf8_size(metric, key, where) > MAX_STRING_BYTES:
                raise KlaviyoSchemaError(metric, where, "a key exceeds 100 KB")
            _check_json(metric, item, _child_path(path, key), depth + 1)
        return
    if isinstance(value, list | tuple):
        for index, item in enumerate(value):
            _check_json(metric, item, f"{path}[{index}]", depth + 1)
        return
    hint = " (convert Decimal to float)" if isinstance(value, Decimal) else ""
    raise KlaviyoSchemaError(metric, where, f"{type(value).__name__} is not JSON{hint}")


def _check_profile(metric: str, profile: Any) -> None:
    if not isinstance(profile, Mapping):
        raise KlaviyoSchemaError(metric, "profile", f"must be a mapping, got {_describe(profile)}")
    for key, value in profile.items():
        _check_profile_entry(metric, key, value)
    _check_json(metric, dict(profile), "profile")
    _check_profile_fields(metric, profile)


def _check_profile_entry(metric: str, key: Any, value: Any) -> None:
    """A known profile attribute holding a string or an object, as Klaviyo types it."""
    if key not in _PROFILE_KEYS:
        raise KlaviyoSchemaError(
            metric, f"profile.{key}", f"not a Klaviyo profile attribute: {key!r}"
        )
    if value is None:
        return
    if key in PROFILE_STRING_KEYS and not isinstance(value, str):
        raise KlaviyoSchemaError(
            metric, f"profile.{key}", f"must be a string, got {_describe(value)}"
        )
    if key in PROFILE_OBJECT_KEYS and not isinstance(value, Mapping):
        raise KlaviyoSchemaError(
            metric, f"profile.{key}", f"must be an object, got {_describe(value)}"
        )


def _check_profile_fields(metric: str, profile: Mapping[str, Any]) -> None:
    """What _check_profile asks of a profile's values once they are known to be plain JSON."""
    if profile.get("location") is not None:
        _check_location(metric, profile["location"])
    if profile.get("meta") is not None:
        _check_meta(metric, profile["meta"])

    email = profile.get("email")
    if email not in (None, "") and not EMAIL_PATTERN.match(email):
        raise KlaviyoSchemaError(metric, "profile.email", f"not an email address: {email!r}")
    phone = profile.get("phone_number")
    if phone not in (None, "") and not E164_PATTERN.match(phone):
        raise KlaviyoSchemaError(
            metric, "profile.phone_number", f"not E.164 (+ and 7 to 15 digits): {phone!r}"
        )
    if any(profile.get(key) not in (None, "") for key in SENDABLE_IDENTIFIERS):
        return
    if profile.get("external_id") not in (None, ""):
        raise KlaviyoSchemaError(
            metric,
            "profile",
            "external_id alone creates a profile that never merges with the shopper's "
            "(a permanent duplicate); send it together with email or phone_number",
        )
    if profile.get("anonymous_id") not in (None, ""):
        raise KlaviyoSchemaError(
            metric,
            "profile",
            "anonymous-only events must not be sent (orphan profiles); park them until the "
            "visitor is known",
        )
    raise KlaviyoSchemaError(
        metric, "profile", "needs one of email, phone_number, _kx or id to identify the profile"
    )


def _check_location(metric: str, location: Mapping[str, Any]) -> None:
    for key, value in location.items():
        path = f"profile.location.{key}"
        if key in LOCATION_STRING_KEYS:
            ok = value is None or isinstance(value, str)
        elif key in LOCATION_COORDINATE_KEYS:
            ok = value is None or isinstance(value, str) or _is_number(value)
        else:
            raise KlaviyoSchemaError(metric, path, f"not a Klaviyo location field: {key!r}")
        if not ok:
            raise KlaviyoSchemaError(metric, path, f"wrong type: {_describe(value)}")


def _check_meta(metric: str, meta: Mapping[str, Any]) -> None:
    for key, value in meta.items():
        path = f"profile.meta.{key}"
        if key not in META_KEYS:
            raise KlaviyoSchemaError(metric, path, f"not a Klaviyo profile meta field: {key!r}")
        if value is None:
            continue
        if not isinstance(value, Mapping):
            raise KlaviyoSchemaError(metric, path, f"must be an object, got {_describe(value)}")
        for operation, argument in value.items():
            if operation == "unset" and key == "patch_properties":
                ok = (
                    argument is None
                    or isinstance(argument, str)
                    or (isinstance(argument, list) and all(isinstance(a, str) for a in argument))
                )
            elif operation in ("append", "unappend"):
                # Only patch_properties' operations are nullable in the schema.
                ok = isinstance(argument, Mapping) or (
                    argument is None and key == "patch_properties"
                )
            else:
                raise KlaviyoSchemaError(metric, f"{path}.{operation}", "unknown operation")
            if not ok:
                raise KlaviyoSchemaError(metric, f"{path}.{operation}", "wrong type")


def _check_metric_name(metric: Any) -> None:
    if not isinstance(metric, str) or not metric.strip():
        raise KlaviyoSchemaError(
            str(metric), "metric", "the metric name must be a non-empty string"
        )
    if len(metric) > MAX_METRIC_NAME:
        raise KlaviyoSchemaError(
            metric,
            "metric",
            f"name of {len(metric)} characters; Klaviyo needs fewer than {MAX_METRIC_NAME + 1}",
        )
    _utf8_size(metric, metric, "metric")


def _check_time(metric: str, when: Any) -> None:
    if not isinstance(when, datetime) or when.tzinfo is None:
        raise KlaviyoSchemaError(
            metric, "time", f"must be an aware datetime, got {_describe(when)}"
        )
    if when <= EARLIEST_TIME:
        raise KlaviyoSchemaError(metric, "time", f"{when.isoformat()} is not after 1990-01-01")
    if when > datetime.now(UTC) + MAX_FUTURE:
        raise KlaviyoSchemaError(
            metric, "time", f"{when.isoformat()} is more than a year in the future"
        )


def _check_properties(metric: str, properties: Any) -> None:
    if not isinstance(properties, Mapping):
        raise KlaviyoSchemaError(
            metric, "properties", f"must be an object, got {_describe(properties)}"
        )
    if len(properties) > MAX_PROPERTIES:
        raise KlaviyoSchemaError(
            metric, "properties", f"{len(properties)} properties; Klaviyo allows {MAX_PROPERTIES}"
        )
    _check_json(metric, dict(properties), "")
    schema = METRIC_SCHEMAS.get(metric)
    if schema is None:
        return
    _check_rules(metric, properties, schema.properties, "")
    items = properties.get("Items")
    if items is None:
        if schema.items_required:
            raise KlaviyoSchemaError(metric, "Items", f"required for {metric}")
        return
    if not isinstance(items, list):
        raise KlaviyoSchemaError(metric, "Items", f"must be a list, got {_describe(items)}")
    if not items:
        if schema.items_required:
            raise KlaviyoSchemaError(metric, "Items", "must not be empty")
        return
    for index, item in enumerate(items):
        if not isinstance(item, Mapping):
            raise KlaviyoSchemaError(metric, f"Items[{index}]", "must be an object")
        _check_rules(metric, item, ITEM_RULES, f"Items[{index}].")


def _check_value(metric: str, event: Event) -> None:
    schema = METRIC_SCHEMAS.get(metric)
    if event.value is None:
        if schema is not None and schema.value_required:
            raise KlaviyoSchemaError(metric, "value", f"required for {metric} (revenue and CLV)")
    elif not _is_number(event.value):
        raise KlaviyoSchemaError(
            metric, "value", f"must be a finite number, got {_describe(event.value)}"
        )
    currency = event.value_currency
    if currency is not None and not (
        isinstance(currency, str) and CURRENCY_PATTERN.match(currency)
    ):
        raise KlaviyoSchemaError(
            metric, "value_currency", f"not an ISO 4217 code (like USD): {currency!r}"
        )


def _validate_event_slow(event: Event) -> None:
    """The reference validator: every value walked one call at a time, the payload serialised.

    :func:`validate_event` must agree with it on every input (accept, or the same error);
    ``tests/test_validate_fast.py`` holds them to that."""
    _check_metric_name(event.metric)
    metric = event.metric
    _check_profile(metric, event.profile)
    _check_time(metric, event.time)
    _check_properties(metric, event.properties)
    _check_value(metric, event)
    if event.unique_id is not None and not (
        isinstance(event.unique_id, str) and event.unique_id.strip()
    ):
        raise KlaviyoSchemaError(
            metric, "unique_id", f"must be a non-empty string: {event.unique_id!r}"
        )
    if event.unique_id is not None:
        _check_json(metric, event.unique_id, "unique_id")
    if not isinstance(event.backfill, bool):
        raise KlaviyoSchemaError(metric, "backfill", "must be true or false")
    _check_payload_size(metric, event)


def _check_payload_size(metric: str, event: Event) -> None:
    size = encoded_size(event.to_payload())
    if size > MAX_PAYLOAD_BYTES:
        raise KlaviyoSchemaError(
            metric, "payload", f"{size} bytes; Klaviyo accepts at most {MAX_PAYLOAD_BYTES}"
        )
