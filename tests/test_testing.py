"""The local Klaviyo stand-in, over real HTTP: it must accept what Klaviyo accepts, reject what
Klaviyo rejects (with Klaviyo's error shapes and pointers), dedup and merge profiles like Klaviyo,
misbehave on demand, and be drivable from another process."""

from __future__ import annotations

import copy
import gzip
import json
import select
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from flask_klaviyo.testing import FakeKlaviyo

ROOT = Path(__file__).resolve().parents[1]
API_KEY = "pk_test_private_key"  # the key the `fake` fixture accepts
COMPANY_ID = "PUBKEY"
REVISION = "2026-07-15"
EMAIL = "sarah.mason@klaviyo-demo.com"
ORDER_ID = "d47aeda5-1751-4483-a81e-6fcc8ad48711"
HEADERS = {
    "Authorization": f"Klaviyo-API-Key {API_KEY}",
    "revision": REVISION,
    "Content-Type": "application/vnd.api+json",
    "Accept": "application/vnd.api+json",
}
PROFILE_ATTRS = "/data/attributes/profile/data/attributes"
BULK_GROUPS = "/data/attributes/events-bulk-create/data"
# One pooled client for the module: a new httpx client per call costs ~50 ms (TLS context).
http = httpx.Client(timeout=5.0)


# --------------------------------------------------------------------------- bodies


def placed_order(
    unique_id: str | None = ORDER_ID, profile: dict[str, Any] | None = None, **attributes: Any
) -> dict[str, Any]:
    """Klaviyo's own Placed Order example (integration guide), as a Create Event body."""
    attrs: dict[str, Any] = {
        "properties": {
            "OrderId": "1234",
            "Categories": ["Fiction", "Classics", "Children"],
            "ItemNames": ["Winnie the Pooh", "A Tale of Two Cities"],
            "DiscountCode": "Free Shipping",
            "DiscountValue": 5,
            "Brands": ["Kids Books", "Harcourt Classics"],
            "Items": [
                {
                    "ProductID": "1111",
                    "SKU": "WINNIEPOOH",
                    "ProductName": "Winnie the Pooh",
                    "Quantity": 1,
                    "ItemPrice": 9.99,
                    "RowTotal": 9.99,
                    "ProductURL": "http://www.example.com/path/to/product",
                    "ImageURL": "http://www.example.com/path/to/product/image.png",
                    "Categories": ["Fiction", "Children"],
                    "Brand": "Kids Books",
                },
                {
                    "ProductID": "1112",
                    "SKU": "TALEOFTWO",
                    "ProductName": "A Tale of Two Cities",
                    "Quantity": 1,
                    "ItemPrice": 19.99,
                    "RowTotal": 19.99,
                    "ProductURL": "http://www.example.com/path/to/product2",
                    "ImageURL": "http://www.example.com/path/to/product/image2.png",
                    "Categories": ["Fiction", "Classics"],
                    "Brand": "Harcourt Classics",
                },
            ],
            "BillingAddress": {"FirstName": "John", "LastName": "Smith", "City": "Boston"},
        },
        "time": "2026-11-01T10:00:00+00:00",
        "value": 29.98,
        "value_currency": "USD",
        "unique_id": unique_id,
        "metric": {"data": {"type": "metric", "attributes": {"name": "Placed Order"}}},
        "profile": {
            "data": {
                "type": "profile",
                "attributes": profile if profile is not None else {"email": EMAIL},
            }
        },
    }
    if unique_id is None:
        del attrs["unique_id"]
    attrs.update(attributes)
    return {"data": {"type": "event", "attributes": attrs}}


def event(
    metric: str, unique_id: str | None, profile: dict[str, Any], **attributes: Any
) -> dict[str, Any]:
    """A small Create Event body."""
    attrs: dict[str, Any] = {
        "properties": {"ProductName": "Enamel Camp Mug"},
        "metric": {"data": {"type": "metric", "attributes": {"name": metric}}},
        "profile": {"data": {"type": "profile", "attributes": profile}},
    }
    if unique_id is not None:
        attrs["unique_id"] = unique_id
    attrs.update(attributes)
    return {"data": {"type": "event", "attributes": attrs}}


def entry(metric: str, unique_id: str | None, **attributes: Any) -> dict[str, Any]:
    """One event of a bulk group (no profile: the group carries it)."""
    attrs = copy.deepcopy(event(metric, unique_id, {}, **attributes)["data"]["attributes"])
    del attrs["profile"]
    return {"type": "event", "attributes": attrs}


def group(profile: dict[str, Any], *entries: dict[str, Any], **attributes: Any) -> dict[str, Any]:
    return {
        "type": "event-bulk-create",
        "attributes": {
            "profile": {"data": {"type": "profile", "attributes": profile}},
            "events": {"data": list(entries)},
            **attributes,
        },
    }


def bulk(*groups: dict[str, Any]) -> dict[str, Any]:
    return {
        "data": {
            "type": "event-bulk-create-job",
            "attributes": {"events-bulk-create": {"data": list(groups)}},
        }
    }


# --------------------------------------------------------------------------- HTTP helpers


def post(
    fake: FakeKlaviyo,
    path: str,
    body: Any,
    *,
    headers: dict[str, str | None] | None = None,
    timeout: float = 5.0,
) -> httpx.Response:
    merged = {**HEADERS, **(headers or {})}
    sent = {k: v for k, v in merged.items() if v is not None}
    content = body if isinstance(body, bytes | Iterator) else json.dumps(body).encode()
    return http.post(fake.url + path, content=content, headers=sent, timeout=timeout)


def send(fake: FakeKlaviyo, body: Any, **kwargs: Any) -> httpx.Response:
    return post(fake, "/api/events", body, **kwargs)


def send_bulk(fake: FakeKlaviyo, body: Any, **kwargs: Any) -> httpx.Response:
    return post(fake, "/api/event-bulk-create-jobs", body, **kwargs)


def client_post(fake: FakeKlaviyo, path: str, body: Any, company_id: str | None = COMPANY_ID):
    query = "" if company_id is None else f"?company_id={company_id}"
    headers = {"revision": REVISION, "Content-Type": "application/json"}
    return http.post(fake.url + path + query, json=body, headers=headers, timeout=5.0)


def errors_of(response: httpx.Response) -> list[dict[str, Any]]:
    """Klaviyo's JSON:API error document, checked for shape."""
    assert response.headers["content-type"] == "application/vnd.api+json"
    errors = response.json()["errors"]
    assert errors
    for error in errors:
        assert set(error) == {"id", "status", "code", "title", "detail", "source", "meta"}
        uuid.UUID(error["id"])
        assert error["status"] == response.status_code
        assert error["code"] and error["title"] and error["detail"]
        assert error["meta"] == {}
    return errors


def pointers(errors: list[dict[str, Any]]) -> list[str | None]:
    return [e["source"].get("pointer") for e in errors]


def rejected(response: httpx.Response, status: int = 400) -> list[dict[str, Any]]:
    assert response.status_code == status, response.text
    return errors_of(response)


# --------------------------------------------------------------------------- accepting


def test_klaviyos_placed_order_example_is_schema_valid_accepted_and_recorded(
    fake: FakeKlaviyo, openapi: Any
) -> None:
    body = placed_order(profile={"email": EMAIL, "first_name": "Sarah"})
    openapi.validate("create_event", body)
    response = send(fake, body)
    assert response.status_code == 202
    assert response.content == b""
    [recorded] = fake.events
    assert recorded["metric"] == "Placed Order"
    assert recorded["properties"] == body["data"]["attributes"]["properties"]
    assert recorded["profile"] == {"email": EMAIL, "first_name": "Sarah"}
    assert recorded["value"] == 29.98 and recorded["value_currency"] == "USD"
    assert recorded["unique_id"] == ORDER_ID
    assert recorded["time"] == "2026-11-01T10:00:00+00:00"
    assert recorded["backfill"] is False
    assert recorded["endpoint"] == "create_event"
    assert recorded["raw"] == body["data"]
    assert abs(recorded["received_at"] - time.time()) < 5
    profile = fake.profile_of(recorded)
    assert profile["id"] == recorded["profile_id"]
    assert profile["email"] == EMAIL
    assert profile["attributes"] == {"first_name": "Sarah"}


def test_bulk_body_is_schema_valid_accepted_and_recorded_per_profile(
    fake: FakeKlaviyo, openapi: Any
) -> None:
    body = bulk(
        group(
            {"email": EMAIL},
            entry("Ordered Product", "1234_WINNIEPOOH", value=9.99, value_currency="USD"),
            entry("Ordered Product", "1234_TALEOFTWO", value=19.99, backfill=False),
            backfill=True,
        ),
        group({"phone_number": "+15005550006"}, entry("Viewed Product", "v-1")),
    )
    openapi.validate("bulk_create_events", body)
    response = send_bulk(fake, body)
    assert response.status_code == 202 and response.content == b""
    events = fake.events
    assert [(e["metric"], e["unique_id"]) for e in events] == [
        ("Ordered Product", "1234_WINNIEPOOH"),
        ("Ordered Product", "1234_TALEOFTWO"),
        ("Viewed Product", "v-1"),
    ]
    assert {e["endpoint"] for e in events} == {"bulk_create_events"}
    assert events[0]["profile"] == {"email": EMAIL}
    assert events[2]["profile"] == {"phone_number": "+15005550006"}
    assert events[0]["profile_id"] == events[1]["profile_id"] != events[2]["profile_id"]
    assert [e["backfill"] for e in events] == [True, False, False]  # the event's own flag wins
    assert (
        events[0]["raw"]
        == body["data"]["attributes"]["events-bulk-create"]["data"][0]["attributes"]["events"][
            "data"
        ][0]
    )


@pytest.mark.parametrize(
    "overrides",
    [
        pytest.param({"headers": {"Content-Type": "application/json"}}, id="application/json"),
        pytest.param(
            {"headers": {"Content-Type": "application/vnd.api+json; charset=utf-8"}},
            id="charset-param",
        ),
        pytest.param({"path": "/api/events/"}, id="trailing-slash-as-in-klaviyos-curl"),
        pytest.param({"headers": {"revision": "2026-07-15.pre"}}, id="revision-suffix"),
        pytest.param({"body": {"time": "2022-11-08T00:00:00"}}, id="naive-time-as-in-guide"),
        pytest.param({"body": {"time": "1990-01-01T00:00:00Z"}}, id="earliest-time"),
        pytest.param({"body": {"value": 30, "time": None, "value_currency": None}}, id="nulls"),
        pytest.param({"body": {"properties": {f"p{i}": i for i in range(400)}}}, id="400-props"),
    ],
)
def test_variants_klaviyo_accepts(fake: FakeKlaviyo, overrides: dict[str, Any]) -> None:
    body = placed_order(**overrides.get("body", {}))
    path = overrides.get("path", "/api/events")
    response = post(fake, path, body, headers=overrides.get("headers"))
    assert response.status_code == 202, response.text
    assert len(fake.events) == 1


def test_metric_name_of_127_characters_is_accepted_128_is_not(fake: FakeKlaviyo) -> None:
    ok = event("M" * 127, "a", {"email": EMAIL})
    too_long = event("M" * 128, "b", {"email": EMAIL})
    assert send(fake, ok).status_code == 202
    errors = rejected(send(fake, too_long))
    assert errors[0]["source"] == {"pointer": "/data/attributes/metric/data/attributes/name"}
    assert [e["metric"] for e in fake.events] == ["M" * 127]


def test_gzip_encoded_body_is_accepted(fake: FakeKlaviyo) -> None:
    raw = gzip.compress(json.dumps(placed_order()).encode())
    response = send(fake, raw, headers={"Content-Encoding": "gzip"})
    assert response.status_code == 202
    assert fake.events[0]["unique_id"] == ORDER_ID


# --------------------------------------------------------------------------- header rejections


@pytest.mark.parametrize(
    ("authorization", "code"),
    [
        (None, "not_authenticated"),
        ("Bearer pk_test_private_key", "not_authenticated"),
        ("Klaviyo-API-Key", "not_authenticated"),
        ("Klaviyo-API-Key pk_wrong", "authentication_failed"),
        (f"Klaviyo-API-Key {COMPANY_ID}", "authentication_failed"),  # a public key
    ],
)
def test_private_endpoints_require_the_key(
    fake: FakeKlaviyo, authorization: str | None, code: str
) -> None:
    bodies = {
        "/api/events": placed_order(),
        "/api/event-bulk-create-jobs": bulk(group({"email": EMAIL}, entry("Viewed Product", "v"))),
    }
    for path, body in bodies.items():
        [error] = rejected(post(fake, path, body, headers={"Authorization": authorization}), 401)
        assert error["code"] == code
    assert fake.events == []
    assert [r["status"] for r in fake.requests] == [401, 401]


@pytest.mark.parametrize(
    "revision", [None, "", "latest", "2026-07", "2026-13-01", "26-07-15", "2999-01-01"]
)
def test_revision_header_is_required_and_well_formed(
    fake: FakeKlaviyo, revision: str | None
) -> None:
    [error] = rejected(send(fake, placed_order(), headers={"revision": revision}))
    assert error["source"] == {"parameter": "revision"}
    assert "revision" in error["detail"]
    assert fake.events == []


@pytest.mark.parametrize(
    "content_type", [None, "text/plain", "application/x-www-form-urlencoded", "text/json"]
)
def test_other_content_types_get_415(fake: FakeKlaviyo, content_type: str | None) -> None:
    [error] = rejected(send(fake, placed_order(), headers={"Content-Type": content_type}), 415)
    assert error["code"] == "unsupported_media_type"
    assert fake.events == []


@pytest.mark.parametrize("raw", [b"{not json", b"", b'{"data": NaN}', b"\xff\xfe"])
def test_unparseable_body_is_400(fake: FakeKlaviyo, raw: bytes) -> None:
    [error] = rejected(send(fake, raw))
    assert error["code"] == "parse_error"


def test_body_over_5_mb_is_413_and_the_stand_in_keeps_serving(fake: FakeKlaviyo) -> None:
    body = placed_order(properties={f"Blob{i}": "x" * 90_000 for i in range(60)})
    raw = json.dumps(body).encode()
    assert len(raw) > 5 * 1024 * 1024
    [error] = rejected(send(fake, raw), 413)
    assert "5 MB" in error["detail"]
    assert fake.events == []
    assert send(fake, placed_order()).status_code == 202  # the stand-in is still fine


def test_chunked_bodies_are_read_and_size_checked_too(fake: FakeKlaviyo) -> None:
    raw = json.dumps(placed_order()).encode()
    pieces = [raw[i : i + 500] for i in range(0, len(raw), 500)]
    assert send(fake, iter(pieces)).status_code == 202  # an iterator: Transfer-Encoding chunked
    assert fake.requests[-1]["headers"].get("Transfer-Encoding") == "chunked"
    big = (b"x" * 1_000_000 for _ in range(6))
    rejected(send(fake, big), 413)
    assert len(fake.events) == 1


def test_unknown_paths_and_methods(fake: FakeKlaviyo) -> None:
    [error] = rejected(post(fake, "/api/profiles", placed_order()), 404)
    assert error["code"] == "not_found"
    [error] = rejected(http.get(fake.url + "/api/events", headers=HEADERS), 405)
    assert error["code"] == "method_not_allowed"


# --------------------------------------------------------------------------- body rejections


def _set(path: str, value: Any) -> Any:
    """A mutation of the Placed Order body: set (or, with ..., delete) the member at `path`."""

    def apply(body: dict[str, Any]) -> None:
        *parents, last = path.strip("/").split("/")
        target: Any = body
        for part in parents:
            target = target[int(part)] if isinstance(target, list) else target[part]
        if value is ...:
            del target[last]
        else:
            target[last] = value

    return apply


FUTURE = (datetime.now(UTC) + timedelta(days=400)).isoformat()


@pytest.mark.parametrize(
    ("mutate", "pointer"),
    [
        pytest.param(
            _set("data/attributes/value", "29.98"), "/data/attributes/value", id="value-str"
        ),
        pytest.param(
            _set("data/attributes/value", True), "/data/attributes/value", id="value-bool"
        ),
        pytest.param(
            _set("data/attributes/time", "1989-12-31T23:59:59+00:00"),
            "/data/attributes/time",
            id="time-before-1990",
        ),
        pytest.param(_set("data/attributes/time", FUTURE), "/data/attributes/time", id="future"),
        pytest.param(_set("data/attributes/time", "yesterday"), "/data/attributes/time", id="time"),
        pytest.param(
            _set("data/attributes/time", "2026-11-01"), "/data/attributes/time", id="date-only"
        ),
        pytest.param(
            _set("data/attributes/unique_id", 1234), "/data/attributes/unique_id", id="uid"
        ),
        pytest.param(
            _set("data/attributes/backfill", "yes"), "/data/attributes/backfill", id="backfill"
        ),
        pytest.param(
            _set("data/attributes/properties", ["a"]), "/data/attributes/properties", id="props"
        ),
        pytest.param(
            _set("data/attributes/properties", {f"p{i}": i for i in range(401)}),
            "/data/attributes/properties",
            id="401-properties",
        ),
        pytest.param(
            _set("data/attributes/properties", ...), "/data/attributes/properties", id="no-props"
        ),
        pytest.param(
            _set("data/attributes/metric", ...), "/data/attributes/metric", id="no-metric"
        ),
        pytest.param(
            _set("data/attributes/metric/data/attributes/name", ""),
            "/data/attributes/metric/data/attributes/name",
            id="empty-name",
        ),
        pytest.param(
            _set("data/attributes/metric/data/type", "metrics"),
            "/data/attributes/metric/data/type",
            id="metric-type",
        ),
        pytest.param(_set("data/type", "events"), "/data/type", id="data-type"),
        pytest.param(
            _set("data/attributes/profile", ...), "/data/attributes/profile", id="no-prof"
        ),
        pytest.param(
            _set("data/attributes/profile/data/type", "profiles"),
            "/data/attributes/profile/data/type",
            id="profile-type",
        ),
        pytest.param(
            _set("data/attributes/profile/data/attributes", {"first_name": "Sarah"}),
            PROFILE_ATTRS,
            id="no-identifier",
        ),
        pytest.param(
            _set("data/attributes/profile/data/attributes", {"email": None, "phone_number": ""}),
            PROFILE_ATTRS,
            id="empty-identifiers",
        ),
        pytest.param(
            _set("data/attributes/profile/data/attributes/email", "not-an-email"),
            f"{PROFILE_ATTRS}/email",
            id="bad-email",
        ),
        pytest.param(
            _set("data/attributes/profile/data/attributes/phone_number", "555-1234"),
            f"{PROFILE_ATTRS}/phone_number",
            id="bad-phone",
        ),
        pytest.param(
            _set("data/attributes/profile/data/attributes/first_name", 7),
            f"{PROFILE_ATTRS}/first_name",
            id="name-not-string",
        ),
        pytest.param(
            _set("data/attributes/properties/Description", "é" * 60_000),
            "/data/attributes/properties/Description",
            id="string-over-100KB",
        ),
        pytest.param(
            _set("data/attributes/properties/Items/1/a~b", "x" * 102_401),
            "/data/attributes/properties/Items/1/a~0b",
            id="nested-string-over-100KB",
        ),
    ],
)
def test_invalid_event_is_400_with_the_exact_pointer_and_nothing_recorded(
    fake: FakeKlaviyo, mutate: Any, pointer: str
) -> None:
    body = placed_order()
    mutate(body)
    response = send(fake, body)
    errors = rejected(response)
    assert [e["source"] for e in errors] == [{"pointer": pointer}]
    assert errors[0]["code"] == "invalid"
    assert fake.events == []
    assert fake.requests[-1]["status"] == 400
    assert fake.requests[-1]["errors"] == errors


def test_the_schema_alone_does_not_catch_a_missing_identifier(
    fake: FakeKlaviyo, openapi: Any
) -> None:
    body = placed_order(profile={"first_name": "Sarah", "last_name": "Mason"})
    openapi.validate("create_event", body)  # the OpenAPI document allows it ...
    assert pointers(rejected(send(fake, body))) == [PROFILE_ATTRS]  # ... Klaviyo does not


def test_value_as_string_is_also_a_schema_error(fake: FakeKlaviyo, openapi: Any) -> None:
    body = placed_order(value="29.98")
    assert openapi.errors("create_event", body)
    assert pointers(rejected(send(fake, body))) == ["/data/attributes/value"]


def test_bulk_pointer_names_the_group_and_the_event(fake: FakeKlaviyo) -> None:
    body = bulk(
        group({"email": EMAIL}, entry("Viewed Product", "a")),
        group(
            {"email": "other@example.com"},
            entry("Viewed Product", "b"),
            entry("Placed Order", "c", value="19.99"),
        ),
    )
    assert pointers(rejected(send_bulk(fake, body))) == [
        f"{BULK_GROUPS}/1/attributes/events/data/1/attributes/value"
    ]
    assert fake.events == []  # the valid events of the request are not recorded either


def test_bulk_reports_every_bad_field(fake: FakeKlaviyo) -> None:
    body = bulk(
        group({"first_name": "Nobody"}, entry("Viewed Product", "a")),
        group({"email": EMAIL}, entry("Viewed Product", "b", time="1970-01-01T00:00:00Z")),
    )
    assert sorted(pointers(rejected(send_bulk(fake, body)))) == [
        f"{BULK_GROUPS}/0/attributes/profile/data/attributes",
        f"{BULK_GROUPS}/1/attributes/events/data/0/attributes/time",
    ]


def test_bulk_job_type_is_checked(fake: FakeKlaviyo) -> None:
    body = bulk(group({"email": EMAIL}, entry("Viewed Product", "a")))
    body["data"]["type"] = "event-bulk-create"
    assert pointers(rejected(send_bulk(fake, body))) == ["/data/type"]


def test_bulk_allows_1000_events_and_rejects_1001(fake: FakeKlaviyo) -> None:
    entries = [entry("Viewed Product", f"v-{i}") for i in range(1001)]
    too_many = bulk(
        group({"email": EMAIL}, *entries[:600]), group({"email": "b@x.io"}, *entries[600:])
    )
    assert pointers(rejected(send_bulk(fake, too_many))) == [BULK_GROUPS]
    assert fake.events == []
    just_enough = bulk(
        group({"email": EMAIL}, *entries[:600]), group({"email": "b@x.io"}, *entries[600:1000])
    )
    assert send_bulk(fake, just_enough).status_code == 202
    assert len(fake.events) == 1000


def test_repeated_unique_id_in_one_bulk_rejects_the_whole_request(fake: FakeKlaviyo) -> None:
    body = bulk(
        group(
            {"email": EMAIL},
            entry("Ordered Product", "1234_A"),
            entry("Placed Order", "1234_A"),  # another metric: not a repeat
            entry("Ordered Product", "1234_A"),
        )
    )
    errors = rejected(send_bulk(fake, body))
    assert [e["source"]["pointer"] for e in errors] == [
        f"{BULK_GROUPS}/0/attributes/events/data/2/attributes/unique_id"
    ]
    assert "1234_A" in errors[0]["detail"]
    assert fake.events == [] and fake.duplicates == 0


def test_repeat_across_groups_of_the_same_profile_is_a_repeat(fake: FakeKlaviyo) -> None:
    body = bulk(
        group({"email": EMAIL}, entry("Placed Order", "1234")),
        group({"email": "other@example.com"}, entry("Placed Order", "1234")),  # another profile
        group({"email": EMAIL.upper()}, entry("Placed Order", "1234")),  # same, case aside
    )
    assert pointers(rejected(send_bulk(fake, body))) == [
        f"{BULK_GROUPS}/2/attributes/events/data/0/attributes/unique_id"
    ]
    del body["data"]["attributes"]["events-bulk-create"]["data"][2]
    assert send_bulk(fake, body).status_code == 202
    assert len(fake.events) == 2


# --------------------------------------------------------------------------- dedup and profiles


def test_dedup_across_requests_keeps_the_first(fake: FakeKlaviyo) -> None:
    assert send(fake, placed_order(value=29.98)).status_code == 202
    assert send(fake, placed_order(value=1.0)).status_code == 202  # Klaviyo says 202 too
    assert [e["value"] for e in fake.events] == [29.98]
    assert fake.duplicates == 1
    # the same unique_id under another metric or another profile is another event
    assert send(fake, event("Fulfilled Order", ORDER_ID, {"email": EMAIL})).status_code == 202
    assert send(fake, placed_order(profile={"email": "someone@else.io"})).status_code == 202
    assert len(fake.events) == 3 and fake.duplicates == 1


def test_bulk_dedups_against_earlier_events_without_failing(fake: FakeKlaviyo) -> None:
    send(fake, event("Viewed Product", "v-1", {"email": EMAIL}))
    body = bulk(
        group({"email": EMAIL}, entry("Viewed Product", "v-1"), entry("Viewed Product", "v-2"))
    )
    assert send_bulk(fake, body).status_code == 202
    assert [e["unique_id"] for e in fake.events] == ["v-1", "v-2"]
    assert fake.events[0]["endpoint"] == "create_event"
    assert fake.duplicates == 1


def test_missing_unique_id_defaults_to_the_time_truncated_to_the_second(fake: FakeKlaviyo) -> None:
    profile = {"email": EMAIL}
    for when in (
        "2026-11-01T10:00:00.100Z",
        "2026-11-01T10:00:00.900+00:00",
        "2026-11-01T10:00:01Z",
    ):
        assert send(fake, event("Active on Site", None, profile, time=when)).status_code == 202
    assert [e["unique_id"] for e in fake.events] == [
        "2026-11-01T10:00:00+00:00",
        "2026-11-01T10:00:01+00:00",
    ]
    assert fake.duplicates == 1


def test_anonymous_then_identified_merges_into_one_profile(fake: FakeKlaviyo) -> None:
    send(fake, event("Viewed Product", "v-1", {"anonymous_id": "anon-1"}))
    [anonymous] = fake.events
    assert fake.profile_of(anonymous)["email"] is None
    send(fake, event("Added to Cart", "c-1", {"email": EMAIL, "anonymous_id": "anon-1"}))
    viewed, added = fake.events
    assert viewed["profile_id"] == added["profile_id"] == anonymous["profile_id"]
    profile = fake.profile_of(viewed)
    assert profile["email"] == EMAIL and profile["anonymous_ids"] == ["anon-1"]
    assert [e["metric"] for e in fake.events_for(email=EMAIL.upper())] == [
        "Viewed Product",
        "Added to Cart",
    ]
    assert len(fake.profiles()) == 1


def test_two_existing_profiles_merge_into_the_older_with_their_events(fake: FakeKlaviyo) -> None:
    send(fake, event("Placed Order", "o-1", {"email": EMAIL}))
    send(fake, event("Viewed Product", "v-1", {"anonymous_id": "anon-2", "first_name": "Sal"}))
    known, anonymous = fake.events
    assert known["profile_id"] != anonymous["profile_id"]
    send(fake, event("Viewed Product", "v-2", {"anonymous_id": "anon-2", "email": EMAIL}))
    events = fake.events
    assert {e["profile_id"] for e in events} == {known["profile_id"]}
    profile = fake.profile_of(anonymous)  # an old snapshot still finds the merged profile
    assert profile["id"] == known["profile_id"]
    assert profile["merged_from"] == [anonymous["profile_id"]]
    assert profile["anonymous_ids"] == ["anon-2"] and profile["attributes"]["first_name"] == "Sal"
    assert len(fake.events_for("Viewed Product", email=EMAIL)) == 2
    # dedup keys moved with the events: the anonymous view is now a duplicate for the email
    send(fake, event("Viewed Product", "v-1", {"email": EMAIL}))
    assert len(fake.events) == 3 and fake.duplicates == 1


def test_two_different_emails_never_merge(fake: FakeKlaviyo) -> None:
    send(fake, event("Viewed Product", "v-1", {"email": EMAIL, "anonymous_id": "shared"}))
    send(
        fake,
        event("Viewed Product", "v-2", {"email": "partner@example.com", "anonymous_id": "shared"}),
    )
    first, second = fake.events
    assert first["profile_id"] != second["profile_id"]
    assert fake.profile_of(first)["anonymous_ids"] == ["shared"]
    assert fake.profile_of(second)["email"] == "partner@example.com"


def test_phone_and_external_id_resolve_to_the_same_profile(fake: FakeKlaviyo) -> None:
    send(fake, event("A", "1", {"email": EMAIL, "phone_number": "+15005550006"}))
    send(fake, event("B", "1", {"phone_number": "+15005550006"}))
    send(fake, event("C", "1", {"phone_number": "+15005550006", "external_id": "cust-9"}))
    send(fake, event("D", "1", {"external_id": "cust-9"}))
    assert len({e["profile_id"] for e in fake.events}) == 1
    assert len(fake.events_for(email=EMAIL)) == 4


def test_exchange_id_resolves_to_the_emails_profile(fake: FakeKlaviyo) -> None:
    token = fake.exchange_id_for("Sarah.Mason@Klaviyo-Demo.com")
    assert token == fake.exchange_id_for(EMAIL)  # stable per email
    assert token.endswith(f".{COMPANY_ID}") and EMAIL not in token
    assert quote(token, safe="") != token  # like the real one, it must be URL-encoded in links
    assert fake.exchange_id_for("someone@else.io") != token
    send(fake, event("Viewed Product", "v-1", {"_kx": token}))
    send(fake, event("Placed Order", "o-1", {"email": EMAIL}))
    viewed, placed = fake.events
    assert viewed["profile"] == {"_kx": token}
    assert viewed["profile_id"] == placed["profile_id"]
    assert fake.profile_of(viewed)["email"] == EMAIL
    assert token in fake.profile_of(viewed)["exchange_ids"]
    # an exchange id the stand-in never minted is just an opaque identifier
    send(fake, event("Viewed Product", "v-2", {"_kx": "forged.PUBKEY"}))
    assert fake.profile_of(fake.events[-1])["email"] is None
    assert len(fake.events_for(email=EMAIL)) == 2


def test_profile_id_is_an_identifier(fake: FakeKlaviyo) -> None:
    send(fake, event("Placed Order", "o-1", {"email": EMAIL}))
    profile_id = fake.events[0]["profile_id"]
    body = event("Viewed Product", "v-1", {})
    body["data"]["attributes"]["profile"]["data"]["id"] = profile_id
    assert send(fake, body).status_code == 202
    assert fake.events[1]["profile_id"] == profile_id
    assert fake.events[1]["profile"] == {"id": profile_id}


# --------------------------------------------------------------------------- faults


def test_429_has_retry_after_and_klaviyos_throttled_error(fake: FakeKlaviyo) -> None:
    fake.fail_next(429, retry_after=7)
    response = send(fake, placed_order())
    [error] = rejected(response, 429)
    assert response.headers["Retry-After"] == "7"
    assert error["code"] == "throttled"
    assert error["detail"] == "Request was throttled. Expected available in 7 seconds."
    assert "RateLimit-Remaining" not in response.headers  # only non-429 answers carry them
    assert fake.events == []
    assert send(fake, placed_order()).status_code == 202  # the fault is spent


def test_429_defaults_to_one_second(fake: FakeKlaviyo) -> None:
    fake.fail_next(429)
    response = send_bulk(fake, bulk(group({"email": EMAIL}, entry("Viewed Product", "v"))))
    [error] = rejected(response, 429)
    assert response.headers["Retry-After"] == "1"
    assert error["detail"].endswith("in 1 second.")


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_server_errors(fake: FakeKlaviyo, status: int) -> None:
    fake.fail_next(status, count=2)
    for _ in range(2):
        [error] = rejected(send(fake, placed_order()), status)
        assert error["code"] and error["title"]
    assert fake.events == []
    assert send(fake, placed_order()).status_code == 202
    assert [r["status"] for r in fake.requests] == [status, status, 202]


def test_injected_400_carries_the_given_pointer_and_detail(fake: FakeKlaviyo) -> None:
    fake.fail_next(400, pointer="/data/attributes/properties/Items", detail="Items is broken")
    [error] = rejected(send(fake, placed_order()))
    assert error["source"] == {"pointer": "/data/attributes/properties/Items"}
    assert error["detail"] == "Items is broken" and error["code"] == "invalid"


def test_faults_are_spent_in_order_by_api_requests_only(fake: FakeKlaviyo) -> None:
    fake.fail_next(503)
    fake.fail_next(429, retry_after=2, code="custom_throttle")
    assert http.get(fake.url + "/_fake/events").status_code == 200
    assert http.get(fake.url + "/").status_code == 200
    assert send(fake, placed_order()).status_code == 503
    response = client_post(fake, "/client/events", placed_order())
    assert response.status_code == 429 and errors_of(response)[0]["code"] == "custom_throttle"
    assert send(fake, placed_order()).status_code == 202


def test_timeout_holds_then_drops_the_connection(fake: FakeKlaviyo) -> None:
    fake.timeout_next(hold=2.0)
    started = time.monotonic()
    with pytest.raises(httpx.ReadTimeout):
        send(fake, placed_order(), timeout=0.5)
    assert time.monotonic() - started < 1.5
    assert fake.events == []
    assert fake.requests[-1]["status"] is None
    assert send(fake, placed_order()).status_code == 202


def test_timeout_hangs_up_without_an_answer(fake: FakeKlaviyo) -> None:
    fake.timeout_next(hold=0.1)
    with pytest.raises(httpx.RemoteProtocolError):
        send(fake, placed_order(), timeout=5)


def test_latency_delays_api_answers_only(fake: FakeKlaviyo) -> None:
    fake.latency = 0.3
    started = time.monotonic()
    assert send(fake, placed_order()).status_code == 202
    assert time.monotonic() - started >= 0.3
    started = time.monotonic()
    assert http.get(fake.url + "/_fake/events").status_code == 200
    assert time.monotonic() - started < 0.3
    with pytest.raises(ValueError):
        fake.latency = -1


def test_fail_next_refuses_nonsense(fake: FakeKlaviyo) -> None:
    with pytest.raises(ValueError):
        fake.fail_next(200)
    with pytest.raises(ValueError):
        fake.fail_next(503, count=0)
    with pytest.raises(ValueError):
        fake.timeout_next(hold=-1)


def test_rate_limit_headers_are_consistent(fake: FakeKlaviyo) -> None:
    first, second = send(fake, placed_order("a")), send(fake, placed_order("b"))
    bulk_answer = send_bulk(fake, bulk(group({"email": EMAIL}, entry("Viewed Product", "v"))))
    assert first.headers["RateLimit-Limit"] == second.headers["RateLimit-Limit"] == "3500"
    remaining = int(first.headers["RateLimit-Remaining"])
    assert int(second.headers["RateLimit-Remaining"]) == remaining - 1
    assert 1 <= int(second.headers["RateLimit-Reset"]) <= 60
    assert bulk_answer.headers["RateLimit-Limit"] == "150"
    assert bulk_answer.headers["RateLimit-Remaining"] == "149"


# --------------------------------------------------------------------------- client endpoints


def test_client_event_needs_the_company_id_not_a_key(fake: FakeKlaviyo, openapi: Any) -> None:
    body = event("Viewed Product", "v-1", {"email": EMAIL})
    openapi.validate("create_client_event", body)
    response = client_post(fake, "/client/events", body)
    assert response.status_code == 202
    assert response.headers["Access-Control-Allow-Origin"] == "*"
    [recorded] = fake.events
    assert recorded["endpoint"] == "create_client_event"
    assert fake.requests[-1]["query"] == {"company_id": COMPANY_ID}
    for company_id in (None, "WRONG"):
        [error] = rejected(client_post(fake, "/client/events", body, company_id=company_id))
        assert error["source"] == {"parameter": "company_id"}
    assert len(fake.events) == 1


def test_client_bulk_is_one_profile_with_its_events(fake: FakeKlaviyo, openapi: Any) -> None:
    body = {
        "data": group(
            {"anonymous_id": "anon-7"},
            entry("Viewed Product", "v-1"),
            entry("Added to Cart", "c-1"),
        )
    }
    openapi.validate("bulk_create_client_events", body)
    assert client_post(fake, "/client/event-bulk-create", body).status_code == 202
    assert [e["endpoint"] for e in fake.events] == ["bulk_create_client_events"] * 2
    body["data"]["attributes"]["events"]["data"][1]["attributes"]["value"] = "9.99"
    response = client_post(fake, "/client/event-bulk-create", body)
    assert pointers(rejected(response)) == ["/data/attributes/events/data/1/attributes/value"]


def test_client_endpoints_check_the_body_and_revision_too(fake: FakeKlaviyo) -> None:
    body = event("Viewed Product", "v-1", {"first_name": "no identifier"})
    assert pointers(rejected(client_post(fake, "/client/events", body))) == [PROFILE_ATTRS]
    response = http.post(
        f"{fake.url}/client/events?company_id={COMPANY_ID}",
        json=event("Viewed Product", "v-1", {"email": EMAIL}),
    )
    assert errors_of(response)[0]["source"] == {"parameter": "revision"}


def test_client_endpoints_answer_cors_preflight(fake: FakeKlaviyo) -> None:
    response = http.options(
        f"{fake.url}/client/events?company_id={COMPANY_ID}",
        headers={"Origin": "http://127.0.0.1:5000", "Access-Control-Request-Method": "POST"},
    )
    assert response.status_code == 204
    assert "revision" in response.headers["Access-Control-Allow-Headers"]
    assert fake.requests == []


# --------------------------------------------------------------------------- Python API


def test_requests_log_what_was_received(fake: FakeKlaviyo) -> None:
    body = placed_order()
    send(fake, body)
    send(fake, b"{broken")
    ok, broken = fake.requests
    assert ok["method"] == "POST" and ok["path"] == "/api/events"
    assert ok["headers"]["Authorization"] == f"Klaviyo-API-Key {API_KEY}"
    assert ok["body"] == body and ok["status"] == 202 and ok["query"] == {}
    assert broken["body"] is None and broken["status"] == 400


def test_events_are_snapshots(fake: FakeKlaviyo) -> None:
    send(fake, placed_order())
    fake.events[0]["metric"] = "changed"
    fake.events[0]["properties"]["OrderId"] = "changed"
    assert fake.events[0]["metric"] == "Placed Order"
    assert fake.events[0]["properties"]["OrderId"] == "1234"


def test_events_for_filters_by_metric_and_email(fake: FakeKlaviyo) -> None:
    send(fake, event("Viewed Product", "1", {"email": EMAIL}))
    send(fake, event("Viewed Product", "2", {"email": "b@example.com"}))
    send(fake, event("Placed Order", "3", {"email": EMAIL}))
    assert [e["unique_id"] for e in fake.events_for("Viewed Product")] == ["1", "2"]
    assert [e["unique_id"] for e in fake.events_for(email=EMAIL)] == ["1", "3"]
    assert [e["unique_id"] for e in fake.events_for("Placed Order", email="b@example.com")] == []


def test_wait_for_returns_when_events_arrive(fake: FakeKlaviyo) -> None:
    timer = threading.Timer(0.2, send, args=(fake, placed_order()))
    timer.start()
    try:
        [found] = fake.wait_for(1, metric="Placed Order", timeout=5)
    finally:
        timer.join()
    assert found["unique_id"] == ORDER_ID


def test_wait_for_says_what_it_has_on_timeout(fake: FakeKlaviyo) -> None:
    send(fake, event("Viewed Product", "v-9", {"email": EMAIL}))
    with pytest.raises(AssertionError) as info:
        fake.wait_for(1, metric="Placed Order", timeout=0.2)
    assert "Viewed Product" in str(info.value) and "v-9" in str(info.value)


def test_reset_forgets_everything(fake: FakeKlaviyo) -> None:
    token = fake.exchange_id_for(EMAIL)
    send(fake, placed_order())
    send(fake, placed_order())
    fake.fail_next(503)
    fake.latency = 0.5
    fake.reset()
    assert fake.events == [] and fake.requests == [] and fake.duplicates == 0
    assert fake.latency == 0
    assert send(fake, event("Viewed Product", "v", {"_kx": token})).status_code == 202
    assert fake.profile_of(fake.events[0])["email"] == EMAIL  # minted tokens stay valid


def test_lifecycle_and_loopback_only() -> None:
    with pytest.raises(ValueError):
        FakeKlaviyo(host="0.0.0.0")
    fake = FakeKlaviyo()
    with pytest.raises(RuntimeError):
        _ = fake.url
    with fake as started:
        assert started is fake
        assert fake.start() is fake  # idempotent
        url = fake.url
        assert url.startswith("http://127.0.0.1:") and not url.endswith("/")
        default_key = {"Authorization": "Klaviyo-API-Key pk_test"}
        assert send(fake, placed_order(), headers=default_key).status_code == 202
    with pytest.raises(httpx.ConnectError):
        http.get(url + "/_fake/events", timeout=2)
    fake.stop()  # idempotent


def test_stop_cuts_keep_alive_connections() -> None:
    other = FakeKlaviyo(api_key=API_KEY).start()
    with httpx.Client(base_url=other.url, headers=HEADERS, timeout=2) as client:
        assert client.post("/api/events", json=placed_order()).status_code == 202
        other.stop()
        with pytest.raises(httpx.TransportError):
            client.post("/api/events", json=placed_order())


# --------------------------------------------------------------------------- control endpoints


def test_control_endpoints_drive_it_from_another_process(fake: FakeKlaviyo) -> None:
    control = httpx.Client(base_url=fake.url + "/_fake", timeout=5)
    with control:
        answer = control.post("/faults", json={"status": 429, "count": 2, "retry_after": 1})
        assert answer.status_code == 200 and answer.json() == {"queued": 2}
        assert [send(fake, placed_order()).status_code for _ in range(3)] == [429, 429, 202]
        send(fake, event("Viewed Product", "v-1", {"email": EMAIL}))

        assert [e["metric"] for e in control.get("/events").json()] == [
            "Placed Order",
            "Viewed Product",
        ]
        assert [
            e["unique_id"]
            for e in control.get("/events", params={"metric": "Viewed Product"}).json()
        ] == ["v-1"]
        assert [r["status"] for r in control.get("/requests").json()] == [429, 429, 202, 202]
        assert control.get("/stats").json() == {
            "accepted": 2,
            "duplicates": 0,
            "rejected": 2,
            "requests": 4,
        }

        kx = control.get("/exchange-id", params={"email": EMAIL}).json()["_kx"]
        assert kx == fake.exchange_id_for(EMAIL)

        assert control.post("/latency", json={"seconds": 0.2}).json() == {"latency": 0.2}
        assert fake.latency == 0.2
        assert control.post("/latency", json={"seconds": "slow"}).status_code == 400

        assert control.post("/faults", json={"timeout": True, "hold": 1}).status_code == 200
        with pytest.raises(httpx.ReadTimeout):
            send(fake, placed_order("late"), timeout=0.5)

        assert control.post("/faults", json={"status": "teapot"}).status_code == 400
        assert control.post("/faults", content=b"nope").status_code == 400
        assert control.get("/nothing-here").status_code == 404

        assert control.post("/reset").json() == {"reset": True}
        assert control.get("/events").json() == [] and fake.latency == 0
        assert control.get("/profiles").json() == []


# --------------------------------------------------------------------------- inspector


def test_inspector_lists_events_newest_first_and_escapes_everything(fake: FakeKlaviyo) -> None:
    send(fake, event("Viewed Product", "first", {"email": EMAIL}))
    evil = event(
        "Placed <i>Order</i>",
        "<u>id</u>",
        {"email": "x@example.com"},
        properties={"ProductName": "Mug</script><b>bold</b>", "Note": "\"quoted\" & 'single'"},
        value=9.99,
        value_currency="USD",
    )
    assert send(fake, evil).status_code == 202
    send(fake, placed_order())  # a duplicate: counted, not listed
    send(fake, placed_order())
    send(fake, placed_order(value="x"))  # a rejected request
    response = http.get(fake.url + "/")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert "script-src 'sha256-" in response.headers["Content-Security-Policy"]
    page = response.text
    assert (
        "</script><b>" not in page and "<b>" not in page and "<i>" not in page and "<u>" not in page
    )
    assert "Mug&lt;/script&gt;&lt;b&gt;bold&lt;/b&gt;" in page
    assert "Placed &lt;i&gt;Order&lt;/i&gt;" in page and "&lt;u&gt;id&lt;/u&gt;" in page
    assert "&amp;" in page and "<details>" in page
    assert "accepted: <strong>3</strong>" in page
    assert "duplicates: <strong>1</strong>" in page
    assert "rejected requests: <strong>1</strong>" in page
    assert (
        page.index("Placed Order") < page.index("Placed &lt;i&gt;") < page.index("Viewed Product")
    )
    assert "x@example.com" in page and "9.99 USD" in page


# --------------------------------------------------------------------------- CLI


def test_cli_runs_in_the_foreground_until_sigterm() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [
        sys.executable,
        "-m",
        "flask_klaviyo.testing",
        "--port",
        str(port),
        "--api-key",
        "pk_cli",
        "--company-id",
        "CLI123",
    ]
    process = subprocess.Popen(
        command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        ready, _, _ = select.select([process.stdout], [], [], 20)
        assert ready, "the CLI printed nothing"
        line = process.stdout.readline().strip()  # type: ignore[union-attr]
        url = f"http://127.0.0.1:{port}"
        assert line == f"Klaviyo stand-in listening on {url} (inspector at /)"
        headers = {**HEADERS, "Authorization": "Klaviyo-API-Key pk_cli"}
        answer = http.post(url + "/api/events", json=placed_order(), headers=headers)
        assert answer.status_code == 202
        answer = http.post(
            f"{url}/client/events?company_id=CLI123",
            json=event("Viewed Product", "v", {"email": EMAIL}),
            headers={"revision": REVISION, "Content-Type": "application/json"},
        )
        assert answer.status_code == 202
        assert [e["endpoint"] for e in http.get(url + "/_fake/events").json()] == [
            "create_event",
            "create_client_event",
        ]
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_main_refuses_a_port_in_use(capsys: pytest.CaptureFixture[str]) -> None:
    from flask_klaviyo.testing import main

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        assert main(["--port", str(taken.getsockname()[1])]) == 2
    assert "could not start" in capsys.readouterr().err


# --------------------------------------------------------------------------- official SDK


def test_the_official_sdk_works_unchanged(fake: FakeKlaviyo, openapi: Any) -> None:
    from klaviyo_api import KlaviyoAPI

    sdk = KlaviyoAPI(API_KEY, max_delay=1, max_retries=0, test_host=fake.url)
    body = placed_order()
    assert sdk.Events.create_event(body) is None  # 202, no body
    [recorded] = fake.events
    assert recorded["unique_id"] == ORDER_ID and recorded["value"] == 29.98
    request = fake.requests[-1]
    headers = {k.lower(): v for k, v in request["headers"].items()}
    assert headers["user-agent"].startswith("klaviyo-api-python/")
    assert headers["content-type"] == "application/vnd.api+json"
    assert headers["authorization"] == f"Klaviyo-API-Key {API_KEY}"
    assert headers["revision"] != REVISION  # the SDK pins its own revision; Klaviyo accepts it
    openapi.validate("create_event", request["body"])  # it adds "backfill": false

    sdk.Events.bulk_create_events(bulk(group({"email": EMAIL}, entry("Viewed Product", "v-1"))))
    assert [e["endpoint"] for e in fake.events] == ["create_event", "bulk_create_events"]


def test_the_sdk_sees_klaviyos_errors(fake: FakeKlaviyo) -> None:
    from klaviyo_api import KlaviyoAPI
    from openapi_client.exceptions import ApiException

    sdk = KlaviyoAPI("pk_wrong", max_delay=1, max_retries=0, test_host=fake.url)
    with pytest.raises(ApiException) as info:
        sdk.Events.create_event(placed_order())
    assert info.value.status == 401
    assert json.loads(info.value.body)["errors"][0]["code"] == "authentication_failed"
    assert fake.events == []


# --------------------------------------------------------------------------- enforced limits


def bulk_of(n: int, tag: str = "r") -> dict[str, Any]:
    return bulk(group({"email": EMAIL}, *(entry("Viewed Product", f"{tag}-{i}") for i in range(n))))


def test_limits_are_not_enforced_unless_asked(fake: FakeKlaviyo) -> None:
    statuses = [send_bulk(fake, bulk_of(1, f"u{i}")).status_code for i in range(15)]
    assert statuses == [202] * 15  # more than Klaviyo's 10/s burst, yet nothing throttled
    assert fake.throttled == 0 and fake.rate_limits == {}


def test_the_burst_window_answers_429_with_retry_after_then_reopens() -> None:
    limits = {"bulk_create_events": [(3, 1.0), (100, 60.0)]}
    with FakeKlaviyo(api_key=API_KEY, rate_limits=limits, time_scale=10) as fake:
        assert [send_bulk(fake, bulk_of(1, f"a{i}")).status_code for i in range(3)] == [202] * 3
        throttled = send_bulk(fake, bulk_of(1, "a3"))
        [error] = rejected(throttled, 429)
        assert error["code"] == "throttled"
        assert "RateLimit-Remaining" not in throttled.headers
        retry_after = float(throttled.headers["Retry-After"])
        assert retry_after == 0.1  # Klaviyo's whole second, ten times faster
        assert send(fake, placed_order()).status_code == 202  # Create Event is not limited here
        assert fake.throttled == 1
        time.sleep(retry_after + 0.01)
        assert send_bulk(fake, bulk_of(1, "a3")).status_code == 202
        assert len(fake.events_for("Viewed Product")) == 4  # the throttled try kept nothing


def test_the_steady_window_caps_requests_and_the_headers_say_so() -> None:
    limits = {"bulk_create_events": [(10, 1.0), (4, 60.0)]}
    with FakeKlaviyo(api_key=API_KEY, rate_limits=limits, time_scale=20) as fake:
        answers = [send_bulk(fake, bulk_of(2, f"s{i}")) for i in range(5)]
        assert [a.status_code for a in answers] == [202, 202, 202, 202, 429]
        assert [a.headers["RateLimit-Limit"] for a in answers[:4]] == ["4"] * 4
        assert [a.headers["RateLimit-Remaining"] for a in answers[:4]] == ["3", "2", "1", "0"]
        reset = float(answers[3].headers["RateLimit-Reset"])
        assert 0 < reset <= 3.0  # at most 60 Klaviyo seconds, twenty times faster
        assert 0 < float(answers[4].headers["Retry-After"]) <= 3.0
        assert fake.stats()["accepted"] == 8 and fake.throttled == 1


def test_klaviyos_published_limits_by_name_and_through_the_control_endpoint(
    fake: FakeKlaviyo,
) -> None:
    with httpx.Client(base_url=fake.url + "/_fake", timeout=5) as control:
        answer = control.post("/rate-limits", json={"limits": "klaviyo", "time_scale": 10})
        assert answer.status_code == 200
        state = answer.json()
        assert state["limits"]["bulk_create_events"] == [[10, 1.0], [150, 60.0]]
        assert state["limits"]["create_event"] == [[350, 1.0], [3500, 60.0]]
        assert state["time_scale"] == 10
        statuses = [send_bulk(fake, bulk_of(1, f"k{i}")).status_code for i in range(11)]
        assert statuses == [202] * 10 + [429]
        assert control.get("/rate-limits").json()["throttled"] == 1
        assert control.post("/rate-limits", json={"limits": None}).status_code == 200
        assert send_bulk(fake, bulk_of(1, "k10")).status_code == 202
        bad = control.post("/rate-limits", json={"limits": {"bulk_create_events": [[0, 1]]}})
        assert bad.status_code == 400
        unknown = control.post("/rate-limits", json={"limits": {"nope": [[1, 1]]}})
        assert unknown.status_code == 400
        assert control.post("/rate-limits", json={"time_scale": 0}).status_code == 400
    with pytest.raises(ValueError):
        FakeKlaviyo(rate_limits={"create_event": [(5, -1.0)]})


def test_limits_hold_under_concurrent_clients() -> None:
    """Eight threads hammer a 5-per-window endpoint: no window ever lets a sixth through."""
    limits = {"create_event": [(5, 1.0)]}
    with FakeKlaviyo(api_key=API_KEY, rate_limits=limits, time_scale=5) as fake:
        results: list[tuple[float, int]] = []
        lock = threading.Lock()

        def hammer(n: int) -> None:
            with httpx.Client(timeout=5.0) as own:
                for i in range(10):
                    body = json.dumps(placed_order(f"c{n}-{i}")).encode()
                    status = own.post(fake.url + "/api/events", content=body, headers=HEADERS)
                    with lock:
                        results.append((time.monotonic(), status.status_code))

        threads = [threading.Thread(target=hammer, args=(n,)) for n in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        accepted = sum(1 for _, status in results if status == 202)
        assert accepted == fake.stats()["accepted"]
        assert accepted + fake.throttled == 80
        elapsed = max(t for t, _ in results) - min(t for t, _ in results)
        assert accepted <= 5 * (elapsed / 0.2 + 1) + 0.01  # 5 per 0.2 s window, not more


def test_keep_events_false_counts_and_dedups_without_keeping() -> None:
    with FakeKlaviyo(api_key=API_KEY, keep_events=False) as fake:
        assert send_bulk(fake, bulk_of(3, "lean")).status_code == 202
        assert send_bulk(fake, bulk_of(3, "lean")).status_code == 202  # the same three again
        assert fake.stats()["accepted"] == 3 and fake.duplicates == 3
        assert fake.events == []
        assert [r["body"] for r in fake.requests] == [None, None]


def test_a_long_string_made_of_escapes_is_still_refused(fake: FakeKlaviyo) -> None:
    """The quick size check must not be fooled by escaped quotes and backslashes."""
    sneaky = '"\\' * 52_000  # 104,000 bytes decoded (> 100 KiB), split by escaped quotes
    answer = send(fake, placed_order(properties={"Note": sneaky}))
    [error] = rejected(answer)
    assert error["source"]["pointer"] == "/data/attributes/properties/Note"
    fine = '"\\' * 51_000  # 102,000 bytes: allowed
    assert send(fake, placed_order("fine", properties={"Note": fine})).status_code == 202
