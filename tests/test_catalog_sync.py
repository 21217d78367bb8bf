"""Catalog sync in API mode, end to end: the store's source, a real in-process worker, the
stand-in's catalog (items, variants, categories, async jobs)."""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from flask import Flask

from flask_klaviyo import KlaviyoSchemaError
from flask_klaviyo.delivery.deadletters import DeadLetters

pytestmark = pytest.mark.usefixtures("quick_catalog_jobs")

PRODUCTS: list[dict[str, Any]] = [
    {
        "id": 1,
        "name": "Ethiopia Yirgacheffe",
        "description": "Floral, bright.",
        "price": 18.0,
        "url": "https://shop.test/p/1",
        "image_url": "https://shop.test/i/1.jpg",
        "categories": ["Coffee", "Single origin"],
        "variants": [
            {"id": "1-250", "sku": "ETH-250", "title": "250 g", "price": 18.0,
             "inventory_quantity": 12},
            {"id": "1-1000", "sku": "ETH-1000", "title": "1 kg", "price": 55.0,
             "inventory_quantity": 0, "inventory_policy": "deny"},
        ],
    },
    {
        "id": 2,
        "name": "Pour-over kettle",
        "price": 45,
        "url": "https://shop.test/p/2",
        "categories": ["Gear"],
        "variants": [{"id": "2-std", "sku": "KETTLE", "inventory_quantity": 4}],
    },
    {
        "id": 3,
        "name": "Filter papers",
        "price": 5.5,
        "url": "https://shop.test/p/3",
        "categories": ["Gear"],
    },
]  # fmt: skip
PREFIX = "$custom:::$default:::"


@pytest.fixture
def catalog() -> list[dict[str, Any]]:
    return copy.deepcopy(PRODUCTS)


@pytest.fixture
def app(make_app: Callable[..., Flask], fake: Any, catalog: list[dict[str, Any]]) -> Flask:
    def views(app: Flask, klaviyo: Any) -> None:
        @klaviyo.catalog_source
        def products() -> Iterator[dict[str, Any]]:
            yield from catalog

    fake.job_delay = 0.0
    return make_app(fake=fake, views=views, KLAVIYO_STRICT=True)


def ext(app: Flask) -> Any:
    return app.extensions["klaviyo"].extension


def sync(app: Flask, **options: Any) -> Any:
    with app.app_context():
        return ext(app).catalog_sync(**options)


def test_a_full_sync_from_empty_creates_categories_items_and_variants(
    app: Flask, fake: Any, openapi: Any
) -> None:
    report = sync(app)
    assert report.plan.summary()["items"]["create"] == 3
    assert report.failed == [] and report.waited
    items = fake.catalog_items
    assert sorted(items) == [f"{PREFIX}1", f"{PREFIX}2", f"{PREFIX}3"]
    assert items[f"{PREFIX}1"]["title"] == "Ethiopia Yirgacheffe"
    assert sorted(items[f"{PREFIX}1"]["categories"]) == [
        f"{PREFIX}coffee",
        f"{PREFIX}single-origin",
    ]
    variants = fake.catalog_variants
    assert sorted(variants) == [f"{PREFIX}1-1000", f"{PREFIX}1-250", f"{PREFIX}2-std"]
    assert variants[f"{PREFIX}1-1000"]["inventory_policy"] == 1
    assert variants[f"{PREFIX}2-std"]["item"] == f"{PREFIX}2"
    assert sorted(c["name"] for c in fake.catalog_categories.values()) == [
        "Coffee", "Gear", "Single origin"]  # fmt: skip
    for request in fake.requests:
        if request["method"] == "POST" and "-bulk-" in request["path"]:
            resource, action = request["path"].split("/")[2].split("-bulk-")
            plural = {"catalog-item": "items", "catalog-variant": "variants"}.get(
                resource, "categories"
            )
            openapi.validate(f"bulk_{action.removesuffix('-jobs')}_catalog_{plural}",
                             request["body"])  # fmt: skip


def test_a_second_sync_with_nothing_changed_writes_nothing(app: Flask, fake: Any) -> None:
    sync(app)
    before = fake.writes()
    report = sync(app)
    assert fake.writes() == before
    assert report.plan.writes() == 0
    summary = report.plan.summary()
    assert (summary["items"]["unchanged"], summary["variants"]["unchanged"]) == (3, 3)


def test_a_price_change_is_one_update(app: Flask, fake: Any, catalog: list[Any]) -> None:
    sync(app)
    before = fake.writes()
    catalog[2]["price"] = 4.75
    report = sync(app)
    assert report.plan.summary()["items"]["update"] == 1
    assert fake.writes() - before == 1 and fake.writes("update") == 1
    assert fake.catalog_items[f"{PREFIX}3"]["price"] == 4.75


def test_a_variant_price_change_is_one_variant_update(
    app: Flask, fake: Any, catalog: list[Any]
) -> None:
    sync(app)
    before = fake.writes()
    catalog[0]["variants"][1]["price"] = 49.0
    report = sync(app)
    assert report.plan.variants.update == ["1-1000"] and report.plan.items.update == []
    assert fake.writes() - before == 1
    assert fake.catalog_variants[f"{PREFIX}1-1000"]["price"] == 49.0


def test_a_deleted_product_and_variant_are_deleted(
    app: Flask, fake: Any, catalog: list[Any]
) -> None:
    sync(app)
    del catalog[2]
    catalog[0]["variants"].pop()
    report = sync(app)
    assert report.plan.items.delete == ["3"] and report.plan.variants.delete == ["1-1000"]
    assert f"{PREFIX}3" not in fake.catalog_items
    assert f"{PREFIX}1-1000" not in fake.catalog_variants
    assert f"{PREFIX}1-250" in fake.catalog_variants


def test_categories_follow_the_products(app: Flask, fake: Any, catalog: list[Any]) -> None:
    sync(app)
    catalog[1]["categories"] = ["Gear", "Brewing"]
    catalog[2]["categories"] = ["Brewing"]
    report = sync(app)
    assert report.plan.categories.create == ["brewing"]
    assert report.plan.categories.delete == []
    assert sorted(fake.catalog_items[f"{PREFIX}3"]["categories"]) == [f"{PREFIX}brewing"]
    catalog[0]["categories"] = ["Coffee"]
    report = sync(app)
    assert report.plan.categories.delete == ["single-origin"]
    assert f"{PREFIX}single-origin" not in fake.catalog_categories


def test_a_new_variant_of_an_existing_item_is_created(
    app: Flask, fake: Any, catalog: list[Any]
) -> None:
    sync(app)
    catalog[2]["variants"] = [{"id": "3-100", "sku": "PAPER-100", "inventory_quantity": 50}]
    report = sync(app)
    assert report.plan.variants.create == ["3-100"]
    assert fake.catalog_variants[f"{PREFIX}3-100"]["item"] == f"{PREFIX}3"


def test_a_failing_item_becomes_a_dead_letter_and_the_rest_is_applied(
    app: Flask, fake: Any, redis_client: Any
) -> None:
    fake.fail_catalog_items({"2"}, detail="Image could not be fetched.")
    report = sync(app)
    assert sorted(fake.catalog_items) == [f"{PREFIX}1", f"{PREFIX}3"]
    [failed] = report.failed
    assert failed["operation"]["key"] == "2"
    assert failed["errors"][0]["detail"] == "Image could not be fetched."
    # the failed item's variants wait in its dead letter (a replay brings them back)
    assert f"{PREFIX}2-std" not in fake.catalog_variants
    assert failed["operation"]["payload"]["then"][0]["key"] == "2-std"
    assert DeadLetters(redis_client).count() == 1


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"url": "/p/1"}, "url"),
        ({"name": ""}, "title"),
        ({"price": None}, "price"),
        ({"price": -1}, "price"),
        ({"variants": [{"id": "v", "sku": "V", "inventory_quantity": -2}]},
         "variants[0].inventory_quantity"),
    ],
)  # fmt: skip
def test_an_invalid_product_is_named_by_id_and_field_before_anything_is_sent(
    app: Flask, fake: Any, catalog: list[Any], change: dict[str, Any], field: str
) -> None:
    catalog[0].update(change)
    with pytest.raises(KlaviyoSchemaError) as raised:
        sync(app)
    assert raised.value.metric == "catalog item '1'" and raised.value.field == field
    assert fake.writes() == 0


def test_a_repeated_id_is_refused(app: Flask, fake: Any, catalog: list[Any]) -> None:
    catalog.append(dict(catalog[2]))
    with pytest.raises(KlaviyoSchemaError, match="repeated id"):
        sync(app)
    assert fake.writes() == 0


def test_lenient_an_invalid_product_is_a_dead_letter_and_the_rest_goes(
    app: Flask, fake: Any, catalog: list[Any], redis_client: Any
) -> None:
    app.config["KLAVIYO_STRICT"] = False
    catalog[2]["price"] = -3
    report = sync(app)
    assert report.invalid == [
        {"item": "catalog item '3'", "field": "price", "message": "must not be negative, got -3"}
    ]
    assert sorted(fake.catalog_items) == [f"{PREFIX}1", f"{PREFIX}2"]
    [dead] = DeadLetters(redis_client).all()
    assert dead["reason"] == "invalid" and dead["errors"][0]["pointer"] == "price"


def test_the_cli_dry_run_prints_the_plan_and_sends_nothing(app: Flask, fake: Any) -> None:
    result = app.test_cli_runner().invoke(args=["klaviyo", "catalog", "sync", "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "would create 3" in result.output and "dry run: nothing was sent" in result.output
    assert "create item 1" in result.output
    assert fake.writes() == 0 and fake.catalog_items == {}


def test_the_cli_syncs_and_summarises(app: Flask, fake: Any) -> None:
    result = app.test_cli_runner().invoke(args=["klaviyo", "catalog", "sync"])
    assert result.exit_code == 0, result.output
    assert "items: create 3" in result.output and "failed: 0" in result.output
    assert "operations applied" in result.output  # plain progress lines (not a terminal)
    assert len(fake.catalog_items) == 3


def test_feed_mode_refuses_to_sync_and_says_why(make_app: Callable[..., Flask], fake: Any) -> None:
    app = make_app(fake=fake, KLAVIYO_CATALOG_MODE="feed")
    ext(app).catalog_source(lambda: iter(PRODUCTS))
    result = app.test_cli_runner().invoke(args=["klaviyo", "catalog", "sync"])
    assert result.exit_code == 1
    assert "never both" in result.output and "KLAVIYO_CATALOG_MODE" in result.output
    assert fake.writes() == 0
