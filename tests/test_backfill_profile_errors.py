"""A Bulk Import Profiles job that refuses some profiles: the follow-up reads the job's
import-errors (every page), and each refused profile becomes its own dead letter with Klaviyo's
error; the others are imported. Real pipeline (outbox, drain and follow-up in this process), the
stand-in's job and its paged import-errors."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest
from flask import Flask

from flask_klaviyo.backfill.profiles import BULK_IMPORT
from flask_klaviyo.backfill.reader import numbered
from flask_klaviyo.backfill.runner import run_backfill
from flask_klaviyo.delivery.operations import Operation
from flask_klaviyo.delivery.profile_kinds import PROFILE_IMPORT_CHUNK

pytestmark = pytest.mark.usefixtures("quick_import_jobs")

SUPPRESSED = "This profile's email address is suppressed."


@pytest.fixture
def app(make_app: Callable[..., Flask], fake: Any) -> Flask:
    fake.job_delay = 0.0
    return make_app(fake=fake)


def convert(email: str) -> list[Operation]:
    return [Operation(BULK_IMPORT, {"attributes": {"email": email}}, email)]


def test_each_refused_profile_is_its_own_dead_letter_with_klaviyos_error(
    app: Flask, fake: Any, openapi: Any
) -> None:
    emails = [f"customer{n}@example.com" for n in range(100)]
    refused = emails[10:55]  # 45 refused by the job, + 1 bad address: three pages of 20
    fake.fail_import_profiles(refused, detail=SUPPRESSED, code="suppressed")
    emails.insert(70, "not-an-email")  # unchecked here; Klaviyo's job refuses it alone
    with app.app_context():
        report = run_backfill(
            "profiles", lambda after: numbered(emails, after=after), convert, checkpoint=None,
            wait=True, bundle=(BULK_IMPORT, PROFILE_IMPORT_CHUNK),
        )  # fmt: skip
        dead = app.extensions["klaviyo"].dead_letters.all()
    assert report.sent == {BULK_IMPORT: 101}
    [post] = [r for r in fake.requests if r["path"] == "/api/profile-bulk-import-jobs"]
    openapi.validate("bulk_import_profiles", post["body"])
    [job] = fake.jobs()
    assert job["failed_count"] == 46
    pages = [r for r in fake.requests if "/import-errors" in r["path"]]
    assert len(pages) == 3  # every page of the job's errors, 20 at a time
    by_email = {record["operation"]["payload"]["attributes"]["email"]: record for record in dead}
    assert set(by_email) == {*refused, "not-an-email"}  # one dead letter each, nobody else
    for email in refused:
        record = by_email[email]
        assert record["reason"] == "job_failed" and record["operation"]["op"] == BULK_IMPORT
        [error] = record["errors"]
        assert (error["code"], error["detail"]) == ("suppressed", SUPPRESSED)
        assert error["pointer"] == f"/data/attributes/profiles/data/{emails.index(email)}"
    [bad] = by_email["not-an-email"]["errors"]
    assert bad["pointer"].startswith("/data/attributes/profiles/data/70/")
    assert {r["operation"]["key"] for r in report.dead} == set(by_email)  # the run's summary
    imported = {p["email"] for p in fake.profiles()}
    assert imported == set(emails) - set(by_email)


def test_the_stand_ins_import_errors_come_in_pages(app: Flask, fake: Any) -> None:
    fake.fail_import_profiles([f"p{n}@example.com" for n in range(5)])
    with app.app_context():
        run_backfill(
            "profiles", lambda after: numbered([f"p{n}@example.com" for n in range(5)],
                                               after=after),
            convert, checkpoint=None, wait=True, bundle=(BULK_IMPORT, PROFILE_IMPORT_CHUNK),
        )  # fmt: skip
    [job] = fake.jobs()
    url = f"{fake.url}/api/profile-bulk-import-jobs/{job['id']}/import-errors"
    headers = {"Authorization": "Klaviyo-API-Key pk_test_private_key", "revision": "2026-07-15"}
    first = httpx.get(url, params={"page[size]": 2}, headers=headers).json()
    assert len(first["data"]) == 2 and first["links"]["next"]
    second = httpx.get(first["links"]["next"], headers=headers).json()
    third = httpx.get(second["links"]["next"], headers=headers).json()
    assert len(third["data"]) == 1 and third["links"]["next"] is None
    ids = [e["id"] for page in (first, second, third) for e in page["data"]]
    assert len(set(ids)) == 5
    assert httpx.get(url, params={"page[size]": 101}, headers=headers).status_code == 400
    assert httpx.get(url, params={"page[cursor]": "%%"}, headers=headers).status_code == 400
