"""The catalog: Bulk Create Catalog Items (an asynchronous job) and the job's GET.

The POST checks the body against the schema (a 400 with pointers, nothing queued); what Klaviyo
only finds while processing (an item whose id is already in the catalog, a negative price, a
catalog other than ``$default``, or an item a test told to fail) becomes a per-item error of
the job, pointing at the item, e.g. ``/data/attributes/items/data/3/attributes/price``.
"""

from __future__ import annotations

import copy
import logging
import time
from typing import Any

from ._config import MAX_CATALOG_ITEMS
from .jobs import BulkJob, Outcome, job_error
from .jsonapi import Answer, Checker, check_string_sizes, document_answer, iso, one_error
from .jsonapi import problems_answer as problems
from .state import Call, State

log = logging.getLogger(__name__)

JOB_TYPE = "catalog-item-bulk-create-job"
JOBS_PATH = "/api/catalog-item-bulk-create-jobs"
ITEMS_BASE = "/data/attributes/items/data"
REQUIRED_STRINGS = ("external_id", "title", "description", "url")
OPTIONAL_STRINGS = ("integration_type", "catalog_type", "image_full_url", "image_thumbnail_url")


def item_id(external_id: str, integration: str = "$custom", catalog: str = "$default") -> str:
    """Klaviyo's compound catalog item id: ``{integration}:::{catalog}:::{external_id}``."""
    return f"{integration}:::{catalog}:::{external_id}"


# --------------------------------------------------------------------------- POST


def create_job(call: Call) -> Answer:
    """Check the items, queue the job, answer 202 with it."""
    checker = Checker()
    attrs = checker.resource(call.body, JOB_TYPE)
    entries = checker.listing(
        attrs, "items", "/data/attributes", most=MAX_CATALOG_ITEMS, noun="catalog items"
    )
    items = [_check_item(checker, entry, f"{ITEMS_BASE}/{i}") for i, entry in enumerate(entries)]
    if not checker.problems:
        check_string_sizes(checker, call.body, call.raw)
    if checker.problems:
        return problems(checker.problems)
    state = call.state
    kept = [item for item in items if item is not None]
    with state.lock:
        job = state.jobs.create(
            JOB_TYPE,
            len(kept),
            lambda: _process(state, kept),
            delay=state.job_delay,
            payload=kept,
        )
        return document_answer(202, _job_document(job, call.base_url, state, include=False))


def _check_item(checker: Checker, entry: Any, base: str) -> dict[str, Any] | None:
    """One ``catalog-item`` resource, as CatalogItemCreateQueryResourceObject has it."""
    if not isinstance(entry, dict):
        checker.fail(base, "Each catalog item must be an object.")
        return None
    before = len(checker.problems)
    checker.resource_type(entry, "catalog-item", base)
    attrs = checker.member(entry, "attributes", base, "object", required=True)
    attrs_base = f"{base}/attributes"
    for key in REQUIRED_STRINGS:
        value = checker.member(attrs, key, attrs_base, "string", required=True)
        if key == "external_id" and value is not None and not value.strip():
            checker.fail(f"{attrs_base}/external_id", "'external_id' must not be empty.")
    for key in OPTIONAL_STRINGS:
        checker.member(attrs, key, attrs_base, "string", required=False)
    integration = (attrs or {}).get("integration_type")
    if isinstance(integration, str) and integration != "$custom":
        checker.fail(f"{attrs_base}/integration_type", "'integration_type' must be '$custom'.")
    checker.member(attrs, "price", attrs_base, "number", required=False)
    checker.member(attrs, "custom_metadata", attrs_base, "object", required=False)
    checker.member(attrs, "published", attrs_base, "boolean", required=False)
    images = checker.member(attrs, "images", attrs_base, "array", required=False)
    for index, image in enumerate(images or []):
        if not isinstance(image, str):
            checker.fail(f"{attrs_base}/images/{index}", "Each image must be a string URL.")
    categories = _check_categories(checker, entry, base)
    if len(checker.problems) > before or attrs is None:
        return None
    return {"attributes": attrs, "categories": categories, "pointer": base}


def _check_categories(checker: Checker, entry: dict[str, Any], base: str) -> list[str]:
    relationships = checker.member(entry, "relationships", base, "object", required=False)
    holder = checker.member(
        relationships, "categories", f"{base}/relationships", "object", required=False
    )
    listed = checker.member(
        holder, "data", f"{base}/relationships/categories", "array", required=False
    )
    found = []
    for index, category in enumerate(listed or []):
        pointer = f"{base}/relationships/categories/data/{index}"
        if not isinstance(category, dict):
            checker.fail(pointer, "Each category must be an object.")
            continue
        checker.resource_type(category, "catalog-category", pointer)
        if category_id := checker.member(category, "id", pointer, "string", required=True):
            found.append(category_id)
    return found


# --------------------------------------------------------------------------- processing


def _process(state: State, items: list[dict[str, Any]]) -> Outcome:
    """Create every item that can be created; the others become the job's errors."""
    outcome = Outcome()
    now = time.time()
    for item in items:
        attrs, base = item["attributes"], item["pointer"]
        external_id = attrs["external_id"]
        catalog_type = attrs.get("catalog_type") or "$default"
        identifier = item_id(external_id, catalog=catalog_type)
        errors = []
        forced = state.catalog_failures.get(identifier) or state.catalog_failures.get(external_id)
        if forced is not None:
            errors.append(
                job_error(pointer=base, detail=forced.detail, code=forced.code, title=forced.title)
            )
        if catalog_type != "$default":
            errors.append(
                job_error(
                    pointer=f"{base}/attributes/catalog_type",
                    detail="Only the '$default' catalog is supported.",
                )
            )
        if identifier in state.catalog:
            errors.append(
                job_error(
                    pointer=f"{base}/attributes/external_id",
                    code="conflict",
                    title="Conflict.",
                    detail=f"A catalog item already exists with ID {identifier}.",
                )
            )
        price = attrs.get("price")
        if price is not None and price < 0:
            errors.append(
                job_error(
                    pointer=f"{base}/attributes/price",
                    detail=f"'price' must be greater than or equal to 0, not {price}.",
                )
            )
        if errors:
            outcome.errors.extend(errors)
            outcome.failed += 1
            continue
        stored = {key: copy.deepcopy(value) for key, value in attrs.items()}
        stored.setdefault("integration_type", "$custom")
        stored.setdefault("catalog_type", "$default")
        stored.setdefault("published", True)
        stored.update(id=identifier, categories=list(item["categories"]), created=now, updated=now)
        state.catalog[identifier] = stored
        outcome.related.append(identifier)
    return outcome


# --------------------------------------------------------------------------- GET


def get_job(call: Call) -> Answer:
    """The job as it is now (complete, with its errors, once its delay has passed)."""
    state = call.state
    include = call.request.query.get("include", "")
    with state.lock:
        job = state.jobs.get(JOB_TYPE, call.params["job_id"])
        if job is None:
            return one_error(
                404, detail=f"No catalog item bulk create job {call.params['job_id']}."
            )
        document = _job_document(job, call.base_url, state, include="items" in include.split(","))
    return document_answer(200, document)


def _job_document(job: BulkJob, base_url: str, state: State, *, include: bool) -> dict[str, Any]:
    """CatalogItemCreateJobResponseObjectResource (+ ``included`` items when asked)."""
    here = f"{base_url}{JOBS_PATH}/{job.id}"
    created = job.outcome.related if job.status == "complete" else []
    document: dict[str, Any] = {
        "data": {
            "type": JOB_TYPE,
            "id": job.id,
            "attributes": job.attributes(errors=True),
            "relationships": {
                "items": {
                    "data": [{"type": "catalog-item", "id": item} for item in created],
                    "links": {
                        "self": f"{here}/relationships/items/",
                        "related": f"{here}/items/",
                    },
                }
            },
            "links": {"self": f"{here}/"},
        },
        "links": {"self": f"{here}/"},
    }
    if include:
        document["included"] = [
            item_resource(state.catalog[item], base_url)
            for item in created
            if item in state.catalog
        ]
    return document


def item_resource(item: dict[str, Any], base_url: str) -> dict[str, Any]:
    """CatalogItemResponseObjectResource: how Klaviyo shows a stored item."""
    attributes = {
        key: copy.deepcopy(item.get(key))
        for key in (
            "external_id",
            "title",
            "description",
            "price",
            "url",
            "image_full_url",
            "image_thumbnail_url",
            "images",
            "custom_metadata",
            "published",
        )
    }
    attributes.update(created=iso(item["created"]), updated=iso(item["updated"]))
    return {
        "type": "catalog-item",
        "id": item["id"],
        "attributes": attributes,
        "links": {"self": f"{base_url}/api/catalog-items/{item['id']}/"},
    }
