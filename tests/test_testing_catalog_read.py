"""Reading the stand-in's catalog over real HTTP: Get Catalog Items with cursor pagination,
``include=variants``, filters, Get Catalog Variants / Categories, and the inspector."""

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


def job(fake: FakeKlaviyo, short: str, plural: str, entries: list[dict[str, Any]]) -> None:
    """Create ``entries`` with one bulk create job per 100 and check every one completed."""
    for start in range(0, len(entries), 100):
        payload = {
            "data": {
                "type": f"catalog-{short}-bulk-create-job",
                "attributes": {plural: {"data": entries[start : start + 100]}},
            }
        }
        posted = httpx.post(
            f"{fake.url}/api/catalog-{short}-bulk-create-jobs",
            content=json.dumps(payload).encode(),
            headers=HEADERS,
        )
        assert posted.status_code == 202, posted.text
        job_id = posted.json()["data"]["id"]
        got = httpx.get(
            f"{fake.url}/api/catalog-{short}-bulk-create-jobs/{job_id}", headers=HEADERS
        )
        assert got.json()["data"]["attributes"]["errors"] == []


def items(count: int, *, categories: list[str] = ()) -> list[dict[str, Any]]:
    return [
        {
            "type": "catalog-item",
            "attributes": {
                "external_id": f"P{n:03d}",
                "title": f"Product {n}" + (" decaf" if n % 2 else ""),
                "description": "d",
                "url": f"https://shop.example/p/{n}",
                "price": n,
                "published": n % 5 != 0,
            },
            **(
                {
                    "relationships": {
                        "categories": {
                            "data": [{"type": "catalog-category", "id": c} for c in categories]
                        }
                    }
                }
                if categories and n < 3
                else {}
            ),
        }
        for n in range(count)
    ]


def variants(parents: list[int], per: int) -> list[dict[str, Any]]:
    return [
        {
            "type": "catalog-variant",
            "attributes": {
                "external_id": f"P{p:03d}-{v}",
                "title": f"P{p} v{v}",
                "description": "d",
                "sku": f"S{p}-{v}",
                "inventory_quantity": v,
                "price": p,
                "url": f"https://shop.example/p/{p}?v={v}",
            },
            "relationships": {
                "item": {"data": {"type": "catalog-item", "id": f"{PREFIX}P{p:03d}"}}
            },
        }
        for p in parents
        for v in range(per)
    ]


def get(url: str, **params: str) -> httpx.Response:
    """GET ``url`` (a ``links.next`` keeps its own query: httpx would replace it with params)."""
    return httpx.get(url, headers=HEADERS, params=params or None)


def validator(openapi: Any) -> Any:
    from openapi_schema_validator import OAS30Validator, oas30_format_checker

    doc = openapi.document("get_catalog_items")
    schema = doc["paths"]["/api/catalog-items"]["get"]["responses"]["200"]["content"]
    return OAS30Validator(
        {**schema["application/vnd.api+json"]["schema"], "components": doc["components"]},
        format_checker=oas30_format_checker,
    )


def test_pagination_walks_250_items_by_links_next(fake: FakeKlaviyo, openapi: Any) -> None:
    job(fake, "item", "items", items(250))
    seen: list[str] = []
    sizes = []
    url: str | None = fake.url + "/api/catalog-items"
    while url is not None:
        answer = get(url)
        assert answer.status_code == 200, answer.text
        document = answer.json()
        validator(openapi).validate(document)
        sizes.append(len(document["data"]))
        seen += [resource["attributes"]["external_id"] for resource in document["data"]]
        url = document["links"].get("next")
        assert len(sizes) <= 3, "the cursor does not advance"
        if url is not None:
            assert url.startswith(fake.url + "/api/catalog-items?") and "page%5Bcursor%5D" in url
    assert sizes == [100, 100, 50]  # Klaviyo's default page size
    assert seen == [f"P{n:03d}" for n in range(250)]
    assert [r["endpoint"] for r in fake.requests][-3:] == ["get_catalog_items"] * 3


def test_page_size_sort_and_the_cursor_keep_the_other_parameters(fake: FakeKlaviyo) -> None:
    job(fake, "item", "items", items(7))
    first = get(fake.url + "/api/catalog-items", **{"page[size]": "3", "sort": "-created"}).json()
    assert [r["attributes"]["external_id"] for r in first["data"]] == ["P006", "P005", "P004"]
    second = get(first["links"]["next"]).json()
    assert [r["attributes"]["external_id"] for r in second["data"]] == ["P003", "P002", "P001"]
    third = get(second["links"]["next"]).json()
    assert [r["attributes"]["external_id"] for r in third["data"]] == ["P000"]
    assert "next" not in third["links"]


@pytest.mark.parametrize(
    ("params", "parameter"),
    [
        ({"page[size]": "101"}, "page[size]"),
        ({"page[size]": "0"}, "page[size]"),
        ({"page[cursor]": "garbage!"}, "page[cursor]"),
        ({"include": "categories"}, "include"),
        ({"sort": "title"}, "sort"),
        ({"filter": "equals(price,3)"}, "filter"),
        ({"filter": "nonsense"}, "filter"),
    ],
)
def test_bad_parameters_are_400_naming_the_parameter(
    fake: FakeKlaviyo, params: dict[str, str], parameter: str
) -> None:
    answer = get(fake.url + "/api/catalog-items", **params)
    assert answer.status_code == 400, answer.text
    assert answer.json()["errors"][0]["source"] == {"parameter": parameter}


def test_include_variants_and_the_relationships(fake: FakeKlaviyo, openapi: Any) -> None:
    job(
        fake,
        "category",
        "categories",
        [{"type": "catalog-category", "attributes": {"external_id": "BEANS", "name": "Beans"}}],
    )
    job(fake, "item", "items", items(4, categories=[PREFIX + "BEANS"]))
    job(fake, "variant", "variants", variants([0, 2], 3))
    document = get(fake.url + "/api/catalog-items", include="variants").json()
    validator(openapi).validate(document)
    first = document["data"][0]
    assert [v["id"] for v in first["relationships"]["variants"]["data"]] == [
        f"{PREFIX}P000-{v}" for v in range(3)
    ]
    assert first["relationships"]["categories"]["data"] == [
        {"type": "catalog-category", "id": PREFIX + "BEANS"}
    ]
    assert document["data"][3]["relationships"]["categories"]["data"] == []
    assert [v["attributes"]["sku"] for v in document["included"]] == [
        "S0-0",
        "S0-1",
        "S0-2",
        "S2-0",
        "S2-1",
        "S2-2",
    ]
    assert all(v["type"] == "catalog-variant" for v in document["included"])
    assert document["included"][0]["relationships"]["item"]["data"]["id"] == PREFIX + "P000"
    assert "included" not in get(fake.url + "/api/catalog-items").json()

    variants_page = get(
        fake.url + "/api/catalog-variants", filter=f"equals(item.id,'{PREFIX}P002')"
    ).json()
    assert [v["attributes"]["sku"] for v in variants_page["data"]] == ["S2-0", "S2-1", "S2-2"]
    categories = get(fake.url + "/api/catalog-categories").json()["data"]
    assert [
        (c["attributes"]["name"], len(c["relationships"]["items"]["data"])) for c in categories
    ] == [("Beans", 3)]


def test_filters(fake: FakeKlaviyo) -> None:
    job(
        fake,
        "category",
        "categories",
        [{"type": "catalog-category", "attributes": {"external_id": "C", "name": "C"}}],
    )
    job(fake, "item", "items", items(10, categories=[PREFIX + "C"]))

    def ids(filter_text: str) -> list[str]:
        answer = get(fake.url + "/api/catalog-items", filter=filter_text)
        assert answer.status_code == 200, answer.text
        return [r["attributes"]["external_id"] for r in answer.json()["data"]]

    assert ids(f"any(ids,['{PREFIX}P001','{PREFIX}P004'])") == ["P001", "P004"]
    assert ids(f"equals(category.id,'{PREFIX}C')") == ["P000", "P001", "P002"]
    assert ids("equals(published,false)") == ["P000", "P005"]
    assert ids("and(contains(title,'decaf'),equals(published,false))") == ["P005"]


def test_a_catalog_read_can_fail_like_any_endpoint(fake: FakeKlaviyo) -> None:
    fake.fail_next(503)
    assert get(fake.url + "/api/catalog-items").status_code == 503
    assert get(fake.url + "/api/catalog-items").status_code == 200


def test_the_inspector_shows_the_catalog_escaped(fake: FakeKlaviyo) -> None:
    job(
        fake,
        "category",
        "categories",
        [{"type": "catalog-category", "attributes": {"external_id": "X", "name": "<b>Beans</b>"}}],
    )
    entries = items(1, categories=[PREFIX + "X"])
    entries[0]["attributes"]["title"] = "<script>alert(1)</script>"
    job(fake, "item", "items", entries)
    job(fake, "variant", "variants", variants([0], 2))
    page = httpx.get(fake.url + "/").text
    assert "<script>alert(1)</script>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "&lt;b&gt;Beans&lt;/b&gt;" in page
    assert "2 variant(s), 1 in stock" in page and "S0-1" in page
    assert "Catalog categories (1)" in page and "Back-in-stock subscriptions" in page
    assert "http://" not in page.replace(fake.url, "").replace("https://shop.example", "")
    assert httpx.get(fake.url + "/_fake/catalog-variants").json()[PREFIX + "P000-1"]["sku"] == (
        "S0-1"
    )


def test_sparse_fieldsets_answer_only_the_attributes_named(fake: FakeKlaviyo) -> None:
    job(fake, "item", "items", items(2))
    job(fake, "variant", "variants", variants([0, 1], 2))
    answer = get(
        fake.url + "/api/catalog-items",
        include="variants",
        **{"fields[catalog-item]": "external_id,price", "fields[catalog-variant]": "sku"},
    ).json()
    assert [r["attributes"] for r in answer["data"]] == [
        {"external_id": "P000", "price": 0},
        {"external_id": "P001", "price": 1},
    ]
    assert sorted(r["attributes"]["sku"] for r in answer["included"]) == [
        "S0-0", "S0-1", "S1-0", "S1-1"]  # fmt: skip
    assert all(list(r["attributes"]) == ["sku"] for r in answer["included"])
    assert answer["data"][0]["relationships"]["variants"]["data"]  # relationships stay
    wrong = get(fake.url + "/api/catalog-items", **{"fields[catalog-item]": "colour"})
    assert wrong.status_code == 400
    assert wrong.json()["errors"][0]["source"] == {"parameter": "fields[catalog-item]"}
