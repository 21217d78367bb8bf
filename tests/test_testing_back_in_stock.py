"""Create Back In Stock Subscription at the stand-in over real HTTP: 202 for a variant of the
catalog, 400 with a pointer otherwise, channels and their identifiers, ``fake.back_in_stock()``."""

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
VARIANT = PREFIX + "MUG-BLUE"


def post(fake: FakeKlaviyo, path: str, payload: Any) -> httpx.Response:
    return httpx.post(fake.url + path, content=json.dumps(payload).encode(), headers=HEADERS)


@pytest.fixture
def stocked(fake: FakeKlaviyo) -> FakeKlaviyo:
    """A catalog with one item and its out-of-stock variant (jobs not looked at: still due)."""
    item = {
        "type": "catalog-item",
        "attributes": {
            "external_id": "MUG",
            "title": "Mug",
            "description": "A mug.",
            "url": "https://shop.example/mug",
            "price": 8,
        },
    }
    variant = {
        "type": "catalog-variant",
        "attributes": {
            "external_id": "MUG-BLUE",
            "title": "Blue mug",
            "description": "Blue.",
            "sku": "MUG-B",
            "inventory_quantity": 0,
            "inventory_policy": 1,
            "price": 8,
            "url": "https://shop.example/mug?c=blue",
        },
        "relationships": {"item": {"data": {"type": "catalog-item", "id": PREFIX + "MUG"}}},
    }
    for short, plural, entry in (("item", "items", item), ("variant", "variants", variant)):
        payload = {
            "data": {
                "type": f"catalog-{short}-bulk-create-job",
                "attributes": {plural: {"data": [entry]}},
            }
        }
        assert post(fake, f"/api/catalog-{short}-bulk-create-jobs", payload).status_code == 202
    return fake


def subscription(
    variant: str = VARIANT, channels: Any = ("EMAIL",), **profile: Any
) -> dict[str, Any]:
    return {
        "data": {
            "type": "back-in-stock-subscription",
            "attributes": {
                "channels": list(channels),
                "profile": {
                    "data": {"type": "profile", "attributes": profile or {"email": "a@b.example"}}
                },
            },
            "relationships": {"variant": {"data": {"type": "catalog-variant", "id": variant}}},
        }
    }


def test_a_subscription_to_a_known_variant_is_202_and_kept(
    stocked: FakeKlaviyo, openapi: Any
) -> None:
    body = subscription(
        channels=("EMAIL", "SMS"), email="Ann@Shop.Example", phone_number="+15005550006"
    )
    openapi.validate("create_back_in_stock_subscription", body)
    answer = post(stocked, "/api/back-in-stock-subscriptions", body)
    assert answer.status_code == 202, answer.text
    assert answer.content == b""
    (row,) = stocked.back_in_stock()
    assert {k: row[k] for k in ("email", "phone_number", "variant", "item", "channels")} == {
        "email": "ann@shop.example",
        "phone_number": "+15005550006",
        "variant": VARIANT,
        "item": PREFIX + "MUG",
        "channels": ["EMAIL", "SMS"],
    }
    assert row["profile_id"] in {p["id"] for p in stocked.profiles()}
    assert stocked.back_in_stock(variant="other") == []
    assert httpx.get(stocked.url + "/_fake/back-in-stock").json()[0]["variant"] == VARIANT
    assert stocked.requests[-1]["endpoint"] == "create_back_in_stock_subscription"
    assert "ann@shop.example" in httpx.get(stocked.url + "/").text


def test_an_unknown_variant_is_refused_with_a_pointer(stocked: FakeKlaviyo, openapi: Any) -> None:
    body = subscription(variant=PREFIX + "NO-SUCH")
    openapi.validate("create_back_in_stock_subscription", body)  # the schema cannot know
    answer = post(stocked, "/api/back-in-stock-subscriptions", body)
    assert answer.status_code == 400
    (error,) = answer.json()["errors"]
    assert error["source"] == {"pointer": "/data/relationships/variant/data/id"}
    assert "does not exist" in error["detail"]
    assert stocked.back_in_stock() == []


def test_a_variant_deleted_with_its_item_is_unknown(stocked: FakeKlaviyo) -> None:
    payload = {
        "data": {
            "type": "catalog-item-bulk-delete-job",
            "attributes": {"items": {"data": [{"type": "catalog-item", "id": PREFIX + "MUG"}]}},
        }
    }
    assert post(stocked, "/api/catalog-item-bulk-delete-jobs", payload).status_code == 202
    answer = post(stocked, "/api/back-in-stock-subscriptions", subscription())
    assert answer.status_code == 400


POINTER = "/data/attributes/profile/data/attributes"


@pytest.mark.parametrize(
    ("body", "pointer"),
    [
        (subscription(channels=("SMS",), email="a@b.example"), f"{POINTER}/phone_number"),
        (subscription(channels=("EMAIL",), phone_number="+15005550006"), f"{POINTER}/email"),
        (subscription(email="not-an-email"), f"{POINTER}/email"),
        (subscription(channels=("SMS",), phone_number="555-0100"), f"{POINTER}/phone_number"),
        (subscription(channels=("FAX",)), "/data/attributes/channels/0"),
        (subscription(channels=()), "/data/attributes/channels"),
        (
            {"data": {**subscription()["data"], "relationships": {}}},
            "/data/relationships/variant",
        ),
        (
            {"data": {**subscription()["data"], "type": "back-in-stock"}},
            "/data/type",
        ),
    ],
)
def test_a_bad_body_is_a_400_with_its_pointer(
    stocked: FakeKlaviyo, body: dict[str, Any], pointer: str
) -> None:
    answer = post(stocked, "/api/back-in-stock-subscriptions", body)
    assert answer.status_code == 400, answer.text
    assert [e["source"]["pointer"] for e in answer.json()["errors"]] == [pointer]
    assert stocked.back_in_stock() == []


def test_faults_apply_to_back_in_stock(stocked: FakeKlaviyo) -> None:
    stocked.fail_next(503)
    assert post(stocked, "/api/back-in-stock-subscriptions", subscription()).status_code == 503
    assert stocked.back_in_stock() == []
    assert post(stocked, "/api/back-in-stock-subscriptions", subscription()).status_code == 202
    stocked.reset()
    assert stocked.back_in_stock() == [] and stocked.catalog_variants == {}
