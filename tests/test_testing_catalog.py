"""Bulk Create Catalog Items at the stand-in, over real HTTP: an asynchronous job (202 queued,
then a GET), per-item errors with Klaviyo's job error shape and pointers, and the catalog."""

from __future__ import annotations

import json
import time
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
JOBS = "/api/catalog-item-bulk-create-jobs"
ITEMS = "/data/attributes/items/data"


def item(external_id: str, **attributes: Any) -> dict[str, Any]:
    attrs = {
        "external_id": external_id,
        "title": f"Book {external_id}",
        "description": "A book.",
        "url": f"https://shop.example/books/{external_id}",
        "price": 9.99,
        "images": ["https://shop.example/i.png"],
        "published": True,
        **attributes,
    }
    return {"type": "catalog-item", "attributes": {k: v for k, v in attrs.items() if v != ...}}


def job(*items: dict[str, Any]) -> dict[str, Any]:
    return {
        "data": {
            "type": "catalog-item-bulk-create-job",
            "attributes": {"items": {"data": list(items)}},
        }
    }


def create(fake: FakeKlaviyo, body: Any) -> httpx.Response:
    return httpx.post(fake.url + JOBS, content=json.dumps(body).encode(), headers=HEADERS)


def look(fake: FakeKlaviyo, job_id: str, **params: str) -> httpx.Response:
    return httpx.get(f"{fake.url}{JOBS}/{job_id}", headers=HEADERS, params=params)


def schema(openapi: Any, operation: str, path: str, method: str, status: str) -> Any:
    from openapi_schema_validator import OAS30Validator

    doc = openapi.document(operation)
    content = doc["paths"][path][method]["responses"][status]["content"]
    return OAS30Validator(
        {**content["application/vnd.api+json"]["schema"], "components": doc["components"]}
    )


def test_a_job_is_queued_then_complete_and_the_items_are_in_the_catalog(
    fake: FakeKlaviyo, openapi: Any
) -> None:
    body = job(item("SKU-1"), item("SKU-2", price=0))
    openapi.validate("bulk_create_catalog_items", body)
    created = create(fake, body)
    assert created.status_code == 202, created.text
    schema(openapi, "bulk_create_catalog_items", JOBS, "post", "202").validate(created.json())
    data = created.json()["data"]
    assert data["type"] == "catalog-item-bulk-create-job"
    assert data["attributes"]["status"] == "queued" and data["attributes"]["total_count"] == 2

    answer = look(fake, data["id"], include="items")
    assert answer.status_code == 200
    document = answer.json()
    schema(openapi, "get_bulk_create_catalog_items_job", JOBS + "/{job_id}", "get", "200").validate(
        document
    )
    attributes = document["data"]["attributes"]
    assert attributes["status"] == "complete"
    assert (attributes["completed_count"], attributes["failed_count"]) == (2, 0)
    assert attributes["errors"] == []
    ids = ["$custom:::$default:::SKU-1", "$custom:::$default:::SKU-2"]
    assert [r["id"] for r in document["data"]["relationships"]["items"]["data"]] == ids
    assert [r["id"] for r in document["included"]] == ids
    assert sorted(fake.catalog_items) == ids
    assert fake.catalog_items[ids[0]]["title"] == "Book SKU-1"


def test_items_fail_for_real_reasons_with_pointers_at_them(fake: FakeKlaviyo, openapi: Any) -> None:
    create(fake, job(item("OLD")))
    body = job(
        item("NEW"),
        item("OLD"),
        item("CHEAP", price=-1),
        item("NEW"),
        item("OTHER", catalog_type="$other"),
    )
    openapi.validate("bulk_create_catalog_items", body)  # the schema allows all of them
    job_id = create(fake, body).json()["data"]["id"]
    document = look(fake, job_id).json()
    schema(openapi, "get_bulk_create_catalog_items_job", JOBS + "/{job_id}", "get", "200").validate(
        document
    )
    attributes = document["data"]["attributes"]
    assert attributes["status"] == "complete"
    assert (
        attributes["total_count"],
        attributes["completed_count"],
        attributes["failed_count"],
    ) == (5, 1, 4)
    errors = attributes["errors"]
    for error in errors:
        assert set(error) == {"id", "code", "title", "detail", "source"}
    assert [e["source"]["pointer"] for e in errors] == [
        f"{ITEMS}/1/attributes/external_id",
        f"{ITEMS}/2/attributes/price",
        f"{ITEMS}/3/attributes/external_id",
        f"{ITEMS}/4/attributes/catalog_type",
    ]
    assert "already exists" in errors[0]["detail"] and errors[0]["code"] == "conflict"
    assert sorted(fake.catalog_items) == ["$custom:::$default:::NEW", "$custom:::$default:::OLD"]


def test_fail_catalog_items_makes_chosen_items_fail(fake: FakeKlaviyo) -> None:
    fake.fail_catalog_items(
        {"SKU-2", "$custom:::$default:::SKU-3"}, detail="Image could not be fetched."
    )
    job_id = create(fake, job(item("SKU-1"), item("SKU-2"), item("SKU-3"))).json()["data"]["id"]
    attributes = look(fake, job_id).json()["data"]["attributes"]
    assert attributes["failed_count"] == 2
    assert [(e["source"]["pointer"], e["detail"]) for e in attributes["errors"]] == [
        (f"{ITEMS}/1", "Image could not be fetched."),
        (f"{ITEMS}/2", "Image could not be fetched."),
    ]
    assert list(fake.catalog_items) == ["$custom:::$default:::SKU-1"]
    fake.reset()
    assert fake.catalog_items == {} and fake.jobs() == []


def test_the_control_route_fails_items_for_other_processes(fake: FakeKlaviyo) -> None:
    control = httpx.post(fake.url + "/_fake/catalog-failures", json={"ids": ["X"], "detail": "no"})
    assert control.status_code == 200
    job_id = create(fake, job(item("X"))).json()["data"]["id"]
    assert look(fake, job_id).json()["data"]["attributes"]["errors"][0]["detail"] == "no"
    assert httpx.get(fake.url + "/_fake/catalog-items").json() == {}
    assert httpx.get(fake.url + "/_fake/jobs").json()[0]["failed_count"] == 1


def test_a_delay_keeps_the_job_processing_until_it_passes() -> None:
    with FakeKlaviyo(api_key=API_KEY, job_delay=0.3) as fake:
        job_id = create(fake, job(item("SLOW"))).json()["data"]["id"]
        first = look(fake, job_id).json()["data"]["attributes"]
        assert first["status"] == "processing" and first["completed_count"] == 0
        assert fake.catalog_items == {}
        time.sleep(0.35)
        assert look(fake, job_id).json()["data"]["attributes"]["status"] == "complete"
        assert list(fake.catalog_items) == ["$custom:::$default:::SLOW"]


@pytest.mark.parametrize(
    ("body", "pointer"),
    [
        (job(item("A", title=...)), f"{ITEMS}/0/attributes/title"),
        (job(item("A", url=...)), f"{ITEMS}/0/attributes/url"),
        (job(item("A", price="9.99")), f"{ITEMS}/0/attributes/price"),
        (job(item("A", images="x.png")), f"{ITEMS}/0/attributes/images"),
        (job({"type": "catalog-items", "attributes": item("A")["attributes"]}), f"{ITEMS}/0/type"),
        (job(item("A"), "nope"), f"{ITEMS}/1"),
        (
            {"data": {"type": "catalog-item-bulk-create-job", "attributes": {}}},
            "/data/attributes/items",
        ),
        (
            {
                "data": {
                    "type": "catalog-item-bulk-update-job",
                    "attributes": {"items": {"data": []}},
                }
            },
            "/data/type",
        ),
        (job(*[item(f"I{i}") for i in range(101)]), "/data/attributes/items/data"),
    ],
)
def test_a_bad_body_is_400_with_the_pointer_and_no_job(
    fake: FakeKlaviyo, openapi: Any, body: dict, pointer: str
) -> None:
    answer = create(fake, body)
    assert answer.status_code == 400, answer.text
    assert [e["source"]["pointer"] for e in answer.json()["errors"]] == [pointer]
    assert fake.jobs() == []


def test_the_schema_agrees_on_missing_attributes(openapi: Any) -> None:
    assert openapi.errors("bulk_create_catalog_items", job(item("A", title=...)))
    assert openapi.errors("bulk_create_catalog_items", job(item("A", price="9.99")))


def test_an_unknown_job_is_404_and_the_key_is_needed(fake: FakeKlaviyo) -> None:
    assert look(fake, "nope").status_code == 404
    job_id = create(fake, job(item("K"))).json()["data"]["id"]
    without = httpx.get(f"{fake.url}{JOBS}/{job_id}", headers={"revision": "2026-07-15"})
    assert without.status_code == 401
    assert httpx.delete(f"{fake.url}{JOBS}/{job_id}", headers=HEADERS).status_code == 405
    assert [r["endpoint"] for r in fake.requests] == [
        "get_bulk_create_catalog_items_job",
        "bulk_create_catalog_items",
        "get_bulk_create_catalog_items_job",
        "get_bulk_create_catalog_items_job",
    ]
