"""Bulk Import Profiles (an asynchronous job), its GET, and its import errors.

The POST checks the job's framing (a 400 with pointers when it is wrong); each profile is then
checked and upserted when the job is processed, like Klaviyo does: a profile that cannot be
imported (a bad email, no identifier, identifiers of two profiles, or one a test told to fail)
becomes an ``import-error`` listed at ``GET .../profile-bulk-import-jobs/{id}/import-errors``,
with its pointer and original payload; the job itself only counts it in ``failed_count``.
The errors come in pages like Klaviyo's: ``page[size]`` (1..100, default 20), an opaque
``page[cursor]``, ``links.next`` (absolute) while more follow.
"""

from __future__ import annotations

import base64
import binascii
import copy
import json
import logging
import uuid
from typing import Any
from urllib.parse import urlencode

from ._config import MAX_IMPORT_PROFILES, MAX_PROFILE_BYTES
from .jobs import BulkJob, Outcome
from .jsonapi import (
    Answer,
    Checker,
    check_string_sizes,
    document_answer,
    iso,
    one_error,
    problems_answer,
)
from .profile_checks import UPSERT_IDENTIFIERS, check_profile_data
from .profile_import import check_meta
from .profiles import ProfileConflict
from .state import Call, State

log = logging.getLogger(__name__)

JOB_TYPE = "profile-bulk-import-job"
JOBS_PATH = "/api/profile-bulk-import-jobs"
PROFILES_BASE = "/data/attributes/profiles/data"
ERRORS_PAGE, ERRORS_PAGE_MAX = 20, 100  # Klaviyo's default page of import errors, and most


def create_job(call: Call) -> Answer:
    """Check the framing, queue the job, answer 202 with it."""
    checker = Checker()
    attrs = checker.resource(call.body, JOB_TYPE)
    entries = checker.listing(
        attrs, "profiles", "/data/attributes", most=MAX_IMPORT_PROFILES, noun="profiles"
    )
    for index, entry in enumerate(entries):
        base = f"{PROFILES_BASE}/{index}"
        if not isinstance(entry, dict):
            checker.fail(base, "Each profile must be an object.")
            continue
        checker.resource_type(entry, "profile", base)
        checker.member(entry, "attributes", base, "object", required=True)
    lists = _check_lists(checker, call.body)
    if not checker.problems:
        check_string_sizes(checker, call.body, call.raw)
    if checker.problems:
        return problems_answer(checker.problems)
    state = call.state
    with state.lock:
        job = state.jobs.create(
            JOB_TYPE,
            len(entries),
            lambda: _process(state, entries),
            delay=state.job_delay,
            payload={"lists": lists},
        )
        return document_answer(202, _job_document(job, call.base_url))


def _check_lists(checker: Checker, body: dict[str, Any]) -> list[str]:
    data = body.get("data") if isinstance(body, dict) else None
    relationships = checker.member(data, "relationships", "/data", "object", required=False)
    holder = checker.member(relationships, "lists", "/data/relationships", "object", required=False)
    listed = checker.member(holder, "data", "/data/relationships/lists", "array", required=False)
    found = []
    for index, entry in enumerate(listed or []):
        pointer = f"/data/relationships/lists/data/{index}"
        if not isinstance(entry, dict):
            checker.fail(pointer, "Each list must be an object.")
            continue
        checker.resource_type(entry, "list", pointer)
        if list_id := checker.member(entry, "id", pointer, "string", required=True):
            found.append(list_id)
    return found


def _process(state: State, entries: list[dict[str, Any]]) -> Outcome:
    """Upsert every profile that can be imported; the others become import errors."""
    outcome = Outcome()
    for index, entry in enumerate(entries):
        base = f"{PROFILES_BASE}/{index}"
        checker = Checker()
        checked = check_profile_data(checker, entry, base, kinds=UPSERT_IDENTIFIERS)
        meta = check_meta(checker, entry, base)
        if len(json.dumps(entry).encode()) > MAX_PROFILE_BYTES:
            checker.fail(base, "A profile must not be larger than 100 KB.")
        forced = None
        if checked is not None and not checker.problems:
            forced = next(
                (
                    state.import_failures[value]
                    for _, value in checked[1]
                    if value in state.import_failures
                ),
                None,
            )
            if forced is not None:
                checker.fail(base, forced.detail)
            else:
                try:
                    profile, _ = state.profiles.upsert(entry.get("id"), entry["attributes"], meta)
                except LookupError:
                    checker.fail(f"{base}/id", "No profile with this id.")
                except ProfileConflict as conflict:
                    checker.fail(f"{base}/attributes/{conflict.kind}", str(conflict))
                else:
                    if profile.id not in outcome.related:
                        outcome.related.append(profile.id)
                    continue
        outcome.failed += 1
        for pointer, detail in checker.problems:
            outcome.errors.append(
                {
                    "id": str(uuid.uuid4()),
                    "code": forced.code if forced is not None else "invalid",
                    "title": forced.title if forced is not None else "Invalid input.",
                    "detail": detail,
                    "source": {"pointer": pointer},
                    "original_payload": copy.deepcopy(entry),
                }
            )
    state.changed.notify_all()
    return outcome


def _job(call: Call) -> BulkJob | None:
    return call.state.jobs.get(JOB_TYPE, call.params["job_id"])


def get_job(call: Call) -> Answer:
    """The job as it is now (complete once its delay has passed)."""
    with call.state.lock:
        job = _job(call)
        if job is None:
            return one_error(404, detail=f"No profile bulk import job {call.params['job_id']}.")
        return document_answer(200, _job_document(job, call.base_url))


def get_import_errors(call: Call) -> Answer:
    """``import-error`` resources: what failed, where (pointer), and the profile as sent; a
    page at a time."""
    query = call.request.query
    try:
        size = int(query.get("page[size]", str(ERRORS_PAGE)))
        if not 1 <= size <= ERRORS_PAGE_MAX:
            raise ValueError(size)
    except ValueError:
        detail = f"'page[size]' must be an integer from 1 to {ERRORS_PAGE_MAX}."
        return one_error(400, detail=detail, parameter="page[size]")
    cursor = query.get("page[cursor]", "")
    try:
        start = int(base64.urlsafe_b64decode(cursor.encode()).decode()) if cursor else 0
    except (ValueError, UnicodeDecodeError, binascii.Error):
        return one_error(400, detail="Invalid page cursor.", parameter="page[cursor]")
    with call.state.lock:
        job = _job(call)
        if job is None:
            return one_error(404, detail=f"No profile bulk import job {call.params['job_id']}.")
        here = f"{call.base_url}{JOBS_PATH}/{job.id}/import-errors/"
        listed = job.outcome.errors if job.status == "complete" else []
        errors = listed[start : start + size]
        following = None
        if start + size < len(listed):
            token = base64.urlsafe_b64encode(str(start + size).encode()).decode()
            params = {**{k: v for k, v in query.items()}, "page[cursor]": token}
            following = f"{here}?{urlencode(params)}"
        data = [
            {
                "type": "import-error",
                "id": error["id"],
                "attributes": {
                    key: copy.deepcopy(value) for key, value in error.items() if key != "id"
                },
            }
            for error in errors
        ]
    links = {"self": here, "next": following, "prev": None}
    return document_answer(200, {"data": data, "links": links})


def _job_document(job: BulkJob, base_url: str) -> dict[str, Any]:
    """ProfileImportJobResponseObjectResource (errors are a relationship, not an attribute)."""
    here = f"{base_url}{JOBS_PATH}/{job.id}"
    done = job.status == "complete"
    attributes = job.attributes(errors=False)
    attributes["started_at"] = iso(job.started_at)
    errors = job.outcome.errors if done else []
    lists = (job.payload or {}).get("lists", [])
    return {
        "data": {
            "type": JOB_TYPE,
            "id": job.id,
            "attributes": attributes,
            "relationships": {
                "lists": {
                    "data": [{"type": "list", "id": list_id} for list_id in lists],
                    "links": {"self": f"{here}/relationships/lists/", "related": f"{here}/lists/"},
                },
                "profiles": {
                    "data": [
                        {"type": "profile", "id": p} for p in (job.outcome.related if done else [])
                    ],
                    "links": {
                        "self": f"{here}/relationships/profiles/",
                        "related": f"{here}/profiles/",
                    },
                },
                "import-errors": {
                    "data": [{"type": "import-error", "id": error["id"]} for error in errors],
                    "links": {"related": f"{here}/import-errors/"},
                },
            },
            "links": {"self": f"{here}/"},
        },
        "links": {"self": f"{here}/"},
    }
