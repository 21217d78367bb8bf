"""An anonymous shopper's journey: browse unknown, get parked, identify, and the stand-in
receives the parked events with their original times. Also: what an anonymous visitor who
never identifies costs (a cap and a TTL). Real Redis, a real RQ SimpleWorker, the stand-in."""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import pytest
import redis
from flask import Flask, render_template_string, request
from flask.testing import FlaskClient
from itsdangerous import URLSafeTimedSerializer

from flask_klaviyo import Klaviyo, tracks
from flask_klaviyo.delivery.parking import Parking
from flask_klaviyo.identity.cookies import COOKIE_SALT

SECRET = "journey-secret"
EMAIL = "sarah.mason@klaviyo-demo.com"
PRODUCTS = {
    "1111": {"id": "1111", "name": "Winnie the Pooh", "sku": "WINNIEPOOH", "price": 9.99},
    "1112": {"id": "1112", "name": "A Tale of Two Cities", "sku": "TALEOFTWO", "price": 19.99},
    "1113": {"id": "1113", "name": "Moby Dick", "sku": "MOBYDICK", "price": 14.5},
    "1114": {"id": "1114", "name": "Emma", "sku": "EMMA", "price": 7.25},
    "1115": {"id": "1115", "name": "Dracula", "sku": "DRACULA", "price": 11.0},
}
PAGE = "<h1>{{ product.name }}</h1>{{ klaviyo_bridge() }}"


def shop(app: Flask, klaviyo: Klaviyo) -> None:
    """Product pages, a checkout that identifies, and a login the tests switch."""
    app.config["logged_in"] = None

    @klaviyo.identity_loader
    def who() -> dict[str, str] | None:
        email = app.config["logged_in"]
        return {"email": email} if email else None

    @app.get("/products/<pid>")
    @tracks("Viewed Product")
    def product(pid: str) -> str:
        return render_template_string(PAGE, product=PRODUCTS[pid])

    @app.post("/checkout")
    def checkout() -> str:
        klaviyo.identify(email=request.form["email"])
        return "thanks"


@pytest.fixture
def make_app(make_app: Callable[..., Flask], fake: Any) -> Callable[..., Flask]:
    """``make_app(**config)``: the shop, delivering to the stand-in."""
    return functools.partial(make_app, fake=fake, views=shop, SECRET_KEY=SECRET)


@pytest.fixture
def app(make_app: Callable[..., Flask]) -> Flask:
    return make_app()


def anonymous_id(client: FlaskClient) -> str:
    cookie = client.get_cookie("klaviyo_id")
    assert cookie is not None
    serializer = URLSafeTimedSerializer(SECRET, salt=COOKIE_SALT)
    return serializer.loads(cookie.value)["a"]  # type: ignore[no-any-return]


def parked(redis_client: redis.Redis, anonymous: str) -> list[dict[str, Any]]:
    raw = redis_client.lrange(Parking.PREFIX + anonymous, 0, -1)
    return [json.loads(item) for item in raw]


def page_unique_id(response: Any) -> str:
    html = response.get_data(as_text=True)
    blob = html.split('id="klaviyo-bridge-data">', 1)[1].split("</script>", 1)[0]
    [event] = json.loads(blob)["events"]
    return event["unique_id"]  # type: ignore[no-any-return]


def browse(client: FlaskClient, *pids: str) -> list[str]:
    """View products; the unique_ids their pages carry."""
    ids = []
    for pid in pids:
        response = client.get(f"/products/{pid}")
        assert response.status_code == 200
        ids.append(page_unique_id(response))
    return ids


def validate_requests(fake: Any, openapi: Any) -> int:
    """Every Events API body the stand-in received fits Klaviyo's OpenAPI; how many there were."""
    operations = {
        "/api/events": "create_event",
        "/api/event-bulk-create-jobs": "bulk_create_events",
    }
    bodies = [(operations[r["path"]], r["body"]) for r in fake.requests if r["path"] in operations]
    for operation, body in bodies:
        openapi.validate(operation, body)
    return len(bodies)


def as_datetime(value: Any) -> datetime:
    if isinstance(value, datetime):
        return value.astimezone(UTC)
    return datetime.fromisoformat(str(value).replace("Z", "+00:00")).astimezone(UTC)


def test_three_anonymous_views_arrive_with_their_original_times_once_identified(
    app: Flask, fake: Any, openapi: Any, redis_client: redis.Redis, drain: Callable[[Flask], None]
) -> None:
    client = app.test_client()
    unique_ids = browse(client, "1111", "1112", "1113")
    drain(app)
    assert fake.events == []  # nothing reached "Klaviyo" for a stranger
    assert fake.requests == []
    anonymous = anonymous_id(client)
    waiting = parked(redis_client, anonymous)
    assert [e["unique_id"] for e in waiting] == unique_ids
    assert all("email" not in e["profile"] for e in waiting)
    original_times = {e["unique_id"]: as_datetime(e["time"]) for e in waiting}

    time.sleep(0.01)
    identified_at = datetime.now(UTC)
    response = client.post("/checkout", data={"email": EMAIL})
    assert response.status_code == 200
    drain(app)

    fake.wait_for(3, metric="Viewed Product")
    events = fake.events_for("Viewed Product", email=EMAIL)
    assert len(events) == 3 and len(fake.events) == 3
    assert sorted(e["unique_id"] for e in events) == sorted(unique_ids)
    for event in events:
        assert as_datetime(event["time"]) == original_times[event["unique_id"]]
        assert as_datetime(event["time"]) < identified_at
        assert event["profile"]["email"] == EMAIL
        assert event["profile"]["anonymous_id"] == anonymous
    assert {e["properties"]["ProductID"] for e in events} == {"1111", "1112", "1113"}
    # one merged profile holds the email and the anonymous id
    [profile] = {json.dumps(fake.profile_of(e), sort_keys=True) for e in events}
    assert anonymous in json.loads(profile)["anonymous_ids"]
    assert validate_requests(fake, openapi) >= 1
    assert redis_client.exists(Parking.PREFIX + anonymous) == 0
    stats = Parking(redis_client).stats()
    assert stats["parked"] == 3 and stats["released"] == 3 and stats["waiting"] == 0


def test_the_next_visit_after_identifying_is_sent_directly(
    app: Flask, fake: Any, openapi: Any, redis_client: redis.Redis, drain: Callable[[Flask], None]
) -> None:
    client = app.test_client()
    browse(client, "1111")
    client.post("/checkout", data={"email": EMAIL})
    browse(client, "1112")  # known via the signed cookie: not parked
    drain(app)
    fake.wait_for(2, metric="Viewed Product")
    assert len(fake.events_for("Viewed Product", email=EMAIL)) == 2
    assert Parking(redis_client).stats()["parked"] == 1
    assert validate_requests(fake, openapi) >= 1


def test_logging_in_later_releases_the_parked_events(
    app: Flask, fake: Any, openapi: Any, drain: Callable[[Flask], None]
) -> None:
    client = app.test_client()
    ids = browse(client, "1111", "1112")
    app.config["logged_in"] = EMAIL  # e.g. a session login that never called identify()
    browse(client, "1113")
    drain(app)
    fake.wait_for(3, metric="Viewed Product")
    events = fake.events_for("Viewed Product", email=EMAIL)
    assert len(events) == 3
    released = [e for e in events if e["unique_id"] in ids]
    assert len(released) == 2
    assert all(e["profile"]["anonymous_id"] == anonymous_id(client) for e in released)
    assert validate_requests(fake, openapi) >= 1


def test_a_kx_link_releases_the_parked_events_to_the_exchange_ids_profile(
    app: Flask, fake: Any, openapi: Any, drain: Callable[[Flask], None]
) -> None:
    kx = fake.exchange_id_for(EMAIL)
    client = app.test_client()
    browse(client, "1111", "1112")
    assert client.get(f"/products/1113?_kx={quote(kx, safe='')}").status_code == 200
    drain(app)
    fake.wait_for(3, metric="Viewed Product")
    events = fake.events_for("Viewed Product", email=EMAIL)
    assert len(events) == 3
    assert all(e["profile"]["_kx"] == kx for e in events)
    assert validate_requests(fake, openapi) >= 1


def test_two_visitors_are_parked_apart_and_released_apart(
    app: Flask, fake: Any, redis_client: redis.Redis, drain: Callable[[Flask], None]
) -> None:
    ann, bob = app.test_client(), app.test_client()
    browse(ann, "1111")
    browse(bob, "1112", "1113")
    ann.post("/checkout", data={"email": "ann@shop.test"})
    drain(app)
    fake.wait_for(1, metric="Viewed Product")
    [event] = fake.events
    assert event["properties"]["ProductID"] == "1111"
    assert event["profile"]["email"] == "ann@shop.test"
    assert len(parked(redis_client, anonymous_id(bob))) == 2


def test_a_visitor_who_never_identifies_costs_a_bounded_list(
    redis_url: str,
    fake: Any,
    tmp_path: Any,
    redis_client: redis.Redis,
    drain: Callable[[Flask], None],
    make_app: Callable[..., Flask],
) -> None:
    app = make_app(KLAVIYO_PARK_MAX_EVENTS=3)
    client = app.test_client()
    ids = browse(client, "1111", "1112", "1113", "1114", "1115")
    anonymous = anonymous_id(client)
    assert [e["unique_id"] for e in parked(redis_client, anonymous)] == ids[-3:]  # newest kept
    stats = Parking(redis_client).stats()
    assert stats["parked"] == 5 and stats["dropped"] == 2 and stats["waiting"] == 3
    ttl = redis_client.ttl(Parking.PREFIX + anonymous)
    assert 30 * 24 * 3600 - 60 < ttl <= 30 * 24 * 3600
    drain(app)
    assert fake.events == []


def test_the_ttl_is_refreshed_on_each_park(
    redis_url: str,
    fake: Any,
    tmp_path: Any,
    redis_client: redis.Redis,
    make_app: Callable[..., Flask],
) -> None:
    app = make_app(KLAVIYO_PARK_TTL=1000)
    client = app.test_client()
    browse(client, "1111")
    key = Parking.PREFIX + anonymous_id(client)
    redis_client.expire(key, 5)
    browse(client, "1112")
    assert 990 < redis_client.ttl(key) <= 1000


def test_parked_events_expire_at_the_ttl_and_are_counted(
    redis_url: str,
    fake: Any,
    tmp_path: Any,
    redis_client: redis.Redis,
    drain: Callable[[Flask], None],
    make_app: Callable[..., Flask],
) -> None:
    app = make_app(KLAVIYO_PARK_TTL=1)
    client = app.test_client()
    browse(client, "1111", "1112")
    key = Parking.PREFIX + anonymous_id(client)
    assert 0 < redis_client.pttl(key) <= 1000
    time.sleep(1.1)
    assert redis_client.exists(key) == 0
    stats = Parking(redis_client).stats()
    assert stats["expired"] == 2 and stats["waiting"] == 0 and stats["visitors"] == 0
    client.post("/checkout", data={"email": EMAIL})  # too late: nothing left to release
    drain(app)
    assert fake.events == []


def test_with_parking_off_anonymous_events_are_dropped(
    redis_url: str,
    fake: Any,
    tmp_path: Any,
    redis_client: redis.Redis,
    make_app: Callable[..., Flask],
) -> None:
    app = make_app(KLAVIYO_PARK_MAX_EVENTS=0)
    client = app.test_client()
    response = client.get("/products/1111")
    assert response.status_code == 200
    assert redis_client.keys(Parking.PREFIX + "*") == []
    assert response.headers.getlist("Set-Cookie") == []
