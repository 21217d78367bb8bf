"""Incremental catalog changes and back-in-stock subscriptions, end to end."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask

from flask_klaviyo import KlaviyoSchemaError

pytestmark = pytest.mark.usefixtures("quick_catalog_jobs")

PREFIX = "$custom:::$default:::"
MUG = {
    "id": "mug",
    "name": "Mug",
    "price": 12,
    "url": "https://shop.test/p/mug",
    "variants": [
        {"id": "mug-red", "sku": "MUG-R", "title": "Red", "inventory_quantity": 0},
        {"id": "mug-blue", "sku": "MUG-B", "title": "Blue", "inventory_quantity": 3},
    ],
}


@pytest.fixture
def app(make_app: Callable[..., Flask], fake: Any) -> Flask:
    def views(app: Flask, klaviyo: Any) -> None:
        @app.post("/stock/<variant>/<int:quantity>")
        def stock(variant: str, quantity: int) -> str:
            for entry in MUG["variants"]:
                if entry["id"] == variant:
                    entry["inventory_quantity"] = quantity
            klaviyo.catalog_changed(MUG)
            return "ok"

        @app.post("/notify/<variant>")
        def notify(variant: str) -> str:
            klaviyo.notify_back_in_stock(email="ann@shop-test.com", variant=variant)
            return "ok"

    fake.job_delay = 0.0
    return make_app(fake=fake, views=views, KLAVIYO_STRICT=True)


def ext(app: Flask) -> Any:
    return app.extensions["klaviyo"].extension


def settle(app: Flask) -> None:
    from flask_klaviyo.catalog.applier import wait_applied

    with app.app_context():
        wait_applied(timeout=30)


def test_a_new_product_then_a_stock_change_reach_klaviyo(app: Flask, fake: Any) -> None:
    with app.app_context():
        ext(app).catalog_changed(MUG)
    settle(app)
    assert fake.catalog_variants[f"{PREFIX}mug-red"]["inventory_quantity"] == 0
    client = app.test_client()
    assert client.post("/notify/mug-red").status_code == 200
    assert client.post("/stock/mug-red/5").status_code == 200  # back in stock: queued at once
    settle(app)
    assert fake.catalog_variants[f"{PREFIX}mug-red"]["inventory_quantity"] == 5
    assert fake.writes("create") == 2 and fake.writes("update") == 2  # item + each variant
    [subscription] = fake.back_in_stock(f"{PREFIX}mug-red")
    assert subscription["email"] == "ann@shop-test.com"
    assert subscription["channels"] == ["EMAIL"]


def test_changes_of_one_item_waiting_together_are_one(
    app: Flask, fake: Any, queued_operations: Callable[[Any], list[dict[str, Any]]]
) -> None:
    with app.app_context():
        ext(app).catalog_changed(MUG)
    settle(app)
    before = fake.writes()
    with app.app_context():
        for price in (11, 10, 9):
            ext(app).catalog_changed({**MUG, "price": price, "variants": []})
    settle(app)
    assert fake.writes() - before == 1
    assert fake.catalog_items[f"{PREFIX}mug"]["price"] == 9


def test_a_removed_product_is_deleted(app: Flask, fake: Any) -> None:
    with app.app_context():
        ext(app).catalog_changed(MUG)
    settle(app)
    with app.app_context():
        ext(app).catalog_removed("mug")
    settle(app)
    assert fake.catalog_items == {} and fake.catalog_variants == {}


def test_back_in_stock_body_fits_klaviyos_schema(app: Flask, fake: Any, openapi: Any) -> None:
    with app.app_context():
        ext(app).catalog_changed(MUG)
        ext(app).notify_back_in_stock(
            phone_number="+1 500 555 0006", variant="mug-red", channels=("SMS",)
        )
    settle(app)
    [request] = [r for r in fake.requests if r["path"] == "/api/back-in-stock-subscriptions"]
    openapi.validate("create_back_in_stock_subscription", request["body"])
    relationship = request["body"]["data"]["relationships"]["variant"]["data"]
    assert relationship["id"] == f"{PREFIX}mug-red"


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"email": "not-an-email", "variant": "mug-red"}, "email"),
        ({"variant": "mug-red"}, "email"),
        ({"email": "a@shop-test.com", "variant": ""}, "variant"),
        ({"email": "a@shop-test.com", "variant": "x", "channels": ("PIGEON",)}, "channels"),
        ({"email": "a@shop-test.com", "variant": "x", "channels": ("SMS",)}, "phone_number"),
    ],
)
def test_bad_back_in_stock_input_is_refused(
    app: Flask, options: dict[str, Any], field: str, queued_operations: Any
) -> None:
    with app.app_context(), pytest.raises(KlaviyoSchemaError) as raised:
        ext(app).notify_back_in_stock(**options)
    assert raised.value.field == field
    assert queued_operations(app) == []


def test_catalog_changed_in_feed_mode_is_an_error(make_app: Callable[..., Flask]) -> None:
    app = make_app(KLAVIYO_CATALOG_MODE="feed")
    with app.app_context(), pytest.raises(Exception, match="never both"):
        ext(app).catalog_changed(MUG)
