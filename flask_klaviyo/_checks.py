"""How a setting's value is read from a string and checked: the parsers and checks the
settings table (:mod:`flask_klaviyo._settings`) names, and their messages.

A parser turns a string into the value it spells, or leaves it (the check then refuses it); a
check takes ``(key, value)`` and returns the value normalised, or raises KlaviyoConfigError
naming the key. Standard library and ``exceptions`` only.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from typing import Any

from .exceptions import KlaviyoConfigError

URL = r"^https?://[^/\s]+"
JS_URL = r"^((https?:)?//[^/\s]+|/(?!/))\S*$"
REVISION = r"^\d{4}-\d{2}-\d{2}(\.[A-Za-z0-9_-]+)?$"
PUBLIC_KEY = r"^[A-Za-z0-9]{6}$"
TOKEN = r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$"  # a cookie or header name (RFC 9110)
INT = re.compile(r"^\s*[+-]?\d+\s*$")
TRUE = frozenset({"true", "1", "yes", "on"})
FALSE = frozenset({"false", "0", "no", "off"})
NONE = frozenset({"none", "null"})


# -- strings to typed values (a failure leaves the string, which the check then refuses) --------
def as_int(text: str) -> Any:
    return int(text) if INT.match(text) else text


def as_float(text: str) -> Any:
    try:
        return float(text)
    except ValueError:
        return text


def as_bool(text: str) -> Any:
    word = text.strip().lower()
    return True if word in TRUE else False if word in FALSE else text


def as_str(text: str) -> Any:
    return text


# -- checks: (key, value) -> value normalised, or KlaviyoConfigError naming the key ------------
Check = Callable[[str, Any], Any]


def or_none(check: Check) -> Check:
    """None passes (the setting's "unset" / "off"); anything else goes to ``check``."""
    return lambda key, value: None if value is None else check(key, value)


def boolean(message: str) -> Check:
    def check(key: str, value: Any) -> Any:
        if type(value) is int and value in (0, 1):  # what "1"/"0" spell
            return bool(value)
        if not isinstance(value, bool):
            raise KlaviyoConfigError(key, message)
        return value

    return check


def whole(low: int, message: str, high: float = math.inf) -> Check:
    def check(key: str, value: Any) -> Any:
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise KlaviyoConfigError(key, message)
        return value

    return check


def seconds(key: str, value: Any, *, zero: bool = False) -> Any:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value < 0
        or (value == 0 and not zero)
    ):
        raise KlaviyoConfigError(key, f"must be a number of seconds {'>= 0' if zero else '> 0'}")
    return float(value)


def seconds_or_zero(key: str, value: Any) -> Any:
    return seconds(key, value, zero=True)


def timeout(key: str, value: Any) -> Any:
    """Kept as given (int or float): the client's cache keys on it."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < math.inf:
        raise KlaviyoConfigError(key, "must be a positive number of seconds")
    return value


def matching(pattern: str, message: str, *, refuse: str | None = None) -> Check:
    """A string matching ``pattern`` (and not starting with ``refuse``)."""
    compiled = re.compile(pattern)

    def check(key: str, value: Any) -> Any:
        if (
            not isinstance(value, str)
            or not compiled.match(value)
            or (refuse is not None and value.startswith(refuse))
        ):
            raise KlaviyoConfigError(key, message.format(value=value))
        return value

    return check


def rate_limits(key: str, value: Any) -> Any:
    """``{endpoint: [[limit, seconds], ...]}`` (or its JSON) as ``{endpoint: ((int, float),)}``."""
    if value is None:
        return None
    try:
        data = json.loads(value) if isinstance(value, str) else value
        limits = {}
        for endpoint, windows in dict(data).items():
            pairs = tuple((int(limit), float(period)) for limit, period in windows)
            if any(limit < 1 or period <= 0 for limit, period in pairs):
                raise ValueError("a rate window needs limit >= 1 and period > 0")
            limits[str(endpoint)] = pairs
    except (TypeError, ValueError) as exc:
        raise KlaviyoConfigError(
            key,
            'must map endpoints to [[limit, seconds], ...], e.g. {"bulk_create_events": '
            f"[[10, 1], [150, 60]]}} ({exc})",
        ) from None
    return limits


def private_key(key: str, value: Any) -> Any:
    if not isinstance(value, str) or re.match(PUBLIC_KEY, value):
        raise KlaviyoConfigError(
            key, "looks like a public key (company id); the Events API needs a private key (pk_...)"
        )
    return value


def public_key(key: str, value: Any) -> Any:
    if not isinstance(value, str) or value.startswith("pk_"):
        raise KlaviyoConfigError(
            key,
            "looks like a private key; it would be shown in every page. Use the 6-character "
            "public key (company id)",
        )
    return value


def cookie_domain(key: str, value: Any) -> Any:
    if not isinstance(value, str) or not value.strip(". "):
        raise KlaviyoConfigError(key, "must be a domain name or None")
    return value


SECONDS = "must be a positive number of seconds"
FROM_1_TO = "must be a whole number from 1 to {}"
NOT_CURRENCY = "must be an ISO 4217 code such as USD"
NOT_MODE = "must be 'drop' or 'share'"
NOT_CATALOG_MODE = "must be 'api' or 'feed', got {value!r}"
NOT_PATH = "must be a path on this site starting with /, got {value!r}"
NOT_FEED_TOKEN = "must be a token of 16 or more characters without spaces (or unset)"
NOT_URL = "must be an http(s) URL, got {value!r}"
NOT_JS_URL = "must be an http(s) URL or a path on this site, got {value!r}"
NOT_REDIS = (
    "must be a redis://, rediss://, unix:// or redis+sentinel://h1:p1,h2:p2/service/db URL "
    "(or unset)"
)
NOT_COOKIE = "must be a cookie name of our own, got {value!r}"
NOT_HEADER = "must be an HTTP header name or None, got {value!r}"


def auto_or_bool(key: str, value: Any) -> Any:
    """``"auto"``, or True/False (what ``true``/``false`` spell)."""
    if value == "auto":
        return value
    return boolean("must be 'auto', True or False")(key, value)


def as_auto_or_bool(text: str) -> Any:
    return "auto" if text.strip().lower() == "auto" else as_bool(text)


def list_ids(key: str, value: Any) -> Any:
    """Klaviyo list ids: a list of strings (or, from the environment, comma-separated)."""
    if isinstance(value, str):  # "a, b"; an empty entry (" , ") is a mistake, not a list
        text = value.strip()
        value = [part.strip() for part in text.split(",")] if text else []
    if isinstance(value, list | tuple | set | frozenset) and all(
        isinstance(item, str) and item for item in value
    ):
        return tuple(value)
    raise KlaviyoConfigError(key, f"must be a list of Klaviyo list ids, got {value!r}")
