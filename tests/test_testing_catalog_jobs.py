"""The stand-in's catalog bulk jobs over real HTTP: items (update, delete), variants and
categories (create, update, delete), their job GETs, per-resource errors with pointers, the
cascade of an item's delete, forced failures, injected faults and time-scaled rate limits."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from flask_klaviyo.testing import FakeKlaviyo

API_KEY = "pk_test_private_key"
HEADERS = {
    "Authorization": f"Klaviyo-API-Key {API_KEY}",
    "revision": "2026-07-15",
    "Content-Type": "application/vnd.api+json",
    "Accept": "application/vnd.api+json",
}
PREFIX = "$custom:::$default:::"
SINGULAR = {"items": "item", "variants": "variant", "categories": "category"}


def path(plural: str, action: str) -> str:
    return f"/api/catalog-{SINGULAR[plural]}-bulk-{action}-jobs"


def body(plural: str, action: str, *entries: dict[str, Any]) -> dict[str, Any]:
    job_type = f"catalog-{SINGULAR[plural]}-bulk-{action}-job"
    return {"data": {"type": job_type, "attributes": {plural: {"data": list(entries)}}}}


def item(external_id: str, *, categories: list[str] = (), **attributes: Any) -> dict[str, Any]:
    attrs = {
        "external_id": external_id,
        "title": f"Coffee {external_id}",
        "description": "Roasted.",
        "url": f"https://shop.example/p/{external_id}",
        "price": 12.5,
        **attributes,
    }
    entry: dict[str, Any] = {"type": "catalog-item", "attributes": attrs}
    if categories:
        entry["relationships"] = {
            "categories": {"data": [{"type": "catalog-category", "id": c} for c in categories]}
        }
    return entry


def variant(external_id: str, parent: str, **attributes: Any) -> dict[str, Any]:
    attrs = {
        "external_id": external_id,
        "title": f"Variant {external_id}",
        "description": "250 g",
        "sku": f"SKU-{external_id}",
        "inventory_quantity": 5,
        "inventory_policy": 1,
        "price": 12.5,
        "url": f"https://shop.example/p/{parent}?v={external_id}",
        **attributes,
    }
    return {
        "type": "catalog-variant",
        "attributes": {k: v for k, v in attrs.items() if v is not ...},
        "relationships": {"item": {"data": {"type": "catalog-item", "id": PREFIX + parent}}},
    }


def category(external_id: str, name: str, items: list[str] | None = None) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "type": "catalog-category",
        "attributes": {"external_id": external_id, "name": name},
    }
    if items is not None:
        entry["relationships"] = {
            "items": {"data": [{"type": "catalog-item", "id": PREFIX + i} for i in items]}
        }
    return entry


def ref(plural: str, external_id: str, **attributes: Any) -> dict[str, Any]:
    """An update (with attributes) or delete (without) entry."""
    entry: dict[str, Any] = {"type": f"catalog-{SINGULAR[plural]}", "id": PREFIX + external_id}
    if attributes:
        entry["attributes"] = attributes
    return entry


def post(fake: FakeKlaviyo, plural: str, action: str, *entries: Any) -> httpx.Response:
    payload = body(plural, action, *entries)
    return httpx.post(
        fake.url + path(plural, action), content=json.dumps(payload).encode(), headers=HEADERS
    )


def run(fake: FakeKlaviyo, plural: str, action: str, *entries: Any) -> dict[str, Any]:
    """Post a job, then GET it (complete at once): the GET's document."""
    answer = post(fake, plural, action, *entries)
    assert answer.status_code == 202, answer.text
    job_id = answer.json()["data"]["id"]
    got = httpx.get(f"{fake.url}{path(plural, action)}/{job_id}", headers=HEADERS)
    assert got.status_code == 200, got.text
    return got.json()


def validator(openapi: Any, operation: str, status: str) -> Any:
    from openapi_schema_validator import OAS30Validator

    doc = openapi.document(operation)
    (operation_path,) = doc["paths"].values()
    (op,) = operation_path.values()
    content = op["responses"][status]["content"]["application/vnd.api+json"]["schema"]
    return OAS30Validator({**content, "components": doc["components"]})


def seed(fake: FakeKlaviyo) -> None:
    run(fake, "categories", "create", category("BEANS", "Beans"))
    run(fake, "items", "create", item("A", categories=[PREFIX + "BEANS"]), item("B"))
    run(
        fake, "variants", "create", variant("A-250", "A"), variant("A-1K", "A"), variant("B-1", "B")
    )


@pytest.mark.parametrize("plural", ["items", "variants", "categories"])
@pytest.mark.parametrize("action", ["create", "update", "delete"])
def test_every_job_post_answers_202_valid_against_its_document(
    fake: FakeKlaviyo, openapi: Any, plural: str, action: str
) -> None:
    seed(fake)
    entries = {
        ("items", "create"): [item("C")],
        ("items", "update"): [ref("items", "A", price=10)],
        ("items", "delete"): [ref("items", "B")],
        ("variants", "create"): [variant("B-2", "B")],
        ("variants", "update"): [ref("variants", "A-250", inventory_quantity=0)],
        ("variants", "delete"): [ref("variants", "B-1")],
        ("categories", "create"): [category("GEAR", "Gear", ["B"])],
        ("categories", "update"): [ref("categories", "BEANS", name="All beans")],
        ("categories", "delete"): [ref("categories", "BEANS")],
    }[(plural, action)]
    operation = f"bulk_{action}_catalog_{plural}"
    payload = body(plural, action, *entries)
    openapi.validate(operation, payload)
    answer = post(fake, plural, action, *entries)
    assert answer.status_code == 202, answer.text
    validator(openapi, operation, "202").validate(answer.json())
    data = answer.json()["data"]
    assert data["type"] == f"catalog-{SINGULAR[plural]}-bulk-{action}-job"
    assert data["attributes"]["status"] == "queued" and data["attributes"]["total_count"] == 1
    document = httpx.get(f"{fake.url}{path(plural, action)}/{data['id']}", headers=HEADERS).json()
    if plural == "items" and action != "create":
        validator(openapi, f"get_bulk_{action}_catalog_items_job", "200").validate(document)
    attributes = document["data"]["attributes"]
    assert (attributes["status"], attributes["completed_count"], attributes["errors"]) == (
        "complete",
        1,
        [],
    )
    assert document["data"]["relationships"][plural]["data"][0]["type"] == (
        f"catalog-{SINGULAR[plural]}"
    )
    assert [r["endpoint"] for r in fake.requests][-2:] == [
        operation,
        f"get_bulk_{action}_catalog_{plural}_job",
    ]


def test_items_update_and_delete_with_per_item_errors(fake: FakeKlaviyo, openapi: Any) -> None:
    seed(fake)
    document = run(
        fake,
        "items",
        "update",
        ref("items", "A", title="Coffee A, new", price=14),
        ref("items", "NOPE", title="x"),
        ref("items", "B", price=-3),
    )
    validator(openapi, "get_bulk_update_catalog_items_job", "200").validate(document)
    attributes = document["data"]["attributes"]
    assert (attributes["completed_count"], attributes["failed_count"]) == (1, 2)
    base = "/data/attributes/items/data"
    assert [(e["source"]["pointer"], e["code"]) for e in attributes["errors"]] == [
        (f"{base}/1/id", "not_found"),
        (f"{base}/2/attributes/price", "invalid"),
    ]
    for error in attributes["errors"]:
        assert set(error) == {"id", "code", "title", "detail", "source"}
    items = fake.catalog_items
    assert items[PREFIX + "A"]["title"] == "Coffee A, new" and items[PREFIX + "A"]["price"] == 14
    assert items[PREFIX + "A"]["description"] == "Roasted."  # untouched
    assert items[PREFIX + "B"]["price"] == 12.5

    deleted = run(fake, "items", "delete", ref("items", "B"), ref("items", "GONE"))
    validator(openapi, "get_bulk_delete_catalog_items_job", "200").validate(deleted)
    assert deleted["data"]["relationships"]["items"]["data"] == [
        {"type": "catalog-item", "id": PREFIX + "B"}
    ]
    assert [e["source"]["pointer"] for e in deleted["data"]["attributes"]["errors"]] == [
        f"{base}/1/id"
    ]
    assert list(fake.catalog_items) == [PREFIX + "A"]


def test_deleting_an_item_deletes_its_variants(fake: FakeKlaviyo) -> None:
    seed(fake)
    assert fake.catalog_items[PREFIX + "A"]["variants"] == [PREFIX + "A-250", PREFIX + "A-1K"]
    run(fake, "items", "delete", ref("items", "A"))
    assert list(fake.catalog_variants) == [PREFIX + "B-1"]
    assert fake.catalog_categories[PREFIX + "BEANS"]["items"] == []


def test_variants_belong_to_an_existing_item_and_update(fake: FakeKlaviyo) -> None:
    seed(fake)
    document = run(
        fake,
        "variants",
        "create",
        variant("X-1", "NO-SUCH-ITEM"),
        variant("A-250", "A"),
        variant("B-2", "B", price=-1),
        variant("B-3", "B"),
    )
    attributes = document["data"]["attributes"]
    base = "/data/attributes/variants/data"
    assert [e["source"]["pointer"] for e in attributes["errors"]] == [
        f"{base}/0/relationships/item/data/id",
        f"{base}/1/attributes/external_id",
        f"{base}/2/attributes/price",
    ]
    assert document["data"]["relationships"]["variants"]["data"] == [
        {"type": "catalog-variant", "id": PREFIX + "B-3"}
    ]
    included = httpx.get(
        f"{fake.url}{path('variants', 'create')}/{document['data']['id']}",
        headers=HEADERS,
        params={"include": "variants"},
    ).json()["included"]
    assert [(v["type"], v["attributes"]["sku"]) for v in included] == [
        ("catalog-variant", "SKU-B-3")
    ]
    variants = fake.catalog_variants
    assert variants[PREFIX + "B-3"]["item"] == PREFIX + "B"
    assert fake.catalog_items[PREFIX + "B"]["variants"] == [PREFIX + "B-1", PREFIX + "B-3"]

    run(fake, "variants", "update", ref("variants", "A-250", inventory_quantity=0, price=11))
    updated = fake.catalog_variants[PREFIX + "A-250"]
    assert (updated["inventory_quantity"], updated["price"], updated["sku"]) == (0, 11, "SKU-A-250")
    gone = run(fake, "variants", "delete", ref("variants", "A-1K"), ref("variants", "A-1K"))
    assert gone["data"]["attributes"]["failed_count"] == 1  # the second is already gone
    assert fake.catalog_items[PREFIX + "A"]["variants"] == [PREFIX + "A-250"]


def test_categories_relate_to_items_both_ways(fake: FakeKlaviyo) -> None:
    seed(fake)
    run(fake, "categories", "create", category("GEAR", "Gear", ["B"]))
    assert fake.catalog_items[PREFIX + "B"]["categories"] == [PREFIX + "GEAR"]
    run(
        fake,
        "items",
        "update",
        ref("items", "A", price=1)
        | {
            "relationships": {
                "categories": {"data": [{"type": "catalog-category", "id": PREFIX + "GEAR"}]}
            }
        },
    )
    assert fake.catalog_items[PREFIX + "A"]["categories"] == [PREFIX + "GEAR"]
    assert fake.catalog_categories[PREFIX + "GEAR"]["items"] == [PREFIX + "A", PREFIX + "B"]
    document = run(
        fake,
        "categories",
        "update",
        ref("categories", "GEAR", name="Brewing gear")
        | {"relationships": {"items": {"data": [{"type": "catalog-item", "id": PREFIX + "A"}]}}},
        ref("categories", "NOPE", name="x"),
    )
    assert [e["source"]["pointer"] for e in document["data"]["attributes"]["errors"]] == [
        "/data/attributes/categories/data/1/id"
    ]
    gear = fake.catalog_categories[PREFIX + "GEAR"]
    assert (gear["name"], gear["items"]) == ("Brewing gear", [PREFIX + "A"])
    refused = run(fake, "items", "create", item("C", categories=[PREFIX + "MISSING"]))
    assert refused["data"]["attributes"]["errors"][0]["source"]["pointer"] == (
        "/data/attributes/items/data/0/relationships/categories/data/0/id"
    )
    run(fake, "categories", "delete", ref("categories", "GEAR"))
    assert fake.catalog_items[PREFIX + "A"]["categories"] == []
    assert list(fake.catalog_categories) == [PREFIX + "BEANS"]


def test_fail_catalog_items_fails_updates_and_variants_too(fake: FakeKlaviyo) -> None:
    seed(fake)
    fake.fail_catalog_items({"A", PREFIX + "B-1"}, detail="Busy.")
    update = run(fake, "items", "update", ref("items", "A", price=1), ref("items", "B", price=2))
    assert [
        (e["source"]["pointer"], e["detail"]) for e in update["data"]["attributes"]["errors"]
    ] == [("/data/attributes/items/data/0", "Busy.")]
    variants = run(fake, "variants", "update", ref("variants", "B-1", price=1))
    assert variants["data"]["attributes"]["failed_count"] == 1
    assert fake.catalog_items[PREFIX + "A"]["price"] == 12.5
    assert fake.catalog_items[PREFIX + "B"]["price"] == 2


@pytest.mark.parametrize(
    ("plural", "action", "entry", "pointer"),
    [
        ("variants", "create", variant("V", "A", sku=...), "/attributes/sku"),
        (
            "variants",
            "create",
            variant("V", "A", inventory_quantity=...),
            "/attributes/inventory_quantity",
        ),
        (
            "variants",
            "create",
            variant("V", "A", inventory_policy=5),
            "/attributes/inventory_policy",
        ),
        (
            "variants",
            "create",
            {k: v for k, v in variant("V", "A").items() if k != "relationships"},
            "/relationships",
        ),
        ("variants", "update", {"type": "catalog-variant", "attributes": {}}, "/id"),
        ("variants", "update", ref("variants", "V", price="1"), "/attributes/price"),
        ("items", "update", ref("items", "A", images="x.png"), "/attributes/images"),
        ("items", "delete", {"type": "catalog-variant", "id": PREFIX + "A"}, "/type"),
        (
            "categories",
            "create",
            {"type": "catalog-category", "attributes": {"external_id": "C"}},
            "/attributes/name",
        ),
        ("categories", "delete", {"type": "catalog-category"}, "/id"),
    ],
)
def test_a_bad_entry_is_a_400_with_its_pointer_and_no_job(
    fake: FakeKlaviyo, plural: str, action: str, entry: dict[str, Any], pointer: str
) -> None:
    answer = post(fake, plural, action, entry)
    assert answer.status_code == 400, answer.text
    assert [e["source"]["pointer"] for e in answer.json()["errors"]] == [
        f"/data/attributes/{plural}/data/0{pointer}"
    ]
    assert fake.jobs() == []


def test_at_most_100_per_job_and_unknown_jobs_are_404(fake: FakeKlaviyo) -> None:
    answer = post(fake, "variants", "delete", *[ref("variants", f"V{i}") for i in range(101)])
    assert answer.status_code == 400
    assert answer.json()["errors"][0]["source"]["pointer"] == "/data/attributes/variants/data"
    assert (
        httpx.get(f"{fake.url}{path('categories', 'update')}/nope", headers=HEADERS).status_code
        == 404
    )
    job_id = post(fake, "items", "delete", ref("items", "A")).json()["data"]["id"]
    # a job is only found under its own type
    assert (
        httpx.get(f"{fake.url}{path('items', 'update')}/{job_id}", headers=HEADERS).status_code
        == 404
    )
    bad_include = httpx.get(
        f"{fake.url}{path('items', 'delete')}/{job_id}",
        headers=HEADERS,
        params={"include": "items"},
    )
    assert bad_include.status_code == 400
    assert bad_include.json()["errors"][0]["source"] == {"parameter": "include"}


def test_an_injected_503_answers_a_catalog_endpoint_and_nothing_is_queued(
    fake: FakeKlaviyo,
) -> None:
    fake.fail_next(503)
    answer = post(fake, "variants", "create", variant("V", "A"))
    assert answer.status_code == 503
    assert answer.json()["errors"][0]["status"] == 503
    assert fake.jobs() == []
    assert fake.writes() == 1 and fake.writes("variants") == 1 and fake.writes("items") == 0
    assert fake.request_counts() == {"bulk_create_catalog_variants": 1}


def test_writes_counts_catalog_writes_only(fake: FakeKlaviyo) -> None:
    seed(fake)
    assert fake.writes() == 3
    assert (fake.writes("categories"), fake.writes("create"), fake.writes("update")) == (1, 3, 0)
    httpx.get(fake.url + "/api/catalog-items", headers=HEADERS)
    assert fake.writes() == 3  # a read is no write
    run(fake, "items", "update", ref("items", "A", price=1))
    assert fake.writes("bulk_update_catalog_items") == 1
    with pytest.raises(ValueError):
        fake.writes("nothing")
    fake.reset()
    assert fake.writes() == 0


def test_klaviyos_catalog_limits_apply_time_scaled() -> None:
    with FakeKlaviyo(api_key=API_KEY, rate_limits="klaviyo", time_scale=100) as fake:
        assert fake.rate_limits["bulk_create_catalog_variants"] == [[75, 1.0], [750, 60.0]]
        assert fake.rate_limits["get_catalog_items"] == [[350, 1.0], [3500, 60.0]]
        assert fake.rate_limits["create_back_in_stock_subscription"] == [[350, 1.0], [3500, 60.0]]
        fake.set_rate_limits({"bulk_update_catalog_variants": [[2, 60.0]]}, time_scale=100)
        statuses = [
            post(fake, "variants", "update", ref("variants", "V", price=1)).status_code
            for _ in range(3)
        ]
        assert statuses == [202, 202, 429]
        throttled = post(fake, "variants", "update", ref("variants", "V", price=1))
        retry_after = float(throttled.headers["Retry-After"])
        assert 0 < retry_after <= 0.6  # at most a Klaviyo minute, 100 times faster
        assert fake.throttled == 2
