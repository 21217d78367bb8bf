"""The whole funnel of the demo store, end to end, against the Klaviyo stand-in.

A shopper lands from a Klaviyo email link (``?_kx=``), views two products, adds one by the form
and one by the JSON API, starts checkout, gives their email, places the order; the payment
provider's signed webhook arrives twice; the admin fulfils and refunds. A real worker process
(``flask --app example_store klaviyo worker --burst``) then delivers, and the stand-in must hold
exactly one event per step, all valid against Klaviyo's OpenAPI documents, all on one profile.

The journey is written against a tiny browser interface so ``test_servers.py`` runs the very same
steps over real HTTP against gunicorn and uvicorn.
"""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import quote, urlsplit

import pytest

from example_store import create_app
from example_store.payments import PAYMENT_SUCCEEDED, Delivery, signed_delivery

API_KEY = "pk_test_private_key"
SECRET_KEY = "funnel-secret"
WEBHOOK_SECRET = "whsec_funnel_test"
ADMIN_PASSWORD = "correct horse battery"
EMAIL = "sarah.mason@klaviyo-demo.com"
VENV_BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parents[1]
REFUND_REASON = "Arrived damaged"

EXPECTED = {
    "Active on Site": 1,  # the server's, once for the visit (no klaviyo.js in this store)
    "Viewed Product": 2,
    "Added to Cart": 2,
    "Started Checkout": 1,
    "Placed Order": 1,
    "Ordered Product": 2,
    "Fulfilled Order": 1,
    "Refunded Order": 1,
}

pytestmark = pytest.mark.slow


# -- a browser the journey can drive: the Flask test client or httpx --------------------------


@dataclass
class Answer:
    status: int
    headers: Mapping[str, str]
    text: str

    def json(self) -> Any:
        return json.loads(self.text)

    @property
    def location(self) -> str:
        """The redirect target as a path (servers may or may not make it absolute)."""
        parts = urlsplit(self.headers.get("Location", ""))
        return parts.path + (f"?{parts.query}" if parts.query else "")


class Browser(Protocol):
    def request(
        self,
        method: str,
        path: str,
        *,
        form: Mapping[str, str] | None = None,
        json: Any = None,
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Answer: ...


class FlaskBrowser:
    """The Flask test client (keeps cookies, never follows redirects)."""

    def __init__(self, client: Any) -> None:
        self.client = client

    def request(
        self,
        method: str,
        path: str,
        *,
        form: Mapping[str, str] | None = None,
        json: Any = None,
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Answer:
        kwargs: dict[str, Any] = {"headers": dict(headers or {})}
        if form is not None:
            kwargs["data"] = dict(form)
        elif json is not None:
            kwargs["json"] = json
        elif body is not None:
            kwargs["data"] = body
        response = self.client.open(path, method=method, **kwargs)
        return Answer(response.status_code, response.headers, response.get_data(as_text=True))


def basic_auth(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def bridge_events(html: str) -> list[dict[str, Any]]:
    """The events the page's klaviyo_bridge() blob says the server tracked (metric, unique_id)."""
    if 'id="klaviyo-bridge-data">' not in html:
        return []
    blob = html.split('id="klaviyo-bridge-data">', 1)[1].split("</script>", 1)[0]
    return list(json.loads(blob).get("events", []))


# -- the journey ----------------------------------------------------------------------------


@dataclass
class Journey:
    """What the shopper did, for the assertions afterwards."""

    email: str
    kx: str
    products: list[str] = field(default_factory=list)
    cart_id: str = ""
    cart_total_cents: int = 0
    order_id: str = ""
    order: dict[str, Any] = field(default_factory=dict)


def deliver_twice(browser: Browser, journey: Journey, secret: str) -> None:
    """The provider's webhook, delivered, then retried with the same delivery id."""
    delivery = Delivery(
        type=PAYMENT_SUCCEEDED,
        order_id=journey.order_id,
        amount=journey.order["total_cents"],
        currency=journey.order["currency"],
    )
    answers = []
    for _ in range(2):
        body, headers = signed_delivery(secret, delivery)
        answers.append(browser.request("POST", "/webhooks/payments", body=body, headers=headers))
    assert [a.status for a in answers] == [200, 200], [a.text for a in answers]
    assert answers[0].json()["status"] == "processed"
    assert answers[1].json()["status"] == "duplicate"


def order_status(browser: Browser, order_id: str) -> dict[str, Any]:
    answer = browser.request("GET", f"/orders/{order_id}", headers={"Accept": "application/json"})
    assert answer.status == 200, answer.text[:300]
    return answer.json()  # type: ignore[no-any-return]


def run_journey(
    browser: Browser,
    *,
    email: str,
    kx: str,
    admin_password: str,
    pay: Callable[[Browser, Journey], None],
) -> Journey:
    journey = Journey(email=email, kx=kx)

    # Lands from a Klaviyo email: the link carries the (URL-encoded) exchange id.
    landing = browser.request("GET", f"/?_kx={quote(kx, safe='')}")
    assert landing.status == 200
    found = re.findall(r'href="/products/([^"?]+)"', landing.text)
    journey.products = list(dict.fromkeys(found))[:2]
    assert len(journey.products) == 2
    first, second = journey.products

    for product_id in journey.products:
        page = browser.request("GET", f"/products/{product_id}")
        assert page.status == 200
        assert 'action="/cart/add"' in page.text
        tracked = bridge_events(page.text)
        assert [e["metric"] for e in tracked] in ([], ["Viewed Product"])

    # One product by the form (then the cart page), one by the headless JSON API.
    added = browser.request("POST", "/cart/add", form={"product_id": first, "quantity": "2"})
    assert added.status == 303 and added.location == "/cart", added.text[:300]
    cart_page = browser.request("GET", "/cart")
    assert cart_page.status == 200 and "Check out" in cart_page.text
    api = browser.request("POST", "/api/cart", json={"product_id": second, "quantity": 1})
    assert api.status == 200, api.text[:300]
    cart = api.json()["cart"]
    assert [item["product_id"] for item in cart["items"]] == [first, second]
    assert [item["quantity"] for item in cart["items"]] == [2, 1]
    assert api.json()["added_item"]["product_id"] == second
    journey.cart_id = cart["id"]
    journey.cart_total_cents = cart["total_cents"]

    # Checkout: the page, the email, back to the page (a browser follows the 303).
    checkout = browser.request("GET", "/checkout")
    assert checkout.status == 200 and 'name="email"' in checkout.text
    given = browser.request("POST", "/checkout/email", form={"email": email})
    assert given.status == 303 and given.location == "/checkout"
    again = browser.request("GET", "/checkout")
    assert again.status == 200 and "Place order" in again.text

    placed = browser.request(
        "POST",
        "/checkout",
        form={
            "first_name": "Sarah",
            "last_name": "Mason",
            "address1": "123 Abc St",
            "city": "Boston",
            "region": "Massachusetts",
            "zip": "02110",
            "country_code": "US",
        },
    )
    assert placed.status == 303, placed.text[:300]
    assert placed.location.startswith("/orders/")
    journey.order_id = placed.location.rsplit("/", 1)[1]
    confirmation = browser.request("GET", placed.location)
    assert confirmation.status == 200 and journey.order_id in confirmation.text
    assert bridge_events(confirmation.text) == []  # no Placed Order from the page
    journey.order = order_status(browser, journey.order_id)
    assert journey.order["status"] == "pending_payment"
    assert journey.order["total_cents"] == journey.cart_total_cents
    assert journey.order["email"] == email

    pay(browser, journey)
    assert order_status(browser, journey.order_id)["status"] == "paid"

    admin = basic_auth("admin", admin_password)
    fulfilled = browser.request("POST", f"/admin/orders/{journey.order_id}/fulfill", headers=admin)
    assert fulfilled.status == 303 and fulfilled.location == "/admin/orders"
    twice = browser.request("POST", f"/admin/orders/{journey.order_id}/fulfill", headers=admin)
    assert twice.status == 303  # already fulfilled: nothing changes, nothing is sent
    refunded = browser.request(
        "POST",
        f"/admin/orders/{journey.order_id}/refund",
        form={"reason": REFUND_REASON},
        headers=admin,
    )
    assert refunded.status == 303
    assert order_status(browser, journey.order_id)["status"] == "refunded"
    return journey


# -- what Klaviyo must hold afterwards -------------------------------------------------------


def assert_funnel_in_klaviyo(fake: Any, openapi: Any, journey: Journey) -> None:
    events = fake.wait_for(sum(EXPECTED.values()), timeout=15)
    counts = Counter(event["metric"] for event in events)
    assert dict(counts) == EXPECTED, [(e["metric"], e["unique_id"]) for e in events]
    assert fake.duplicates == 0
    keys = [(event["metric"], event["unique_id"]) for event in events]
    assert len(set(keys)) == len(keys)

    # One profile: the email link's exchange id and the email given at checkout are one person.
    assert len({event["profile_id"] for event in events}) == 1
    profile = fake.profile_of(events[0])
    assert profile["email"] == journey.email
    assert len(fake.profiles()) == 1

    # Every request body fits Klaviyo's official schema, and none was refused.
    api_requests = [
        r for r in fake.requests if r["endpoint"] in ("create_event", "bulk_create_events")
    ]
    assert api_requests
    for request in api_requests:
        assert request["status"] == 202, request["errors"]
        openapi.validate(request["endpoint"], request["body"])

    by_metric: dict[str, list[dict[str, Any]]] = {}
    for event in events:
        by_metric.setdefault(event["metric"], []).append(event)
    first, second = journey.products
    order_id = journey.order_id
    total = journey.cart_total_cents / 100

    viewed = by_metric["Viewed Product"]
    assert [e["properties"]["ProductID"] for e in viewed] == [first, second]
    assert all(e["profile"].get("_kx") == journey.kx for e in viewed)  # known from the link

    form_add, api_add = by_metric["Added to Cart"]
    assert form_add["properties"]["AddedItemProductID"] == first
    assert form_add["properties"]["AddedItemQuantity"] == 2
    assert [i["ProductID"] for i in form_add["properties"]["Items"]] == [first]
    assert api_add["properties"]["AddedItemProductID"] == second
    assert [i["ProductID"] for i in api_add["properties"]["Items"]] == [first, second]
    assert api_add["value"] == pytest.approx(total)
    assert api_add["properties"]["CheckoutURL"].endswith("/checkout")

    [started] = by_metric["Started Checkout"]
    assert started["unique_id"].startswith(f"{journey.cart_id}_")
    assert [i["ProductID"] for i in started["properties"]["Items"]] == [first, second]
    assert started["value"] == pytest.approx(total)

    [placed] = by_metric["Placed Order"]
    assert placed["unique_id"] == order_id
    assert placed["profile"]["email"] == journey.email  # the order's own email
    assert placed["value"] == pytest.approx(total)
    assert placed["value_currency"] == "USD"
    properties = placed["properties"]
    assert properties["OrderId"] == order_id
    assert [i["ProductID"] for i in properties["Items"]] == [first, second]
    assert all(i["ProductURL"].endswith(f"/products/{i['ProductID']}") for i in properties["Items"])
    assert all(i["Brand"] and i["Categories"] for i in properties["Items"])
    assert properties["ShippingAddress"]["City"] == "Boston"
    assert properties["ShippingAddress"]["CountryCode"] == "US"

    ordered = by_metric["Ordered Product"]
    assert sorted(e["properties"]["ProductID"] for e in ordered) == sorted([first, second])
    assert all(e["unique_id"].startswith(f"{order_id}_") for e in ordered)
    assert sum(e["value"] for e in ordered) == pytest.approx(total)

    [fulfilled] = by_metric["Fulfilled Order"]
    [refunded] = by_metric["Refunded Order"]
    assert fulfilled["unique_id"] == refunded["unique_id"] == order_id
    assert refunded["properties"]["Reason"] == REFUND_REASON
    assert refunded["value"] == pytest.approx(total)


# -- the store and its worker ---------------------------------------------------------------


def store_env(redis_url: str, fake: Any, database: Path, **extra: str) -> dict[str, str]:
    """The environment the web process and the worker share."""
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("KLAVIYO_", "STORE_", "SECRET"))
    }
    env.update(
        SECRET_KEY=SECRET_KEY,
        KLAVIYO_REDIS_URL=redis_url,
        KLAVIYO_API_URL=fake.url,
        KLAVIYO_PRIVATE_API_KEY=API_KEY,
        KLAVIYO_WEBHOOK_SECRET=WEBHOOK_SECRET,
        STORE_DATABASE=str(database),
        STORE_ADMIN_PASSWORD=ADMIN_PASSWORD,
        STORE_PAYMENTS_AUTO_CALLBACK="false",
    )
    env.update(extra)
    return env


def run_worker(env: Mapping[str, str]) -> None:
    done = subprocess.run(
        [str(VENV_BIN / "flask"), "--app", "example_store", "klaviyo", "worker", "--burst"],
        env=dict(env),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert API_KEY not in done.stdout + done.stderr


@pytest.fixture
def env(redis_url: str, fake: Any, tmp_path: Path) -> dict[str, str]:
    return store_env(redis_url, fake, tmp_path / "store.sqlite3")


@pytest.fixture
def store(env: dict[str, str], tmp_path: Path) -> Any:
    config = {k: v for k, v in env.items() if k.startswith(("KLAVIYO_", "STORE_", "SECRET_KEY"))}
    return create_app({**config, "TESTING": True, "instance_path": str(tmp_path / "instance")})


def test_the_whole_funnel_reaches_klaviyo_once_under_one_profile(
    store: Any, env: dict[str, str], fake: Any, openapi: Any
) -> None:
    browser = FlaskBrowser(store.test_client())
    journey = run_journey(
        browser,
        email=EMAIL,
        kx=fake.exchange_id_for(EMAIL),
        admin_password=ADMIN_PASSWORD,
        pay=lambda b, j: deliver_twice(b, j, WEBHOOK_SECRET),
    )
    assert fake.events == []  # nothing reaches Klaviyo from a request
    run_worker(env)
    assert_funnel_in_klaviyo(fake, openapi, journey)


def test_an_anonymous_shoppers_checkout_is_released_when_they_give_their_email(
    store: Any, env: dict[str, str], fake: Any, openapi: Any
) -> None:
    """No email link this time: browse events wait (parked) until the checkout email names
    the shopper, then everything arrives on that email's profile."""
    client = store.test_client()
    browser = FlaskBrowser(client)
    browser.request("GET", "/products/house-blend")
    browser.request("POST", "/api/cart", json={"product_id": "house-blend", "quantity": 1})
    assert browser.request("GET", "/checkout").status == 200
    assert browser.request("GET", "/checkout").status == 200  # a reload starts nothing new
    given = browser.request(
        "POST", "/checkout/email", form={"email": "new.shopper@klaviyo-demo.com"}
    )
    assert given.status == 303
    run_worker(env)
    events = fake.wait_for(3, timeout=15)
    assert Counter(e["metric"] for e in events) == {
        "Viewed Product": 1,
        "Added to Cart": 1,
        "Started Checkout": 1,
    }
    assert {e["profile_id"] for e in events} == {events[0]["profile_id"]}
    assert fake.profile_of(events[0])["email"] == "new.shopper@klaviyo-demo.com"


def test_giving_the_email_first_starts_checkout_once(
    store: Any, env: dict[str, str], fake: Any
) -> None:
    """A shopper who types their email without the checkout page having loaded (a one-page
    checkout posting straight away) still starts checkout, once."""
    browser = FlaskBrowser(store.test_client())
    browser.request("POST", "/api/cart", json={"product_id": "summit-bottle", "quantity": 3})
    assert browser.request("POST", "/checkout/email", form={"email": EMAIL}).status == 303
    assert browser.request("GET", "/checkout").status == 200
    assert browser.request("POST", "/checkout/email", form={"email": EMAIL}).status == 303
    run_worker(env)
    events = fake.wait_for(3, timeout=15)
    assert Counter(e["metric"] for e in events) == {
        "Added to Cart": 1,
        "Started Checkout": 1,
        "Active on Site": 1,  # the checkout page, once the email is known
    }
    [started] = [e for e in events if e["metric"] == "Started Checkout"]
    assert started["properties"]["Items"][0]["Quantity"] == 3
    assert started["profile"]["email"] == EMAIL
