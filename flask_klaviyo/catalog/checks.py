"""What Klaviyo needs of a catalog item and its variants and would refuse, checked before
anything is sent: a title, an absolute http(s) URL, a price, no negative amount, each variant
id once. A failure is a :class:`~flask_klaviyo.exceptions.KlaviyoSchemaError` naming the item
and the field (``catalog item '42'``, ``variants[1].price``).

A sync checks every product of the source: the usual item (strings, ints and floats, all
well-formed) is passed by one quick test; anything else goes through the checks that name
what is wrong.
"""

from __future__ import annotations

import math
import re
from typing import TYPE_CHECKING, Any

from ..exceptions import KlaviyoSchemaError
from ..models import is_money

if TYPE_CHECKING:
    from .model import CatalogItem

__all__ = ["ABSOLUTE_URL", "check_item"]

ABSOLUTE_URL = re.compile(r"^https?://[^/\s]+\S*$")
_URL = ABSOLUTE_URL.match
_INF = math.inf


def _amount(value: Any) -> bool:
    """A plain int or float, finite and not negative (NaN fails the comparison)."""
    kind = type(value)
    return (kind is int or kind is float) and 0 <= value < _INF


def _passes(item: CatalogItem) -> bool:
    """The quick test: True when every check below would pass (False: let them say why)."""
    title, url, image = item.title, item.url, item.image_url
    if not (
        type(title) is str
        and title.strip()
        and type(item.description) is str
        and type(url) is str
        and _URL(url)
        and (image is None or (type(image) is str and _URL(image)))
        and _amount(item.price)
        and (item.inventory_quantity is None or _amount(item.inventory_quantity))
        and type(item.published) is bool
    ):
        return False
    for variant in item.variants:
        title, sku, url, image = variant.title, variant.sku, variant.url, variant.image_url
        if not (
            type(title) is str
            and title.strip()
            and type(sku) is str
            and sku.strip()
            and type(url) is str
            and _URL(url)
            and (image is None or (type(image) is str and _URL(image)))
            and _amount(variant.price)
            and _amount(variant.inventory_quantity)
        ):
            return False
    return len({variant.id for variant in item.variants}) == len(item.variants)


def check_item(item: CatalogItem) -> None:
    """Raise KlaviyoSchemaError for the first thing Klaviyo would refuse."""
    if _passes(item):
        return
    subject = f"catalog item {item.id!r}"
    _check_text(item.title, subject, "title")
    _check_text(item.description, subject, "description", empty=True)
    _check_url(item.url, subject, "url")
    _check_url(item.image_url, subject, "image_url", required=False)
    _check_amount(item.price, subject, "price")
    if item.inventory_quantity is not None:
        _check_amount(item.inventory_quantity, subject, "inventory_quantity")
    if not isinstance(item.published, bool):
        raise KlaviyoSchemaError(subject, "published", "must be True or False")
    seen: set[str] = set()
    for index, variant in enumerate(item.variants):
        where = f"variants[{index}]"
        if variant.id in seen:
            raise KlaviyoSchemaError(subject, f"{where}.id", f"repeated id {variant.id!r}")
        seen.add(variant.id)
        _check_text(variant.title, subject, f"{where}.title")
        _check_text(variant.sku, subject, f"{where}.sku")
        _check_url(variant.url, subject, f"{where}.url")
        _check_url(variant.image_url, subject, f"{where}.image_url", required=False)
        _check_amount(variant.price, subject, f"{where}.price")
        _check_amount(variant.inventory_quantity, subject, f"{where}.inventory_quantity")


def _check_text(value: Any, subject: str, field: str, *, empty: bool = False) -> None:
    if not isinstance(value, str) or (not empty and not value.strip()):
        raise KlaviyoSchemaError(subject, field, f"must be {'' if empty else 'non-empty '}text")


def _check_url(value: Any, subject: str, field: str, *, required: bool = True) -> None:
    if value is None and not required:
        return
    if not isinstance(value, str) or not ABSOLUTE_URL.match(value):
        raise KlaviyoSchemaError(subject, field, f"must be an absolute http(s) URL, got {value!r}")


def _check_amount(value: Any, subject: str, field: str) -> None:
    if value is None:
        raise KlaviyoSchemaError(subject, field, "is required")
    if not is_money(value) or not math.isfinite(float(value)):
        raise KlaviyoSchemaError(subject, field, f"must be a number, got {value!r}")
    if value < 0:
        raise KlaviyoSchemaError(subject, field, f"must not be negative, got {value!r}")
