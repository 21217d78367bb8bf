"""Shopper accounts: register, log in and out, edit details, change email, delete.

What each route hands flask-klaviyo (nothing at all when the form is refused):

- ``POST /account/register``: ``identify()`` with the names, Created Account, a profile
  update; with ``newsletter=yes`` also a subscription (``newsletter.subscribe``).
- ``POST /account``: Updated Account (``UpdateType``, the changed properties with their old and
  new values) and a profile update; nothing when nothing changed.
- ``POST /account/email``: Klaviyo's Updated Email procedure (``klaviyo.change_email``): the
  profile keeps its history under the new address.
- ``POST /account/delete``: ``klaviyo.forget`` (a deletion request; nothing still queued for
  them is sent), then the account goes and the browser is logged out.

Password resets are in ``password_reset.py``. The store's session holds the account id
(``accounts.SESSION_KEY``) and its email (``"email"``, which the identity loader reads).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from flask import Blueprint, flash, redirect, render_template, session, url_for
from werkzeug.wrappers import Response

from . import accounts, newsletter
from .accounts import SESSION_KEY, Account, EmailTaken
from .db import transaction
from .extensions import klaviyo
from .http import json_error, request_data, wants_json
from .validation import (
    MAX_PASSWORD_LENGTH,
    FieldError,
    clean_email,
    clean_name,
    clean_password,
    clean_phone,
    is_yes,
    storable,
    valid_email,
)

__all__ = ["bp", "current_account", "log_in", "log_out"]

log = logging.getLogger(__name__)

bp = Blueprint("account", __name__, url_prefix="/account")

REGISTRATION_SOURCE = "Account registration"
PROPERTY_UPDATE = "Property Update"
# The account page's fields as Klaviyo event properties (UpdatedProperties, Old/NewValues).
DETAIL_NAMES = {"first_name": "FirstName", "last_name": "LastName", "phone_number": "PhoneNumber"}
MAX_ECHO = 254  # characters of a refused field shown back in the form

Answer = Response | tuple[Any, int] | str


# -- the session ------------------------------------------------------------------------------


def current_account() -> Account | None:
    """The account this browser is logged in to (a deleted account logs the browser out)."""
    account_id = session.get(SESSION_KEY)
    if account_id is None:
        return None
    account = accounts.find_by_id(account_id)
    if account is None:
        log_out()
    return account


def log_in(account: Account) -> None:
    session[SESSION_KEY] = account.id
    session["email"] = account.email


def log_out() -> None:
    for key in (SESSION_KEY, "email", "checkout_email"):
        session.pop(key, None)


# -- answers ----------------------------------------------------------------------------------


def _echo(data: dict[str, Any], *fields: str) -> dict[str, str]:
    return {f: v[:MAX_ECHO] for f in fields if storable(v := data.get(f))}


def _refused(
    status: int,
    code: str,
    message: str,
    *,
    page: Callable[..., str],
    form: str,
    errors: dict[str, str] | None = None,
    values: dict[str, str] | None = None,
) -> Answer:
    """A refused form: JSON ``{"error", "message", "fields"}``, or the page again with each
    message beside its field. Nothing was queued."""
    errors = errors or {}
    if wants_json():
        return json_error(status, code, message, fields=errors)
    return page(form=form, errors=errors, values=values or {}, message=message), status


def _done(message: str, body: dict[str, Any], status: int = 200) -> Answer:
    if wants_json():
        return {**body, "message": message}, status
    flash(message, "info")
    return redirect(url_for("account.home"), code=303)


def _signin_page(**context: Any) -> str:
    return render_template("account_signin.html", **context)


def _account_page(account: Account | None = None, **context: Any) -> str:
    account = account or current_account()
    context.setdefault("values", {})
    return render_template("account.html", account=account, **context)


def _login_required() -> Answer:
    message = "Please log in to your account first."
    if wants_json():
        return json_error(401, "login_required", message)
    return _signin_page(form="login", errors={}, values={}, message=message), 401


def _collect(checks: dict[str, Callable[[], Any]]) -> tuple[dict[str, Any], dict[str, str]]:
    """Run every field's check; the cleaned values and the messages of the ones that failed."""
    values: dict[str, Any] = {}
    errors: dict[str, str] = {}
    for name, check in checks.items():
        try:
            values[name] = check()
        except FieldError as exc:
            errors[exc.field] = exc.message
    return values, errors


# -- routes -----------------------------------------------------------------------------------


@bp.get("")
def home() -> Answer:
    account = current_account()
    if account is None:
        return _signin_page(form=None, errors={}, values={})
    if wants_json():
        return {"account_id": account.id, "email": account.email, **account.details()}
    return _account_page(account, form=None, errors={}, values=account.details())


@bp.post("/register")
def register() -> Answer:
    data = request_data()
    clean, errors = _collect(
        {
            "email": lambda: clean_email(data.get("email")),
            "password": lambda: clean_password(data.get("password")),
            "first_name": lambda: clean_name(data.get("first_name"), "first_name", "first name"),
            "last_name": lambda: clean_name(data.get("last_name"), "last_name", "last name"),
        }
    )
    refuse = dict(
        page=_signin_page,
        form="register",
        values=_echo(data, "email", "first_name", "last_name"),
    )
    if errors:
        return _refused(400, "invalid_form", " ".join(errors.values()), errors=errors, **refuse)
    try:
        with transaction() as db:
            account = accounts.create_account(db, **clean)
    except EmailTaken:
        message = "There is already an account with this email: log in, or reset your password."
        return _refused(409, "email_taken", message, errors={"email": message}, **refuse)
    log_in(account)
    profile = account.profile()
    klaviyo.identify(**profile)
    klaviyo.account_created(account.id, profile=profile)
    klaviyo.update_profile(
        email=account.email, first_name=account.first_name, last_name=account.last_name
    )
    body: dict[str, Any] = {"account_id": account.id, "email": account.email}
    message = f"Welcome, {account.first_name}! Your account is ready."
    if is_yes(data.get("newsletter")):
        wanted = newsletter.Signup(email=account.email)
        status = newsletter.subscribe(wanted, source=REGISTRATION_SOURCE)
        body["newsletter"] = status
        message += " " + newsletter.status_message(status, wanted)
    return _done(message, body, 201)


@bp.post("/login")
def login() -> Answer:
    data = request_data()
    email = data.get("email")
    password = data.get("password")
    account = None
    normalized = valid_email(email)
    if normalized and storable(password) and len(password) <= MAX_PASSWORD_LENGTH:
        account = accounts.verify_password(normalized, password)
    if account is None:
        message = "That email and password don't match an account."
        return _refused(
            400,
            "invalid_login",
            message,
            page=_signin_page,
            form="login",
            errors={"password": message},
            values=_echo(data, "email"),
        )
    log_in(account)
    klaviyo.identify(**account.profile())
    return _done(f"Welcome back, {account.first_name}.", {"account_id": account.id}, 200)


@bp.post("/logout")
def logout() -> Answer:
    log_out()
    if wants_json():
        return {"status": "logged_out"}, 200
    flash("Signed out.", "info")
    return redirect(url_for("store.index"), code=303)


@bp.post("")
def update() -> Answer:
    account = current_account()
    if account is None:
        return _login_required()
    data = request_data()
    clean, errors = _collect(
        {
            "first_name": lambda: clean_name(data.get("first_name"), "first_name", "first name"),
            "last_name": lambda: clean_name(data.get("last_name"), "last_name", "last name"),
            "phone_number": lambda: clean_phone(data.get("phone_number")),
        }
    )
    if errors:
        return _refused(
            400,
            "invalid_form",
            " ".join(errors.values()),
            page=lambda **c: _account_page(account, **c),
            form="details",
            errors=errors,
            values=_echo(data, "first_name", "last_name", "phone_number"),
        )
    old = account.details()
    new = {**clean, "phone_number": clean["phone_number"] or ""}
    changed = [name for name in DETAIL_NAMES if old[name] != new[name]]
    if not changed:
        return _done("Nothing to change: your details are as they were.", {"changed": []})
    with transaction() as db:
        accounts.update_details(db, account.id, **clean)
    updated = accounts.find_by_id(account.id)
    assert updated is not None
    klaviyo.account_updated(
        account.id,
        update_type=PROPERTY_UPDATE,
        new_values={DETAIL_NAMES[name]: new[name] for name in changed},
        old_values={DETAIL_NAMES[name]: old[name] for name in changed},
        profile=updated.profile(),
    )
    klaviyo.update_profile(
        email=updated.email,
        first_name=updated.first_name,
        last_name=updated.last_name,
        phone_number=updated.phone_number,
    )
    return _done("Your details are saved.", {"changed": [DETAIL_NAMES[n] for n in changed]})


@bp.post("/email")
def change_email() -> Answer:
    account = current_account()
    if account is None:
        return _login_required()
    data = request_data()
    refuse = dict(
        page=lambda **c: _account_page(account, **c), form="email", values=_echo(data, "email")
    )
    try:
        email = clean_email(data.get("email"))
    except FieldError as exc:
        return _refused(400, "invalid_email", exc.message, errors={"email": exc.message}, **refuse)
    if email == account.email:
        return _done(f"{email} is already your email.", {"email": email})
    try:
        with transaction() as db:
            accounts.change_email(db, account, email)
    except EmailTaken:
        message = "Another account uses that email."
        return _refused(409, "email_taken", message, errors={"email": message}, **refuse)
    session["email"] = email
    # One profile keeps its history: the identifier changes, no second profile is made.
    klaviyo.change_email(account.email, email)
    return _done(f"Your email is now {email}.", {"email": email})


@bp.post("/delete")
def delete() -> Answer:
    account = current_account()
    if account is None:
        return _login_required()
    with transaction() as db:
        accounts.delete_account(db, account.id)
    # Both identifiers: whatever still waits under either is dropped, not sent.
    klaviyo.forget(email=account.email, phone_number=account.phone_number)
    log_out()
    message = "Your account is deleted, and we asked Klaviyo to delete what it knows about you."
    if wants_json():
        return {"status": "deleted", "message": message}, 200
    flash(message, "info")
    return redirect(url_for("store.index"), code=303)
