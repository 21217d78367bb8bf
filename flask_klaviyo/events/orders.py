"""The order metrics: Placed Order, one Ordered Product per line, and the status metrics
Fulfilled, Canceled and Refunded Order.

All four order metrics share the order id as their unique_id, so Klaviyo's CLV pairs them; the
property names follow seed 001's example of each metric literally.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, datetime
from typing import Any

from ..models import LineItem, Order
from .model import (
    CANCELED_ORDER,
    DEFAULT_CURRENCY,
    FULFILLED_ORDER,
    ORDERED_PRODUCT,
    PLACED_ORDER,
    REFUNDED_ORDER,
    Event,
)
from .values import _event_time, _identifier, _jsonable, _known, _list_or_none, _money, _profile

__all__ = [
    "CANCELED_DISCOUNT_KEYS",
    "FULFILLED_DISCOUNT_KEYS",
    "PLACED_DISCOUNT_KEYS",
    "REFUNDED_DISCOUNT_KEYS",
    "canceled_order",
    "fulfilled_order",
    "ordered_products",
    "placed_order",
    "refunded_order",
]


def _order_item(line: LineItem) -> dict[str, Any]:
    """An Items entry of Placed Order and the order status metrics (seed 001)."""
    product = line.product
    return _known(
        {
            "ProductID": _identifier(product.id),
            "SKU": product.sku,
            "ProductName": product.name,
            "Quantity": line.quantity,
            "ItemPrice": _money(line.price),
            "RowTotal": _money(line.row_total),
            "ProductURL": product.url,
            "ImageURL": product.image_url,
            "Categories": list(product.categories),
            "Brand": product.brand,
        }
    )


def _order_properties(
    order: Order,
    *,
    discount_keys: tuple[str, str],
    reason: str | None = None,
) -> dict[str, Any]:
    code_key, value_key = discount_keys
    billing = order.billing_address.to_properties() if order.billing_address else None
    shipping = order.shipping_address.to_properties() if order.shipping_address else None
    return _known(
        {
            "OrderId": _identifier(order.id),
            "Reason": reason,
            "Categories": order.categories,
            "ItemNames": order.item_names,
            "Brands": _list_or_none(order.brands),
            code_key: order.discount_code,
            value_key: _money(order.discount_value),
            "Items": [_order_item(line) for line in order.items],
            "BillingAddress": billing or None,
            "ShippingAddress": shipping or None,
        }
    )


# Seed 001 spells the discount keys without a space in its Placed Order and Fulfilled Order
# examples and with a space in its Canceled Order and Refunded Order examples. Each metric
# follows its own example literally, so flows and segments built from Klaviyo's docs match.
PLACED_DISCOUNT_KEYS = ("DiscountCode", "DiscountValue")
FULFILLED_DISCOUNT_KEYS = ("DiscountCode", "DiscountValue")
CANCELED_DISCOUNT_KEYS = ("Discount Code", "Discount Value")
REFUNDED_DISCOUNT_KEYS = ("Discount Code", "Discount Value")


def _order_event(
    metric: str,
    order: Any,
    *,
    profile: Mapping[str, Any] | None,
    time: datetime | date | None,
    currency: str | None,
    discount_keys: tuple[str, str],
    reason: str | None = None,
    extra: Mapping[str, Any] | None = None,
) -> Event:
    order = Order.coerce(order)
    properties = _order_properties(order, discount_keys=discount_keys, reason=reason)
    properties.update(_jsonable(dict(extra or {})))
    total = _money(order.total)
    return Event(
        metric=metric,
        properties=properties,
        profile=_profile(order.profile() if profile is None else profile),
        time=_event_time(metric, time),
        value=total,
        value_currency=order.currency or currency or DEFAULT_CURRENCY,
        # The order id, the same for all four order metrics: Klaviyo's CLV pairs them by it.
        unique_id=str(_identifier(order.id)),
    )


def placed_order(
    order: Any,
    *,
    profile: Mapping[str, Any] | None = None,
    time: datetime | None = None,
    currency: str | None = None,
) -> Event:
    """Placed Order; ``currency`` is only a fallback for an order without its own."""
    order = Order.coerce(order)
    return _order_event(
        PLACED_ORDER,
        order,
        profile=profile,
        time=time or order.placed_at,
        currency=currency,
        discount_keys=PLACED_DISCOUNT_KEYS,
    )


def _ordered_product_keys(order: Order) -> list[str]:
    """``line id or SKU`` per line, made unique within the order: two lines of one SKU must not
    share a unique_id or Klaviyo keeps only the first."""
    seen: dict[str, int] = {}
    keys = []
    for line in order.items:
        base = str(line.id or line.product.sku or _identifier(line.product.id))
        seen[base] = seen.get(base, 0) + 1
        keys.append(base if seen[base] == 1 else f"{base}_{seen[base]}")
    return keys


def ordered_products(
    order: Any,
    *,
    profile: Mapping[str, Any] | None = None,
    time: datetime | None = None,
    currency: str | None = None,
) -> list[Event]:
    """One Ordered Product per line; value is the line's total before order adjustments."""
    order = Order.coerce(order)
    when = _event_time(ORDERED_PRODUCT, time or order.placed_at)
    who = order.profile() if profile is None else profile
    events = []
    for line, key in zip(order.items, _ordered_product_keys(order), strict=True):
        product = line.product
        # A price that is not a number leaves no row total; carry it so validation names it.
        value = _money(line.row_total if line.row_total is not None else line.price)
        properties = _known(
            {
                "OrderId": _identifier(order.id),
                "ProductID": _identifier(product.id),
                "SKU": product.sku,
                "ProductName": product.name,
                "Quantity": line.quantity,
                "ProductURL": product.url,
                "ImageURL": product.image_url,
                "Categories": list(product.categories),
                "ProductBrand": product.brand,
            }
        )
        events.append(
            Event(
                metric=ORDERED_PRODUCT,
                properties=properties,
                profile=_profile(who),
                time=when,
                value=value,
                value_currency=order.currency or currency or DEFAULT_CURRENCY,
                unique_id=f"{_identifier(order.id)}_{key}",
            )
        )
    return events


def fulfilled_order(
    order: Any,
    *,
    profile: Mapping[str, Any] | None = None,
    time: datetime | None = None,
    currency: str | None = None,
    **extra: Any,
) -> Event:
    """Fulfilled Order: Placed Order's payload at fulfilment time, plus e.g. TrackingNumber."""
    return _order_event(
        FULFILLED_ORDER,
        order,
        profile=profile,
        time=time,
        currency=currency,
        discount_keys=FULFILLED_DISCOUNT_KEYS,
        extra=extra,
    )


def canceled_order(
    order: Any,
    *,
    reason: str | None = None,
    profile: Mapping[str, Any] | None = None,
    time: datetime | None = None,
    currency: str | None = None,
    **extra: Any,
) -> Event:
    """Canceled Order; unique_id equals Placed Order's so CLV subtracts it."""
    return _order_event(
        CANCELED_ORDER,
        order,
        profile=profile,
        time=time,
        currency=currency,
        discount_keys=CANCELED_DISCOUNT_KEYS,
        reason=reason,
        extra=extra,
    )


def refunded_order(
    order: Any,
    *,
    reason: str | None = None,
    profile: Mapping[str, Any] | None = None,
    time: datetime | None = None,
    currency: str | None = None,
    **extra: Any,
) -> Event:
    """Refunded Order; unique_id equals Placed Order's so CLV subtracts it."""
    return _order_event(
        REFUNDED_ORDER,
        order,
        profile=profile,
        time=time,
        currency=currency,
        discount_keys=REFUNDED_DISCOUNT_KEYS,
        reason=reason,
        extra=extra,
    )
