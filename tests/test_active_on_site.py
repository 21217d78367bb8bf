"""Active on Site from the server: once per visit of a known, consenting visitor, and never on a
page where klaviyo.js (which sends its own) is loaded."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask, render_template_string

from flask_klaviyo import onsite
from flask_klaviyo.events import active_on_site

EMAIL = "ann.lee@shop-test.com"
PAGE = "<h1>Shop</h1>{{ klaviyo_bridge() }}"


def pages(app: Flask, klaviyo: Any) -> None:
    @app.get("/")
    def home() -> str:
        return render_template_string(PAGE)

    @app.get("/plain")
    def plain() -> str:
        return "<p>no bridge on this page</p>"

    @app.get("/api/cart")
    def cart() -> dict[str, int]:
        return {"items": 0}

    @app.get("/missing")
    def missing() -> tuple[str, int]:
        return "<p>not here</p>", 404


@pytest.fixture
def make(make_app: Callable[..., Flask], fake: Any) -> Callable[..., Flask]:
    def build(**config: Any) -> Flask:
        config.setdefault("KLAVIYO_ACTIVE_ON_SITE", "auto")
        identity = config.pop("identity", {"email": EMAIL})
        consent = config.pop("consent", True)
        return make_app(
            fake=fake,
            identity=identity,
            consent=consent,
            views=pages,
            KLAVIYO_STRICT=True,
            **config,
        )

    return build


def active(queued: Callable[[Flask], list[dict[str, Any]]], app: Flask) -> list[dict[str, Any]]:
    return [e for e in queued(app) if e["metric"] == "Active on Site"]


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fixed = Clock(1_800_000_000.0)
    monkeypatch.setattr(onsite.time, "time", fixed)
    return fixed


def test_once_per_visit_and_again_after_thirty_quiet_minutes(
    make: Callable[..., Flask], queued: Any, clock: Clock
) -> None:
    app = make()
    client = app.test_client()
    for _ in range(3):
        assert client.get("/").status_code == 200
        clock.now += 60
    client.get("/plain")
    [first] = active(queued, app)
    assert first["profile"]["email"] == EMAIL
    assert first["properties"] == {"page": "http://localhost/"}
    clock.now += 29 * 60  # still the same visit (the last page was 29 minutes ago)
    client.get("/")
    assert len(active(queued, app)) == 1
    clock.now += 31 * 60  # quiet for longer than a visit
    client.get("/")
    first_again, second = active(queued, app)
    assert first_again == first and second["unique_id"] != first["unique_id"]


def test_never_beside_klaviyo_js_unless_forced(
    make: Callable[..., Flask], queued: Any, clock: Clock
) -> None:
    app = make(KLAVIYO_PUBLIC_API_KEY="AbC123")
    client = app.test_client()
    assert "klaviyo.js" in client.get("/").get_data(as_text=True)
    assert active(queued, app) == []  # klaviyo.js on the page sends its own
    client.get("/plain")  # a page without the bridge: klaviyo.js did not load there
    assert len(active(queued, app)) == 1
    forced = make(KLAVIYO_PUBLIC_API_KEY="AbC123", KLAVIYO_ACTIVE_ON_SITE=True)
    forced.test_client().get("/")
    assert len(active(queued, forced)) == 2  # the same Redis: one more, forced


@pytest.mark.parametrize(
    ("config", "path"),
    [
        ({"identity": None}, "/"),  # a stranger: an orphan profile
        ({"consent": False}, "/"),  # no browse tracking
        ({"KLAVIYO_ACTIVE_ON_SITE": False}, "/"),
        ({}, "/api/cart"),  # not a page
        ({}, "/missing"),  # not a page that exists
    ],
)
def test_not_sent(
    make: Callable[..., Flask], queued: Any, clock: Clock, config: dict[str, Any], path: str
) -> None:
    app = make(**config)
    app.test_client().get(path)
    assert active(queued, app) == []


def test_a_browser_without_cookies_gets_one_per_half_hour_slot(
    make: Callable[..., Flask], queued: Any, clock: Clock
) -> None:
    app = make()
    for _ in range(3):
        app.test_client().get("/")  # a new client each time: no cookie comes back
        clock.now += 60
    ids = {e["unique_id"] for e in active(queued, app)}
    assert len(ids) == 1  # queued thrice, one unique_id: Klaviyo keeps one


def test_it_reaches_klaviyo_valid(
    make: Callable[..., Flask], fake: Any, drain: Callable[[Flask], None], openapi: Any
) -> None:
    app = make()
    app.test_client().get("/")
    drain(app)
    [event] = fake.events
    assert event["metric"] == "Active on Site"
    for request in fake.requests:
        openapi.validate(request["endpoint"], request["body"])


def test_a_megabyte_long_url_is_bounded_not_an_error(
    make: Callable[..., Flask], queued: Callable[[Flask], list[dict[str, Any]]]
) -> None:
    """Anyone can make a link with a huge query string: strict mode still renders the page, and
    the event keeps the page without its query (or no page at all when the path is huge too)."""
    app = make(KLAVIYO_ACTIVE_ON_SITE=True)
    assert app.test_client().get("/plain?q=" + "x" * 1_000_000).status_code == 200
    [event] = active(queued, app)
    assert event["properties"]["page"] == "http://localhost/plain"
    huge = active_on_site({"email": EMAIL}, visit_id="v", page_url="http://a.co/" + "p" * 5000)
    assert "page" not in huge.properties
    short = "http://a.co/p?q=1"
    assert (
        active_on_site({"email": EMAIL}, visit_id="v", page_url=short).properties["page"] == short
    )
