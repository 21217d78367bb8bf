"""@tracks on HTML and JSON routes, sync and async views; events only for successful responses."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask, abort, render_template_string

from flask_klaviyo import tracks

EMAIL = "sarah.mason@klaviyo-demo.com"
POOH = {
    "id": "1111",
    "name": "Winnie the Pooh",
    "sku": "WINNIEPOOH",
    "price": 9.99,
    "url": "http://shop.test/p/1111",
    "image_url": "http://shop.test/i/1111.png",
    "categories": ["Fiction", "Children"],
}
TALE = {
    "id": "1112",
    "name": "A Tale of Two Cities",
    "sku": "TALEOFTWO",
    "price": 19.99,
    "url": "http://shop.test/p/1112",
    "image_url": "http://shop.test/i/1112.png",
    "categories": ["Fiction", "Classics"],
}
CART = {
    "id": "cart-1",
    "checkout_url": "http://shop.test/checkout",
    "items": [{"product": POOH, "quantity": 1}, {"product": TALE, "quantity": 1}],
}
ADDED = {"product": TALE, "quantity": 1}


@pytest.fixture
def app(make_app: Callable[..., Flask]) -> Flask:
    app = make_app(identity={"email": EMAIL}, KLAVIYO_STRICT=True)
    klaviyo = app.extensions["klaviyo"].extension

    @app.post("/cart/add")
    @tracks("Added to Cart")
    def add_form() -> str:
        return render_template_string(
            "<p>{{ cart['id'] }}</p>{{ klaviyo_bridge() }}", cart=CART, added_item=ADDED
        )

    @app.post("/api/cart")
    @tracks("Added to Cart")
    def add_json() -> Any:
        return {"cart": CART, "added_item": ADDED}

    @app.post("/api/cart/explicit")
    @tracks("Added to Cart", cart="basket", added_item="line")
    def add_explicit() -> Any:
        klaviyo.context(basket=CART, line=ADDED)
        return {"ok": True}, 201

    @app.post("/api/cart/invalid")
    @tracks("Added to Cart")
    def add_invalid() -> Any:
        return {"cart": CART, "added_item": ADDED, "error": "out of stock"}, 409

    @app.get("/checkout")
    @tracks("Started Checkout")
    async def checkout() -> str:
        return render_template_string("<p>checkout</p>", cart=CART)

    @app.get("/async/products/<pid>")
    @tracks("Viewed Product")
    async def async_product(pid: str) -> str:
        if pid != "1111":
            abort(404)
        return render_template_string("{{ product.name }}", product=POOH)

    return app


def test_added_to_cart_from_a_form_route_carries_the_cart_and_the_added_item(
    app: Flask, redis_url: str, queued: Callable[[str], list[dict[str, Any]]]
) -> None:
    response = app.test_client().post("/cart/add")
    assert response.status_code == 200
    [event] = queued(redis_url)
    assert event["metric"] == "Added to Cart"
    props = event["properties"]
    assert props["AddedItemProductID"] == "1112"
    assert props["AddedItemProductName"] == "A Tale of Two Cities"
    assert props["ItemNames"] == ["Winnie the Pooh", "A Tale of Two Cities"]
    assert props["CheckoutURL"] == "http://shop.test/checkout"
    assert [i["ProductID"] for i in props["Items"]] == ["1111", "1112"]
    assert event["value"] == pytest.approx(29.98)
    assert event["unique_id"] in response.get_data(as_text=True)  # the page knows it


def test_added_to_cart_from_a_json_route_uses_the_returned_dict(
    app: Flask, redis_url: str, queued: Callable[[str], list[dict[str, Any]]]
) -> None:
    assert app.test_client().post("/api/cart").status_code == 200
    [event] = queued(redis_url)
    assert event["metric"] == "Added to Cart"
    assert event["profile"] == {"email": EMAIL}


def test_klaviyo_context_and_mapped_names(
    app: Flask, redis_url: str, queued: Callable[[str], list[dict[str, Any]]]
) -> None:
    assert app.test_client().post("/api/cart/explicit").status_code == 201
    [event] = queued(redis_url)
    assert event["properties"]["AddedItemSKU"] == "TALEOFTWO"


def test_a_4xx_json_answer_tracks_nothing(
    app: Flask, redis_url: str, queued: Callable[[str], list[dict[str, Any]]]
) -> None:
    assert app.test_client().post("/api/cart/invalid").status_code == 409
    assert queued(redis_url) == []


def test_started_checkout_from_an_async_view(
    app: Flask, redis_url: str, queued: Callable[[str], list[dict[str, Any]]]
) -> None:
    assert app.test_client().get("/checkout").status_code == 200
    [event] = queued(redis_url)
    assert event["metric"] == "Started Checkout"
    unix = event["unique_id"].rsplit("_", 1)[1]
    assert event["unique_id"] == f"cart-1_{unix}" and unix.isdigit()
    assert sorted(event["properties"]["Categories"]) == ["Children", "Classics", "Fiction"]


def test_async_view_abort_tracks_nothing_and_success_tracks_once(
    app: Flask, redis_url: str, queued: Callable[[str], list[dict[str, Any]]]
) -> None:
    client = app.test_client()
    assert client.get("/async/products/nope").status_code == 404
    assert queued(redis_url) == []
    assert client.get("/async/products/1111").status_code == 200
    assert [e["metric"] for e in queued(redis_url)] == ["Viewed Product"]


def test_unknown_metric_or_name_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match=r"klaviyo\.track"):
        tracks("Placed Order")
    with pytest.raises(ValueError, match="takes product"):
        tracks("Viewed Product", cart="basket")


def test_consent_refused_means_no_browse_events(
    app: Flask, redis_url: str, queued: Callable[[str], list[dict[str, Any]]]
) -> None:
    client = app.test_client()
    client.set_cookie("__kla_off", "1")
    assert client.post("/cart/add").status_code == 200
    assert client.post("/api/cart").status_code == 200
    assert queued(redis_url) == []
