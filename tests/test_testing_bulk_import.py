"""Bulk Import Profiles at the stand-in, over real HTTP: an asynchronous job whose per-profile
failures are ``import-error`` resources at the job's import-errors endpoint."""

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
JOBS = "/api/profile-bulk-import-jobs"
PROFILES = "/data/attributes/profiles/data"


def profile(**attributes: Any) -> dict[str, Any]:
    return {"type": "profile", "attributes": attributes}


def job(*profiles: dict[str, Any], lists: tuple[str, ...] = ()) -> dict[str, Any]:
    data: dict[str, Any] = {
        "type": "profile-bulk-import-job",
        "attributes": {"profiles": {"data": list(profiles)}},
    }
    if lists:
        data["relationships"] = {"lists": {"data": [{"type": "list", "id": i} for i in lists]}}
    return {"data": data}


def create(fake: FakeKlaviyo, body: Any) -> httpx.Response:
    return httpx.post(fake.url + JOBS, content=json.dumps(body).encode(), headers=HEADERS)


def get(fake: FakeKlaviyo, path: str) -> httpx.Response:
    return httpx.get(fake.url + path, headers=HEADERS)


def schema(openapi: Any, operation: str, path: str, method: str, status: str) -> Any:
    from openapi_schema_validator import OAS30Validator

    doc = openapi.document(operation)
    content = doc["paths"][path][method]["responses"][status]["content"]
    return OAS30Validator(
        {**content["application/vnd.api+json"]["schema"], "components": doc["components"]}
    )


def test_profiles_are_upserted_and_failures_are_import_errors(
    fake: FakeKlaviyo, openapi: Any
) -> None:
    existing = fake.exchange_id_for("old@klaviyo-demo.com")  # a profile already known
    assert existing
    body = job(
        profile(email="new@klaviyo-demo.com", first_name="New"),
        profile(email="old@klaviyo-demo.com", properties={"Tier": "gold"}),
        profile(email="not-an-email"),
        profile(first_name="nobody"),
        lists=("Y6nRLr",),
    )
    openapi.validate("bulk_import_profiles", body)
    created = create(fake, body)
    assert created.status_code == 202, created.text
    schema(openapi, "bulk_import_profiles", JOBS, "post", "202").validate(created.json())
    job_id = created.json()["data"]["id"]
    assert created.json()["data"]["attributes"]["status"] == "queued"

    document = get(fake, f"{JOBS}/{job_id}").json()
    schema(openapi, "get_bulk_import_profiles_job", JOBS + "/{job_id}", "get", "200").validate(
        document
    )
    attributes = document["data"]["attributes"]
    assert attributes["status"] == "complete"
    assert (attributes["total_count"], attributes["completed_count"]) == (4, 2)
    assert attributes["failed_count"] == 2
    relationships = document["data"]["relationships"]
    assert len(relationships["profiles"]["data"]) == 2
    assert relationships["lists"]["data"] == [{"type": "list", "id": "Y6nRLr"}]
    error_refs = relationships["import-errors"]["data"]
    assert len(error_refs) == 2

    related = relationships["import-errors"]["links"]["related"]
    errors = httpx.get(related, headers=HEADERS).json()["data"]
    assert [e["id"] for e in errors] == [r["id"] for r in error_refs]
    assert [e["attributes"]["source"]["pointer"] for e in errors] == [
        f"{PROFILES}/2/attributes/email",
        f"{PROFILES}/3/attributes",
    ]
    assert errors[0]["type"] == "import-error"
    assert errors[0]["attributes"]["original_payload"] == profile(email="not-an-email")
    by_email = {p["email"]: p for p in fake.profiles()}
    assert set(by_email) == {"new@klaviyo-demo.com", "old@klaviyo-demo.com"}
    assert by_email["old@klaviyo-demo.com"]["attributes"]["properties"] == {"Tier": "gold"}


def test_fail_import_profiles_and_the_control_route(fake: FakeKlaviyo) -> None:
    fake.fail_import_profiles(["Sarah@Klaviyo-Demo.com"], detail="Suppressed.")
    httpx.post(fake.url + "/_fake/import-failures", json={"identifiers": ["C-2"]})
    body = job(
        profile(email="sarah@klaviyo-demo.com"),
        profile(external_id="C-2"),
        profile(external_id="C-3"),
    )
    job_id = create(fake, body).json()["data"]["id"]
    errors = get(fake, f"{JOBS}/{job_id}/import-errors").json()["data"]
    assert [(e["attributes"]["source"]["pointer"], e["attributes"]["detail"]) for e in errors] == [
        (f"{PROFILES}/0", "Suppressed."),
        (f"{PROFILES}/1", "The profile could not be imported."),
    ]
    assert [p["external_id"] for p in fake.profiles()] == ["C-3"]


@pytest.mark.parametrize(
    ("body", "pointer"),
    [
        (job("nope"), f"{PROFILES}/0"),
        (job({"type": "profiles", "attributes": {}}), f"{PROFILES}/0/type"),
        (job({"type": "profile"}), f"{PROFILES}/0/attributes"),
        (
            {"data": {"type": "profile-bulk-import-job", "attributes": {}}},
            "/data/attributes/profiles",
        ),
        (
            {"data": {"type": "profile-import-job", "attributes": {"profiles": {"data": []}}}},
            "/data/type",
        ),
        (
            {
                "data": {
                    "type": "profile-bulk-import-job",
                    "attributes": {"profiles": {"data": []}},
                    "relationships": {"lists": {"data": [{"type": "list"}]}},
                }
            },
            "/data/relationships/lists/data/0/id",
        ),
    ],
)
def test_a_bad_body_is_400_with_the_pointer(
    fake: FakeKlaviyo, openapi: Any, body: dict, pointer: str
) -> None:
    assert openapi.errors("bulk_import_profiles", body)
    answer = create(fake, body)
    assert answer.status_code == 400, answer.text
    assert [e["source"]["pointer"] for e in answer.json()["errors"]] == [pointer]
    assert fake.jobs() == []


def test_more_than_10000_profiles_is_400(fake: FakeKlaviyo) -> None:
    body = job(*[profile(external_id=str(i)) for i in range(10_001)])
    answer = create(fake, body)
    assert answer.status_code == 400
    assert answer.json()["errors"][0]["source"]["pointer"] == PROFILES


def test_unknown_jobs_are_404_and_limits_are_klaviyos(fake: FakeKlaviyo) -> None:
    assert get(fake, f"{JOBS}/nope").status_code == 404
    assert get(fake, f"{JOBS}/nope/import-errors").status_code == 404
    answer = create(fake, job(profile(email="a@klaviyo-demo.com")))
    assert answer.headers["RateLimit-Limit"] == "150"
