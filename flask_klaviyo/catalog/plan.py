"""Diffing the store's catalog against what Klaviyo holds: which categories, items and variants
to create, update or delete, and which are unchanged (a fingerprint each, so an unchanged
catalog costs no write).

The plan is data; :meth:`Plan.operations` turns it into catalog operations in dependency
order. A new item carries its variants' creates (``then``): the job follow-up queues them once
Klaviyo has created the item, so variants never race their item.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..delivery.operations import Operation
from .model import (
    ITEM_FIELDS,
    VARIANT_FIELDS,
    CatalogCategory,
    CatalogItem,
    CatalogVariant,
    compound_id,
    fingerprint,
)

PREFIX = compound_id("")

__all__ = [
    "Changes",
    "Held",
    "Plan",
    "item_operations",
    "membership",
    "membership_of",
    "plan",
    "plan_categories",
    "plan_items",
    "variant_create",
]


def membership(item: CatalogItem) -> str:
    """A digest of the categories an item is in (Klaviyo's item listing does not show them)."""
    return membership_of(category.id for category in item.categories)


def membership_of(category_ids: Iterable[str]) -> str:
    """The digest of a set of category external ids."""
    return hashlib.sha1(",".join(sorted(set(category_ids))).encode()).hexdigest()[:16]


@dataclass
class Held:
    """What Klaviyo holds: items' attributes, their variants' attributes, categories' names,
    and the category membership the last sync sent per item (by external id)."""

    items: dict[str, Mapping[str, Any]] = field(default_factory=dict)
    variants: dict[str, dict[str, Mapping[str, Any]]] = field(default_factory=dict)  # by item
    categories: dict[str, str] = field(default_factory=dict)
    memberships: dict[str, str] = field(default_factory=dict)


@dataclass
class Changes:
    """One resource's share of a plan."""

    create: list[str] = field(default_factory=list)
    update: list[str] = field(default_factory=list)
    delete: list[str] = field(default_factory=list)
    unchanged: int = 0

    def writes(self) -> int:
        return len(self.create) + len(self.update) + len(self.delete)


@dataclass
class Plan:
    """The changes per resource, and the operations that make them."""

    categories: Changes = field(default_factory=Changes)
    items: Changes = field(default_factory=Changes)
    variants: Changes = field(default_factory=Changes)
    first: list[Operation] = field(default_factory=list)  # categories: before any item
    then: list[Operation] = field(default_factory=list)  # items, variants, deletions
    memberships: dict[str, str] = field(default_factory=dict)  # to remember once queued

    def writes(self) -> int:
        return self.categories.writes() + self.items.writes() + self.variants.writes()

    def summary(self) -> dict[str, dict[str, int]]:
        return {
            name: {
                "create": len(changes.create),
                "update": len(changes.update),
                "delete": len(changes.delete),
                "unchanged": changes.unchanged,
            }
            for name, changes in (
                ("categories", self.categories),
                ("items", self.items),
                ("variants", self.variants),
            )
        }


def _category_links(item: CatalogItem) -> dict[str, Any]:
    data = [{"type": "catalog-category", "id": PREFIX + c.id} for c in item.categories]
    return {"categories": {"data": data}}


def _variant_create_payload(variant: CatalogVariant, item_id: str) -> dict[str, Any]:
    attributes = {k: v for k, v in variant.attributes().items() if v is not None}
    links = {"item": {"data": {"type": "catalog-item", "id": PREFIX + item_id}}}
    return {"attributes": attributes, "relationships": links}


def variant_create(variant: CatalogVariant, item_id: str) -> Operation:
    return Operation(
        "catalog_variant_create", _variant_create_payload(variant, item_id), variant.id
    )


def _variant_update(variant: CatalogVariant) -> Operation:
    attributes = {k: v for k, v in variant.attributes().items() if k != "external_id"}
    return Operation(
        "catalog_variant_update",
        {"id": compound_id(variant.id), "attributes": attributes},
        variant.id,
    )


def _item_create(item: CatalogItem) -> Operation:
    attributes = {k: v for k, v in item.attributes().items() if v is not None}
    payload: dict[str, Any] = {"attributes": attributes, "relationships": _category_links(item)}
    if item.variants:  # queued by the follow-up once Klaviyo created the item (stored form)
        payload["then"] = [
            {"op": "catalog_variant_create", "key": v.id,
             "payload": _variant_create_payload(v, item.id)}
            for v in item.variants
        ]  # fmt: skip
    return Operation("catalog_item_create", payload, item.id)


def _item_update(item: CatalogItem) -> Operation:
    attributes = {k: v for k, v in item.attributes().items() if k != "external_id"}
    payload = {
        "id": compound_id(item.id),
        "attributes": attributes,
        "relationships": _category_links(item),
    }
    return Operation("catalog_item_update", payload, item.id)


def _delete(resource: str, external_id: str) -> Operation:
    return Operation(f"catalog_{resource}_delete", {"id": compound_id(external_id)}, external_id)


def item_operations(
    item: CatalogItem, *, exists: bool, known_variants: set[str]
) -> list[Operation]:
    """An incremental change (``catalog_changed``): the item and each variant, created or
    updated as Klaviyo is known to hold them."""
    if not exists:
        return [_item_create(item)]
    operations = [_item_update(item)]
    for variant in item.variants:
        if variant.id in known_variants:
            operations.append(_variant_update(variant))
        else:
            operations.append(variant_create(variant, item.id))
    return operations


def plan(
    items: Iterable[CatalogItem],
    categories: Iterable[CatalogCategory],
    held: Held,
    *,
    keep: Iterable[str] = (),
) -> Plan:
    """The plan from the store's valid ``items`` and ``categories`` to Klaviyo's ``held``;
    ``keep``: ids of items the store has but could not send (invalid): never deleted."""
    result = plan_categories(categories, held)
    plan_items(result, items, held, keep=keep)
    return result


def plan_categories(categories: Iterable[CatalogCategory], held: Held) -> Plan:
    """A plan's first part, the categories to create or rename (items name them): a sync
    queues them, then plans the items while Klaviyo works on them."""
    result = Plan()
    wanted = {c.id: c for c in categories}
    for category in wanted.values():
        name = held.categories.get(category.id)
        if name is None:
            result.categories.create.append(category.id)
            result.first.append(
                Operation(
                    "catalog_category_create", {"attributes": category.attributes()}, category.id
                )
            )
        elif name != category.name:
            result.categories.update.append(category.id)
            result.first.append(
                Operation(
                    "catalog_category_update",
                    {"id": compound_id(category.id), "attributes": {"name": category.name}},
                    category.id,
                )
            )
        else:
            result.categories.unchanged += 1
    result.categories.delete.extend(sorted(set(held.categories) - set(wanted)))
    return result


def plan_items(
    result: Plan, items: Iterable[CatalogItem], held: Held, *, keep: Iterable[str] = ()
) -> Plan:
    """The rest of the plan (after :func:`plan_categories`): items and variants to create,
    update or delete, then the categories no longer wanted."""
    seen: set[str] = set(keep)
    deletions: list[Operation] = []
    item_fingerprint = functools.partial(fingerprint, fields=ITEM_FIELDS)
    variant_fingerprint = functools.partial(fingerprint, fields=VARIANT_FIELDS)
    for item in items:
        seen.add(item.id)
        held_item = held.items.get(item.id)
        groups = membership(item)
        if held_item is None:
            result.items.create.append(item.id)
            result.variants.create.extend(v.id for v in item.variants)
            result.then.append(_item_create(item))
            result.memberships[item.id] = groups
            continue
        same = item_fingerprint(item.attributes()) == item_fingerprint(held_item)
        same_groups = held.memberships.get(item.id) == groups
        if same and same_groups:
            result.items.unchanged += 1
        else:
            result.items.update.append(item.id)
            result.then.append(_item_update(item))
            result.memberships[item.id] = groups
        held_variants = held.variants.get(item.id, {})
        for variant in item.variants:
            had = held_variants.get(variant.id)
            if had is None:
                result.variants.create.append(variant.id)
                result.then.append(variant_create(variant, item.id))
            elif variant_fingerprint(variant.attributes()) != variant_fingerprint(had):
                result.variants.update.append(variant.id)
                result.then.append(_variant_update(variant))
            else:
                result.variants.unchanged += 1
        wanted_variants = {v.id for v in item.variants}
        for gone in sorted(v for v in held_variants if v not in wanted_variants):
            result.variants.delete.append(gone)
            deletions.append(_delete("variant", gone))
    for gone in sorted(set(held.items) - seen):  # its variants go with it
        result.items.delete.append(gone)
        deletions.append(_delete("item", gone))
    for gone in result.categories.delete:
        deletions.append(_delete("category", gone))
    result.then.extend(deletions)
    return result
