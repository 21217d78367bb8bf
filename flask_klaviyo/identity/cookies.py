"""The identity cookies on the wire: our signed token and Klaviyo's ``__kla_id``.

Our token (the ``KLAVIYO_COOKIE_NAME`` cookie, or the same token in ``KLAVIYO_ID_HEADER``) is
signed with ``SECRET_KEY`` under its own salt, so nothing else signed by the app can pass for it;
keys in ``SECRET_KEY_FALLBACKS`` are still read after a rotation. ``__kla_id`` is written by
klaviyo.js and so by anyone: only its opaque ``$exchange_id`` is used, never its ``$email``.
A value that is not ours, expired, oversized or malformed reads as None, never as an error.
"""

from __future__ import annotations

import base64
import binascii
import json
import time
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import unquote

from flask import current_app
from itsdangerous import BadData, SignatureExpired, URLSafeTimedSerializer

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


def read_token(raw: str) -> tuple[dict[str, Any], bool] | None:
    """What a signed token holds, and whether to re-sign it (old key, or past half its age).

    None when it is not one of ours or has expired (``KLAVIYO_COOKIE_MAX_AGE``).
    """
    if len(raw) > MAX_COOKIE_CHARS:
        return None
    max_age = current_app.config["KLAVIYO_COOKIE_MAX_AGE"]
    keys = _signing_keys()
    resign = False
    try:
        data, signed_at = _serializer(keys[-1:]).loads(raw, max_age=max_age, return_timestamp=True)
    except SignatureExpired:
        return None
    except BadData:
        if len(keys) == 1:
            return None
        try:  # signed before a key rotation: read it, then re-sign with the current key
            data, signed_at = _serializer(keys).loads(raw, max_age=max_age, return_timestamp=True)
        except (BadData, ValueError, TypeError):
            return None
        resign = True
    except (ValueError, TypeError):
        return None
    if not isinstance(data, dict):
        return None
    return data, resign or time.time() - signed_at.timestamp() > max_age * REFRESH_AFTER


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
