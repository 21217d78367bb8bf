"""Feed mode: Klaviyo's custom catalog JSON feed, streamed, with ETag and an optional token."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from flask import Flask

PRODUCTS = [
    {"id": 1, "name": "Ethiopia", "description": "Floral.", "price": 18, "url": "https://shop.test/p/1",
     "image_url": "https://shop.test/i/1.jpg", "categories": ["Coffee"],
     "variants": [{"id": "1-a", "sku": "A", "inventory_quantity": 2},
                  {"id": "1-b", "sku": "B", "inventory_quantity": 3}]},
    {"id": 2, "name": "Kettle", "price": 45.5, "url": "https://shop.test/p/2",
     "inventory_quantity": 0, "inventory_policy": 1},
    {"id": 3, "name": "Hidden", "price": 1, "url": "https://shop.test/p/3", "published": False},
]  # fmt: skip
TOKEN = "feed-token-0123456789"


@pytest.fixture
def make_feed_app(make_app: Callable[..., Flask]) -> Callable[..., Flask]:
    def make(source: Callable[[], Any] = lambda: iter(PRODUCTS), **config: Any) -> Flask:
        app = make_app(KLAVIYO_CATALOG_MODE="feed", **config)
        app.extensions["klaviyo"].extension.catalog_source(source)
        return app

    return make


def test_the_feed_has_klaviyos_fields_and_absolute_urls(
    make_feed_app: Callable[..., Flask],
) -> None:
    response = make_feed_app().test_client().get("/klaviyo/catalog.json")
    assert response.status_code == 200 and response.mimetype == "application/json"
    feed = json.loads(response.data)
    assert [entry["$id"] for entry in feed] == ["1", "2"]  # unpublished left out
    first = feed[0]
    assert first == {
        "$id": "1", "title": "Ethiopia", "link": "https://shop.test/p/1",
        "description": "Floral.", "price": 18.0, "image_link": "https://shop.test/i/1.jpg",
        "categories": ["Coffee"], "inventory_quantity": 5, "inventory_policy": 0,
    }  # fmt: skip
    assert feed[1]["inventory_quantity"] == 0 and feed[1]["inventory_policy"] == 1
    for entry in feed:
        assert entry["link"].startswith("https://")


def test_etag_and_304(make_feed_app: Callable[..., Flask]) -> None:
    client = make_feed_app().test_client()
    first = client.get("/klaviyo/catalog.json")
    tag = first.headers["ETag"]
    assert first.data.startswith(b"[")
    again = client.get("/klaviyo/catalog.json", headers={"If-None-Match": tag})
    assert again.status_code == 304 and again.data == b""
    PRODUCTS[1]["price"] = 40
    try:
        changed = client.get("/klaviyo/catalog.json", headers={"If-None-Match": tag})
        body = changed.data
    finally:
        PRODUCTS[1]["price"] = 45.5
    assert changed.status_code == 200 and changed.headers["ETag"] != tag
    assert b'"price":40.0' in body


def test_the_token_is_required_when_set(make_feed_app: Callable[..., Flask]) -> None:
    client = make_feed_app(KLAVIYO_CATALOG_FEED_TOKEN=TOKEN).test_client()
    assert client.get("/klaviyo/catalog.json").status_code == 401
    assert client.get("/klaviyo/catalog.json?token=wrong-token-000000").status_code == 404
    assert client.get(f"/klaviyo/catalog.json?token={TOKEN}").status_code == 200
    header = {"X-Klaviyo-Feed-Token": TOKEN}
    assert client.get("/klaviyo/catalog.json", headers=header).status_code == 200


def test_the_path_is_configurable_and_api_mode_serves_no_feed(
    make_feed_app: Callable[..., Flask], make_app: Callable[..., Flask]
) -> None:
    app = make_feed_app(KLAVIYO_CATALOG_FEED_PATH="/feeds/klaviyo.json")
    assert app.test_client().get("/feeds/klaviyo.json").status_code == 200
    assert make_app().test_client().get("/klaviyo/catalog.json").status_code == 404


def test_the_feed_is_streamed_from_a_lazy_source(make_feed_app: Callable[..., Flask]) -> None:
    pulled: list[int] = []

    def source() -> Iterator[dict[str, Any]]:
        for n in range(100_000):
            pulled.append(n)
            yield {"id": n, "name": f"P{n}", "price": 1, "url": f"https://shop.test/p/{n}"}

    app = make_feed_app(source)
    response = app.test_client().get("/klaviyo/catalog.json", buffered=False)
    pulled.clear()  # the ETag pass has read the source once, keeping nothing
    chunks = response.response
    head = b"".join(next(chunks) for _ in range(3))
    assert head.startswith(b'[{"$id":"0"')
    assert len(pulled) < 10  # the body pulls products as it writes them
    rest = b"".join(chunks)
    assert rest.endswith(b"]\n") and len(pulled) == 100_000


def test_an_invalid_product_is_refused_in_strict_mode_and_left_out_otherwise(
    make_feed_app: Callable[..., Flask],
) -> None:
    bad = [*PRODUCTS[:2], {"id": 9, "name": "Relative", "price": 2, "url": "/p/9"}]
    strict = make_feed_app(lambda: iter(bad), KLAVIYO_STRICT=True)
    strict.testing = True  # the error propagates instead of a 500 (before any byte is sent)
    with pytest.raises(Exception, match="catalog item '9': url"):
        strict.test_client().get("/klaviyo/catalog.json")
    lenient = make_feed_app(lambda: iter(bad), KLAVIYO_STRICT=False)
    feed = lenient.test_client().get("/klaviyo/catalog.json").get_json()
    assert [entry["$id"] for entry in feed] == ["1", "2"]
