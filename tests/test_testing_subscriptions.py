"""Bulk Subscribe and Bulk Unsubscribe Profiles at the stand-in, over real HTTP: consent per
profile, list and channel, what Klaviyo refuses (with its pointer), Klaviyo's rule that a
profile not in the list is unsubscribed globally, faults and rate windows, the inspector."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime, timedelta
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
SUBSCRIBE = "/api/profile-subscription-bulk-create-jobs"
UNSUBSCRIBE = "/api/profile-subscription-bulk-delete-jobs"
LIST = "Y6nRLr"
EMAIL = "matt-kemp@klaviyo-demo.com"
PHONE = "+15005550006"
P0 = "/data/attributes/profiles/data/0"


def consent(channel: str, value: str = "SUBSCRIBED", **params: Any) -> dict[str, Any]:
    return {channel: {"marketing": {"consent": value, **params}}}


def person(subscriptions: dict[str, Any], **attributes: Any) -> dict[str, Any]:
    return {"type": "profile", "attributes": {**attributes, "subscriptions": subscriptions}}


def job(
    job_type: str, profiles: list[dict[str, Any]], list_id: str | None = LIST, **attributes: Any
) -> dict[str, Any]:
    data: dict[str, Any] = {
        "type": job_type,
        "attributes": {**attributes, "profiles": {"data": profiles}},
    }
    if list_id is not None:
        data["relationships"] = {"list": {"data": {"type": "list", "id": list_id}}}
    return {"data": data}


def subscribe_body(*profiles: dict[str, Any], **options: Any) -> dict[str, Any]:
    return job("profile-subscription-bulk-create-job", list(profiles), **options)


def unsubscribe_body(*profiles: dict[str, Any], **options: Any) -> dict[str, Any]:
    return job("profile-subscription-bulk-delete-job", list(profiles), **options)


def post(fake: FakeKlaviyo, path: str, body: Any) -> httpx.Response:
    return httpx.post(fake.url + path, content=json.dumps(body).encode(), headers=HEADERS)


def client_error(openapi: Any, operation: str) -> Any:
    from openapi_schema_validator import OAS30Validator

    doc = openapi.document(operation)
    schema = doc["components"]["responses"]["ClientError"]["content"]["application/vnd.api+json"]
    return OAS30Validator({**schema["schema"], "components": doc["components"]})


def pointers(response: httpx.Response, status: int = 400) -> list[str]:
    assert response.status_code == status, response.text
    return [error["source"].get("pointer") for error in response.json()["errors"]]


def rows(fake: FakeKlaviyo, list_id: str | None = None) -> list[tuple[Any, ...]]:
    keys = ("email", "phone_number", "list_id", "channel", "consent", "global")
    return [tuple(row[key] for key in keys) for row in fake.subscriptions(list_id)]


# ---- subscribe


def test_email_and_sms_subscriptions_are_recorded_per_list_and_channel(
    fake: FakeKlaviyo, openapi: Any
) -> None:
    body = subscribe_body(
        person({**consent("email"), **consent("sms")}, email=EMAIL.upper(), phone_number=PHONE),
        person(consent("email"), email="ann@klaviyo-demo.com"),
        custom_source="Footer form",
    )
    openapi.validate("bulk_subscribe_profiles", body)
    answer = post(fake, SUBSCRIBE, body)
    assert answer.status_code == 202 and answer.content == b""
    assert rows(fake) == [
        (EMAIL, PHONE, LIST, "email", "SUBSCRIBED", False),
        (EMAIL, PHONE, LIST, "sms", "SUBSCRIBED", False),
        ("ann@klaviyo-demo.com", None, LIST, "email", "SUBSCRIBED", False),
    ]
    first = fake.subscriptions(LIST)[0]
    assert first["custom_source"] == "Footer form" and first["historical_import"] is False
    assert first["consented_at"] is None
    assert [p["email"] for p in fake.profiles()] == [EMAIL, "ann@klaviyo-demo.com"]
    assert fake.subscriptions("other-list") == []


def test_a_subscription_joins_the_existing_profile_and_merges(fake: FakeKlaviyo) -> None:
    event = {
        "data": {
            "type": "event",
            "attributes": {
                "properties": {},
                "metric": {"data": {"type": "metric", "attributes": {"name": "Viewed Product"}}},
                "profile": {"data": {"type": "profile", "attributes": {"phone_number": PHONE}}},
            },
        }
    }
    assert post(fake, "/api/events", event).status_code == 202
    body = subscribe_body(person(consent("email"), email=EMAIL, phone_number=PHONE))
    assert post(fake, SUBSCRIBE, body).status_code == 202
    [profile] = fake.profiles()
    assert profile["email"] == EMAIL and profile["phone_number"] == PHONE
    assert len(fake.events_for(email=EMAIL)) == 1
    by_id = {**person(consent("email"), email=EMAIL), "id": profile["id"]}
    again = subscribe_body(by_id, list_id="other")
    assert post(fake, SUBSCRIBE, again).status_code == 202
    assert {row["list_id"] for row in fake.subscriptions()} == {LIST, "other"}


def test_historical_import_records_consented_at(fake: FakeKlaviyo, openapi: Any) -> None:
    body = subscribe_body(
        person(
            consent("email", consented_at="2024-03-01T12:00:00Z"),
            email=EMAIL,
        ),
        historical_import=True,
        list_id=None,
    )
    openapi.validate("bulk_subscribe_profiles", body)
    assert post(fake, SUBSCRIBE, body).status_code == 202
    [row] = fake.subscriptions()
    assert row["list_id"] is None and row["historical_import"] is True
    assert row["consented_at"] == "2024-03-01T12:00:00+00:00"


def in_future() -> str:
    return (datetime.now(UTC) + timedelta(days=1)).isoformat()


SUBSCRIBE_REFUSALS = [
    # SMS needs an E.164 phone number; email needs an email
    (subscribe_body(person(consent("sms"), email=EMAIL)), [f"{P0}/attributes/phone_number"]),
    (
        subscribe_body(person(consent("sms"), phone_number="5005550006")),
        [f"{P0}/attributes/phone_number"],
    ),
    (subscribe_body(person(consent("email"), phone_number=PHONE)), [f"{P0}/attributes/email"]),
    (subscribe_body(person(consent("email"), email="nope")), [f"{P0}/attributes/email"]),
    # consent values and channels
    (
        subscribe_body(person(consent("email", "UNSUBSCRIBED"), email=EMAIL)),
        [f"{P0}/attributes/subscriptions/email/marketing/consent"],
    ),
    (subscribe_body(person({}, email=EMAIL)), [f"{P0}/attributes/subscriptions"]),
    (
        subscribe_body({"type": "profile", "attributes": {"email": EMAIL}}),
        [f"{P0}/attributes/subscriptions"],
    ),
    # consented_at: only for a historical import, and then required and in the past
    (
        subscribe_body(person(consent("email", consented_at="2024-03-01T12:00:00Z"), email=EMAIL)),
        [f"{P0}/attributes/subscriptions/email/marketing/consented_at"],
    ),
    (
        subscribe_body(person(consent("email"), email=EMAIL), historical_import=True),
        [f"{P0}/attributes/subscriptions/email/marketing/consented_at"],
    ),
    (
        subscribe_body(
            person(consent("email", consented_at=in_future()), email=EMAIL),
            historical_import=True,
        ),
        [f"{P0}/attributes/subscriptions/email/marketing/consented_at"],
    ),
    (
        subscribe_body(
            person(consent("email", consented_at="yesterday"), email=EMAIL),
            historical_import=True,
        ),
        [f"{P0}/attributes/subscriptions/email/marketing/consented_at"],
    ),
    # the job itself
    (subscribe_body(list_id=LIST), ["/data/attributes/profiles/data"]),
    (
        subscribe_body(person(consent("email"), email=EMAIL), list_id=""),
        ["/data/relationships/list/data/id"],
    ),
    (
        {"data": {"type": "profile-subscription-bulk-delete-job", "attributes": {}}},
        ["/data/type", "/data/attributes/profiles"],
    ),
    (
        subscribe_body(person(consent("email"), email=EMAIL), historical_import="yes"),
        ["/data/attributes/historical_import"],
    ),
]


@pytest.mark.parametrize(("body", "expected"), SUBSCRIBE_REFUSALS)
def test_subscribe_refusals_name_the_pointer_and_record_nothing(
    fake: FakeKlaviyo, openapi: Any, body: dict[str, Any], expected: list[str]
) -> None:
    answer = post(fake, SUBSCRIBE, body)
    assert pointers(answer) == expected
    client_error(openapi, "bulk_subscribe_profiles").validate(answer.json())
    assert fake.subscriptions() == [] and fake.profiles() == []


def test_some_refusals_are_klaviyos_rules_beyond_the_schema(openapi: Any) -> None:
    """The schema lets these through; Klaviyo (and the stand-in) refuse them."""
    for body, _ in SUBSCRIBE_REFUSALS[:2] + SUBSCRIBE_REFUSALS[7:10]:
        assert openapi.errors("bulk_subscribe_profiles", body) == []


def test_more_than_1000_profiles_is_refused(fake: FakeKlaviyo) -> None:
    many = [person(consent("email"), email=f"p{i}@klaviyo-demo.com") for i in range(1001)]
    assert pointers(post(fake, SUBSCRIBE, subscribe_body(*many))) == [
        "/data/attributes/profiles/data"
    ]
    assert post(fake, SUBSCRIBE, subscribe_body(*many[:1000])).status_code == 202
    assert len(fake.subscriptions(LIST)) == 1000


def test_an_unknown_profile_id_is_404(fake: FakeKlaviyo) -> None:
    body = subscribe_body(person(consent("email"), email=EMAIL))
    body["data"]["attributes"]["profiles"]["data"][0]["id"] = "01NOPE"
    assert pointers(post(fake, SUBSCRIBE, body), 404) == [f"{P0}/id"]
    assert fake.subscriptions() == []


# ---- unsubscribe


def test_unsubscribing_a_member_leaves_the_list_only(fake: FakeKlaviyo, openapi: Any) -> None:
    post(fake, SUBSCRIBE, subscribe_body(person(consent("email"), email=EMAIL)))
    post(fake, SUBSCRIBE, subscribe_body(person(consent("email"), email=EMAIL), list_id="B"))
    body = unsubscribe_body(person(consent("email", "UNSUBSCRIBED"), email=EMAIL))
    openapi.validate("bulk_unsubscribe_profiles", body)
    answer = post(fake, UNSUBSCRIBE, body)
    assert answer.status_code == 202 and answer.content == b""
    assert rows(fake) == [
        (EMAIL, None, LIST, "email", "UNSUBSCRIBED", False),
        (EMAIL, None, "B", "email", "SUBSCRIBED", False),
    ]


def test_unsubscribing_a_non_member_is_global(fake: FakeKlaviyo, openapi: Any) -> None:
    post(fake, SUBSCRIBE, subscribe_body(person(consent("email"), email=EMAIL), list_id="B"))
    post(fake, SUBSCRIBE, subscribe_body(person(consent("sms"), phone_number=PHONE), list_id="B"))
    body = unsubscribe_body(person(consent("email", "UNSUBSCRIBED"), email=EMAIL))
    openapi.validate("bulk_unsubscribe_profiles", body)
    assert post(fake, UNSUBSCRIBE, body).status_code == 202
    assert rows(fake) == [
        (EMAIL, None, "B", "email", "UNSUBSCRIBED", True),  # list B too: it is global
        (None, PHONE, "B", "sms", "SUBSCRIBED", False),  # another profile, another channel
        (EMAIL, None, LIST, "email", "UNSUBSCRIBED", True),
    ]
    assert [row["global"] for row in fake.subscriptions(LIST)] == [True]


def test_unsubscribing_with_no_list_and_an_unknown_person_is_global(fake: FakeKlaviyo) -> None:
    body = unsubscribe_body(
        person(consent("sms", "UNSUBSCRIBED"), phone_number=PHONE), list_id=None
    )
    assert post(fake, UNSUBSCRIBE, body).status_code == 202
    assert rows(fake) == [(None, PHONE, None, "sms", "UNSUBSCRIBED", True)]
    assert rows(fake, "any-list") == rows(fake)  # a row of no list applies to every list
    # subscribing again lifts it for that list
    post(fake, SUBSCRIBE, subscribe_body(person(consent("sms"), phone_number=PHONE)))
    assert rows(fake, LIST)[-1] == (None, PHONE, LIST, "sms", "SUBSCRIBED", False)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            unsubscribe_body(person(consent("email", "UNSUBSCRIBED"), phone_number=PHONE)),
            [f"{P0}/attributes/email"],
        ),
        (
            unsubscribe_body(person(consent("sms", "UNSUBSCRIBED"), email=EMAIL)),
            [f"{P0}/attributes/phone_number"],
        ),
        (
            unsubscribe_body(person(consent("email"), email=EMAIL)),
            [f"{P0}/attributes/subscriptions/email/marketing/consent"],
        ),
        (
            unsubscribe_body(
                *[
                    person(consent("email", "UNSUBSCRIBED"), email=f"p{i}@klaviyo-demo.com")
                    for i in range(101)
                ]
            ),
            ["/data/attributes/profiles/data"],
        ),
    ],
)
def test_unsubscribe_refusals(
    fake: FakeKlaviyo, openapi: Any, body: dict[str, Any], expected: list[str]
) -> None:
    answer = post(fake, UNSUBSCRIBE, body)
    assert pointers(answer) == expected
    client_error(openapi, "bulk_unsubscribe_profiles").validate(answer.json())
    assert fake.subscriptions() == []


# ---- the common pipeline, the Python API over HTTP, the inspector


def test_a_503_injected_on_subscribe_records_nothing_then_the_retry_lands(
    fake: FakeKlaviyo,
) -> None:
    body = subscribe_body(person(consent("email"), email=EMAIL))
    fake.fail_next(503, retry_after=2)
    failed = post(fake, SUBSCRIBE, body)
    assert failed.status_code == 503 and failed.headers["Retry-After"] == "2"
    assert failed.json()["errors"][0]["code"] == "service_unavailable"
    assert fake.subscriptions() == []
    assert post(fake, SUBSCRIBE, body).status_code == 202
    assert len(fake.subscriptions()) == 1
    assert [(r["endpoint"], r["status"]) for r in fake.requests] == [
        ("bulk_subscribe_profiles", 503),
        ("bulk_subscribe_profiles", 202),
    ]


def test_rate_windows_are_klaviyos(fake: FakeKlaviyo) -> None:
    body = subscribe_body(person(consent("email"), email=EMAIL))
    assert post(fake, SUBSCRIBE, body).headers["RateLimit-Limit"] == "750"
    fake.set_rate_limits("klaviyo")
    assert fake.rate_limits["bulk_subscribe_profiles"] == [[75, 1.0], [750, 60.0]]
    assert fake.rate_limits["bulk_unsubscribe_profiles"] == [[75, 1.0], [750, 60.0]]
    fake.set_rate_limits({"bulk_unsubscribe_profiles": [(1, 60.0)]})
    leave = unsubscribe_body(person(consent("email", "UNSUBSCRIBED"), email=EMAIL))
    assert post(fake, UNSUBSCRIBE, leave).status_code == 202
    assert post(fake, UNSUBSCRIBE, leave).status_code == 429
    assert post(fake, SUBSCRIBE, body).status_code == 202  # another endpoint, another window


def test_control_routes_and_the_inspector_show_consent_escaped(fake: FakeKlaviyo) -> None:
    nasty = '<script>alert("x")</script>'
    post(
        fake,
        SUBSCRIBE,
        subscribe_body(person(consent("email"), email=EMAIL), custom_source=nasty, list_id="<b>"),
    )
    listed = httpx.get(fake.url + "/_fake/subscriptions", params={"list_id": "<b>"}).json()
    assert listed == fake.subscriptions("<b>") and listed[0]["custom_source"] == nasty
    assert httpx.get(fake.url + "/_fake/subscriptions").json() == fake.subscriptions()
    page = httpx.get(fake.url + "/").text
    assert "<h2>Profiles</h2>" in page and "<h2>Subscriptions</h2>" in page
    assert nasty not in page and "&lt;script&gt;" in page and "&lt;b&gt;" in page
    assert EMAIL in page and "SUBSCRIBED" in page
    assert "http" not in page.split("<body>", 1)[1].replace(fake.url, "").replace(
        "http://klaviyo.fake", ""
    )


def test_reset_forgets_consent(fake: FakeKlaviyo) -> None:
    post(fake, SUBSCRIBE, subscribe_body(person(consent("email"), email=EMAIL)))
    before = copy.deepcopy(fake.subscriptions())
    assert before
    fake.reset()
    assert fake.subscriptions() == [] and fake.profiles() == []
