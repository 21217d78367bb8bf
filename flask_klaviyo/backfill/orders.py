"""An order of the store's history as the events live tracking would have sent, each at its own
time and with ``backfill: true`` (Klaviyo records them without firing flows).

The events come from the same builders as ``klaviyo.order_placed`` and friends
(:mod:`flask_klaviyo.events.orders`), so their unique_ids are the ones live tracking used: a
backfill over orders Klaviyo already has adds nothing. The file's shape (README "Historical
data") is mapped onto what ``Order.coerce`` reads; a mapping of that shape, an ``Order`` or a
row ``Order.coerce`` understands are all accepted from Python.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from ..events import (
    Event,
    canceled_order,
    fulfilled_order,
    ordered_products,
    placed_order,
    refunded_order,
    validate_event,
)
from ..exceptions import KlaviyoSchemaError
from ..models import Order
from ..models.coerce import _pick

__all__ = ["STATUS_EVENTS", "order_events", "parse_time"]

SUBJECT = "Order"
# The order's later history: (time field, reason field, builder), in the order they happen.
STATUS_EVENTS = (
    ("fulfilled_at", None, fulfilled_order),
    ("canceled_at", "cancel_reason", canceled_order),
    ("refunded_at", "refund_reason", refunded_order),
)


def parse_time(value: Any, field: str) -> datetime:
    """A past time from the file: ISO 8601 with its offset (``Z`` too). A time without offset
    is refused: history read in the wrong zone would be hours off. Datetimes from Python are
    taken as the rest of the extension takes them (naive = UTC)."""
    if isinstance(value, datetime):
        return value
    if not isinstance(value, str):
        raise KlaviyoSchemaError(SUBJECT, field, f"must be an ISO 8601 time, got {value!r}")
    try:
        when = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise KlaviyoSchemaError(
            SUBJECT, field, f"must be an ISO 8601 time, got {value!r}"
        ) from None
    if when.tzinfo is None:
        raise KlaviyoSchemaError(SUBJECT, field, f"needs its UTC offset, got {value!r}")
    return when


def _line(line: Any) -> Any:
    """A file line (``id`` the line's, ``product_id`` the product's) as a nested line."""
    if not isinstance(line, Mapping) or "product" in line or "product_id" not in line:
        return line
    product = {
        "id": line.get("product_id"),
        "sku": line.get("sku"),
        "name": line.get("name"),
        "price": line.get("price"),
        "url": line.get("url"),
        "image_url": line.get("image_url"),
        "categories": line.get("categories") or [],
        "brand": line.get("brand"),
    }
    nested = {"product": product, "quantity": line.get("quantity"), "price": line.get("price")}
    if line.get("id") is not None:
        nested["line_id"] = line["id"]
    return nested


def _order_input(record: Any) -> Any:
    """The file's shape made what ``Order.coerce`` reads; anything else is passed on."""
    if not isinstance(record, Mapping):
        return record
    data = dict(record)
    lines = data.get("lines")
    if isinstance(lines, list):
        data["lines"] = [_line(line) for line in lines]
    for name in ("first_name", "last_name"):  # the buyer's names, from the billing address
        if not data.get(name):
            for address in (data.get("billing_address"), data.get("shipping_address")):
                if isinstance(address, Mapping) and address.get(name):
                    data[name] = address[name]
                    break
    return data


def order_events(record: Any, *, currency: str | None = None) -> list[Event]:
    """Placed Order, one Ordered Product per line, then Fulfilled / Canceled / Refunded Order
    where the record has their time; each validated, each with ``backfill: true``.

    Raises KlaviyoSchemaError naming the field when the record cannot be sent as it is.
    """
    order = Order.coerce(_order_input(record))
    if not order.items:
        raise KlaviyoSchemaError(SUBJECT, "lines", "an order needs at least one line")
    placed = _pick(record, ("placed_at", "created_at"))
    if placed is None:
        raise KlaviyoSchemaError(SUBJECT, "placed_at", "is required (ISO 8601 with offset)")
    placed_at = parse_time(placed, "placed_at")
    events = [
        placed_order(order, time=placed_at, currency=currency),
        *ordered_products(order, time=placed_at, currency=currency),
    ]
    for field, reason_field, builder in STATUS_EVENTS:
        when = _pick(record, (field,))
        if when is None:
            continue
        options: dict[str, Any] = {"time": parse_time(when, field), "currency": currency}
        if reason_field is not None:
            options["reason"] = _pick(record, (reason_field,))
        events.append(builder(order, **options))
    for event in events:
        event.backfill = True
        validate_event(event)
    return events
