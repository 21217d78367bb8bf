"""The identity cookies on the wire: our signed token and Klaviyo's ``__kla_id``.

Our token (the ``KLAVIYO_COOKIE_NAME`` cookie, or the same token in ``KLAVIYO_ID_HEADER``) is
signed with ``SECRET_KEY`` under its own salt, so nothing else signed by the app can pass for it;
keys in ``SECRET_KEY_FALLBACKS`` are still read after a rotation. A token whose signature checked
out is remembered (a small LRU keyed by the exact token and the keys), so a returning shopper's
cookie is verified once per process, not on every page; its age is checked on every read, and
nothing that failed is remembered. ``__kla_id`` is written by
klaviyo.js and so by anyone: only its opaque ``$exchange_id`` is used, never its ``$email``.
A value that is not ours, expired, oversized or malformed reads as None, never as an error.
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
import time
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import unquote

from flask import current_app
from itsdangerous import BadData, URLSafeTimedSerializer

from .identifiers import EXCHANGE_ID_PATTERN

__all__ = [
    "COOKIE_SALT",
    "KLA_ID_COOKIE",
    "KLA_OFF_COOKIE",
    "MAX_COOKIE_CHARS",
    "encode_kla_id",
    "exchange_id",
    "parse_kla_id",
    "read_token",
    "sign",
]

COOKIE_SALT = "flask-klaviyo.identity"
KLA_ID_COOKIE = "__kla_id"
KLA_OFF_COOKIE = "__kla_off"
MAX_COOKIE_CHARS = 4096  # what browsers keep per cookie; anything longer is not ours
REFRESH_AFTER = 0.5  # re-sign a cookie older than half its max age (it is being written anyway)
VERIFIED_TOKENS = 1024  # tokens whose signature checked out, remembered per process (LRU)


# -- our signed token --------------------------------------------------------------------------


def _serializer(keys: Sequence[Any]) -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(list(keys), salt=COOKIE_SALT)


def _signing_keys() -> list[Any]:
    """Old keys first, the current one last (itsdangerous signs with the last)."""
    config = current_app.config
    fallbacks = [key for key in config.get("SECRET_KEY_FALLBACKS") or () if key]
    return [*fallbacks, config["SECRET_KEY"]]


def sign(state: Mapping[str, Any]) -> str:
    """A signed identity token with the current ``SECRET_KEY`` (for the cookie and the header)."""
    return _serializer([current_app.config["SECRET_KEY"]]).dumps(dict(state))


class _Unverified(Exception):
    """Not signed by any of the keys: never remembered (lru_cache keeps no exceptions)."""


@functools.lru_cache(maxsize=VERIFIED_TOKENS)
def _verified(raw: str, keys: tuple[Any, ...]) -> tuple[Any, int, bool]:
    """(payload, signed at in unix seconds, signed with an old key) of a good signature.

    Remembered per exact token and key set, without its age: the caller checks the age on every
    read, so an expired token is refused whether or not it is remembered. Raises _Unverified.
    """
    try:
        data, signed_at = _serializer(keys[-1:]).loads(raw, return_timestamp=True)
        return _frozen(data), int(signed_at.timestamp()), False
    except BadData:
        pass
    except (ValueError, TypeError) as exc:
        raise _Unverified from exc
    if len(keys) > 1:  # signed before a key rotation: read it, then re-sign with the current key
        try:
            data, signed_at = _serializer(keys).loads(raw, return_timestamp=True)
            return _frozen(data), int(signed_at.timestamp()), True
        except (BadData, ValueError, TypeError) as exc:
            raise _Unverified from exc
    raise _Unverified


def _frozen(value: Any) -> Any:
    """A remembered payload nobody can change: tuples of pairs for objects, tuples for lists."""
    if isinstance(value, dict):
        return _Object((key, _frozen(item)) for key, item in value.items())
    if isinstance(value, list):
        return tuple(_frozen(item) for item in value)
    return value


class _Object(tuple):  # type: ignore[type-arg]
    """A frozen JSON object (tuple of pairs), told apart from a frozen list."""

    __slots__ = ()


def _thawed(value: Any) -> Any:
    """A fresh, mutable copy of a remembered payload (dicts and lists again)."""
    if isinstance(value, _Object):
        return {key: _thawed(item) for key, item in value}
    if isinstance(value, tuple):
        return [_thawed(item) for item in value]
    return value


def read_token(raw: str) -> tuple[dict[str, Any], bool] | None:
    """What a signed token holds, and whether to re-sign it (old key, or past half its age).

    None when it is not one of ours or has expired (``KLAVIYO_COOKIE_MAX_AGE``); a token from
    the future (a clock step back) is refused too, as itsdangerous does.
    """
    if len(raw) > MAX_COOKIE_CHARS:
        return None
    max_age = current_app.config["KLAVIYO_COOKIE_MAX_AGE"]
    try:
        frozen, signed_at, old_key = _verified(raw, tuple(_signing_keys()))
    except _Unverified:
        return None
    age = int(time.time()) - signed_at
    if age > max_age or age < 0:
        return None
    data = _thawed(frozen)
    if not isinstance(data, dict):
        return None
    return data, old_key or age > max_age * REFRESH_AFTER


# -- Klaviyo's __kla_id and exchange ids -------------------------------------------------------


def parse_kla_id(raw: str | None) -> dict[str, Any] | None:
    """The JSON object klaviyo.js keeps base64-encoded in ``__kla_id``; None when malformed."""
    if not raw or len(raw) > MAX_COOKIE_CHARS:
        return None
    text = raw.strip().strip('"')
    if "%" in text:
        text = unquote(text)
    text = text.replace("-", "+").replace("_", "/")
    text += "=" * (-len(text) % 4)
    try:
        value = json.loads(base64.b64decode(text, validate=True))
    except (binascii.Error, ValueError, RecursionError):  # JSON and UTF-8 errors are ValueErrors
        return None
    return value if isinstance(value, dict) else None


def encode_kla_id(value: Mapping[str, Any]) -> str:
    """The cookie value klaviyo.js reads back: base64 of the JSON object."""
    text = json.dumps(dict(value), separators=(",", ":"), ensure_ascii=False, default=str)
    return base64.b64encode(text.encode()).decode()


def exchange_id(value: Any) -> str | None:
    """A usable ``_kx`` / ``$exchange_id``: URL-decoded once by the caller; ``+`` repaired."""
    if not isinstance(value, str):
        return None
    # An unencoded ``+`` in a link arrives as a space; an exchange id never holds one.
    text = value.strip().replace(" ", "+")
    return text if EXCHANGE_ID_PATTERN.match(text) else None
