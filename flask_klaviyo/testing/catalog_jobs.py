"""Klaviyo's catalog bulk jobs, one model for the nine of them (items, variants, categories;
create, update, delete) and their GETs.

The POST checks the body against the schema (a 400 with pointers, nothing queued) and answers
202 with a queued job of at most 100 resources; what Klaviyo only finds while processing (an id
already taken or unknown, a negative price, a missing parent item, a resource a test told to
fail) becomes a per-resource error of the job pointing at the resource, e.g.
``/data/attributes/variants/data/3/attributes/price``; the others are applied. A GET of the job
(``/api/catalog-{item,variant,category}-bulk-{create,update,delete}-jobs/{job_id}``) shows its
status, counts, ``errors`` and the ids it created, updated or deleted (``relationships``),
with ``include=items|variants|categories`` the resources themselves (not for a delete).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from . import catalog_store
from ._config import MAX_CATALOG_ITEMS
from .jobs import BulkJob, Outcome, job_error
from .jsonapi import Answer, Checker, check_string_sizes, document_answer, one_error
from .jsonapi import problems_answer as problems
from .state import Call, State

log = logging.getLogger(__name__)

# (the checker, the raw entry, its pointer) -> the entry to process, or None after a problem
Check = Callable[[Checker, Any, str], dict[str, Any] | None]
# (the state, the checked entry) -> (the id it touched, or None, and its errors)
Apply = Callable[[State, dict[str, Any]], tuple[str | None, list[dict[str, Any]]]]


@dataclass(frozen=True)
class Kind:
    """One catalog bulk job: which resource, which action, how an entry is checked and applied."""

    resource: str  # catalog-item, catalog-variant, catalog-category
    plural: str  # items, variants, categories: the attribute, relationship and include name
    action: str  # create, update, delete
    check: Check
    apply: Apply

    @property
    def job_type(self) -> str:
        return f"{self.resource}-bulk-{self.action}-job"

    @property
    def path(self) -> str:
        return f"/api/{self.job_type}s"

    @property
    def noun(self) -> str:
        return self.resource.replace("-", " ")


def post(kind: Kind) -> Callable[[Call], Answer]:
    """The POST handler of one kind of job."""

    def create_job(call: Call) -> Answer:
        checker = Checker()
        attrs = checker.resource(call.body, kind.job_type)
        base = f"/data/attributes/{kind.plural}/data"
        entries = checker.listing(
            attrs, kind.plural, "/data/attributes", most=MAX_CATALOG_ITEMS, noun=f"{kind.noun}s"
        )
        checked = [kind.check(checker, entry, f"{base}/{i}") for i, entry in enumerate(entries)]
        if not checker.problems:
            check_string_sizes(checker, call.body, call.raw)
        if checker.problems:
            return problems(checker.problems)
        state = call.state
        kept = [entry for entry in checked if entry is not None]
        with state.lock:
            job = state.jobs.create(
                kind.job_type,
                len(kept),
                lambda: _process(state, kind, kept),
                delay=state.job_delay,
                payload=kept,
            )
            return document_answer(202, job_document(kind, job, call.base_url, state))

    create_job.__name__ = f"{kind.action}_{kind.plural}_job"
    return create_job


def get(kind: Kind) -> Callable[[Call], Answer]:
    """The GET handler of one kind of job."""

    def get_job(call: Call) -> Answer:
        state = call.state
        asked = [part for part in call.request.query.get("include", "").split(",") if part]
        allowed = [] if kind.action == "delete" else [kind.plural]
        wrong = [part for part in asked if part not in allowed]
        if wrong:
            return one_error(
                400,
                detail=f"'{wrong[0][:40]}' is not a valid relationship for 'include'; "
                f"allowed: {allowed}.",
                parameter="include",
            )
        with state.lock:
            job = state.jobs.get(kind.job_type, call.params["job_id"])
            if job is None:
                return one_error(404, detail=f"No {kind.job_type} {call.params['job_id'][:64]}.")
            document = job_document(kind, job, call.base_url, state, include=bool(asked))
        return document_answer(200, document)

    get_job.__name__ = f"get_{kind.action}_{kind.plural}_job"
    return get_job


def _process(state: State, kind: Kind, entries: list[dict[str, Any]]) -> Outcome:
    """Apply every entry that can be applied; the others become the job's errors."""
    outcome = Outcome()
    for entry in entries:
        forced = catalog_store.forced_failure(state, entry["key"])
        if forced is not None:
            identifier, errors = (
                None,
                [
                    job_error(
                        pointer=entry["pointer"],
                        detail=forced.detail,
                        code=forced.code,
                        title=forced.title,
                    )
                ],
            )
        else:
            identifier, errors = kind.apply(state, entry)
        if errors:
            outcome.errors.extend(errors)
            outcome.failed += 1
        elif identifier is not None:
            outcome.related.append(identifier)
    return outcome


def job_document(
    kind: Kind, job: BulkJob, base_url: str, state: State, *, include: bool = False
) -> dict[str, Any]:
    """``*JobResponseObjectResource`` (+ ``included`` resources when asked)."""
    here = f"{base_url}{kind.path}/{job.id}"
    touched = job.outcome.related if job.status == "complete" else []
    document: dict[str, Any] = {
        "data": {
            "type": kind.job_type,
            "id": job.id,
            "attributes": job.attributes(errors=True),
            "relationships": {
                kind.plural: {
                    "data": [{"type": kind.resource, "id": one} for one in touched],
                    "links": {
                        "self": f"{here}/relationships/{kind.plural}/",
                        "related": f"{here}/{kind.plural}/",
                    },
                }
            },
            "links": {"self": f"{here}/"},
        },
        "links": {"self": f"{here}/"},
    }
    if include:
        records = catalog_store.table(state, kind.resource)
        document["included"] = [
            catalog_store.resource(records[one], kind.resource, base_url)
            for one in touched
            if one in records
        ]
    return document


# --------------------------------------------------------------------------- shared checks


FieldSpec = dict[str, tuple[str, bool]]  # attribute -> (JSON type, required)


_PYTHON_TYPES: dict[str, Callable[[Any], bool]] = {
    "object": lambda value: type(value) is dict,
    "array": lambda value: type(value) is list,
    "string": lambda value: type(value) is str,
    "number": lambda value: type(value) is int or type(value) is float,
    "integer": lambda value: type(value) is int,
    "boolean": lambda value: type(value) is bool,
}


def _well_formed(entry: dict[str, Any], resource: str, fields: FieldSpec, with_id: bool) -> bool:
    """The common case, decided quickly: every check :func:`check_entry` makes passes (a
    parsed JSON body holds only dict, list, str, int, float, bool and None). Anything else
    goes through the checker, which says what is wrong."""
    if entry.get("type") != resource:
        return False
    if with_id and type(entry.get("id")) is not str:
        return False
    if not fields:
        return True
    attrs = entry.get("attributes")
    if type(attrs) is not dict:
        return False
    for name, (json_type, required) in fields.items():
        value = attrs.get(name)
        if value is None:
            if required:
                return False
        elif not _PYTHON_TYPES[json_type](value):
            return False
    external = attrs.get("external_id")
    if "external_id" in fields and external is not None and not external.strip():
        return False
    images = attrs.get("images")
    if "images" in fields and images is not None and any(type(i) is not str for i in images):
        return False
    policy = attrs.get("inventory_policy")
    if "inventory_policy" in fields and policy is not None and policy not in (0, 1, 2):
        return False
    integration = attrs.get("integration_type")
    return "integration_type" not in fields or integration is None or integration == "$custom"


def check_entry(
    checker: Checker,
    entry: Any,
    base: str,
    resource: str,
    fields: FieldSpec,
    *,
    with_id: bool,
) -> tuple[dict[str, Any], str] | None:
    """The common part of every entry: an object of ``resource`` type, its ``id`` (update and
    delete), its attributes by ``fields`` (a create's external id non-empty, images strings,
    inventory_policy 0/1/2, integration_type $custom). (attributes, key) or None."""
    if isinstance(entry, dict) and _well_formed(entry, resource, fields, with_id):
        attrs = entry.get("attributes") if fields else {}
        assert isinstance(attrs, dict)
        key = entry["id"] if with_id else ""
        external = attrs.get("external_id")
        if "external_id" in fields and external is not None:
            key = catalog_store.compound_id(
                external, catalog=attrs.get("catalog_type") or "$default"
            )
        return attrs, key
    if not isinstance(entry, dict):
        checker.fail(base, f"Each {resource.replace('-', ' ')} must be an object.")
        return None
    before = len(checker.problems)
    checker.resource_type(entry, resource, base)
    key = ""
    if with_id:
        key = checker.member(entry, "id", base, "string", required=True) or ""
    attrs: dict[str, Any] = {}
    if fields:
        attrs = checker.member(entry, "attributes", base, "object", required=True) or {}
    attrs_base = f"{base}/attributes"
    for name, (json_type, required) in fields.items():
        value = checker.member(attrs, name, attrs_base, json_type, required=required)
        if name == "external_id" and value is not None:
            if not value.strip():
                checker.fail(f"{attrs_base}/external_id", "'external_id' must not be empty.")
            key = catalog_store.compound_id(value, catalog=attrs.get("catalog_type") or "$default")
        elif name == "images" and value is not None:
            for index, image in enumerate(value):
                if not isinstance(image, str):
                    checker.fail(f"{attrs_base}/images/{index}", "Each image must be a string URL.")
        elif name == "inventory_policy" and value is not None and value not in (0, 1, 2):
            checker.fail(f"{attrs_base}/inventory_policy", "'inventory_policy' must be 0, 1 or 2.")
        elif name == "integration_type" and value is not None and value != "$custom":
            checker.fail(f"{attrs_base}/integration_type", "'integration_type' must be '$custom'.")
    if len(checker.problems) > before:
        return None
    return attrs, key


def related_ids(
    checker: Checker, entry: dict[str, Any], base: str, name: str, resource: str
) -> list[str] | None:
    """``relationships.<name>.data``: a list of ``{type, id}`` (None when not given)."""
    holder = checker.member(entry, "relationships", base, "object", required=False)
    relation = checker.member(holder, name, f"{base}/relationships", "object", required=False)
    listed = checker.member(
        relation, "data", f"{base}/relationships/{name}", "array", required=False
    )
    if listed is None:
        return None
    found = []
    for index, one in enumerate(listed):
        pointer = f"{base}/relationships/{name}/data/{index}"
        if not isinstance(one, dict):
            checker.fail(pointer, f"Each {name} entry must be an object.")
            continue
        checker.resource_type(one, resource, pointer)
        if identifier := checker.member(one, "id", pointer, "string", required=True):
            found.append(identifier)
    return found


def price_error(attrs: dict[str, Any], base: str) -> list[dict[str, Any]]:
    price = attrs.get("price")
    if price is not None and price < 0:
        return [
            job_error(
                pointer=f"{base}/attributes/price",
                detail=f"'price' must be greater than or equal to 0, not {price}.",
            )
        ]
    return []


def catalog_type_error(attrs: dict[str, Any], base: str) -> list[dict[str, Any]]:
    catalog_type = attrs.get("catalog_type")
    if catalog_type is not None and catalog_type != "$default":
        return [
            job_error(
                pointer=f"{base}/attributes/catalog_type",
                detail="Only the '$default' catalog is supported.",
            )
        ]
    return []


def exists_error(resource: str, identifier: str, pointer: str) -> dict[str, Any]:
    return job_error(
        pointer=pointer,
        code="conflict",
        title="Conflict.",
        detail=f"A {resource.replace('-', ' ')} already exists with ID {identifier}.",
    )


def missing_error(resource: str, identifier: str, pointer: str) -> dict[str, Any]:
    return job_error(
        pointer=pointer,
        code="not_found",
        title="Not found.",
        detail=f"A {resource.replace('-', ' ')} with ID {identifier} does not exist.",
    )


def unknown_related(
    state: State, resource: str, ids: list[str] | None, base: str, name: str
) -> list[dict[str, Any]]:
    """One error per related id that is not in the catalog."""
    records = catalog_store.table(state, resource)
    return [
        missing_error(resource, one, f"{base}/relationships/{name}/data/{index}/id")
        for index, one in enumerate(ids or [])
        if one not in records
    ]
