"""The order metrics: Placed Order, one Ordered Product per line, and the status metrics
Fulfilled, Canceled and Refunded Order.

All four order metrics share the order id as their unique_id, so Klaviyo's CLV pairs them; the
property names follow seed 001's example of each metric literally.

Partial cancellations and refunds (the rule, from Klaviyo's documentation): Klaviyo records only
the first event per (profile, metric, unique_id) and silently drops a repeat (seeds 001, 002),
and a Canceled / Refunded Order counts in CLV only when its unique_id is the Placed Order's
(seed 001). So the *first* cancellation or refund of an order, partial or full, carries the
order id; a *second* (third...) partial one carries ``{order id}_refund_{n}`` /
``{order id}_cancel_{n}``: recorded (flows, reports, the metric's revenue), not paired by CLV.
Sent with the order id it would be lost without an error. The value is always what was
refunded or canceled, never the order total (unless that is what was refunded); ``Items`` are
the lines it concerns and ``NotRefundedItems`` / ``NotCanceledItems`` the others.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import date, datetime
from typing import Any

from ..exceptions import KlaviyoSchemaError
from ..models import LineItem, Order, sum_money, union
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
    "adjustment_unique_id",
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
    lines: list[LineItem] | None = None,
) -> dict[str, Any]:
    code_key, value_key = discount_keys
    lines = order.items if lines is None else lines
    # Order's own union rules (they tolerate any value; validation names a wrong one)
    names = [line.product.name for line in lines]
    categories = union(line.product.categories for line in lines)
    brands = union([line.product.brand] for line in lines if line.product.brand)
    billing = order.billing_address.to_properties() if order.billing_address else None
    shipping = order.shipping_address.to_properties() if order.shipping_address else None
    return _known(
        {
            "OrderId": _identifier(order.id),
            "Reason": reason,
            "Categories": categories,
            "ItemNames": names,
            "Brands": _list_or_none(brands),
            code_key: order.discount_code,
            value_key: _money(order.discount_value),
            "Items": [_order_item(line) for line in lines],
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
    lines: list[LineItem] | None = None,
    value: Any = None,
    unique_id: str | None = None,
) -> Event:
    order = Order.coerce(order)
    properties = _order_properties(order, discount_keys=discount_keys, reason=reason, lines=lines)
    properties.update(_jsonable(dict(extra or {})))
    return Event(
        metric=metric,
        properties=properties,
        profile=_profile(order.profile() if profile is None else profile),
        time=_event_time(metric, time),
        value=_money(order.total if value is None else value),
        value_currency=order.currency or currency or DEFAULT_CURRENCY,
        # The order id, the same for all four order metrics: Klaviyo's CLV pairs them by it.
        unique_id=unique_id or str(_identifier(order.id)),
    )


def adjustment_unique_id(order_id: Any, kind: str, sequence: int) -> str:
    """The unique_id of an order's ``sequence``-th cancellation or refund (``kind``: "cancel"
    or "refund"): the order id for the first, so CLV pairs it with Placed Order; a later partial
    one needs its own or Klaviyo drops it as a repeat (the module's rule)."""
    if isinstance(sequence, bool) or not isinstance(sequence, int) or sequence < 1:
        metric = {"cancel": CANCELED_ORDER, "refund": REFUNDED_ORDER}.get(kind, kind)
        raise KlaviyoSchemaError(metric, "sequence", f"must be a whole number >= 1: {sequence!r}")
    base = str(_identifier(order_id))
    return base if sequence == 1 else f"{base}_{kind}_{sequence}"


def _adjustment(
    metric: str,
    kind: str,
    order: Any,
    *,
    items: Iterable[Any] | None,
    amount: Any,
    sequence: int,
    others_key: str,
    extra: Mapping[str, Any],
) -> dict[str, Any]:
    """The options of a (possibly partial) cancellation or refund for ``_order_event``."""
    order = Order.coerce(order)
    unique_id = adjustment_unique_id(order.id, kind, sequence)
    if items is None:
        lines = None
    else:
        if isinstance(items, str | bytes | Mapping) or not isinstance(items, Iterable):
            raise KlaviyoSchemaError(metric, "items", "must be a list of lines")
        lines = [LineItem.coerce(line) for line in items]
    value = amount
    if value is None and lines is not None:
        value = sum_money(line.row_total for line in lines)
    more = dict(extra)
    if lines is not None:
        # An order line is concerned when a given line names its id, or (given without an
        # id) its product.
        ids = [line.id for line in lines if line.id is not None]  # lists: ids may be bad input
        products = [line.product.id for line in lines if line.id is None]
        others = [
            _order_item(line)
            for line in order.items
            if not (line.id in ids or line.product.id in products)
        ]
        if others:
            more.setdefault(others_key, others)
    return {"lines": lines, "value": value, "unique_id": unique_id, "extra": more}


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
    items: Iterable[Any] | None = None,
    amount: Any = None,
    sequence: int = 1,
    **extra: Any,
) -> Event:
    """Canceled Order; the first one's unique_id equals Placed Order's so CLV subtracts it.

    Partial: ``items`` (the lines canceled) and/or ``amount`` (the value canceled; default
    their total, or the order total when neither is given); ``sequence`` is 2, 3... for an
    order's later cancellations (the module's rule).
    """
    return _order_event(
        CANCELED_ORDER,
        order,
        profile=profile,
        time=time,
        currency=currency,
        discount_keys=CANCELED_DISCOUNT_KEYS,
        reason=reason,
        **_adjustment(
            CANCELED_ORDER,
            "cancel",
            order,
            items=items,
            amount=amount,
            sequence=sequence,
            others_key="NotCanceledItems",
            extra=extra,
        ),
    )


def refunded_order(
    order: Any,
    *,
    reason: str | None = None,
    profile: Mapping[str, Any] | None = None,
    time: datetime | None = None,
    currency: str | None = None,
    items: Iterable[Any] | None = None,
    amount: Any = None,
    sequence: int = 1,
    **extra: Any,
) -> Event:
    """Refunded Order; the first one's unique_id equals Placed Order's so CLV subtracts it.

    Partial: ``items`` (the lines refunded) and/or ``amount`` (the value refunded; default
    their total, or the order total when neither is given); ``sequence`` is 2, 3... for an
    order's later refunds (the module's rule).
    """
    return _order_event(
        REFUNDED_ORDER,
        order,
        profile=profile,
        time=time,
        currency=currency,
        discount_keys=REFUNDED_DISCOUNT_KEYS,
        reason=reason,
        **_adjustment(
            REFUNDED_ORDER,
            "refund",
            order,
            items=items,
            amount=amount,
            sequence=sequence,
            others_key="NotRefundedItems",
            extra=extra,
        ),
    )
