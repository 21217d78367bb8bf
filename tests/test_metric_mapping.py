"""``flask klaviyo map-metrics``: the plan (pure), then the command against the stand-in: revenue
goes to Placed Order and every other mapping to its metric, by id looked up by name; a second run
sends nothing; ``--dry-run`` sends nothing; a spent daily budget defers the rest."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from flask import Flask

from flask_klaviyo.metric_mapping import (
    WANTED,
    Change,
    Metric,
    mapped_now,
    metrics_by_name,
    plan,
    update_body,
)
from flask_klaviyo.testing.mapped_metrics import metric_id

EMAIL = "mapping.buyer@klaviyo-demo.com"
ORDER = {
    "id": "M-1",
    "email": EMAIL,
    "items": [
        {"line_id": "1", "quantity": 1, "unit_price": 5, "product": {"id": "p", "name": "P"}}
    ],
}


def test_wanted_covers_every_mapping_klaviyo_allows(openapi: Any) -> None:
    doc = openapi.document("update_mapped_metric")
    [parameter] = [
        p
        for p in doc["paths"]["/api/mapped-metrics/{id}"]["patch"]["parameters"]
        if p["name"] == "id"
    ]
    assert sorted(WANTED) == sorted(parameter["schema"]["enum"])
    assert WANTED["revenue"] == "Placed Order"
    assert WANTED["refunded_sales"] == "Refunded Order"
    assert WANTED["cancelled_sales"] == "Canceled Order"


def test_the_update_body_fits_klaviyos_schema(openapi: Any) -> None:
    body = update_body(Change("revenue", "Placed Order", "set", metric_id="AbC123"))
    openapi.validate("update_mapped_metric", body)
    assert body["data"]["relationships"]["metric"]["data"] == {"type": "metric", "id": "AbC123"}


def test_reading_klaviyos_answers() -> None:
    mapped = mapped_now(
        {
            "data": [
                {"id": "revenue", "relationships": {"metric": {"data": {"id": "X1"}}}},
                {"id": "viewed_product", "relationships": {"metric": {"links": {}}}},
                {"id": "refunded_sales", "relationships": {"custom-metric": {"data": {"id": "C"}}}},
            ],
            "included": [{"type": "metric", "id": "X1", "attributes": {"name": "Old Order"}}],
        }
    )
    assert mapped == {
        "revenue": ("X1", "Old Order"),
        "viewed_product": (None, None),
        "refunded_sales": ("C", None),
    }
    metrics = metrics_by_name(
        [
            {
                "data": [
                    {
                        "id": "S1",
                        "attributes": {"name": "Placed Order", "integration": {"name": "Shopify"}},
                    }
                ]
            },
            {
                "data": [
                    {
                        "id": "A1",
                        "attributes": {"name": "Placed Order", "integration": {"name": "API"}},
                    }
                ]
            },
        ]
    )
    assert metrics == {
        "Placed Order": [
            Metric("S1", "Placed Order", "Shopify"),
            Metric("A1", "Placed Order", "API"),
        ]
    }


def test_the_plan_changes_only_what_differs() -> None:
    metrics = {
        "Placed Order": [
            Metric("S1", "Placed Order", "Shopify"),
            Metric("A1", "Placed Order", "API"),
        ],
        "Refunded Order": [Metric("R1", "Refunded Order", "API")],
        "Viewed Product": [Metric("V1", "Viewed Product", "API")],
    }
    current = {
        "revenue": ("OLD", "Something Else"),
        "refunded_sales": ("R1", "Refunded Order"),
        "viewed_product": ("CM", None),  # a custom metric
    }
    by_mapping = {c.mapping: c for c in plan(current, metrics)}
    assert by_mapping["revenue"].status == "set"
    assert by_mapping["revenue"].metric_id == "A1"  # the API's of the two "Placed Order"s
    assert by_mapping["revenue"].was_name == "Something Else"
    assert by_mapping["refunded_sales"].status == "unchanged"
    assert by_mapping["viewed_product"].status == "set"
    assert by_mapping["ordered_product"].status == "missing"
    # already on Shopify's Placed Order: left alone (the merchant chose it)
    kept = plan({"revenue": ("S1", "Placed Order")}, metrics)
    assert kept[0].status == "unchanged"
    assert "[missing]" in by_mapping["ordered_product"].describe()
    assert "Something Else -> Placed Order (A1) [set]" in by_mapping["revenue"].describe()


def _patches(fake: Any) -> list[dict[str, Any]]:
    return [r for r in fake.requests if r["endpoint"] == "update_mapped_metric"]


def test_map_metrics_against_the_stand_in(
    make_app: Callable[..., Flask], fake: Any, drain: Callable[[Flask], None], openapi: Any
) -> None:
    app = make_app(fake=fake)
    klaviyo = app.extensions["klaviyo"].extension
    with app.app_context():
        klaviyo.order_placed(ORDER)
        klaviyo.order_refunded(ORDER, reason="Damaged")
    drain(app)
    runner = app.test_cli_runner()

    dry = runner.invoke(args=["klaviyo", "map-metrics", "--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert f"revenue: nothing -> Placed Order ({metric_id('Placed Order')}) [set]" in dry.output
    assert "refunded_sales: nothing -> Refunded Order" in dry.output
    assert "viewed_product: no 'Viewed Product' metric yet" in dry.output
    assert "dry run: 4 missing, 3 set" in dry.output
    assert _patches(fake) == []

    done = runner.invoke(args=["klaviyo", "map-metrics"])
    assert done.exit_code == 0, done.output
    assert "4 missing, 3 updated" in done.output
    patches = _patches(fake)
    assert sorted(r["path"].rsplit("/", 1)[1] for r in patches) == [
        "ordered_product",
        "refunded_sales",
        "revenue",
    ]
    for request in patches:
        assert request["status"] == 200
        openapi.validate("update_mapped_metric", request["body"])
    mapped = {
        m["id"]: m["relationships"]["metric"].get("data", {}).get("id")
        for m in json.loads(_get(fake, "/api/mapped-metrics"))["data"]
    }
    assert mapped["revenue"] == metric_id("Placed Order")
    assert mapped["refunded_sales"] == metric_id("Refunded Order")
    assert mapped["viewed_product"] is None

    again = runner.invoke(args=["klaviyo", "map-metrics"])
    assert again.exit_code == 0, again.output
    assert "4 missing, 3 unchanged" in again.output
    assert len(_patches(fake)) == 3  # nothing re-sent: the daily budget is precious


def test_a_spent_daily_budget_defers_the_rest(
    make_app: Callable[..., Flask], fake: Any, drain: Callable[[Flask], None]
) -> None:
    app = make_app(
        fake=fake,
        KLAVIYO_RATE_LIMITS={"update_mapped_metric": [[100, 1], [1, 86400]]},
    )
    klaviyo = app.extensions["klaviyo"].extension
    with app.app_context():
        klaviyo.order_placed(ORDER)  # Placed Order and Ordered Product
    drain(app)
    result = app.test_cli_runner().invoke(args=["klaviyo", "map-metrics"])
    assert result.exit_code == 0, result.output
    assert "1 deferred" in result.output and "1 updated" in result.output
    assert "run again tomorrow" in result.output
    assert len(_patches(fake)) == 1


def _get(fake: Any, path: str) -> str:
    import httpx

    headers = {"Authorization": "Klaviyo-API-Key pk_test_private_key", "revision": "2026-07-15"}
    return httpx.get(fake.url + path, headers=headers).text


def test_a_refused_update_is_reported_and_the_others_still_go(fake: Any) -> None:
    from flask_klaviyo.client import KlaviyoClient
    from flask_klaviyo.delivery.sender import Sender
    from flask_klaviyo.metric_mapping import apply

    track = {
        "data": {
            "type": "event",
            "attributes": {
                "properties": {},
                "metric": {"data": {"type": "metric", "attributes": {"name": "Placed Order"}}},
                "profile": {"data": {"type": "profile", "attributes": {"email": EMAIL}}},
            },
        }
    }
    with KlaviyoClient("pk_test_private_key", base_url=fake.url) as client:
        client.create_event(track)
        changes = [
            Change("ordered_product", "Ordered Product", "set", metric_id="NoSuch"),
            Change("revenue", "Placed Order", "set", metric_id=metric_id("Placed Order")),
            Change("viewed_product", "Viewed Product", "missing"),
        ]
        done = apply(changes, Sender(client, None, sleep=lambda _: None))
    assert [c.status for c in done] == ["failed", "updated", "missing"]
    assert "does not exist" in (done[0].detail or "")
    assert "[failed]" in done[0].describe()


def test_updates_are_paced_under_klaviyos_windows(
    make_app: Callable[..., Flask], fake: Any
) -> None:
    """Seven updates against Klaviyo's own windows (1/s): the shared limiter spaces them and
    a 429 is waited out, so all seven land."""
    import time

    from flask_klaviyo.client import KlaviyoClient

    app = make_app(fake=fake)
    with KlaviyoClient("pk_test_private_key", base_url=fake.url) as client:
        for name in WANTED.values():  # one event each: Klaviyo creates the metrics
            metric = {"data": {"type": "metric", "attributes": {"name": name}}}
            profile = {"data": {"type": "profile", "attributes": {"email": EMAIL}}}
            attributes = {"properties": {}, "metric": metric, "profile": profile}
            client.create_event({"data": {"type": "event", "attributes": attributes}})
    fake.set_rate_limits("klaviyo")
    started = time.monotonic()
    result = app.test_cli_runner().invoke(args=["klaviyo", "map-metrics"])
    took = time.monotonic() - started
    assert result.exit_code == 0, result.output
    assert "7 updated" in result.output
    updates = [r["status"] for r in fake.requests if r["endpoint"] == "update_mapped_metric"]
    # each accepted once; a 429 at a window's edge (the limiter spaces by Redis's clock, the
    # stand-in's fixed windows by its own) is waited out and retried, never a failure
    assert updates.count(200) == 7
    assert set(updates) <= {200, 429}
    assert took >= 5.5  # seven at one a second: at least six seconds of spacing
