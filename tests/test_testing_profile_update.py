"""Update Profile (``PATCH /api/profiles/{id}``) at the stand-in, over real HTTP: an identifier
changes and the profile (its id, events and consent) stays; 404 for an unknown id, 409
``duplicate_profile`` for another profile's email or phone; answers checked against
update_profile.json."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from flask_klaviyo.testing import FakeKlaviyo

SUBSCRIBED = {"consent": "SUBSCRIBED"}
API_KEY = "pk_test_private_key"
HEADERS = {
    "Authorization": f"Klaviyo-API-Key {API_KEY}",
    "revision": "2026-07-15",
    "Content-Type": "application/vnd.api+json",
    "Accept": "application/vnd.api+json",
}
OLD = "sarah.mason@klaviyo-demo.com"
NEW = "sarah.m@klaviyo-demo.com"
OPERATION = "update_profile"
PATH = "/api/profiles/{id}"


def patch_body(profile_id: str, meta: Any = None, **attributes: Any) -> dict[str, Any]:
    data: dict[str, Any] = {"type": "profile", "id": profile_id, "attributes": attributes}
    if meta is not None:
        data["meta"] = meta
    return {"data": data}


def patch(fake: FakeKlaviyo, profile_id: str, body: Any, **params: str) -> httpx.Response:
    return httpx.patch(
        f"{fake.url}/api/profiles/{profile_id}",
        content=json.dumps(body).encode(),
        headers=HEADERS,
        params=params,
    )


def post(fake: FakeKlaviyo, path: str, body: Any) -> httpx.Response:
    return httpx.post(fake.url + path, content=json.dumps(body).encode(), headers=HEADERS)


def create_profile(fake: FakeKlaviyo, **attributes: Any) -> str:
    body = {"data": {"type": "profile", "attributes": attributes}}
    answer = post(fake, "/api/profile-import", body)
    assert answer.status_code == 201, answer.text
    return answer.json()["data"]["id"]


def track(fake: FakeKlaviyo, email: str, metric: str, unique_id: str) -> None:
    event = {
        "data": {
            "type": "event",
            "attributes": {
                "properties": {"Order": unique_id},
                "metric": {"data": {"type": "metric", "attributes": {"name": metric}}},
                "profile": {"data": {"type": "profile", "attributes": {"email": email}}},
                "unique_id": unique_id,
            },
        }
    }
    assert post(fake, "/api/events", event).status_code == 202


def answer_validator(openapi: Any, status: str) -> Any:
    from openapi_schema_validator import OAS30Validator, oas30_format_checker

    doc = openapi.document(OPERATION)
    response = doc["paths"][PATH]["patch"]["responses"][status]
    if "$ref" in response:
        response = doc["components"]["responses"][response["$ref"].rsplit("/", 1)[-1]]
    schema = response["content"]["application/vnd.api+json"]["schema"]
    return OAS30Validator(
        {**schema, "components": doc["components"]}, format_checker=oas30_format_checker
    )


def error_pointers(response: httpx.Response, status: int = 400) -> list[str]:
    assert response.status_code == status, response.text
    return [error["source"].get("pointer") for error in response.json()["errors"]]


def test_an_email_change_keeps_one_profile_with_its_events(fake: FakeKlaviyo, openapi: Any) -> None:
    profile_id = create_profile(fake, email=OLD, first_name="Sarah")
    track(fake, OLD, "Placed Order", "1001")
    track(fake, OLD, "Viewed Product", "v-1")
    body = patch_body(profile_id, email=NEW)
    openapi.validate(OPERATION, body)
    answer = patch(fake, profile_id, body)
    assert answer.status_code == 200, answer.text
    answer_validator(openapi, "200").validate(answer.json())
    data = answer.json()["data"]
    assert data["id"] == profile_id and data["attributes"]["email"] == NEW
    assert data["attributes"]["first_name"] == "Sarah"  # left out: left alone
    [profile] = fake.profiles()
    assert profile["id"] == profile_id and profile["email"] == NEW
    assert [e["unique_id"] for e in fake.events_for(email=NEW)] == ["1001", "v-1"]
    assert fake.events_for(email=OLD) == []
    # An event for the new email lands on the same profile; one for the old email makes another.
    track(fake, NEW, "Viewed Product", "v-2")
    assert len(fake.events_for(email=NEW)) == 3 and len(fake.profiles()) == 1
    track(fake, OLD, "Viewed Product", "v-3")
    assert [p["email"] for p in fake.profiles()] == [NEW, OLD]


def test_phone_external_id_nulls_properties_and_patch_properties(
    fake: FakeKlaviyo, openapi: Any
) -> None:
    profile_id = create_profile(fake, email=OLD, last_name="Mason", properties={"a": 1, "b": 2})
    meta = {"patch_properties": {"append": {"skus": "92538"}}}
    body = patch_body(
        profile_id,
        meta,
        phone_number="+15005550006",
        external_id="C-7",
        last_name=None,
        properties={"b": None, "c": 3},
        location={"city": "Boston", "latitude": "42.36"},
    )
    openapi.validate(OPERATION, body)
    answer = patch(fake, profile_id, body)
    assert answer.status_code == 200, answer.text
    answer_validator(openapi, "200").validate(answer.json())
    attributes = answer.json()["data"]["attributes"]
    assert attributes["phone_number"] == "+15005550006" and attributes["external_id"] == "C-7"
    assert attributes["last_name"] is None
    assert attributes["properties"] == {"a": 1, "c": 3, "skus": ["92538"]}
    assert attributes["location"] == {"city": "Boston", "latitude": "42.36"}
    # the new identifiers now find the profile
    again = post(
        fake,
        "/api/profile-import",
        {"data": {"type": "profile", "attributes": {"external_id": "C-7", "title": "Chef"}}},
    )
    assert again.status_code == 200 and again.json()["data"]["id"] == profile_id


def test_additional_fields_subscriptions_show_the_profiles_consent(
    fake: FakeKlaviyo, openapi: Any
) -> None:
    profile_id = create_profile(fake, email=OLD)
    job = {
        "data": {
            "type": "profile-subscription-bulk-create-job",
            "attributes": {
                "custom_source": "Footer form",
                "profiles": {
                    "data": [
                        {
                            "type": "profile",
                            "attributes": {
                                "email": OLD,
                                "subscriptions": {"email": {"marketing": SUBSCRIBED}},
                            },
                        }
                    ]
                },
            },
        }
    }
    assert post(fake, "/api/profile-subscription-bulk-create-jobs", job).status_code == 202
    answer = patch(
        fake,
        profile_id,
        patch_body(profile_id, first_name="Sarah"),
        **{"additional-fields[profile]": "subscriptions"},
    )
    assert answer.status_code == 200, answer.text
    answer_validator(openapi, "200").validate(answer.json())
    subscriptions = answer.json()["data"]["attributes"]["subscriptions"]
    assert subscriptions["email"]["marketing"]["consent"] == "SUBSCRIBED"
    assert subscriptions["email"]["marketing"]["can_receive_email_marketing"] is True
    assert subscriptions["email"]["marketing"]["custom_method_detail"] == "Footer form"
    assert subscriptions["sms"]["marketing"]["consent"] == "NEVER_SUBSCRIBED"
    wrong = patch(fake, profile_id, patch_body(profile_id), **{"additional-fields[profile]": "x"})
    assert wrong.status_code == 400
    assert wrong.json()["errors"][0]["source"] == {"parameter": "additional-fields[profile]"}


def test_unknown_id_is_404(fake: FakeKlaviyo, openapi: Any) -> None:
    answer = patch(fake, "01NOPE", patch_body("01NOPE", email=NEW))
    assert error_pointers(answer, 404) == ["/data/id"]
    answer_validator(openapi, "4XX").validate(answer.json())
    assert fake.profiles() == []


def test_another_profiles_email_or_phone_is_409_duplicate_profile(
    fake: FakeKlaviyo, openapi: Any
) -> None:
    mine = create_profile(fake, email=OLD)
    theirs = create_profile(fake, email=NEW, phone_number="+15005550006")
    clash = patch(fake, mine, patch_body(mine, email=NEW.upper()))
    assert error_pointers(clash, 409) == ["/data/attributes/email"]
    answer_validator(openapi, "4XX").validate(clash.json())
    [error] = clash.json()["errors"]
    assert error["code"] == "duplicate_profile"
    assert error["meta"] == {"duplicate_profile_id": theirs}
    phone = patch(fake, mine, patch_body(mine, phone_number="+15005550006"))
    assert error_pointers(phone, 409) == ["/data/attributes/phone_number"]
    assert phone.json()["errors"][0]["meta"]["duplicate_profile_id"] == theirs
    assert sorted(p["email"] for p in fake.profiles()) == sorted([OLD, NEW])  # nothing changed


@pytest.mark.parametrize(
    ("body", "pointer"),
    [
        (patch_body("{id}", email="not-an-email"), "/data/attributes/email"),
        (patch_body("{id}", phone_number="5005550006"), "/data/attributes/phone_number"),
        (patch_body("OTHER", email=NEW), "/data/id"),
        ({"data": {"type": "profile", "attributes": {"email": NEW}}}, "/data/id"),
        ({"data": {"type": "profiles", "id": "{id}", "attributes": {}}}, "/data/type"),
        ({"data": {"type": "profile", "id": "{id}"}}, "/data/attributes"),
        (patch_body("{id}", properties=["x"]), "/data/attributes/properties"),
        (patch_body("{id}", location={"zip": 2134}), "/data/attributes/location/zip"),
        (patch_body("{id}", email=None), "/data/attributes"),  # no identifier would be left
        (
            patch_body("{id}", meta={"patch_properties": {"unset": 3}}),
            "/data/meta/patch_properties/unset",
        ),
        ({"nope": 1}, "/data"),
    ],
)
def test_a_bad_patch_is_400_with_the_pointer_and_nothing_changes(
    fake: FakeKlaviyo, body: dict[str, Any], pointer: str
) -> None:
    profile_id = create_profile(fake, email=OLD)
    body = json.loads(json.dumps(body).replace("{id}", profile_id))
    assert error_pointers(patch(fake, profile_id, body)) == [pointer]
    [profile] = fake.profiles()
    assert profile["email"] == OLD and profile["phone_number"] is None


def test_the_schema_agrees_on_the_required_id(openapi: Any) -> None:
    assert openapi.errors(OPERATION, {"data": {"type": "profile", "attributes": {}}})
    assert not openapi.errors(OPERATION, patch_body("01X", email=None, external_id="C-1"))


def test_rate_windows_and_the_method(fake: FakeKlaviyo) -> None:
    profile_id = create_profile(fake, email=OLD)
    answer = patch(fake, profile_id, patch_body(profile_id, first_name="S"))
    assert answer.headers["RateLimit-Limit"] == "750"
    fake.set_rate_limits("klaviyo")
    assert fake.rate_limits["update_profile"] == [[75, 1.0], [750, 60.0]]
    fake.set_rate_limits({"update_profile": [(1, 60.0)]})
    assert patch(fake, profile_id, patch_body(profile_id, first_name="T")).status_code == 200
    throttled = patch(fake, profile_id, patch_body(profile_id, first_name="U"))
    assert throttled.status_code == 429 and "Retry-After" in throttled.headers
    got = httpx.get(f"{fake.url}/api/profiles/{profile_id}", headers=HEADERS)
    assert got.status_code == 405
    assert fake.profiles()[0]["attributes"]["first_name"] == "T"


def test_the_in_process_transport_answers_the_same() -> None:
    fake = FakeKlaviyo(api_key=API_KEY)
    with httpx.Client(transport=fake.transport(), base_url="http://klaviyo.fake") as client:
        created = client.post(
            "/api/profile-import",
            content=json.dumps({"data": {"type": "profile", "attributes": {"email": OLD}}}),
            headers=HEADERS,
        )
        profile_id = created.json()["data"]["id"]
        answer = client.patch(
            f"/api/profiles/{profile_id}",
            content=json.dumps(patch_body(profile_id, email=NEW)),
            headers=HEADERS,
        )
    assert answer.status_code == 200 and answer.json()["data"]["attributes"]["email"] == NEW
    assert [p["email"] for p in fake.profiles()] == [NEW]
