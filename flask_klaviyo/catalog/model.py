"""Catalog items, variants and categories as Klaviyo's catalog holds them: read from the shapes a
store already has (the events' :class:`~flask_klaviyo.models.Product` coercion plus description,
publication, inventory and variants), checked before anything is sent, and fingerprinted so an
unchanged item costs no write.

A check failure is a :class:`~flask_klaviyo.exceptions.KlaviyoSchemaError` whose ``metric`` names
the item (``catalog item 'SKU-1'``) and whose ``field`` names the field (``variants[2].price``).
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from ..exceptions import KlaviyoSchemaError
from ..models import Product
from ..models.coerce import (
    PRODUCT_CATEGORY_NAMES,
    PRODUCT_ID_NAMES,
    PRODUCT_IMAGE_NAMES,
    PRODUCT_NAME_NAMES,
    PRODUCT_PRICE_NAMES,
    PRODUCT_URL_NAMES,
    _category_list,
    _identifier,
    _pick,
)
from .checks import check_item
from .shapes import Shapes

__all__ = [
    "ITEM_FIELDS",
    "VARIANT_FIELDS",
    "CatalogCategory",
    "CatalogItem",
    "CatalogVariant",
    "category_key",
    "coerce_entry",
    "compound_id",
    "fingerprint",
]

ITEM_FIELDS = ("title", "description", "url", "price", "image_full_url", "published")
VARIANT_FIELDS = (*ITEM_FIELDS, "sku", "inventory_quantity", "inventory_policy")
POLICIES = {"deny": 1, "continue": 2, 0: 0, 1: 1, 2: 2}  # Shopify's words, Klaviyo's numbers

DESCRIPTION_NAMES = ("description", "body", "body_html", "Description")
PUBLISHED_NAMES = ("published", "is_published", "active", "Published")
VARIANTS_NAMES = ("variants", "Variants")
INVENTORY_NAMES = ("inventory_quantity", "inventory", "stock", "InventoryQuantity")
POLICY_NAMES = ("inventory_policy", "InventoryPolicy")
VARIANT_ID_NAMES = ("id", "variant_id", "sku", "SKU")
VARIANT_TITLE_NAMES = ("title", "name", "Title")
# A plain dict product's fields, in the order CatalogItem.coerce unpacks them; a variant's.
ITEM_SHAPES = Shapes((PRODUCT_ID_NAMES, PRODUCT_NAME_NAMES, PRODUCT_PRICE_NAMES,
                      PRODUCT_URL_NAMES, PRODUCT_IMAGE_NAMES, PRODUCT_CATEGORY_NAMES,
                      DESCRIPTION_NAMES, PUBLISHED_NAMES, POLICY_NAMES, INVENTORY_NAMES,
                      VARIANTS_NAMES))  # fmt: skip
VARIANT_SHAPES = Shapes((VARIANT_ID_NAMES, ("sku", "SKU"), ("price", "Price"), PUBLISHED_NAMES,
                         VARIANT_TITLE_NAMES, DESCRIPTION_NAMES, INVENTORY_NAMES, POLICY_NAMES,
                         ("url", "URL"), ("image_url", "image", "ImageURL")))  # fmt: skip


def compound_id(external_id: str) -> str:
    """Klaviyo's id of a custom catalog resource: ``$custom:::$default:::<external id>``."""
    return f"$custom:::$default:::{external_id}"


def category_key(name: str) -> str:
    """A category's external id from its name: ``"Mugs & Cups"`` -> ``"mugs-cups"``."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or name


def fingerprint(attributes: Mapping[str, Any], fields: Sequence[str]) -> tuple[Any, ...]:
    """What the sync manages (``fields``) in a form compared for equality, the same from the
    store's side and from what Klaviyo answers: numbers as floats, no value and empty values
    alike, ``published`` True unless False (Klaviyo's default). A tuple, not a digest: nothing
    stores it, and a sync compares tens of thousands."""
    canonical = []
    for name in fields:
        value = attributes.get(name)
        kind = type(value)
        if kind is str:
            if not value:
                value = None
        elif value is None:
            if name == "published":
                value = True
        elif kind is not bool and isinstance(value, int | float | Decimal):
            value = float(value)
        elif value in ([], {}):
            value = None
        elif isinstance(value, list | dict):  # images, custom metadata: compared as JSON
            value = json.dumps(value, sort_keys=True, default=str)
        canonical.append(value)
    return tuple(canonical)


@dataclass(frozen=True)
class CatalogCategory:
    """A category; ``id`` is its external id (from the name unless the store gives one)."""

    id: str
    name: str

    @classmethod
    def coerce(cls, obj: Any) -> CatalogCategory:
        if isinstance(obj, CatalogCategory):
            return obj
        if isinstance(obj, str):
            return _named(obj)
        name = _pick(obj, ("name", "title"))
        if not isinstance(name, str) or not name.strip():
            raise KlaviyoSchemaError("catalog category", "name", f"no name in {obj!r}")
        given = _identifier(_pick(obj, ("id", "external_id", "slug")))
        return cls(str(given) if given is not None else category_key(name), name)

    def attributes(self) -> dict[str, Any]:
        return {"external_id": self.id, "name": self.name}


@dataclass(frozen=True)
class CatalogVariant:
    """One variant (a size, a colour, a roast); ``id`` is its external id, unique in the catalog
    (back-in-stock subscriptions name it)."""

    id: str
    sku: str
    title: str
    description: str
    price: Any
    inventory_quantity: Any
    inventory_policy: int
    url: Any
    image_url: Any = None
    published: bool = True

    def attributes(self) -> dict[str, Any]:
        """Klaviyo's attributes (create: with ``external_id``; None values dropped)."""
        return {
            "external_id": self.id,
            "title": self.title,
            "description": self.description,
            "sku": self.sku,
            "price": _number(self.price),
            "inventory_quantity": _number(self.inventory_quantity),
            "inventory_policy": self.inventory_policy,
            "url": self.url,
            "image_full_url": self.image_url,
            "published": self.published,
        }


@dataclass(frozen=True)
class CatalogItem:
    """One product of the catalog, with its variants and the categories it is in."""

    id: str
    title: str
    description: str
    price: Any
    url: Any
    image_url: Any = None
    published: bool = True
    categories: tuple[CatalogCategory, ...] = ()
    variants: tuple[CatalogVariant, ...] = ()
    inventory_quantity: Any = None
    inventory_policy: int = 0

    @classmethod
    def coerce(cls, obj: Any) -> CatalogItem:
        """What ``Product.coerce`` reads, plus description, published, inventory, variants."""
        if isinstance(obj, CatalogItem):
            return obj
        found = ITEM_SHAPES.values(obj)  # a plain dict: each field's key found once per shape
        if found is not None:
            given, title, price, url, image, groups, description, published, policy, stock, *_ = (
                found
            )
            given = _identifier(given)
            if given is not None and title is not None:  # else the errors below name it
                subject = f"catalog item {str(given)!r}"
                item = cls(
                    id=str(given),
                    title=title,
                    description=description or "",
                    price=price,
                    url=url,
                    image_url=image,
                    published=True if published is None else published,
                    categories=tuple(_categories_of(groups, subject)),
                    inventory_quantity=stock,
                    inventory_policy=_policy(policy, subject, "inventory_policy"),
                )
                return item._with_variants(found[-1], subject)
        try:
            product = Product.coerce(obj)
        except KlaviyoSchemaError as exc:  # named as the catalog names it
            given = _identifier(_pick(obj, PRODUCT_ID_NAMES))
            subject = "catalog item" if given is None else f"catalog item {str(given)!r}"
            field = {"name": "title"}.get(exc.field, exc.field)
            raise KlaviyoSchemaError(subject, field, exc.message) from None
        source = obj.to_klaviyo_product() if hasattr(obj, "to_klaviyo_product") else obj
        subject = f"catalog item {product.id!r}"
        description = _pick(source, DESCRIPTION_NAMES) or ""
        published = _pick(source, PUBLISHED_NAMES)
        policy = _policy(_pick(source, POLICY_NAMES), subject, "inventory_policy")
        item = cls(
            id=str(product.id),
            title=product.name,
            description=description,
            price=product.price,
            url=product.url,
            image_url=product.image_url,
            published=True if published is None else published,
            categories=tuple(_categories(obj, product, subject)),
            inventory_quantity=_pick(source, INVENTORY_NAMES),
            inventory_policy=policy,
        )
        return item._with_variants(_pick(source, VARIANTS_NAMES), subject)

    def _with_variants(self, raw_variants: Any, subject: str) -> CatalogItem:
        """Set once, while coercing (frozen: no copy by dataclasses.replace)."""
        if raw_variants is None:
            return self
        if isinstance(raw_variants, str | bytes) or not isinstance(raw_variants, Iterable):
            raise KlaviyoSchemaError(subject, "variants", "must be a list of variants")
        variants = tuple(_variant(v, self, i) for i, v in enumerate(raw_variants))
        object.__setattr__(self, "variants", variants)
        return self

    def attributes(self) -> dict[str, Any]:
        return {
            "external_id": self.id,
            "title": self.title,
            "description": self.description,
            "url": self.url,
            "price": _number(self.price),
            "image_full_url": self.image_url,
            "published": self.published,
        }

    def stock(self) -> Any:
        """The item's inventory: its own, else its variants' together (the feed's field)."""
        if self.inventory_quantity is not None or not self.variants:
            return self.inventory_quantity
        return sum(_number(v.inventory_quantity) for v in self.variants)

    def validate(self) -> CatalogItem:
        """Everything Klaviyo needs and would refuse, checked here (:mod:`.checks`); returns
        self."""
        check_item(self)
        return self


def coerce_entry(obj: Any) -> CatalogItem | CatalogCategory:
    """What a catalog source yields: a category (``CatalogCategory``, or a mapping with
    ``"type": "category"``) or a product."""
    if isinstance(obj, CatalogCategory):
        return obj
    if isinstance(obj, Mapping) and obj.get("type") == "category":
        return CatalogCategory.coerce(obj)
    return CatalogItem.coerce(obj)


# -- helpers ------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=4096)
def _named(name: str) -> CatalogCategory:
    """A category given by name (a catalog has few: each is made once, not once per product)."""
    return CatalogCategory(category_key(name), name)


def _number(value: Any) -> Any:
    """Decimal to float for JSON (anything else as it is: validation names a bad one)."""
    return float(value) if isinstance(value, Decimal) else value


def _policy(value: Any, subject: str, field: str) -> int:
    if value is None:
        return 0
    key = value.lower() if isinstance(value, str) else value
    if isinstance(key, bool) or key not in POLICIES:
        raise KlaviyoSchemaError(
            subject, field, f"must be 0, 1, 2, 'deny' or 'continue': {value!r}"
        )
    return POLICIES[key]


def _categories(obj: Any, product: Product, subject: str) -> list[CatalogCategory]:
    return _categories_of(_pick(obj, PRODUCT_CATEGORY_NAMES), subject)


def _categories_of(raw: Any, subject: str) -> list[CatalogCategory]:
    listed = raw if isinstance(raw, list | tuple) else _category_list(raw)
    found: dict[str, CatalogCategory] = {}
    for entry in listed:
        try:
            category = CatalogCategory.coerce(entry)
        except KlaviyoSchemaError as exc:
            raise KlaviyoSchemaError(subject, "categories", exc.message) from None
        found.setdefault(category.id, category)
    return list(found.values())


def _variant(obj: Any, item: CatalogItem, index: int) -> CatalogVariant:
    found = VARIANT_SHAPES.values(obj)
    if found is None:  # not a plain dict, or one of a shape _pick reads
        found = [_pick(obj, names) for names in VARIANT_SHAPES.fields]
    variant_id, sku, price, published, title, description, stock, policy, url, image = found
    variant_id = _identifier(variant_id)
    if variant_id is None:
        raise KlaviyoSchemaError(
            f"catalog item {item.id!r}", f"variants[{index}].id", "no variant id or SKU"
        )
    if policy:
        policy = _policy(policy, f"catalog item {item.id!r}", f"variants[{index}].policy")
    return CatalogVariant(
        id=str(variant_id),
        sku=str(sku) if sku is not None else str(variant_id),
        title=title or item.title,
        description=description or item.description,
        price=item.price if price is None else price,
        inventory_quantity=stock,
        inventory_policy=policy or item.inventory_policy,
        url=url or item.url,
        image_url=image or item.image_url,
        published=item.published if published is None else published,
    )
