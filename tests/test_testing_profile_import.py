"""Create or Update Profile at the stand-in, over real HTTP: Klaviyo's upsert (201 created,
200 updated), its answer shape (checked against the OpenAPI document), and its 4xx pointers."""

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
EMAIL = "sarah.mason@klaviyo-demo.com"
OPERATION = "create_or_update_profile"


def upsert_body(profile_id: str | None = None, meta: Any = None, **attributes: Any) -> dict:
    data: dict[str, Any] = {"type": "profile", "attributes": attributes}
    if profile_id is not None:
        data["id"] = profile_id
    if meta is not None:
        data["meta"] = meta
    return {"data": data}


def upsert(fake: FakeKlaviyo, body: Any) -> httpx.Response:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return httpx.post(fake.url + "/api/profile-import", content=content, headers=HEADERS)


def answer_schema(openapi: Any, status: str) -> Any:
    from openapi_schema_validator import OAS30Validator

    doc = openapi.document(OPERATION)
    response = doc["paths"]["/api/profile-import"]["post"]["responses"][status]
    schema = response["content"]["application/vnd.api+json"]["schema"]
    return OAS30Validator({**schema, "components": doc["components"]})


def error_pointers(response: httpx.Response, status: int = 400) -> list[str]:
    assert response.status_code == status, response.text
    return [error["source"].get("pointer") for error in response.json()["errors"]]


def test_a_new_profile_is_created_201_and_answered_in_klaviyos_shape(
    fake: FakeKlaviyo, openapi: Any
) -> None:
    body = upsert_body(
        email=EMAIL,
        phone_number="+15005550006",
        first_name="Sarah",
        location={"city": "Boston", "latitude": 42.36},
        properties={"Loyalty": "gold"},
    )
    openapi.validate(OPERATION, body)
    answer = upsert(fake, body)
    assert answer.status_code == 201, answer.text
    document = answer.json()
    answer_schema(openapi, "201").validate(document)
    data = document["data"]
    assert data["type"] == "profile" and data["id"]
    assert data["attributes"]["email"] == EMAIL
    assert data["attributes"]["properties"] == {"Loyalty": "gold"}
    [profile] = fake.profiles()
    assert profile["id"] == data["id"] and profile["phone_number"] == "+15005550006"
    assert profile["attributes"]["first_name"] == "Sarah"


def test_the_same_email_updates_200_nulls_clear_and_properties_merge(
    fake: FakeKlaviyo, openapi: Any
) -> None:
    first = upsert(fake, upsert_body(email=EMAIL, first_name="Sarah", properties={"a": 1, "b": 2}))
    body = upsert_body(email=EMAIL.upper(), first_name=None, properties={"b": 3, "c": 4})
    openapi.validate(OPERATION, body)
    second = upsert(fake, body)
    assert second.status_code == 200
    answer_schema(openapi, "200").validate(second.json())
    assert second.json()["data"]["id"] == first.json()["data"]["id"]
    attributes = second.json()["data"]["attributes"]
    assert attributes["first_name"] is None
    assert attributes["properties"] == {"a": 1, "b": 3, "c": 4}
    assert len(fake.profiles()) == 1


def test_patch_properties_append_unappend_unset(fake: FakeKlaviyo, openapi: Any) -> None:
    upsert(fake, upsert_body(email=EMAIL, properties={"skus": ["1"], "gone": True}))
    meta = {
        "patch_properties": {"append": {"skus": "2"}, "unappend": {"skus": "1"}, "unset": "gone"}
    }
    body = upsert_body(email=EMAIL, meta=meta)
    openapi.validate(OPERATION, body)
    assert upsert(fake, body).json()["data"]["attributes"]["properties"] == {"skus": ["2"]}


def test_an_id_changes_the_email_and_events_find_the_profile(fake: FakeKlaviyo) -> None:
    profile_id = upsert(fake, upsert_body(email=EMAIL)).json()["data"]["id"]
    moved = upsert(fake, upsert_body(profile_id, email="new@klaviyo-demo.com"))
    assert (
        moved.status_code == 200
        and moved.json()["data"]["attributes"]["email"] == "new@klaviyo-demo.com"
    )
    event = {
        "data": {
            "type": "event",
            "attributes": {
                "properties": {},
                "metric": {"data": {"type": "metric", "attributes": {"name": "Viewed Product"}}},
                "profile": {
                    "data": {"type": "profile", "attributes": {"email": "new@klaviyo-demo.com"}}
                },
            },
        }
    }
    sent = httpx.post(fake.url + "/api/events", content=json.dumps(event), headers=HEADERS)
    assert sent.status_code == 202
    assert fake.profile_of(fake.events[0])["id"] == profile_id
    assert [p["email"] for p in fake.profiles()] == ["new@klaviyo-demo.com"]


def test_an_event_profile_and_an_import_are_one_profile(fake: FakeKlaviyo) -> None:
    imported = upsert(fake, upsert_body(external_id="C-1", email=EMAIL))
    again = upsert(fake, upsert_body(external_id="C-1", last_name="Mason"))
    assert again.status_code == 200 and again.json()["data"]["id"] == imported.json()["data"]["id"]
    assert again.json()["data"]["attributes"]["email"] == EMAIL


@pytest.mark.parametrize(
    ("body", "pointer"),
    [
        (upsert_body(email="not-an-email"), "/data/attributes/email"),
        (upsert_body(phone_number="5005550006"), "/data/attributes/phone_number"),
        (upsert_body(first_name="no identifier"), "/data/attributes"),
        ({"data": {"type": "profiles", "attributes": {"email": EMAIL}}}, "/data/type"),
        ({"data": {"type": "profile"}}, "/data/attributes"),
        (upsert_body(email=EMAIL, location={"city": 7}), "/data/attributes/location/city"),
        (upsert_body(email=EMAIL, properties=["x"]), "/data/attributes/properties"),
        (
            upsert_body(email=EMAIL, meta={"patch_properties": {"unset": 3}}),
            "/data/meta/patch_properties/unset",
        ),
        ({"nope": 1}, "/data"),
    ],
)
def test_a_bad_body_is_400_with_the_pointer_and_nothing_stored(
    fake: FakeKlaviyo, openapi: Any, body: dict, pointer: str
) -> None:
    assert error_pointers(upsert(fake, body)) == [pointer]
    assert fake.profiles() == []


def test_the_schema_agrees_on_type_errors(openapi: Any) -> None:
    assert openapi.errors(OPERATION, upsert_body(email=EMAIL, properties=["x"]))
    assert openapi.errors(OPERATION, {"data": {"type": "profiles", "attributes": {}}})


def test_unknown_id_is_404_and_identifiers_of_two_profiles_409(fake: FakeKlaviyo) -> None:
    assert error_pointers(upsert(fake, upsert_body("01NOPE", email=EMAIL)), 404) == ["/data/id"]
    first = upsert(fake, upsert_body(email=EMAIL)).json()["data"]["id"]
    upsert(fake, upsert_body(phone_number="+15005550006"))
    clash = upsert(fake, upsert_body(email=EMAIL, phone_number="+15005550006"))
    assert error_pointers(clash, 409) == ["/data/attributes/phone_number"]
    [error] = clash.json()["errors"]
    assert error["code"] == "duplicate_profile" and error["meta"]["duplicate_profile_id"] != first


def test_a_profile_over_100_kb_is_413(fake: FakeKlaviyo) -> None:
    body = upsert_body(email=EMAIL, properties={"blob": "x" * 103_000})
    assert upsert(fake, body).status_code == 413


def test_the_key_and_rate_windows_apply(fake: FakeKlaviyo) -> None:
    refused = httpx.post(
        fake.url + "/api/profile-import",
        content=json.dumps(upsert_body(email=EMAIL)),
        headers={**HEADERS, "Authorization": "Klaviyo-API-Key wrong"},
    )
    assert refused.status_code == 401
    answer = upsert(fake, upsert_body(email=EMAIL))
    assert answer.headers["RateLimit-Limit"] == "750"
    fake.set_rate_limits({"create_or_update_profile": [(1, 60.0)]})
    assert upsert(fake, upsert_body(email=EMAIL)).status_code == 200
    assert upsert(fake, upsert_body(email=EMAIL)).status_code == 429
    assert [r["endpoint"] for r in fake.requests] == ["create_or_update_profile"] * 4
