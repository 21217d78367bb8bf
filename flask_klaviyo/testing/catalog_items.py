"""Catalog items: Bulk Create, Update and Delete Catalog Items (asynchronous jobs) + their GETs.

Create: the item must not exist yet (409-style ``conflict`` error at its ``external_id``), its
price must not be negative, its categories (``relationships.categories``) must exist. Update:
the item must exist (``not_found`` at its ``id``); given attributes replace the stored ones,
given categories replace the item's. Delete: the item must exist; its variants go with it.
"""

from __future__ import annotations

import logging
from typing import Any

from . import catalog_jobs as jobs
from . import catalog_store
from .jsonapi import Checker
from .state import State

log = logging.getLogger(__name__)

URLS = {
    "url": ("string", True),
    "image_full_url": ("string", False),
    "image_thumbnail_url": ("string", False),
    "images": ("array", False),
    "custom_metadata": ("object", False),
    "published": ("boolean", False),
}
CREATE_FIELDS: jobs.FieldSpec = {
    "external_id": ("string", True),
    "integration_type": ("string", False),
    "catalog_type": ("string", False),
    "title": ("string", True),
    "description": ("string", True),
    "price": ("number", False),
    **URLS,
}
UPDATE_FIELDS: jobs.FieldSpec = {
    "title": ("string", False),
    "description": ("string", False),
    "price": ("number", False),
    **{name: (kind, False) for name, (kind, _) in URLS.items()},
}


def _check_create(checker: Checker, entry: Any, base: str) -> dict[str, Any] | None:
    found = jobs.check_entry(checker, entry, base, "catalog-item", CREATE_FIELDS, with_id=False)
    categories = _categories(checker, entry, base)
    if found is None:
        return None
    attrs, key = found
    return {"attributes": attrs, "key": key, "pointer": base, "categories": categories}


def _check_update(checker: Checker, entry: Any, base: str) -> dict[str, Any] | None:
    found = jobs.check_entry(checker, entry, base, "catalog-item", UPDATE_FIELDS, with_id=True)
    categories = _categories(checker, entry, base)
    if found is None:
        return None
    attrs, key = found
    return {"attributes": attrs, "key": key, "pointer": base, "categories": categories}


def _check_delete(checker: Checker, entry: Any, base: str) -> dict[str, Any] | None:
    found = jobs.check_entry(checker, entry, base, "catalog-item", {}, with_id=True)
    if found is None:
        return None
    return {"attributes": {}, "key": found[1], "pointer": base}


def _categories(checker: Checker, entry: Any, base: str) -> list[str] | None:
    if not isinstance(entry, dict):
        return None
    return jobs.related_ids(checker, entry, base, "categories", "catalog-category")


def _create(state: State, entry: dict[str, Any]) -> tuple[str | None, list[dict[str, Any]]]:
    attrs, base, identifier = entry["attributes"], entry["pointer"], entry["key"]
    errors = jobs.catalog_type_error(attrs, base)
    if identifier in state.catalog:
        errors.append(
            jobs.exists_error("catalog-item", identifier, f"{base}/attributes/external_id")
        )
    errors += jobs.price_error(attrs, base)
    categories = entry["categories"] or []
    errors += jobs.unknown_related(state, "catalog-category", categories, base, "categories")
    if errors:
        return None, errors
    catalog_store.store(
        state,
        "catalog-item",
        identifier,
        attrs,
        categories=list(dict.fromkeys(categories)),
        variants=[],
    )
    return identifier, []


def _update(state: State, entry: dict[str, Any]) -> tuple[str | None, list[dict[str, Any]]]:
    attrs, base, identifier = entry["attributes"], entry["pointer"], entry["key"]
    item = state.catalog.get(identifier)
    if item is None:
        return None, [jobs.missing_error("catalog-item", identifier, f"{base}/id")]
    errors = jobs.price_error(attrs, base)
    categories = entry["categories"]
    errors += jobs.unknown_related(state, "catalog-category", categories, base, "categories")
    if errors:
        return None, errors
    catalog_store.patch(item, "catalog-item", attrs)
    if categories is not None:
        item["categories"] = list(dict.fromkeys(categories))
    return identifier, []


def _delete(state: State, entry: dict[str, Any]) -> tuple[str | None, list[dict[str, Any]]]:
    identifier = entry["key"]
    if identifier not in state.catalog:
        return None, [jobs.missing_error("catalog-item", identifier, f"{entry['pointer']}/id")]
    catalog_store.delete_item(state, identifier)
    return identifier, []


CREATE = jobs.Kind("catalog-item", "items", "create", _check_create, _create)
UPDATE = jobs.Kind("catalog-item", "items", "update", _check_update, _update)
DELETE = jobs.Kind("catalog-item", "items", "delete", _check_delete, _delete)

create_job = jobs.post(CREATE)
update_job = jobs.post(UPDATE)
delete_job = jobs.post(DELETE)
get_create_job = jobs.get(CREATE)
get_update_job = jobs.get(UPDATE)
get_delete_job = jobs.get(DELETE)
