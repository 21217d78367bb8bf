"""Storefront values into the JSON Klaviyo reads, for every builder: money rounded to cents,
ids as strings, unknowns omitted, Decimals and dates made JSON, times made aware.

Builders never validate; what cannot be converted is left as it is, for
:func:`~flask_klaviyo.events.validate_event` to name with its exact field.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from datetime import date, datetime
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any

from ..exceptions import KlaviyoSchemaError
from ..models import is_money
from .model import MAX_NESTING, _describe, as_utc

MONEY_STEP = Decimal("0.01")


def _money(amount: Any) -> Any:
    """Floats rounded to cents (JSON cannot carry Decimal); anything else is left for
    validate_event to name, never converted (a str price is a bug in the caller)."""
    if amount is None:
        return None
    if amount.__class__ is float:
        return round(amount, 2)  # the common case (inf and nan stay what they are)
    if not is_money(amount):
        return amount
    if isinstance(amount, Decimal):
        if amount.is_snan():
            return math.nan  # a signaling NaN cannot become a float; validation names it
        if not amount.is_finite():
            return float(amount)
        try:
            return float(amount.quantize(MONEY_STEP, rounding=ROUND_HALF_UP))
        except InvalidOperation:  # more digits than the context holds: far from a price
            return float(amount)
    try:
        return round(float(amount), 2)
    except OverflowError:  # an int beyond any float: not a finite number, validation says so
        return math.inf


def _identifier(value: Any) -> Any:
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return value


def _known(properties: Mapping[str, Any]) -> dict[str, Any]:
    """Omit what the storefront does not know instead of sending nulls."""
    return {key: value for key, value in properties.items() if value is not None}


def _list_or_none(values: Iterable[str]) -> list[str] | None:
    listed = list(values)
    return listed or None


def _jsonable(value: Any, depth: int = 0) -> Any:
    """Turn the Python values a merchant naturally passes into JSON ones; leave the rest for
    validate_event to name."""
    if depth > MAX_NESTING:
        return value  # too deep (or a cycle): validation names it
    if isinstance(value, Decimal):
        return math.nan if value.is_snan() else float(value)
    if isinstance(value, datetime):
        try:
            return as_utc(value).isoformat()
        except OverflowError:  # an aware time at the very edge of datetime's range
            return value
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Mapping):
        return {key: _jsonable(item, depth + 1) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(item, depth + 1) for item in value]
    return value


def _too_deep(value: Any) -> bool:
    """Whether containers nest deeper than MAX_NESTING or contain themselves (without
    recursing: this guards what would recurse)."""
    path: set[int] = set()  # containers on the way down to the current one
    stack: list[tuple[Any, int, bool]] = [(value, 0, False)]
    while stack:
        item, depth, leaving = stack.pop()
        if leaving:
            path.discard(id(item))
            continue
        if isinstance(item, Mapping):
            children: list[Any] = list(item.values())
        elif isinstance(item, list | tuple):
            children = list(item)
        else:
            continue
        if depth >= MAX_NESTING or id(item) in path:
            return True
        path.add(id(item))
        stack.append((item, depth, True))
        stack.extend((child, depth + 1, False) for child in children)
    return False


def _event_time(metric: Any, value: Any, field: str = "time") -> datetime:
    """``as_utc`` for a builder: a value that is no time at all is named (as ``field``, the
    builder's argument), not a crash."""
    try:
        return as_utc(value)
    except (TypeError, ValueError, AttributeError, OverflowError, OSError):
        raise KlaviyoSchemaError(str(metric), field, f"not a time: {_describe(value)}") from None


def _profile(profile: Mapping[str, Any] | None) -> dict[str, Any]:
    return dict(profile or {})


def _value_currency(value: Any, currency: str | None) -> str | None:
    return currency if value is not None else None
