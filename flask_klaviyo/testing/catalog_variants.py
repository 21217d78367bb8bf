"""Catalog variants: Bulk Create, Update and Delete Catalog Variants (asynchronous jobs) + their
GETs (``/api/catalog-variant-bulk-{create,update,delete}-jobs/{job_id}``, shaped like the item
jobs' with ``variants`` for ``items``).

A variant belongs to one item (``relationships.item``, required on create; the item must exist,
else a ``not_found`` error at ``relationships/item/data/id``). Its id is
``$custom:::$default:::<external_id>``. Create: not already there, price not negative. Update:
the variant must exist; given attributes replace the stored ones. Delete: it must exist.
"""

from __future__ import annotations

import logging
from typing import Any

from . import catalog_jobs as jobs
from . import catalog_store
from .jsonapi import Checker
from .state import State

log = logging.getLogger(__name__)

OPTIONAL: jobs.FieldSpec = {
    "inventory_policy": ("integer", False),
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
    "sku": ("string", True),
    "inventory_quantity": ("number", True),
    "price": ("number", True),
    "url": ("string", True),
    **OPTIONAL,
}
UPDATE_FIELDS: jobs.FieldSpec = {
    "title": ("string", False),
    "description": ("string", False),
    "sku": ("string", False),
    "inventory_quantity": ("number", False),
    "price": ("number", False),
    "url": ("string", False),
    **OPTIONAL,
}


def _check_create(checker: Checker, entry: Any, base: str) -> dict[str, Any] | None:
    found = jobs.check_entry(checker, entry, base, "catalog-variant", CREATE_FIELDS, with_id=False)
    item = _item(checker, entry, base)
    if found is None or item is None:
        return None
    attrs, key = found
    return {"attributes": attrs, "key": key, "pointer": base, "item": item}


def _item(checker: Checker, entry: Any, base: str) -> str | None:
    """``relationships.item.data.id`` (required on create)."""
    if not isinstance(entry, dict):
        return None
    relationships = checker.member(entry, "relationships", base, "object", required=True)
    holder = checker.member(relationships, "item", f"{base}/relationships", "object", required=True)
    data = checker.member(holder, "data", f"{base}/relationships/item", "object", required=True)
    pointer = f"{base}/relationships/item/data"
    checker.resource_type(data, "catalog-item", pointer)
    return checker.member(data, "id", pointer, "string", required=True)


def _check_update(checker: Checker, entry: Any, base: str) -> dict[str, Any] | None:
    found = jobs.check_entry(checker, entry, base, "catalog-variant", UPDATE_FIELDS, with_id=True)
    if found is None:
        return None
    return {"attributes": found[0], "key": found[1], "pointer": base}


def _check_delete(checker: Checker, entry: Any, base: str) -> dict[str, Any] | None:
    found = jobs.check_entry(checker, entry, base, "catalog-variant", {}, with_id=True)
    if found is None:
        return None
    return {"attributes": {}, "key": found[1], "pointer": base}


def _create(state: State, entry: dict[str, Any]) -> tuple[str | None, list[dict[str, Any]]]:
    attrs, base, identifier = entry["attributes"], entry["pointer"], entry["key"]
    errors = jobs.catalog_type_error(attrs, base)
    if identifier in state.catalog_variants:
        errors.append(
            jobs.exists_error("catalog-variant", identifier, f"{base}/attributes/external_id")
        )
    errors += jobs.price_error(attrs, base)
    item = state.catalog.get(entry["item"])
    if item is None:
        errors.append(
            jobs.missing_error("catalog-item", entry["item"], f"{base}/relationships/item/data/id")
        )
    if errors or item is None:
        return None, errors
    catalog_store.store(state, "catalog-variant", identifier, attrs, item=entry["item"])
    item["variants"].append(identifier)
    return identifier, []


def _update(state: State, entry: dict[str, Any]) -> tuple[str | None, list[dict[str, Any]]]:
    attrs, base, identifier = entry["attributes"], entry["pointer"], entry["key"]
    variant = state.catalog_variants.get(identifier)
    if variant is None:
        return None, [jobs.missing_error("catalog-variant", identifier, f"{base}/id")]
    errors = jobs.price_error(attrs, base)
    if errors:
        return None, errors
    catalog_store.patch(variant, "catalog-variant", attrs)
    return identifier, []


def _delete(state: State, entry: dict[str, Any]) -> tuple[str | None, list[dict[str, Any]]]:
    identifier = entry["key"]
    if identifier not in state.catalog_variants:
        return None, [jobs.missing_error("catalog-variant", identifier, f"{entry['pointer']}/id")]
    catalog_store.delete_variant(state, identifier)
    return identifier, []


CREATE = jobs.Kind("catalog-variant", "variants", "create", _check_create, _create)
UPDATE = jobs.Kind("catalog-variant", "variants", "update", _check_update, _update)
DELETE = jobs.Kind("catalog-variant", "variants", "delete", _check_delete, _delete)

create_job = jobs.post(CREATE)
update_job = jobs.post(UPDATE)
delete_job = jobs.post(DELETE)
get_create_job = jobs.get(CREATE)
get_update_job = jobs.get(UPDATE)
get_delete_job = jobs.get(DELETE)
