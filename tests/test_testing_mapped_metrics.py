"""Metrics and the metric mapping at the stand-in, over real HTTP: Get Metrics knows the
metrics of the events received (stable ids), Get Mapped Metrics lists every mapping, Update
Mapped Metric checks its body against update_mapped_metric.json's shape, needs a known metric,
and keeps Klaviyo's windows (1/s, 15/m, 30 a day)."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from flask_klaviyo.testing import FakeKlaviyo
from flask_klaviyo.testing.mapped_metrics import MAPPINGS, metric_id
from flask_klaviyo.testing.registry import KLAVIYO_RATE_LIMITS

API_KEY = "pk_test_private_key"
HEADERS = {
    "Authorization": f"Klaviyo-API-Key {API_KEY}",
    "revision": "2026-07-15",
    "Content-Type": "application/vnd.api+json",
    "Accept": "application/vnd.api+json",
}
EMAIL = "sarah.mason@klaviyo-demo.com"


def call(fake: FakeKlaviyo, method: str, path: str, body: Any = None) -> httpx.Response:
    content = None if body is None else json.dumps(body).encode()
    return httpx.request(method, fake.url + path, content=content, headers=HEADERS)


def track(fake: FakeKlaviyo, metric: str, unique_id: str = "1") -> None:
    event = {
        "data": {
            "type": "event",
            "attributes": {
                "properties": {},
                "metric": {"data": {"type": "metric", "attributes": {"name": metric}}},
                "profile": {"data": {"type": "profile", "attributes": {"email": EMAIL}}},
                "unique_id": unique_id,
            },
        }
    }
    assert call(fake, "POST", "/api/events", event).status_code == 202


def update(mapping: str, target: str | None, kind: str = "metric") -> dict[str, Any]:
    return {
        "data": {
            "type": "mapped-metric",
            "id": mapping,
            "relationships": {kind: {"data": {"type": kind, "id": target}}},
        }
    }


def test_get_metrics_lists_the_metrics_of_received_events(fake: FakeKlaviyo) -> None:
    assert call(fake, "GET", "/api/metrics").json()["data"] == []
    track(fake, "Placed Order")
    track(fake, "Placed Order", "2")
    track(fake, "Refunded Order")
    answer = call(fake, "GET", "/api/metrics")
    assert answer.status_code == 200
    data = answer.json()["data"]
    assert [(m["id"], m["attributes"]["name"]) for m in data] == [
        (metric_id("Placed Order"), "Placed Order"),
        (metric_id("Refunded Order"), "Refunded Order"),
    ]
    assert data[0]["attributes"]["integration"]["name"] == "API"
    assert len(metric_id("Placed Order")) == 6 and metric_id("Placed Order").isalnum()
    assert metric_id("Placed Order") != metric_id("Refunded Order")
    only_api = call(fake, "GET", '/api/metrics?filter=equals(integration.name,"API")')
    assert len(only_api.json()["data"]) == 2
    other = call(fake, "GET", "/api/metrics?filter=equals(integration.name,'Shopify')")
    assert other.json()["data"] == []
    bad = call(fake, "GET", "/api/metrics?filter=equals(name,'x')")
    assert bad.status_code == 400


def test_get_metrics_pages_by_200(fake: FakeKlaviyo) -> None:
    for number in range(205):
        track(fake, f"Metric {number:03d}")
    first = call(fake, "GET", "/api/metrics").json()
    assert len(first["data"]) == 200
    second = httpx.get(first["links"]["next"], headers=HEADERS).json()
    assert len(second["data"]) == 5 and "next" not in second["links"]


def test_mapped_metrics_start_unmapped_and_follow_updates(fake: FakeKlaviyo, openapi: Any) -> None:
    answer = call(fake, "GET", "/api/mapped-metrics")
    assert answer.status_code == 200
    data = answer.json()["data"]
    assert sorted(m["id"] for m in data) == sorted(MAPPINGS)
    assert all("data" not in m["relationships"]["metric"] for m in data)
    track(fake, "Placed Order")
    body = update("revenue", metric_id("Placed Order"))
    openapi.validate("update_mapped_metric", body)
    patched = call(fake, "PATCH", "/api/mapped-metrics/revenue", body)
    assert patched.status_code == 200, patched.text
    assert patched.json()["data"]["relationships"]["metric"]["data"]["id"] == metric_id(
        "Placed Order"
    )
    now = call(fake, "GET", "/api/mapped-metrics?include=metric").json()
    [revenue] = [m for m in now["data"] if m["id"] == "revenue"]
    assert revenue["relationships"]["metric"]["data"] == {
        "type": "metric",
        "id": metric_id("Placed Order"),
    }
    assert [m["attributes"]["name"] for m in now["included"]] == ["Placed Order"]
    unset = call(fake, "PATCH", "/api/mapped-metrics/revenue", update("revenue", None))
    assert unset.status_code == 200
    assert "data" not in unset.json()["data"]["relationships"]["metric"]


@pytest.mark.parametrize(
    ("path", "body", "status", "pointer"),
    [
        ("/api/mapped-metrics/profit", update("profit", "X"), 400, None),
        ("/api/mapped-metrics/revenue", update("refunded_sales", "X"), 400, "/data/id"),
        ("/api/mapped-metrics/revenue", {"data": {"id": "revenue"}}, 400, "/data/type"),
        (
            "/api/mapped-metrics/revenue",
            {"data": {"type": "mapped-metric", "id": "revenue"}},
            400,
            "/data/relationships",
        ),
        (
            "/api/mapped-metrics/revenue",
            {"data": {"type": "mapped-metric", "id": "revenue", "relationships": {}}},
            400,
            "/data/relationships",
        ),
        (
            "/api/mapped-metrics/revenue",
            {
                "data": {
                    "type": "mapped-metric",
                    "id": "revenue",
                    "relationships": {
                        "metric": {"data": {"type": "metric", "id": "X"}},
                        "custom-metric": {"data": {"type": "custom-metric", "id": "Y"}},
                    },
                }
            },
            400,
            "/data/relationships",
        ),
        (
            "/api/mapped-metrics/revenue",
            {
                "data": {
                    "type": "mapped-metric",
                    "id": "revenue",
                    "relationships": {"metric": {"data": {"type": "event", "id": "X"}}},
                }
            },
            400,
            "/data/relationships/metric/data/type",
        ),
        ("/api/mapped-metrics/revenue", update("revenue", "NoSuch"), 404, None),
    ],
)
def test_an_update_that_does_not_fit_is_refused(
    fake: FakeKlaviyo, path: str, body: Any, status: int, pointer: str | None
) -> None:
    answer = call(fake, "PATCH", path, body)
    assert answer.status_code == status, answer.text
    if pointer is not None:
        assert pointer in [e["source"].get("pointer") for e in answer.json()["errors"]]
    mapped = call(fake, "GET", "/api/mapped-metrics").json()["data"]
    assert all("data" not in m["relationships"]["metric"] for m in mapped)


def test_the_published_windows_are_klaviyos() -> None:
    assert KLAVIYO_RATE_LIMITS["get_mapped_metrics"] == ((3, 1.0), (60, 60.0))
    assert KLAVIYO_RATE_LIMITS["update_mapped_metric"] == ((1, 1.0), (15, 60.0), (30, 86400.0))
    assert KLAVIYO_RATE_LIMITS["get_metrics"] == ((10, 1.0), (150, 60.0))


def test_updates_are_limited_to_one_a_second_and_30_a_day(fake: FakeKlaviyo) -> None:
    track(fake, "Placed Order")
    body = update("revenue", metric_id("Placed Order"))
    fake.set_rate_limits("klaviyo")
    assert call(fake, "PATCH", "/api/mapped-metrics/revenue", body).status_code == 200
    burst = call(fake, "PATCH", "/api/mapped-metrics/revenue", body)
    assert burst.status_code == 429 and float(burst.headers["Retry-After"]) >= 1
    # the daily window alone (Klaviyo's third): the 31st update of the day is refused
    fake.set_rate_limits({"update_mapped_metric": [[30, 86400]]})
    codes = [
        call(fake, "PATCH", "/api/mapped-metrics/revenue", body).status_code for _ in range(31)
    ]
    assert codes == [200] * 30 + [429]


def _response_validator(openapi: Any, operation: str, schema: str) -> Any:
    from openapi_schema_validator import OAS30Validator, oas30_format_checker

    doc = openapi.document(operation)
    return OAS30Validator(
        {"$ref": f"#/components/schemas/{schema}", "components": doc["components"]},
        format_checker=oas30_format_checker,
    )


def test_the_answers_fit_klaviyos_response_schemas(fake: FakeKlaviyo, openapi: Any) -> None:
    track(fake, "Placed Order")
    listing = _response_validator(
        openapi, "get_mapped_metrics", "GetMappedMetricResponseCollectionCompoundDocument"
    )
    listing.validate(call(fake, "GET", "/api/mapped-metrics?include=metric").json())
    patched = call(
        fake, "PATCH", "/api/mapped-metrics/revenue", update("revenue", metric_id("Placed Order"))
    )
    _response_validator(openapi, "update_mapped_metric", "PatchMappedMetricResponse").validate(
        patched.json()
    )
    document = call(fake, "GET", "/api/mapped-metrics?include=metric").json()
    listing.validate(document)
    assert len(document["included"]) == 1
