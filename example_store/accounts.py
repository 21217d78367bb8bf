"""Shopper accounts in SQLite: create, look up, change, delete; passwords and reset links.

Passwords are stored as ``werkzeug.security`` hashes. A password-reset link carries a signed,
timestamped token (itsdangerous, its own salt) naming the account and the account's current
``reset_nonce``; setting a password (through the link or otherwise) or changing the email draws
a new nonce, so a link works once, and not after the email it was sent to stopped being the
account's. This module knows rows, not requests or Klaviyo: ``account_views`` does those.
"""

from __future__ import annotations

import hmac
import secrets
import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from flask import current_app
from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer
from werkzeug.security import check_password_hash, generate_password_hash

from .db import get_db

__all__ = [
    "DEFAULT_RESET_MAX_AGE",
    "RESET_SALT",
    "SESSION_KEY",
    "Account",
    "EmailTaken",
    "ResetTokenError",
    "change_email",
    "create_account",
    "delete_account",
    "find_by_email",
    "find_by_id",
    "new_account_id",
    "reset_max_age",
    "reset_token",
    "set_password",
    "update_details",
    "verify_password",
    "verify_reset_token",
]

SESSION_KEY = "account_id"  # session key: the account this browser logged in to
RESET_SALT = "example_store.password-reset"  # one salt per purpose: no other token passes
DEFAULT_RESET_MAX_AGE = 3600  # seconds a reset link works (STORE_PASSWORD_RESET_MAX_AGE)
# Checked against when the email is unknown, so a login takes as long either way.
_DUMMY_HASH = generate_password_hash("not-a-real-password")


class EmailTaken(ValueError):
    """Another account already has this email."""


class ResetTokenError(ValueError):
    """The reset link is malformed, forged, expired or already used."""


@dataclass(frozen=True)
class Account:
    id: str
    email: str
    first_name: str
    last_name: str
    phone_number: str | None
    reset_nonce: str
    created_at: str
    updated_at: str

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> Account:
        return cls(
            id=row["id"],
            email=row["email"],
            first_name=row["first_name"],
            last_name=row["last_name"],
            phone_number=row["phone_number"],
            reset_nonce=row["reset_nonce"],
            created_at=row["created_at"],
            updated_at=row["updated_at"],
        )

    def profile(self) -> dict[str, Any]:
        """The account as a Klaviyo profile (identifiers and names, empty values left out)."""
        values = {
            "email": self.email,
            "first_name": self.first_name,
            "last_name": self.last_name,
            "phone_number": self.phone_number,
        }
        return {key: value for key, value in values.items() if value}

    def details(self) -> dict[str, str]:
        """What the account page edits, as the form shows it."""
        return {
            "first_name": self.first_name,
            "last_name": self.last_name,
            "phone_number": self.phone_number or "",
        }


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def new_account_id() -> str:
    """Random, so account ids say nothing about how many shoppers there are."""
    return f"AC-{secrets.token_hex(5).upper()}"


def _nonce() -> str:
    return secrets.token_urlsafe(12)


def find_by_id(account_id: Any) -> Account | None:
    if not isinstance(account_id, str):
        return None
    row = get_db().execute("SELECT * FROM accounts WHERE id = ?", (account_id,)).fetchone()
    return Account.from_row(row) if row is not None else None


def find_by_email(email: str) -> Account | None:
    row = get_db().execute("SELECT * FROM accounts WHERE email = ?", (email,)).fetchone()
    return Account.from_row(row) if row is not None else None


def create_account(
    db: sqlite3.Connection, *, email: str, password: str, first_name: str, last_name: str
) -> Account:
    """Insert the account (inside the caller's transaction); ``EmailTaken`` if it exists."""
    now = _now()
    account = Account(
        id=new_account_id(),
        email=email,
        first_name=first_name,
        last_name=last_name,
        phone_number=None,
        reset_nonce=_nonce(),
        created_at=now,
        updated_at=now,
    )
    try:
        db.execute(
            "INSERT INTO accounts (id, email, password_hash, first_name, last_name,"
            " phone_number, reset_nonce, created_at, updated_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                account.id,
                email,
                generate_password_hash(password),
                first_name,
                last_name,
                None,
                account.reset_nonce,
                now,
                now,
            ),
        )
    except sqlite3.IntegrityError as exc:
        raise EmailTaken(email) from exc
    return account


def verify_password(email: str, password: str) -> Account | None:
    """The account if ``password`` is its password; None for a wrong password or email."""
    row = get_db().execute("SELECT * FROM accounts WHERE email = ?", (email,)).fetchone()
    stored = row["password_hash"] if row is not None else _DUMMY_HASH
    matches = check_password_hash(stored, password)
    return Account.from_row(row) if row is not None and matches else None


def update_details(
    db: sqlite3.Connection,
    account_id: str,
    *,
    first_name: str,
    last_name: str,
    phone_number: str | None,
) -> None:
    db.execute(
        "UPDATE accounts SET first_name = ?, last_name = ?, phone_number = ?, updated_at = ?"
        " WHERE id = ?",
        (first_name, last_name, phone_number, _now(), account_id),
    )


def change_email(db: sqlite3.Connection, account: Account, email: str) -> None:
    """The account's new email; ``EmailTaken`` if another account has it. Outstanding reset
    links die (they went to the old address); the newsletter consents follow the shopper."""
    try:
        db.execute(
            "UPDATE accounts SET email = ?, reset_nonce = ?, updated_at = ? WHERE id = ?",
            (email, _nonce(), _now(), account.id),
        )
    except sqlite3.IntegrityError as exc:
        raise EmailTaken(email) from exc
    db.execute("UPDATE newsletter_signups SET email = ? WHERE email = ?", (email, account.email))


def set_password(db: sqlite3.Connection, account_id: str, password: str) -> None:
    """A new password, and a new reset nonce: every reset link sent so far stops working."""
    db.execute(
        "UPDATE accounts SET password_hash = ?, reset_nonce = ?, updated_at = ? WHERE id = ?",
        (generate_password_hash(password), _nonce(), _now(), account_id),
    )


def delete_account(db: sqlite3.Connection, account_id: str) -> None:
    """The account row, and the newsletter consents recorded under its email."""
    row = db.execute("SELECT email FROM accounts WHERE id = ?", (account_id,)).fetchone()
    if row is None:
        return
    db.execute("DELETE FROM newsletter_signups WHERE email = ?", (row["email"],))
    db.execute("DELETE FROM accounts WHERE id = ?", (account_id,))


# -- reset links ------------------------------------------------------------------------------


def _serializer() -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(current_app.config["SECRET_KEY"], salt=RESET_SALT)


def reset_max_age() -> int:
    return int(current_app.config.get("STORE_PASSWORD_RESET_MAX_AGE") or DEFAULT_RESET_MAX_AGE)


def reset_token(account: Account) -> str:
    """A token for the account's reset link: its id and current nonce, signed and timed."""
    return str(_serializer().dumps({"a": account.id, "n": account.reset_nonce}))


def verify_reset_token(token: str) -> Account:
    """The account a reset token is for, or ``ResetTokenError`` (forged, malformed, expired,
    used: the nonce in it is no longer the account's, or the account is gone)."""
    if not isinstance(token, str) or len(token) > 512 or not token.isascii():
        raise ResetTokenError("malformed")
    try:
        data = _serializer().loads(token, max_age=reset_max_age())
    except SignatureExpired:
        raise ResetTokenError("expired") from None
    except (BadSignature, ValueError, TypeError):
        raise ResetTokenError("invalid") from None
    if not isinstance(data, dict):
        raise ResetTokenError("invalid")
    nonce = data.get("n")
    account = find_by_id(data.get("a"))
    if account is None or not isinstance(nonce, str):
        raise ResetTokenError("invalid")
    if not hmac.compare_digest(nonce.encode(), account.reset_nonce.encode()):
        raise ResetTokenError("used")
    return account
