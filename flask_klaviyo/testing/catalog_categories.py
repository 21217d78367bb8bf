"""Catalog categories: Bulk Create, Update and Delete Catalog Categories (asynchronous jobs) +
their GETs (``/api/catalog-category-bulk-{create,update,delete}-jobs/{job_id}``).

Items and categories relate both ways: an item's ``relationships.categories`` (item jobs) or a
category's ``relationships.items`` (here; on update it replaces the category's items). Every
related id must exist (``not_found`` at the relationship entry). Deleting a category takes it
off its items; the items stay.
"""

from __future__ import annotations

import logging
from typing import Any

from . import catalog_jobs as jobs
from . import catalog_store
from .jsonapi import Checker
from .state import State

log = logging.getLogger(__name__)

CREATE_FIELDS: jobs.FieldSpec = {
    "external_id": ("string", True),
    "name": ("string", True),
    "integration_type": ("string", False),
    "catalog_type": ("string", False),
}
UPDATE_FIELDS: jobs.FieldSpec = {"name": ("string", False)}


def _check(
    checker: Checker, entry: Any, base: str, fields: jobs.FieldSpec, *, with_id: bool
) -> dict[str, Any] | None:
    found = jobs.check_entry(checker, entry, base, "catalog-category", fields, with_id=with_id)
    items = None
    if isinstance(entry, dict) and fields:
        items = jobs.related_ids(checker, entry, base, "items", "catalog-item")
    if found is None:
        return None
    return {"attributes": found[0], "key": found[1], "pointer": base, "items": items}


def _check_create(checker: Checker, entry: Any, base: str) -> dict[str, Any] | None:
    return _check(checker, entry, base, CREATE_FIELDS, with_id=False)


def _check_update(checker: Checker, entry: Any, base: str) -> dict[str, Any] | None:
    return _check(checker, entry, base, UPDATE_FIELDS, with_id=True)


def _check_delete(checker: Checker, entry: Any, base: str) -> dict[str, Any] | None:
    return _check(checker, entry, base, {}, with_id=True)


def _create(state: State, entry: dict[str, Any]) -> tuple[str | None, list[dict[str, Any]]]:
    attrs, base, identifier = entry["attributes"], entry["pointer"], entry["key"]
    errors = jobs.catalog_type_error(attrs, base)
    if identifier in state.catalog_categories:
        errors.append(
            jobs.exists_error("catalog-category", identifier, f"{base}/attributes/external_id")
        )
    errors += jobs.unknown_related(state, "catalog-item", entry["items"], base, "items")
    if errors:
        return None, errors
    catalog_store.store(state, "catalog-category", identifier, attrs)
    catalog_store.set_category_items(state, identifier, entry["items"] or [])
    return identifier, []


def _update(state: State, entry: dict[str, Any]) -> tuple[str | None, list[dict[str, Any]]]:
    attrs, base, identifier = entry["attributes"], entry["pointer"], entry["key"]
    category = state.catalog_categories.get(identifier)
    if category is None:
        return None, [jobs.missing_error("catalog-category", identifier, f"{base}/id")]
    errors = jobs.unknown_related(state, "catalog-item", entry["items"], base, "items")
    if errors:
        return None, errors
    catalog_store.patch(category, "catalog-category", attrs)
    if entry["items"] is not None:
        catalog_store.set_category_items(state, identifier, entry["items"])
    return identifier, []


def _delete(state: State, entry: dict[str, Any]) -> tuple[str | None, list[dict[str, Any]]]:
    identifier = entry["key"]
    if identifier not in state.catalog_categories:
        return None, [jobs.missing_error("catalog-category", identifier, f"{entry['pointer']}/id")]
    catalog_store.delete_category(state, identifier)
    return identifier, []


CREATE = jobs.Kind("catalog-category", "categories", "create", _check_create, _create)
UPDATE = jobs.Kind("catalog-category", "categories", "update", _check_update, _update)
DELETE = jobs.Kind("catalog-category", "categories", "delete", _check_delete, _delete)

create_job = jobs.post(CREATE)
update_job = jobs.post(UPDATE)
delete_job = jobs.post(DELETE)
get_create_job = jobs.get(CREATE)
get_update_job = jobs.get(UPDATE)
get_delete_job = jobs.get(DELETE)
