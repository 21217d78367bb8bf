"""The store's own checks of what shoppers type, before anything reaches flask-klaviyo.

flask-klaviyo refuses bad input too (``KlaviyoSchemaError`` in strict mode), but a shopper
deserves a message next to the field they got wrong, and a refused form must queue nothing, so
every form is checked here first. Each ``clean_*`` returns the value to store, or raises
``FieldError`` naming the field and saying what is wrong in words a shopper understands.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

__all__ = [
    "MAX_EMAIL_LENGTH",
    "MAX_NAME_LENGTH",
    "MAX_PASSWORD_LENGTH",
    "MIN_PASSWORD_LENGTH",
    "FieldError",
    "FormErrors",
    "clean_email",
    "clean_name",
    "clean_password",
    "clean_phone",
    "is_yes",
    "storable",
    "unreadable_field",
    "valid_email",
]

# Deliberately simple: one @, no spaces, a dot in the domain. The mail server has the last word.
EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s.]+")
MAX_EMAIL_LENGTH = 254
MAX_NAME_LENGTH = 80
MIN_PASSWORD_LENGTH = 8
MAX_PASSWORD_LENGTH = 128  # hashing a megabyte "password" is a denial of service
MAX_PHONE_LENGTH = 32
# E.164: "+", a country code that does not start with 0, 7 to 15 digits in all.
E164 = re.compile(r"\+[1-9]\d{6,14}")
# A North American number typed without its country code: area code and exchange start 2-9.
NANP = re.compile(r"1?([2-9]\d{2}[2-9]\d{6})")
_PHONE_SEPARATORS = re.compile(r"[\s().\-/]")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class FieldError(ValueError):
    """What is wrong with one form field."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


class FormErrors(ValueError):
    """Every field that was wrong, by name: the page shows each message beside its field."""

    def __init__(self, errors: Mapping[str, str]) -> None:
        super().__init__("; ".join(errors.values()))
        self.errors = dict(errors)

    @property
    def message(self) -> str:
        return " ".join(self.errors.values())


def is_yes(value: Any) -> bool:
    """A ticked checkbox (``yes``), or ``true`` from a JSON client."""
    if value is True:
        return True
    return isinstance(value, str) and value.strip().lower() == "yes"


def storable(value: Any) -> bool:
    """A string SQLite (and Klaviyo) can take: UTF-8, so no lone surrogates (JSON can send
    ``"\\ud800"``)."""
    if not isinstance(value, str):
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def unreadable_field(value: Any) -> str | None:
    """The top-level field of parsed JSON whose text (at any depth) is not storable, "" when
    the body itself holds such text (a bare string, a list, a field's name), None when all of
    it is storable. JSON may carry lone surrogates anywhere, so the whole value is walked."""
    if isinstance(value, dict):
        for key, item in value.items():
            if not storable(key):
                return ""
            if _unreadable(item):
                return str(key)
        return None
    return "" if _unreadable(value) else None


def _unreadable(value: Any, depth: int = 0) -> bool:
    if isinstance(value, str):
        return not storable(value)
    if depth > 100:  # deeper than this, Python's own parser has refused the body already
        return False
    if isinstance(value, dict):
        return any(not storable(k) or _unreadable(v, depth + 1) for k, v in value.items())
    if isinstance(value, list):
        return any(_unreadable(item, depth + 1) for item in value)
    return False


def _text(value: Any) -> str:
    """The field's text, stripped; "" for a missing field or one that is not a storable
    string. Callers that must tell those apart check ``storable`` first."""
    return value.strip() if storable(value) else ""


def valid_email(raw: Any) -> str | None:
    """``raw`` as a lower-cased email address, or None."""
    email = _text(raw).lower()
    if len(email) > MAX_EMAIL_LENGTH or not EMAIL.fullmatch(email):
        return None
    return email


def clean_email(raw: Any, field: str = "email") -> str:
    if isinstance(raw, str) and raw.strip() and not storable(raw):
        raise FieldError(field, "Please enter a valid email address, like you@example.com.")
    if not _text(raw):
        raise FieldError(field, "Please enter your email address.")
    email = valid_email(raw)
    if email is None:
        raise FieldError(field, "Please enter a valid email address, like you@example.com.")
    return email


def clean_phone(raw: Any, field: str = "phone_number") -> str | None:
    """An E.164 number, or None when the field is empty.

    Separators are dropped and ``00`` is read as ``+``; a ten-digit North American number
    without its country code gets ``+1``. Anything else must carry its country code.
    """
    text = _text(raw)
    if not text:
        if isinstance(raw, str) and raw.strip():  # there, but not text we can read
            raise FieldError(field, "Please enter a mobile number, like +1 617 555 0123.")
        return None
    if len(text) > MAX_PHONE_LENGTH:
        raise FieldError(field, "That phone number is too long.")
    digits = _PHONE_SEPARATORS.sub("", text)
    if digits.startswith("00"):
        digits = "+" + digits[2:]
    if E164.fullmatch(digits):
        return digits
    nanp = NANP.fullmatch(digits)
    if nanp:
        return "+1" + nanp.group(1)
    raise FieldError(
        field,
        "Please enter a mobile number with its country code, like +1 617 555 0123.",
    )


def clean_name(raw: Any, field: str, label: str, *, required: bool = True) -> str:
    if isinstance(raw, str) and not storable(raw):
        raise FieldError(field, f"Your {label} has characters we can't store.")
    name = _text(raw)
    if not name:
        if required:
            raise FieldError(field, f"Please enter your {label}.")
        return ""
    if len(name) > MAX_NAME_LENGTH:
        raise FieldError(field, f"Your {label} can be at most {MAX_NAME_LENGTH} characters.")
    if _CONTROL.search(name):
        raise FieldError(field, f"Your {label} has characters we can't store.")
    return name


def clean_password(raw: Any, field: str = "password") -> str:
    password = raw if isinstance(raw, str) else ""
    if not storable(password):
        raise FieldError(
            field, "Your password has characters we can't read: please choose another."
        )
    if len(password) < MIN_PASSWORD_LENGTH:
        raise FieldError(
            field, f"Please choose a password of at least {MIN_PASSWORD_LENGTH} characters."
        )
    if len(password) > MAX_PASSWORD_LENGTH:
        raise FieldError(field, f"A password can be at most {MAX_PASSWORD_LENGTH} characters.")
    return password
