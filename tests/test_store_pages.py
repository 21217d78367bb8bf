"""The demo store's payment page, back-office payment and shipping buttons, and favicon, through
Flask's test client (``test_store_browser.py`` drives the same pages in Chromium)."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient

from example_store import create_app

ADMIN = "admin-password"
SHOPPER = "pages@shop.test"


def admin_auth() -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"admin:{ADMIN}".encode()).decode()}


@pytest.fixture
def shop(tmp_path: Path) -> Flask:
    return create_app(
        {
            "instance_path": str(tmp_path / "instance"),
            "SECRET_KEY": "pages-secret",
            "TESTING": True,
            "KLAVIYO_ENABLED": False,
            "STORE_ADMIN_PASSWORD": ADMIN,
            "STORE_PAYMENTS_AUTO_CALLBACK": False,
        }
    )


def place(client: FlaskClient) -> str:
    client.post("/cart/add", data={"product_id": "maple-serving-board", "quantity": "1"})
    client.post("/checkout/email", data={"email": SHOPPER})
    placed = client.post("/checkout", data={"city": "Boston"})
    assert placed.status_code == 303
    return placed.location.rsplit("/", 1)[1]


def status(client: FlaskClient, order_id: str) -> str:
    answer = client.get(f"/orders/{order_id}", headers={"Accept": "application/json"})
    return str(answer.json["status"])


def test_the_payment_page_shows_the_webhook_and_answers_for_the_provider(shop: Flask) -> None:
    client = shop.test_client()
    order_id = place(client)
    page = client.get(f"/pay/{order_id}").get_data(as_text=True)
    assert "POST /webhooks/payments" in page and "X-Store-Signature" in page
    assert f'action="/pay/{order_id}/succeeded"' in page  # no automatic callback: buttons
    assert "None yet." in page
    assert client.get(f"/orders/{order_id}").status_code == 200

    approved = client.post(f"/pay/{order_id}/succeeded", follow_redirects=True)
    text = approved.get_data(as_text=True)
    assert f"order {order_id} is now paid" in text
    assert "payment.succeeded" in text and "None yet." not in text  # the delivery is listed
    assert status(client, order_id) == "paid"
    again = client.post(f"/pay/{order_id}/failed", follow_redirects=True)
    assert "changed nothing" in again.get_data(as_text=True)
    assert status(client, order_id) == "paid"


def test_the_payment_page_is_only_for_the_shopper_and_the_admin(shop: Flask) -> None:
    order_id = place(shop.test_client())
    stranger = shop.test_client()
    assert stranger.get(f"/pay/{order_id}").status_code == 404
    assert stranger.post(f"/pay/{order_id}/succeeded").status_code == 404
    assert stranger.get(f"/pay/{order_id}", headers=admin_auth()).status_code == 200
    assert shop.test_client().post(f"/pay/{order_id}/refunded").status_code == 404


def test_the_back_office_plays_the_provider(shop: Flask) -> None:
    client = shop.test_client()
    order_id = place(client)
    path = f"/admin/orders/{order_id}/payment/failed"
    assert shop.test_client().post(path).status_code == 401
    declined = client.post(path, headers=admin_auth(), follow_redirects=True)
    assert f"order {order_id} is now payment failed" in declined.get_data(as_text=True)
    assert status(client, order_id) == "payment_failed"
    missing = client.post("/admin/orders/SP-NOPE/payment/failed", headers=admin_auth())
    assert missing.status_code == 404
    assert (
        client.post(f"/admin/orders/{order_id}/payment/lost", headers=admin_auth()).status_code
        == 404
    )


def test_the_shipping_button_only_ships_what_was_paid(shop: Flask) -> None:
    client = shop.test_client()
    order_id = place(client)
    path = f"/admin/orders/{order_id}/shipping-update"
    assert client.post(path, headers=admin_auth()).status_code == 409  # not paid yet
    client.post(f"/admin/orders/{order_id}/payment/succeeded", headers=admin_auth())
    bad = client.post(path, data={"status": "lost"}, headers=admin_auth())
    assert bad.status_code == 400
    sent = client.post(path, data={"status": "shipped"}, headers=admin_auth())
    assert sent.status_code == 303 and sent.location == "/admin/orders"
    listing = client.get("/admin/orders", headers=admin_auth()).get_data(as_text=True)
    assert 'value="out_for_delivery"' in listing


def test_the_favicon_is_served_for_pages_and_for_browsers_that_ask_for_favicon_ico(
    shop: Flask,
) -> None:
    client = shop.test_client()
    assert 'rel="icon" href="/static/favicon.svg"' in client.get("/").get_data(as_text=True)
    for path in ("/favicon.ico", "/static/favicon.svg"):
        answer = client.get(path)
        assert answer.status_code == 200 and answer.mimetype == "image/svg+xml"
        assert answer.get_data(as_text=True).startswith("<svg")
