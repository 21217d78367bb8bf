"""The catalog the stand-in keeps: items, variants and categories, and how Klaviyo shows them.

Three dicts on the state (``state.catalog`` for items, ``state.catalog_variants``,
``state.catalog_categories``), by Klaviyo's compound id ``$custom:::$default:::<external id>``.
An item keeps the ids of its categories (``categories``) and of its variants (``variants``); a
variant the id of its item (``item``). Deleting an item deletes its variants; deleting a
category takes it off every item. Callers hold ``state.lock``.
"""

from __future__ import annotations

import copy
import logging
import time
from typing import Any

from .jsonapi import iso
from .state import ForcedFailure, State

log = logging.getLogger(__name__)

PREFIX = "$custom:::$default:::"
ITEM_FIELDS = (
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
VARIANT_FIELDS = (
    "external_id",
    "title",
    "description",
    "sku",
    "inventory_policy",
    "inventory_quantity",
    "price",
    "url",
    "image_full_url",
    "image_thumbnail_url",
    "images",
    "custom_metadata",
    "published",
)
CATEGORY_FIELDS = ("external_id", "name")
FIELDS = {
    "catalog-item": ITEM_FIELDS,
    "catalog-variant": VARIANT_FIELDS,
    "catalog-category": CATEGORY_FIELDS,
}
COLLECTIONS = {
    "catalog-item": "catalog-items",
    "catalog-variant": "catalog-variants",
    "catalog-category": "catalog-categories",
}


def compound_id(external_id: str, integration: str = "$custom", catalog: str = "$default") -> str:
    """Klaviyo's compound catalog id: ``{integration}:::{catalog}:::{external_id}``."""
    return f"{integration}:::{catalog}:::{external_id}"


def external_of(identifier: str) -> str:
    """The external id inside a compound id (the id itself when it is not compound)."""
    return identifier.rsplit(":::", 1)[-1]


def table(state: State, resource: str) -> dict[str, dict[str, Any]]:
    """The dict holding one resource type."""
    if resource == "catalog-item":
        return state.catalog
    if resource == "catalog-variant":
        return state.catalog_variants
    return state.catalog_categories


def forced_failure(state: State, identifier: str) -> ForcedFailure | None:
    """What ``fake.fail_catalog_items`` asked for this id (compound or external), if anything."""
    failures = state.catalog_failures
    return failures.get(identifier) or failures.get(external_of(identifier))


def _copy(value: Any) -> Any:
    """A stored value of its own: containers copied deeply, the rest (immutable) as is."""
    return copy.deepcopy(value) if isinstance(value, dict | list) else value


def store(
    state: State, resource: str, identifier: str, attributes: dict[str, Any], **links: Any
) -> dict[str, Any]:
    """Create one resource from its (checked) attributes; only Klaviyo's fields are kept."""
    now = time.time()
    kept = {key: _copy(attributes.get(key)) for key in FIELDS[resource]}
    if resource != "catalog-category":
        kept["published"] = True if kept["published"] is None else kept["published"]
    if resource == "catalog-variant" and kept["inventory_policy"] is None:
        kept["inventory_policy"] = 0
    kept.update(
        id=identifier,
        integration_type="$custom",
        catalog_type="$default",
        created=now,
        updated=now,
        seq=next(state.catalog_order),
        **links,
    )
    table(state, resource)[identifier] = kept
    return kept


def patch(record: dict[str, Any], resource: str, attributes: dict[str, Any]) -> None:
    """Apply an update's attributes (a null or absent field is left as it was)."""
    for key in FIELDS[resource]:
        if key != "external_id" and attributes.get(key) is not None:
            record[key] = _copy(attributes[key])
    record["updated"] = time.time()


def delete_item(state: State, identifier: str) -> None:
    """An item goes with its variants."""
    item = state.catalog.pop(identifier)
    for variant in item["variants"]:
        state.catalog_variants.pop(variant, None)


def delete_variant(state: State, identifier: str) -> None:
    variant = state.catalog_variants.pop(identifier)
    item = state.catalog.get(variant["item"])
    if item is not None and identifier in item["variants"]:
        item["variants"].remove(identifier)


def delete_category(state: State, identifier: str) -> None:
    state.catalog_categories.pop(identifier)
    for item in state.catalog.values():
        if identifier in item["categories"]:
            item["categories"].remove(identifier)


def set_category_items(state: State, category: str, items: list[str]) -> None:
    """Exactly these items are in the category from now on."""
    wanted = set(items)
    for identifier, item in state.catalog.items():
        inside = category in item["categories"]
        if identifier in wanted and not inside:
            item["categories"].append(category)
        elif identifier not in wanted and inside:
            item["categories"].remove(category)


def items_of(state: State, category: str) -> list[str]:
    return [i for i, item in state.catalog.items() if category in item["categories"]]


# --------------------------------------------------------------------------- as Klaviyo shows them


def resource(
    record: dict[str, Any],
    kind: str,
    base_url: str,
    *,
    state: State | None = None,
    fields: tuple[str, ...] | None = None,
) -> dict[str, Any]:
    """A stored item, variant or category as Klaviyo's ``*ResponseObjectResource``.

    With ``state``, the relationships too: an item's ``variants`` and ``categories``, a
    variant's ``item``, a category's ``items`` (ids and links). ``fields``: only these
    attributes (a sparse fieldset), else all.
    """
    attributes = {key: _copy(record.get(key)) for key in FIELDS[kind]}
    attributes.update(created=iso(record["created"]), updated=iso(record["updated"]))
    if fields is not None:
        attributes = {key: value for key, value in attributes.items() if key in fields}
    here = f"{base_url}/api/{COLLECTIONS[kind]}/{record['id']}"
    shown: dict[str, Any] = {"type": kind, "id": record["id"], "attributes": attributes}
    if state is not None:
        shown["relationships"] = _relationships(record, kind, here, state)
    shown["links"] = {"self": f"{here}/"}
    return shown


def _relationships(
    record: dict[str, Any], kind: str, here: str, state: State
) -> dict[str, dict[str, Any]]:
    def related(name: str, data: Any) -> dict[str, Any]:
        links = {"self": f"{here}/relationships/{name}/", "related": f"{here}/{name}/"}
        return {"data": data, "links": links}

    if kind == "catalog-item":
        return {
            "variants": related(
                "variants", [{"type": "catalog-variant", "id": v} for v in record["variants"]]
            ),
            "categories": related(
                "categories",
                [{"type": "catalog-category", "id": c} for c in record["categories"]],
            ),
        }
    if kind == "catalog-variant":
        return {"item": related("item", {"type": "catalog-item", "id": record["item"]})}
    items = items_of(state, record["id"])
    return {"items": related("items", [{"type": "catalog-item", "id": i} for i in items])}


def snapshot(records: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The Python API's view: copies, times as ISO strings, no internal ordering key."""
    shown = {}
    for identifier, record in records.items():
        copied = {key: copy.deepcopy(value) for key, value in record.items() if key != "seq"}
        copied.update(created=iso(record["created"]), updated=iso(record["updated"]))
        shown[identifier] = copied
    return shown
