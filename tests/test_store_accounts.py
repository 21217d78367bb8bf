"""The demo store's customer data and consent (issue 11): newsletter signup, accounts, password
resets, deletion.

Two halves:

- What the store asks of flask-klaviyo, route by route, with the extension's calls recorded
  (``calls``; tracking itself off): the happy paths, and every refusal (malformed or missing
  fields, huge fields, no consent, replayed reset links) answering 4xx with a clear message and
  asking nothing of the extension.
- End to end with the real extension: what waits in the outbox (``queued``), and what reaches
  the local Klaviyo stand-in through a real worker (``drain``), valid against Klaviyo's OpenAPI
  documents.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from conftest import RecordedCalls
from flask import Flask
from flask.testing import FlaskClient
from itsdangerous import TimestampSigner, URLSafeTimedSerializer
from werkzeug.security import check_password_hash

from example_store import create_app, klaviyo
from example_store.settings import settings_from_environ

EMAIL = "ann.lee@klaviyo-demo.com"
PASSWORD = "correct horse battery"
LIST_ID = "NEWSLTR"
ACCOUNT_CALLS = (
    "identify",
    "update_profile",
    "change_email",
    "subscribe",
    "unsubscribe",
    "forget",
    "account_created",
    "account_updated",
    "password_reset",
)


def page(response: Any) -> str:
    return response.get_data(as_text=True)


def store_config(instance: Path, **extra: Any) -> dict[str, Any]:
    return {
        "instance_path": str(instance),
        "SECRET_KEY": "accounts-secret",
        "TESTING": True,
        "STORE_PAYMENTS_AUTO_CALLBACK": False,
        **extra,
    }


class Calls(RecordedCalls):
    """The extension's customer-data methods, recorded instead of run."""

    status = "subscribed"  # what klaviyo.subscribe answers (the list's opt-in)

    def answer(self, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if name == "subscribe":
            return SimpleNamespace(status=self.status)
        if name == "identify":
            return dict(kwargs)
        return None


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> Calls:
    recorder = Calls(klaviyo, ACCOUNT_CALLS)
    recorder.install(monkeypatch)
    return recorder


@pytest.fixture
def shop(tmp_path: Path) -> Flask:
    """The store with tracking off: what it asks of the extension is in ``calls``."""
    return create_app(store_config(tmp_path / "instance", KLAVIYO_ENABLED=False))


@pytest.fixture
def client(shop: Flask) -> FlaskClient:
    return shop.test_client()


def register(client: FlaskClient, **fields: Any) -> Any:
    data = {
        "email": EMAIL,
        "password": PASSWORD,
        "first_name": "Ann",
        "last_name": "Lee",
        **fields,
    }
    return client.post("/account/register", data={k: v for k, v in data.items() if v is not None})


def account_row(app: Flask, email: str = EMAIL) -> sqlite3.Row | None:
    conn = sqlite3.connect(app.config["STORE_DATABASE"])
    conn.row_factory = sqlite3.Row
    try:
        return conn.execute("SELECT * FROM accounts WHERE email = ?", (email,)).fetchone()
    finally:
        conn.close()


def signups(app: Flask) -> list[dict[str, Any]]:
    conn = sqlite3.connect(app.config["STORE_DATABASE"])
    conn.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in conn.execute("SELECT * FROM newsletter_signups ORDER BY id")]
    finally:
        conn.close()


def flashed(client: FlaskClient) -> str:
    return page(client.get("/cart"))


def field_error(html: str, field_id: str) -> str:
    """The message shown beside a field, which names it in aria-describedby."""
    found = re.search(rf'<p class="field-error" id="{field_id}-error">([^<]*)</p>', html)
    assert found, f"no error beside {field_id}"
    assert re.search(rf'id="{field_id}"[^>]*aria-invalid="true"', html), field_id
    assert re.search(rf'id="{field_id}"[^>]*aria-describedby="[^"]*{field_id}-error', html)
    return found.group(1)


# -- newsletter ---------------------------------------------------------------------------------


def test_signup_with_consent_subscribes_and_goes_back_with_a_message(
    client: FlaskClient, calls: Calls, shop: Flask
) -> None:
    response = client.post(
        "/newsletter",
        data={"email": " Ann.Lee@Klaviyo-Demo.com ", "consent": "yes"},
        headers={"Referer": "http://localhost/products/house-blend?x=1"},
    )
    assert response.status_code == 303
    assert response.location == "/products/house-blend?x=1"
    [(_, kwargs)] = calls.of("subscribe")
    assert kwargs["email"] == EMAIL
    assert kwargs["list_id"] == LIST_ID
    assert tuple(kwargs["channels"]) == ("email",)
    assert not kwargs.get("phone_number")
    assert kwargs["source"]
    assert kwargs.get("consented_at") is None  # "now": a time in the past is a historical import
    assert f"Thanks! {EMAIL}" in flashed(client)
    [recorded] = signups(shop)
    assert recorded["email"] == EMAIL and recorded["channels"] == "email"
    assert recorded["status"] == "subscribed" and recorded["consented_at"]


def test_the_form_goes_home_when_the_referer_is_another_site(
    client: FlaskClient, calls: Calls
) -> None:
    for referer in ("https://evil.example/x", "//evil.example/x", "javascript:alert(1)"):
        response = client.post(
            "/newsletter", data={"email": EMAIL, "consent": "yes"}, headers={"Referer": referer}
        )
        assert response.status_code == 303 and response.location == "/", referer
    assert client.post("/newsletter", data={"email": EMAIL, "consent": "yes"}).location == "/"


def test_a_json_client_gets_202_and_the_status(client: FlaskClient, calls: Calls) -> None:
    answer = client.post("/newsletter", json={"email": EMAIL, "consent": "yes"})
    assert answer.status_code == 202 and answer.json["status"] == "subscribed"
    calls.status = "confirmation_sent"  # a double opt-in list
    form = client.post(
        "/newsletter",
        data={"email": "bo@klaviyo-demo.com", "consent": "yes"},
        headers={"Accept": "application/json"},
    )
    assert form.status_code == 202 and form.json["status"] == "confirmation_sent"
    assert "confirm" in form.json["message"]


def test_a_double_opt_in_list_tells_the_shopper_to_check_their_inbox(
    client: FlaskClient, calls: Calls
) -> None:
    calls.status = "confirmation_sent"
    client.post("/newsletter", data={"email": EMAIL, "consent": "yes"})
    assert f"we sent a confirmation to {EMAIL}" in flashed(client)


@pytest.mark.parametrize("consent", [None, "", "no", "on", "YES please"])
def test_without_consent_nobody_is_subscribed_and_the_shopper_is_told_why(
    client: FlaskClient, calls: Calls, shop: Flask, consent: str | None
) -> None:
    data = {"email": EMAIL, "phone_number": "+16175550123", "sms_consent": "yes"}
    if consent is not None:
        data["consent"] = consent
    answer = client.post("/newsletter", data=data, headers={"Accept": "application/json"})
    assert answer.status_code == 202 and answer.json["status"] == "no_consent"
    assert "tick" in answer.json["message"]
    browser = client.post("/newsletter", data=data)
    assert browser.status_code == 303
    assert "We didn&#39;t sign you up" in flashed(client)
    assert calls.made == [] and signups(shop) == []


def test_sms_needs_its_own_consent_and_a_phone_in_e164(client: FlaskClient, calls: Calls) -> None:
    answer = client.post(
        "/newsletter",
        json={
            "email": EMAIL,
            "consent": "yes",
            "phone_number": "(617) 555-0123",
            "sms_consent": "yes",
        },
    )
    assert answer.status_code == 202
    [(_, kwargs)] = calls.of("subscribe")
    assert kwargs["phone_number"] == "+16175550123"
    assert tuple(kwargs["channels"]) == ("email", "sms")
    calls.clear()
    # A phone number without the SMS box: email only, and the number is not sent.
    client.post(
        "/newsletter",
        json={"email": "bo@klaviyo-demo.com", "consent": "yes", "phone_number": "+447911123456"},
    )
    [(_, kwargs)] = calls.of("subscribe")
    assert tuple(kwargs["channels"]) == ("email",) and not kwargs.get("phone_number")


@pytest.mark.parametrize(
    ("phone", "expected"),
    [
        ("+44 7911 123456", "+447911123456"),
        ("0044 7911 123456", "+447911123456"),
        ("617.555.0123", "+16175550123"),
        ("1-617-555-0123", "+16175550123"),
    ],
)
def test_phone_numbers_are_normalised_to_e164(
    client: FlaskClient, calls: Calls, phone: str, expected: str
) -> None:
    data = {"email": EMAIL, "consent": "yes", "phone_number": phone, "sms_consent": "yes"}
    assert client.post("/newsletter", json=data).status_code == 202
    assert calls.of("subscribe")[0][1]["phone_number"] == expected


@pytest.mark.parametrize(
    ("data", "field", "words"),
    [
        ({"consent": "yes"}, "email", "enter your email"),
        ({"email": "", "consent": "yes"}, "email", "enter your email"),
        ({"email": "ann", "consent": "yes"}, "email", "valid email"),
        ({"email": "ann@shop", "consent": "yes"}, "email", "valid email"),
        ({"email": "a b@shop.test", "consent": "yes"}, "email", "valid email"),
        ({"email": "x" * 300 + "@shop.test", "consent": "yes"}, "email", "valid email"),
        ({"email": "ann@a@b.test"}, "email", "valid email"),
        ({"email": EMAIL, "consent": "yes", "sms_consent": "yes"}, "phone_number", "mobile"),
        (
            {"email": EMAIL, "consent": "yes", "phone_number": "555-0123", "sms_consent": "yes"},
            "phone_number",
            "country code",
        ),
        ({"email": EMAIL, "consent": "yes", "phone_number": "call me"}, "phone_number", "country"),
        ({"email": EMAIL, "consent": "yes", "phone_number": "+1" * 40}, "phone_number", "long"),
        ({"email": EMAIL, "consent": "yes", "phone_number": "+0123456789"}, "phone_number", "code"),
    ],
)
def test_bad_signups_are_400_with_the_message_beside_the_field_and_nothing_asked(
    client: FlaskClient, calls: Calls, shop: Flask, data: dict[str, str], field: str, words: str
) -> None:
    html = client.post("/newsletter", data=data)
    assert html.status_code == 400 and html.mimetype == "text/html"
    assert words in field_error(page(html), f"nl-{field}").lower()
    answer = client.post("/newsletter", json=data)
    assert answer.status_code == 400 and answer.json["error"] == "invalid_form"
    assert words in answer.json["fields"][field].lower()
    assert calls.made == [] and signups(shop) == []


def test_non_string_and_huge_fields_are_refused_not_errors(
    client: FlaskClient, calls: Calls
) -> None:
    for data in (
        {"email": ["a@b.test"], "consent": "yes"},
        {"email": {"a": 1}, "consent": "yes"},
        {"email": 42, "consent": True, "phone_number": 6175550123, "sms_consent": "yes"},
    ):
        assert client.post("/newsletter", json=data).status_code == 400, data
    assert client.post("/newsletter", json=["not", "an", "object"]).status_code == 400
    assert (
        client.post("/newsletter", data=b"{not json", content_type="application/json").status_code
        == 400
    )
    huge = client.post("/newsletter", data={"email": "a" * 2_000_000, "consent": "yes"})
    assert huge.status_code in (400, 413)  # refused by the field's cap or the form's size
    assert calls.made == []


LONE_SURROGATE = "\ud800"  # valid JSON ("\\ud800"), not UTF-8: SQLite cannot store it


def test_lone_surrogates_from_json_clients_are_refused_not_errors(
    client: FlaskClient, calls: Calls, shop: Flask
) -> None:
    bad = f"ann{LONE_SURROGATE}@klaviyo-demo.com"
    assert client.post("/newsletter", json={"email": bad, "consent": "yes"}).status_code == 400
    phone = {"email": EMAIL, "consent": "yes", "phone_number": f"+1617{LONE_SURROGATE}"}
    assert client.post("/newsletter", json=phone).status_code == 400
    base = {"email": EMAIL, "password": PASSWORD, "first_name": "Ann", "last_name": "Lee"}
    for field in base:
        value = LONE_SURROGATE * 9 if field == "password" else base[field] + LONE_SURROGATE
        answer = client.post("/account/register", json={**base, field: value})
        assert answer.status_code == 400 and field in answer.json["fields"], field
    assert (
        client.post("/account/login", json={"email": bad, "password": PASSWORD}).status_code == 400
    )
    assert (
        client.post("/account/login", json={"email": EMAIL, "password": LONE_SURROGATE}).status_code
        == 400
    )
    assert client.post("/account/password-reset", json={"email": bad}).status_code == 400
    assert client.post("/checkout/email", json={"email": bad}).status_code == 400
    assert calls.made == [] and signups(shop) == []


def test_a_double_submit_is_one_subscription(
    client: FlaskClient, calls: Calls, shop: Flask
) -> None:
    data = {"email": EMAIL, "consent": "yes"}
    first = client.post("/newsletter", json=data)
    again = client.post("/newsletter", json={**data, "email": EMAIL.upper()})
    assert first.json["status"] == again.json["status"] == "subscribed"
    assert len(calls.of("subscribe")) == 1
    assert len(signups(shop)) == 1
    # Adding texts is a new signup.
    with_sms = {**data, "phone_number": "+16175550123", "sms_consent": "yes"}
    client.post("/newsletter", json=with_sms)
    client.post("/newsletter", json=with_sms)
    assert len(calls.of("subscribe")) == 2


def test_the_list_is_a_store_setting(tmp_path: Path, calls: Calls) -> None:
    app = create_app(
        store_config(tmp_path / "instance", KLAVIYO_ENABLED=False, STORE_NEWSLETTER_LIST_ID="Xy12")
    )
    app.test_client().post("/newsletter", json={"email": EMAIL, "consent": "yes"})
    assert calls.of("subscribe")[0][1]["list_id"] == "Xy12"
    environ = {"STORE_NEWSLETTER_LIST_ID": "AbC9", "STORE_PASSWORD_RESET_MAX_AGE": "900"}
    assert settings_from_environ(environ) == {
        "STORE_NEWSLETTER_LIST_ID": "AbC9",
        "STORE_PASSWORD_RESET_MAX_AGE": 900,
    }


def test_every_page_has_the_footer_form_with_consent_unticked(
    client: FlaskClient, calls: Calls
) -> None:
    for path in ("/", "/products/house-blend", "/cart", "/account", "/newsletter", "/nope"):
        html = page(client.get(path))
        footer = html.split('<footer class="site-footer">', 1)[1]
        assert 'action="/newsletter"' in footer, path
        consent = re.search(r'<input id="footer-consent"[^>]*>', footer)
        assert consent and "checked" not in consent.group(0), path
        assert '<label for="footer-consent">' in footer and '<label for="footer-email">' in footer
        assert 'name="sms_consent"' in footer and '<label for="footer-sms">' in footer
        assert "https://" not in html.split("<body>", 1)[1].split("klaviyo", 1)[0]


def test_the_checkout_offers_box_is_unticked_and_subscribes_only_when_ticked(
    client: FlaskClient, calls: Calls
) -> None:
    client.post("/cart/add", data={"product_id": "house-blend"})
    client.post("/checkout/email", data={"email": EMAIL})
    html = page(client.get("/checkout"))
    box = re.search(r'<input id="checkout-newsletter"[^>]*>', html)
    assert box and 'name="newsletter"' in box.group(0) and "checked" not in box.group(0)
    assert '<label for="checkout-newsletter">Email me offers' in html
    placed = client.post("/checkout", data={"city": "Boston", "country_code": "us"})
    assert placed.status_code == 303 and calls.of("subscribe") == []

    client.post("/cart/add", data={"product_id": "house-blend"})
    ticked = client.post("/checkout", json={"email": "bo@klaviyo-demo.com", "newsletter": "yes"})
    assert ticked.status_code == 201 and ticked.json["newsletter"] == "subscribed"
    [(_, kwargs)] = calls.of("subscribe")
    assert kwargs["email"] == "bo@klaviyo-demo.com" and kwargs["source"] == "Checkout"
    assert tuple(kwargs["channels"]) == ("email",)


def test_cross_site_signups_are_refused(client: FlaskClient, calls: Calls) -> None:
    evil = {"Origin": "https://evil.example"}
    for path in ("/newsletter", "/account/register", "/account/password-reset", "/account/delete"):
        assert (
            client.post(path, data={"email": EMAIL, "consent": "yes"}, headers=evil).status_code
            == 403
        )
    assert calls.made == []


# -- accounts -----------------------------------------------------------------------------------


def test_register_creates_a_logged_in_account_and_tells_klaviyo(
    client: FlaskClient, calls: Calls, shop: Flask
) -> None:
    response = register(client, email="Ann.Lee@klaviyo-demo.com")
    assert response.status_code == 303 and response.location == "/account"
    row = account_row(shop)
    assert row is not None and row["first_name"] == "Ann" and row["last_name"] == "Lee"
    assert PASSWORD not in row["password_hash"]
    assert check_password_hash(row["password_hash"], PASSWORD)
    assert calls.names() == ["identify", "account_created", "update_profile"]
    [(_, identified)] = calls.of("identify")
    assert identified == {"email": EMAIL, "first_name": "Ann", "last_name": "Lee"}
    [(args, kwargs)] = calls.of("account_created")
    assert args == (row["id"],) and kwargs["profile"]["email"] == EMAIL
    [(_, profile)] = calls.of("update_profile")
    assert profile == {"email": EMAIL, "first_name": "Ann", "last_name": "Lee"}
    html = page(client.get("/account"))
    assert "Signed in as <strong>ann.lee@klaviyo-demo.com</strong>" in html
    assert 'value="Ann"' in html and "Welcome, Ann!" in html


def test_register_with_the_newsletter_box_subscribes(client: FlaskClient, calls: Calls) -> None:
    answer = client.post(
        "/account/register",
        json={
            "email": EMAIL,
            "password": PASSWORD,
            "first_name": "Ann",
            "last_name": "Lee",
            "newsletter": "yes",
        },
    )
    assert answer.status_code == 201 and answer.json["newsletter"] == "subscribed"
    assert answer.json["account_id"].startswith("AC-")
    [(_, kwargs)] = calls.of("subscribe")
    assert kwargs["email"] == EMAIL and kwargs["source"] == "Account registration"


def test_register_without_the_box_subscribes_nobody(client: FlaskClient, calls: Calls) -> None:
    register(client, newsletter="no")
    assert calls.of("subscribe") == []


@pytest.mark.parametrize(
    ("fields", "field", "words"),
    [
        ({"email": None}, "email", "enter your email"),
        ({"email": "ann@"}, "email", "valid email"),
        ({"password": None}, "password", "at least 8"),
        ({"password": "short"}, "password", "at least 8"),
        ({"password": "p" * 129}, "password", "at most 128"),
        ({"first_name": "  "}, "first_name", "first name"),
        ({"last_name": None}, "last_name", "last name"),
        ({"first_name": "A" * 81}, "first_name", "at most 80"),
        ({"last_name": "Lee\x00"}, "last_name", "characters"),
    ],
)
def test_a_bad_registration_is_400_with_the_field_marked_and_no_account(
    client: FlaskClient, calls: Calls, shop: Flask, fields: dict[str, Any], field: str, words: str
) -> None:
    response = register(client, **fields)
    assert response.status_code == 400
    assert words in field_error(page(response), f"register-{field}").lower()
    assert calls.made == []
    with sqlite3.connect(shop.config["STORE_DATABASE"]) as conn:
        assert conn.execute("SELECT count(*) FROM accounts").fetchone()[0] == 0
    assert "Sign in or register" in page(client.get("/account"))  # not logged in


def test_an_email_with_an_account_cannot_register_again(client: FlaskClient, calls: Calls) -> None:
    register(client)
    calls.clear()
    again = client.post(
        "/account/register",
        json={"email": EMAIL, "password": "another password", "first_name": "X", "last_name": "Y"},
    )
    assert again.status_code == 409 and again.json["error"] == "email_taken"
    assert calls.made == []


def test_log_in_with_the_password_and_out(client: FlaskClient, calls: Calls, shop: Flask) -> None:
    register(client)
    client.post("/account/logout")
    assert "Log in" in page(client.get("/account"))
    calls.clear()
    wrong = client.post("/account/login", data={"email": EMAIL, "password": "not it at all"})
    unknown = client.post("/account/login", data={"email": "no@one.test", "password": PASSWORD})
    assert wrong.status_code == unknown.status_code == 400
    message = "That email and password don&#39;t match an account."
    assert message in page(wrong) and message in page(unknown)
    assert client.post("/account/login", json={"email": 1, "password": None}).status_code == 400
    assert (
        client.post("/account/login", data={"email": EMAIL, "password": "x" * 100_000}).status_code
        == 400
    )
    assert calls.made == []
    ok = client.post("/account/login", data={"email": EMAIL.upper(), "password": PASSWORD})
    assert ok.status_code == 303 and ok.location == "/account"
    assert calls.names() == ["identify"]
    assert "Your details" in page(client.get("/account"))
    out = client.post("/logout")  # the header's log out ends the account session too
    assert out.status_code == 303
    assert "Create an account" in page(client.get("/account"))


def test_the_email_only_login_is_not_an_account_login(client: FlaskClient, calls: Calls) -> None:
    register(client)
    client.post("/account/logout")
    client.post("/login", data={"email": EMAIL})
    assert "Create an account" in page(client.get("/account"))
    assert client.post("/account", data={"first_name": "Eve"}).status_code == 401


def test_account_routes_need_a_login(client: FlaskClient, calls: Calls) -> None:
    signin = client.get("/account")
    assert signin.status_code == 200 and "Create an account" in page(signin)
    for path, data in (
        ("/account", {"first_name": "A", "last_name": "B"}),
        ("/account/email", {"email": EMAIL}),
        ("/account/delete", {}),
    ):
        assert client.post(path, data=data).status_code == 401, path
        answer = client.post(path, json=data)
        assert answer.status_code == 401 and answer.json["error"] == "login_required", path
    assert calls.made == []


def test_updating_details_sends_updated_account_with_old_and_new_values(
    client: FlaskClient, calls: Calls, shop: Flask
) -> None:
    register(client)
    account_id = account_row(shop)["id"]  # type: ignore[index]
    calls.clear()
    response = client.post(
        "/account",
        data={"first_name": "Ann", "last_name": "Lee-Park", "phone_number": "617 555 0123"},
    )
    assert response.status_code == 303 and response.location == "/account"
    [(args, kwargs)] = calls.of("account_updated")
    assert args == (account_id,)
    assert kwargs["update_type"] == "Property Update"
    assert kwargs["new_values"] == {"LastName": "Lee-Park", "PhoneNumber": "+16175550123"}
    assert kwargs["old_values"] == {"LastName": "Lee", "PhoneNumber": ""}
    assert kwargs["profile"]["email"] == EMAIL
    [(_, profile)] = calls.of("update_profile")
    assert profile == {
        "email": EMAIL,
        "first_name": "Ann",
        "last_name": "Lee-Park",
        "phone_number": "+16175550123",
    }
    row = account_row(shop)
    assert row["last_name"] == "Lee-Park" and row["phone_number"] == "+16175550123"  # type: ignore[index]
    calls.clear()
    same = client.post(
        "/account",
        json={"first_name": "Ann", "last_name": "Lee-Park", "phone_number": "+16175550123"},
    )
    assert same.status_code == 200 and same.json["changed"] == []
    assert calls.made == []


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"first_name": "", "last_name": "Lee"}, "first_name"),
        ({"first_name": "Ann", "last_name": "L" * 500}, "last_name"),
        ({"first_name": "Ann", "last_name": "Lee", "phone_number": "12"}, "phone_number"),
        (
            {"first_name": "Ann", "last_name": "Lee", "phone_number": "+1 (617) 555-01234567890"},
            "phone_number",
        ),
    ],
)
def test_bad_details_are_refused_and_nothing_changes(
    client: FlaskClient, calls: Calls, shop: Flask, data: dict[str, str], field: str
) -> None:
    register(client)
    calls.clear()
    response = client.post("/account", data=data)
    assert response.status_code == 400
    assert field_error(page(response), f"details-{field}")
    assert calls.made == []
    assert account_row(shop)["last_name"] == "Lee"  # type: ignore[index]


def test_changing_the_email_follows_klaviyos_updated_email_procedure(
    client: FlaskClient, calls: Calls, shop: Flask
) -> None:
    register(client)
    client.post("/newsletter", data={"email": EMAIL, "consent": "yes"})
    calls.clear()
    new = "ann.park@klaviyo-demo.com"
    response = client.post("/account/email", data={"email": "  ANN.PARK@klaviyo-demo.com"})
    assert response.status_code == 303
    assert calls.of("change_email") == [((EMAIL, new), {})]
    assert calls.names() == ["change_email"]
    assert account_row(shop) is None and account_row(shop, new) is not None
    assert f"Signed in as <strong>{new}</strong>" in page(client.get("/account"))
    assert [s["email"] for s in signups(shop)] == [new]  # the consent follows the shopper
    calls.clear()
    assert client.post("/account/email", json={"email": new}).status_code == 200  # no change
    assert client.post("/account/email", json={"email": "nope"}).status_code == 400
    assert client.post("/account/email", json={}).status_code == 400
    other = shop.test_client()
    register(other, email="bo@klaviyo-demo.com")
    calls.clear()
    taken = client.post("/account/email", json={"email": "bo@klaviyo-demo.com"})
    assert taken.status_code == 409 and taken.json["error"] == "email_taken"
    assert calls.made == []


# -- password resets ----------------------------------------------------------------------------


def reset_link(calls: Calls) -> str:
    [(args, _)] = calls.of("password_reset")
    calls.clear()
    return str(args[0])


def test_a_reset_link_is_sent_as_an_absolute_signed_url(
    client: FlaskClient, calls: Calls, shop: Flask
) -> None:
    register(client)
    client.post("/account/logout")
    calls.clear()
    answer = client.post("/account/password-reset", data={"email": EMAIL})
    assert answer.status_code == 303 and answer.location == "/account/password-reset"
    [(args, kwargs)] = calls.of("password_reset")
    link = args[0]
    assert re.fullmatch(r"http://localhost/account/reset/[\w.\-]+", link), link
    assert kwargs["profile"] == {"email": EMAIL}
    # Signed with the store's key and its own salt: the session's salt does not open it.
    token = link.rsplit("/", 1)[1]
    data = URLSafeTimedSerializer("accounts-secret", salt="example_store.password-reset").loads(
        token
    )
    assert data["a"] == account_row(shop)["id"]  # type: ignore[index]
    assert "If an account uses" in page(client.get("/account/password-reset"))


def test_an_unknown_email_gets_the_same_answer_and_nothing_is_sent(
    client: FlaskClient, calls: Calls
) -> None:
    register(client)
    calls.clear()
    known = client.post("/account/password-reset", json={"email": EMAIL})
    unknown = client.post("/account/password-reset", json={"email": "nobody@klaviyo-demo.com"})
    assert known.status_code == unknown.status_code == 202
    assert known.json["status"] == unknown.json["status"] == "sent"
    assert known.json["message"].replace(EMAIL, "X") == unknown.json["message"].replace(
        "nobody@klaviyo-demo.com", "X"
    )
    assert len(calls.of("password_reset")) == 1
    calls.clear()
    for bad in ({"email": "nope"}, {}, {"email": "a" * 5000 + "@x.test"}):
        assert client.post("/account/password-reset", json=bad).status_code == 400
    html = client.post("/account/password-reset", data={"email": "nope"})
    assert html.status_code == 400 and field_error(page(html), "reset-email")
    assert calls.made == []


def test_a_reset_link_sets_a_new_password_once(
    client: FlaskClient, calls: Calls, shop: Flask
) -> None:
    register(client)
    client.post("/account/logout")
    calls.clear()
    client.post("/account/password-reset", data={"email": EMAIL})
    path = reset_link(calls).removeprefix("http://localhost")
    form = client.get(path)
    assert form.status_code == 200 and 'type="password"' in page(form)
    assert form.headers["Referrer-Policy"] == "same-origin"  # no other site sees the token
    too_short = client.post(path, data={"password": "short"})
    assert too_short.status_code == 400 and field_error(page(too_short), "new-password")
    done = client.post(path, data={"password": "a brand new password"})
    assert done.status_code == 303 and done.location == "/account"
    assert "Your details" in page(client.get("/account"))  # logged in
    [(_, kwargs)] = calls.of("account_updated")
    assert kwargs["update_type"] == "Password Update"
    assert "password" not in repr(kwargs["new_values"]).lower().replace("passwordchangedat", "")
    calls.clear()
    # Replays are refused, on the form and on submit, and the password stays as set.
    replay = client.post(path, data={"password": "the attacker's password"})
    assert replay.status_code == 400 and "already been used" in page(replay)
    assert client.get(path).status_code == 400
    assert client.post(path, json={"password": "the attacker's password"}).json["error"] == (
        "reset_link_used"
    )
    assert calls.made == []
    row = account_row(shop)
    assert check_password_hash(row["password_hash"], "a brand new password")  # type: ignore[index]
    client.post("/account/logout")
    old = client.post("/account/login", data={"email": EMAIL, "password": PASSWORD})
    assert old.status_code == 400


def test_an_earlier_link_dies_when_a_later_one_is_used_or_the_email_changes(
    client: FlaskClient, calls: Calls
) -> None:
    register(client)
    calls.clear()
    client.post("/account/password-reset", data={"email": EMAIL})
    first = reset_link(calls).removeprefix("http://localhost")
    client.post("/account/password-reset", data={"email": EMAIL})
    second = reset_link(calls).removeprefix("http://localhost")
    assert client.post(second, data={"password": "a brand new password"}).status_code == 303
    assert client.post(first, data={"password": "yet another password"}).status_code == 400
    client.post("/account/password-reset", data={"email": EMAIL})
    third = reset_link(calls).removeprefix("http://localhost")
    client.post("/account/email", data={"email": "ann.park@klaviyo-demo.com"})
    assert client.get(third).status_code == 400


def test_expired_forged_and_garbage_links_are_refused(
    client: FlaskClient, calls: Calls, shop: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    register(client)
    calls.clear()
    with monkeypatch.context() as past:
        two_hours_ago = TimestampSigner.get_timestamp(TimestampSigner(b"k")) - 7200
        past.setattr(TimestampSigner, "get_timestamp", lambda self: two_hours_ago)
        client.post("/account/password-reset", data={"email": EMAIL})
    expired = reset_link(calls).removeprefix("http://localhost")
    refused = client.get(expired)
    assert refused.status_code == 400 and "expired" in page(refused)
    assert client.post(expired, data={"password": "a brand new password"}).status_code == 400

    account_id = account_row(shop)["id"]  # type: ignore[index]
    nonce = account_row(shop)["reset_nonce"]  # type: ignore[index]
    forged = [
        URLSafeTimedSerializer("wrong-key", salt="example_store.password-reset").dumps(
            {"a": account_id, "n": nonce}
        ),
        URLSafeTimedSerializer("accounts-secret", salt="cookie-session").dumps(
            {"a": account_id, "n": nonce}
        ),
        URLSafeTimedSerializer("accounts-secret", salt="example_store.password-reset").dumps(
            ["a", account_id]
        ),
        URLSafeTimedSerializer("accounts-secret", salt="example_store.password-reset").dumps(
            {"a": "AC-NOBODY", "n": nonce}
        ),
        "garbage",
        "a" * 5000,
        "%00%ff",
    ]
    for token in forged:
        response = client.post(f"/account/reset/{token}", data={"password": "pwned pwned pwned"})
        assert 400 <= response.status_code < 500, token[:40]
        assert 400 <= client.get(f"/account/reset/{token}").status_code < 500
    assert calls.made == []
    client.post("/account/logout")
    ok = client.post("/account/login", data={"email": EMAIL, "password": PASSWORD})
    assert ok.status_code == 303


# -- deletion -----------------------------------------------------------------------------------


def test_deleting_the_account_forgets_the_shopper_and_logs_out(
    client: FlaskClient, calls: Calls, shop: Flask
) -> None:
    register(client, newsletter="yes")
    assert len(signups(shop)) == 1
    calls.clear()
    response = client.post("/account/delete")
    assert response.status_code == 303 and response.location == "/"
    assert calls.of("forget") == [((), {"email": EMAIL, "phone_number": None})]
    assert calls.names() == ["forget"]
    assert account_row(shop) is None and signups(shop) == []
    html = page(client.get("/account"))
    assert "Create an account" in html and "Your account is deleted" in html
    assert client.post("/account/delete").status_code == 401
    assert (
        client.post("/account/login", data={"email": EMAIL, "password": PASSWORD}).status_code
        == 400
    )


def test_a_deleted_accounts_other_browser_is_logged_out(shop: Flask, calls: Calls) -> None:
    phone, laptop = shop.test_client(), shop.test_client()
    register(phone)
    laptop.post("/account/login", data={"email": EMAIL, "password": PASSWORD})
    phone.post("/account/delete")
    calls.clear()
    assert "Create an account" in page(laptop.get("/account"))
    assert laptop.post("/account", data={"first_name": "A", "last_name": "B"}).status_code == 401
    assert calls.made == []


def test_account_pages_are_accessible_forms(client: FlaskClient, calls: Calls) -> None:
    """Every input has a label; no asset comes from another site; the page fits a phone."""
    pages = [page(client.get("/account")), page(client.get("/newsletter"))]
    register(client)
    pages.append(page(client.get("/account")))
    pages.append(page(client.get("/account/password-reset")))
    for html in pages:
        assert '<meta name="viewport" content="width=device-width, initial-scale=1">' in html
        for match in re.finditer(r"<input ([^>]*)>", html):
            attributes = match.group(1)
            if 'type="hidden"' in attributes:
                continue
            field_id = re.search(r'id="([^"]+)"', attributes)
            assert field_id, attributes
            assert f'<label for="{field_id.group(1)}"' in html, field_id.group(1)
        assert not re.search(r'(src|href)="(https?:)?//', html)


# -- end to end: the real extension, the outbox, a worker, the stand-in -------------------------


@pytest.fixture
def live_shop(tmp_path: Path, redis_url: str, fake: Any) -> Iterator[Flask]:
    """The store with tracking on: the embedded Redis, delivering to the stand-in."""
    app = create_app(
        store_config(
            tmp_path / "instance",
            KLAVIYO_REDIS_URL=redis_url,
            KLAVIYO_API_URL=fake.url,
            KLAVIYO_PRIVATE_API_KEY="pk_test_private_key",
        )
    )
    yield app


def operations(entries: list[dict[str, Any]], kind_part: str) -> list[dict[str, Any]]:
    return [e for e in entries if kind_part in str(e.get("op", ""))]


def metrics(entries: list[dict[str, Any]]) -> list[str]:
    return [e["metric"] for e in entries if "metric" in e]


def event_requests(fake: Any, metric: str) -> list[tuple[str, dict[str, Any]]]:
    """(OpenAPI operation, body) of each request to Klaviyo that carried ``metric``."""
    found = []
    for request in fake.requests:
        body = request.get("body")
        if not isinstance(body, dict) or metric not in repr(body):
            continue
        if request["path"].startswith("/api/events"):
            found.append(("create_event", body))
        elif request["path"].startswith("/api/event-bulk-create-jobs"):
            found.append(("bulk_create_events", body))
    return found


def test_signup_queues_one_subscription_and_nothing_without_consent(
    live_shop: Flask, queued_operations: Any
) -> None:
    client = live_shop.test_client()
    assert client.post("/newsletter", json={"email": EMAIL}).json["status"] == "no_consent"
    assert client.post("/newsletter", json={"email": "bad", "consent": "yes"}).status_code == 400
    assert queued_operations(live_shop) == []
    data = {"email": EMAIL, "consent": "yes"}
    first = client.post("/newsletter", json=data)
    second = client.post("/newsletter", json=data)  # a double submit
    assert first.status_code == second.status_code == 202
    assert first.json["status"] in ("subscribed", "confirmation_sent")
    assert second.json == first.json
    [subscription] = operations(queued_operations(live_shop), "subscri")
    assert EMAIL in repr(subscription["payload"])


def test_the_answer_follows_the_lists_opt_in(tmp_path: Path, redis_url: str, fake: Any) -> None:
    """Double opt-in (Klaviyo's default): "check your inbox"; a single opt-in list: subscribed."""
    for single, expected in (((), "confirmation_sent"), ((LIST_ID,), "subscribed")):
        app = create_app(
            store_config(
                tmp_path / f"instance-{expected}",
                KLAVIYO_REDIS_URL=redis_url,
                KLAVIYO_API_URL=fake.url,
                KLAVIYO_PRIVATE_API_KEY="pk_test_private_key",
                KLAVIYO_SINGLE_OPT_IN_LISTS=single,
            )
        )
        answer = app.test_client().post("/newsletter", json={"email": EMAIL, "consent": "yes"})
        assert answer.status_code == 202 and answer.json["status"] == expected


def test_an_sms_signup_queues_the_phone_for_texts(live_shop: Flask, queued_operations: Any) -> None:
    client = live_shop.test_client()
    data = {"email": EMAIL, "consent": "yes", "phone_number": "617-555-0123", "sms_consent": "yes"}
    assert client.post("/newsletter", json=data).status_code == 202
    [subscription] = operations(queued_operations(live_shop), "subscri")
    assert "+16175550123" in repr(subscription["payload"])
    assert "sms" in repr(subscription["payload"]).lower()


def test_a_double_submit_is_one_subscription_at_the_stand_in(
    live_shop: Flask, fake: Any, drain: Any
) -> None:
    client = live_shop.test_client()
    for _ in range(2):
        client.post("/newsletter", data={"email": EMAIL, "consent": "yes"})
    data = {"email": "bo@klaviyo-demo.com", "consent": "yes", "phone_number": "+447911123456"}
    client.post("/newsletter", data={**data, "sms_consent": "yes"})
    client.post("/newsletter", data={**data, "sms_consent": "yes"})
    client.post("/newsletter", data={"email": "cy@klaviyo-demo.com"})  # no consent
    drain(live_shop)
    rows = fake.subscriptions(LIST_ID)
    assert sorted((r["email"], r["channel"]) for r in rows) == [
        (EMAIL, "email"),
        ("bo@klaviyo-demo.com", "email"),
        ("bo@klaviyo-demo.com", "sms"),
    ]
    assert {r["consent"] for r in rows} == {"SUBSCRIBED"}
    [sms] = [r for r in rows if r["channel"] == "sms"]
    assert sms["phone_number"] == "+447911123456"
    assert {r["custom_source"] for r in rows} == {"Footer newsletter form"}
    assert not any(r["historical_import"] for r in rows)


def test_register_reaches_klaviyo_as_created_account(
    live_shop: Flask, fake: Any, drain: Any, openapi: Any
) -> None:
    client = live_shop.test_client()
    assert register(client).status_code == 303
    assert fake.events == []  # nothing is sent from the request itself
    drain(live_shop)
    [created] = [e for e in fake.events if e["metric"] == "Created Account"]
    assert created["profile"]["email"] == EMAIL
    requests = event_requests(fake, "Created Account")
    assert requests
    for operation, body in requests:
        openapi.validate(operation, body)


def test_each_account_event_reaches_klaviyo_valid(
    live_shop: Flask, fake: Any, drain: Any, openapi: Any
) -> None:
    client = live_shop.test_client()
    register(client)
    client.post("/account", data={"first_name": "Ann", "last_name": "Park", "phone_number": ""})
    client.post("/account/password-reset", data={"email": EMAIL})
    drain(live_shop)
    [updated] = [e for e in fake.events if e["metric"] == "Updated Account"]
    properties = updated["properties"]
    assert properties["UpdateType"] == "Property Update"
    assert properties["NewValues"] == {"LastName": "Park"}
    assert properties["OldValues"] == {"LastName": "Lee"}
    assert list(properties["UpdatedProperties"]) == ["LastName"]
    [reset] = [e for e in fake.events if e["metric"] == "Reset Password"]
    link = reset["properties"]["PasswordResetLink"]
    assert link.startswith("http://localhost/account/reset/")
    assert reset["profile"]["email"] == EMAIL
    assert updated["profile"]["email"] == EMAIL
    for metric in ("Updated Account", "Reset Password"):
        requests = event_requests(fake, metric)
        assert requests, metric
        for operation, body in requests:
            openapi.validate(operation, body)
    # The link Klaviyo would email works, once.
    path = link.removeprefix("http://localhost")
    fresh = live_shop.test_client()
    assert fresh.post(path, data={"password": "a brand new password"}).status_code == 303
    assert fresh.post(path, data={"password": "a brand new password"}).status_code == 400


def test_bad_account_input_queues_nothing(
    live_shop: Flask, queued: Any, queued_operations: Any
) -> None:
    def everything() -> list[dict[str, Any]]:
        return queued(live_shop) + queued_operations(live_shop)

    client = live_shop.test_client()
    assert register(client, email="not-an-email").status_code == 400
    assert register(client, password="short").status_code == 400
    assert client.post("/account/password-reset", data={"email": "x@"}).status_code == 400
    assert (
        client.post("/account/password-reset", data={"email": "nobody@x.test"}).status_code == 303
    )
    assert client.post("/account/reset/garbage", data={"password": PASSWORD}).status_code == 400
    assert everything() == []
    register(client)
    before = len(everything())
    assert client.post("/account", data={"first_name": "", "last_name": "Lee"}).status_code == 400
    assert (
        client.post(
            "/account", data={"first_name": "A", "last_name": "B", "phone_number": "9"}
        ).status_code
        == 400
    )
    assert client.post("/account/email", data={"email": "nope@"}).status_code == 400
    assert len(everything()) == before


def test_deleting_the_account_forgets_what_was_queued_for_them(
    live_shop: Flask, fake: Any, drain: Any, queued: Any, queued_operations: Any
) -> None:
    client = live_shop.test_client()
    register(client, newsletter="yes")  # Created Account, a profile, a subscription: queued
    assert queued(live_shop) and queued_operations(live_shop)
    assert client.post("/account/delete").status_code == 303
    left = [e for e in queued(live_shop) + queued_operations(live_shop) if EMAIL in repr(e)]
    assert all("delet" in str(e.get("op", "")) for e in left), left
    drain(live_shop)
    assert [e for e in fake.events if e.get("profile", {}).get("email") == EMAIL] == []
    assert [r for r in fake.subscriptions() if r["email"] == EMAIL] == []
    assert [d["email"] for d in fake.deletions()] == [EMAIL]
