"""Request Profile Deletion at the stand-in, over real HTTP: the profile named by one email,
phone number or id goes with its events and consent; every request is kept; one identifier
exactly; Klaviyo's 3/s, 60/m windows."""

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
DELETE = "/api/data-privacy-deletion-jobs"
OPERATION = "request_profile_deletion"
EMAIL = "sarah.mason@klaviyo-demo.com"
PHONE = "+15005550006"
BASE = "/data/attributes/profile/data"


def deletion_body(profile_id: str | None = None, **attributes: Any) -> dict[str, Any]:
    data: dict[str, Any] = {"type": "profile", "attributes": attributes}
    if profile_id is not None:
        data["id"] = profile_id
    return {
        "data": {"type": "data-privacy-deletion-job", "attributes": {"profile": {"data": data}}}
    }


def post(fake: FakeKlaviyo, path: str, body: Any) -> httpx.Response:
    return httpx.post(fake.url + path, content=json.dumps(body).encode(), headers=HEADERS)


def track(fake: FakeKlaviyo, metric: str, unique_id: str, **who: str) -> None:
    event = {
        "data": {
            "type": "event",
            "attributes": {
                "properties": {},
                "metric": {"data": {"type": "metric", "attributes": {"name": metric}}},
                "profile": {"data": {"type": "profile", "attributes": who}},
                "unique_id": unique_id,
            },
        }
    }
    assert post(fake, "/api/events", event).status_code == 202


def subscribe(fake: FakeKlaviyo, email: str) -> None:
    body = {
        "data": {
            "type": "profile-subscription-bulk-create-job",
            "attributes": {
                "profiles": {
                    "data": [
                        {
                            "type": "profile",
                            "attributes": {
                                "email": email,
                                "subscriptions": {"email": {"marketing": SUBSCRIBED}},
                            },
                        }
                    ]
                }
            },
        }
    }
    assert post(fake, "/api/profile-subscription-bulk-create-jobs", body).status_code == 202


def pointers(response: httpx.Response) -> list[str]:
    assert response.status_code == 400, response.text
    return [error["source"].get("pointer") for error in response.json()["errors"]]


def test_deleting_by_email_removes_the_profile_its_events_and_consent(
    fake: FakeKlaviyo, openapi: Any
) -> None:
    track(fake, "Placed Order", "1001", email=EMAIL, phone_number=PHONE)
    track(fake, "Viewed Product", "v-1", email=EMAIL)
    track(fake, "Viewed Product", "v-1", email="other@klaviyo-demo.com")
    subscribe(fake, EMAIL)
    [sarah, _] = fake.profiles()
    body = deletion_body(email=EMAIL.upper())
    openapi.validate(OPERATION, body)
    answer = post(fake, DELETE, body)
    assert answer.status_code == 202 and answer.content == b""
    assert [p["email"] for p in fake.profiles()] == ["other@klaviyo-demo.com"]
    assert fake.events_for(email=EMAIL) == [] and len(fake.events) == 1
    assert fake.subscriptions() == []
    [asked] = fake.deletions()
    assert asked["email"] == EMAIL and asked["phone_number"] is None and asked["id"] is None
    assert asked["deleted_profile_ids"] == [sarah["id"]] and asked["deleted_events"] == 2
    # gone means gone: the id is unknown, and a new event for the email makes a new profile
    patched = httpx.patch(
        f"{fake.url}/api/profiles/{sarah['id']}",
        content=json.dumps(
            {"data": {"type": "profile", "id": sarah["id"], "attributes": {"first_name": "S"}}}
        ),
        headers=HEADERS,
    )
    assert patched.status_code == 404
    track(fake, "Placed Order", "1001", email=EMAIL)
    assert len(fake.events_for(email=EMAIL)) == 1
    assert fake.profile_of(fake.events_for(email=EMAIL)[0])["id"] != sarah["id"]


@pytest.mark.parametrize("kind", ["phone_number", "id"])
def test_deleting_by_phone_or_id(fake: FakeKlaviyo, openapi: Any, kind: str) -> None:
    track(fake, "Viewed Product", "v-1", phone_number=PHONE)
    [profile] = fake.profiles()
    body = deletion_body(profile["id"]) if kind == "id" else deletion_body(phone_number=PHONE)
    openapi.validate(OPERATION, body)
    assert post(fake, DELETE, body).status_code == 202
    assert fake.profiles() == [] and fake.events == []
    assert fake.deletions()[0][kind] == profile[kind]


def test_a_merged_away_id_deletes_the_survivor(fake: FakeKlaviyo) -> None:
    track(fake, "Viewed Product", "v-1", anonymous_id="anon-1")
    track(fake, "Viewed Product", "v-2", email=EMAIL)
    track(fake, "Viewed Product", "v-3", email=EMAIL, anonymous_id="anon-1")
    [survivor] = fake.profiles()
    [gone] = survivor["merged_from"]
    assert post(fake, DELETE, deletion_body(gone)).status_code == 202
    assert fake.profiles() == [] and fake.events == []
    assert fake.deletions()[0]["deleted_profile_ids"] == [survivor["id"]]


def test_nobody_matching_is_still_accepted_and_recorded(fake: FakeKlaviyo) -> None:
    assert post(fake, DELETE, deletion_body(email="nobody@klaviyo-demo.com")).status_code == 202
    [asked] = fake.deletions()
    assert asked["email"] == "nobody@klaviyo-demo.com" and asked["deleted_profile_ids"] == []
    assert httpx.get(fake.url + "/_fake/deletions").json() == fake.deletions()


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (deletion_body(email=EMAIL, phone_number=PHONE), [BASE]),
        (deletion_body("01ABC", email=EMAIL), [BASE]),
        (deletion_body(), [BASE]),
        (deletion_body(email="not-an-email"), [f"{BASE}/attributes/email"]),
        (deletion_body(phone_number="5005550006"), [f"{BASE}/attributes/phone_number"]),
        (
            {"data": {"type": "data-privacy-deletion-job", "attributes": {}}},
            ["/data/attributes/profile"],
        ),
        (
            {"data": {"type": "deletion", "attributes": {"profile": {"data": {}}}}},
            ["/data/type", f"{BASE}/type", f"{BASE}/attributes"],
        ),
    ],
)
def test_refusals_name_the_pointer_and_delete_nothing(
    fake: FakeKlaviyo, body: dict[str, Any], expected: list[str]
) -> None:
    track(fake, "Viewed Product", "v-1", email=EMAIL, phone_number=PHONE)
    assert pointers(post(fake, DELETE, body)) == expected
    assert len(fake.profiles()) == 1 and len(fake.events) == 1 and fake.deletions() == []


def test_two_identifiers_pass_the_schema_but_not_klaviyo(openapi: Any) -> None:
    assert openapi.errors(OPERATION, deletion_body(email=EMAIL, phone_number=PHONE)) == []


def test_klaviyos_privacy_windows(fake: FakeKlaviyo) -> None:
    first = post(fake, DELETE, deletion_body(email=EMAIL))
    assert first.headers["RateLimit-Limit"] == "60"
    fake.set_rate_limits("klaviyo")
    assert fake.rate_limits["request_profile_deletion"] == [[3, 1.0], [60, 60.0]]
    answers = [post(fake, DELETE, deletion_body(email=EMAIL)).status_code for _ in range(4)]
    assert answers[:3] == [202, 202, 202] and answers[3] == 429
    assert len(fake.deletions()) == 4
