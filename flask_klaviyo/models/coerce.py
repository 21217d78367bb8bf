"""How a storefront's own objects are read: the attribute and key names each field goes by
(first match wins), money, identifiers and category lists."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from decimal import Decimal
from typing import Any

Money = int | float | Decimal

# The names storefronts commonly use for each field, first match wins.
PRODUCT_ID_NAMES = ("id", "product_id", "ProductID", "productId")
PRODUCT_NAME_NAMES = ("name", "title", "ProductName")
PRODUCT_PRICE_NAMES = ("price", "Price")
PRODUCT_SKU_NAMES = ("sku", "SKU")
PRODUCT_URL_NAMES = ("url", "product_url", "URL", "ProductURL")
PRODUCT_IMAGE_NAMES = ("image_url", "image", "ImageURL")
PRODUCT_CATEGORY_NAMES = ("categories", "category", "Categories")
PRODUCT_BRAND_NAMES = ("brand", "vendor", "Brand")
PRODUCT_COMPARE_NAMES = ("compare_at_price", "CompareAtPrice")

LINE_PRODUCT_NAMES = ("product",)
LINE_QUANTITY_NAMES = ("quantity", "qty", "Quantity")
LINE_PRICE_NAMES = ("unit_price", "item_price", "ItemPrice")
LINE_ID_NAMES = ("line_id", "line_item_id")
LINE_ITEMS_NAMES = ("items", "line_items", "lines", "Items")

CART_ID_NAMES = ("id", "cart_id", "token")
CHECKOUT_URL_NAMES = ("checkout_url", "CheckoutURL")

ORDER_ID_NAMES = ("id", "order_id", "OrderId", "number")
ORDER_CUSTOMER_NAMES = ("customer", "user")
ORDER_TOTAL_NAMES = ("total", "total_price", "grand_total")
ORDER_DISCOUNT_CODE_NAMES = ("discount_code", "DiscountCode")
ORDER_DISCOUNT_VALUE_NAMES = ("discount_value", "discount_total", "discount", "DiscountValue")
ORDER_PLACED_AT_NAMES = ("placed_at", "created_at")

ADDRESS_NAMES: dict[str, tuple[str, ...]] = {
    "first_name": ("first_name", "FirstName"),
    "last_name": ("last_name", "LastName"),
    "company": ("company", "Company"),
    "address1": ("address1", "Address1", "line1"),
    "address2": ("address2", "Address2", "line2"),
    "city": ("city", "City"),
    "region": ("region", "state", "province", "Region"),
    "region_code": ("region_code", "state_code", "province_code", "RegionCode"),
    "country": ("country", "Country"),
    "country_code": ("country_code", "CountryCode"),
    "zip": ("zip", "postal_code", "postcode", "Zip"),
    "phone": ("phone", "Phone"),
}
# Klaviyo's spelling of each Address field inside event properties (seed 001's BillingAddress).
ADDRESS_PROPERTY_NAMES = {
    "first_name": "FirstName",
    "last_name": "LastName",
    "company": "Company",
    "address1": "Address1",
    "address2": "Address2",
    "city": "City",
    "region": "Region",
    "region_code": "RegionCode",
    "country": "Country",
    "country_code": "CountryCode",
    "zip": "Zip",
    "phone": "Phone",
}


def is_money(value: Any) -> bool:
    """True for a number a total can be computed from (bool is an int but never money)."""
    return isinstance(value, int | float | Decimal) and not isinstance(value, bool)


def sum_money(values: Iterable[Any]) -> Money | None:
    """Add amounts without mixing Decimal and float (which raises); None if one is not money."""
    amounts = list(values)
    if not all(is_money(v) for v in amounts):
        return None
    try:
        if any(isinstance(v, float) for v in amounts):
            return sum((float(v) for v in amounts), 0.0)
        return sum(amounts, Decimal(0) if any(isinstance(v, Decimal) for v in amounts) else 0)
    except (ArithmeticError, ValueError):  # Decimal infinities that cancel, a signaling NaN
        return None


def _subtract(total: Money, discount: Money) -> Money:
    if isinstance(total, float) or isinstance(discount, float):
        return float(total) - float(discount)
    if isinstance(total, Decimal) or isinstance(discount, Decimal):
        return Decimal(total) - Decimal(discount)
    return total - discount


def _pick(source: Any, names: Sequence[str]) -> Any:
    """The first non-empty value under any of ``names``; methods are never called."""
    if isinstance(source, (dict, Mapping)):  # dict first: no ABC check for the common case
        for name in names:
            value = source.get(name)
            if value is not None and value != "":
                return value
        return None
    for name in names:
        value = getattr(source, name, None)
        if callable(value) and not isinstance(value, type):
            continue
        if value is not None and value != "":
            return value
    return None


def _identifier(value: Any) -> Any:
    """Database ids are often ints; Klaviyo's examples (and catalog matching) use strings."""
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return value


def _category_list(value: Any) -> list[str]:
    """Categories may come as one string, a list of strings or a list of category objects."""
    if value is None or value == "":
        return []
    if isinstance(value, str) or not isinstance(value, Iterable) or isinstance(value, bytes):
        return [value]  # not a list of categories: validation names it
    names: list[str] = []
    for item in value:
        if isinstance(item, str):
            names.append(item)
        else:
            name = _pick(item, ("name", "title"))
            names.append(str(name if name is not None else item))
    return names


def union(groups: Iterable[Iterable[Any]]) -> list[Any]:
    """Each item once, in first-seen order; an unhashable one (a brand given as a list) is kept
    for validation to name."""
    seen: dict[Any, Any] = {}
    for group in groups:
        for item in group:
            try:
                seen.setdefault((True, item), item)
            except TypeError:
                seen.setdefault((False, repr(item)), item)
    return list(seen.values())
