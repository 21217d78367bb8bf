"""Orders: placed from the cart, paid by the provider's webhook, then fulfilled, canceled, refunded.

Lines are copied from the cart *as sold* (name, SKU, price, brand, categories, URLs), so the order
events Klaviyo receives later (from a webhook or the admin pages, with no shopper around) describe
what was bought, even if the catalog changes. ``Order.to_klaviyo()`` is the mapping handed to
``klaviyo.order_placed`` / ``order_fulfilled`` / ``order_canceled`` / ``order_refunded``.

Status transitions (the only ones allowed)::

    pending_payment ─► paid ─► fulfilled ─► refunded
          │   │          ├───► canceled
          │   │          └───► refunded
          │   └► payment_failed
          └────► canceled
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from .carts import Cart
from .db import get_db

__all__ = [
    "ADDRESS_FIELDS",
    "STATUSES",
    "TRANSITIONS",
    "Order",
    "OrderLine",
    "clean_address",
    "create_order",
    "get_order",
    "list_orders",
    "new_order_id",
    "transition",
]

STATUSES = ("pending_payment", "paid", "payment_failed", "fulfilled", "canceled", "refunded")
# action -> (statuses it may start from, status it leads to)
TRANSITIONS: dict[str, tuple[tuple[str, ...], str]] = {
    "pay": (("pending_payment",), "paid"),
    "fail_payment": (("pending_payment",), "payment_failed"),
    "fulfill": (("paid",), "fulfilled"),
    "cancel": (("pending_payment", "paid"), "canceled"),
    "refund": (("paid", "fulfilled"), "refunded"),
}
ADDRESS_FIELDS = (
    "first_name",
    "last_name",
    "address1",
    "address2",
    "city",
    "region",
    "zip",
    "country_code",
)
MAX_FIELD_CHARS = 120
COUNTRIES = {"US": "United States", "CA": "Canada", "GB": "United Kingdom", "DE": "Germany"}


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def new_order_id() -> str:
    """Short, unguessable, easy to read out on the phone: ``SP-7F3A9C21``."""
    return f"SP-{secrets.token_hex(4).upper()}"


def clean_address(raw: Mapping[str, Any] | None) -> dict[str, str] | None:
    """The shipping address fields given (trimmed, bounded); None when none were."""
    if not raw:
        return None
    address = {}
    for name in ADDRESS_FIELDS:
        value = raw.get(name)
        if isinstance(value, str) and value.strip():
            address[name] = value.strip()[:MAX_FIELD_CHARS]
    code = address.get("country_code", "").upper()
    if code:
        address["country_code"] = code
        if code in COUNTRIES:
            address["country"] = COUNTRIES[code]
    return address or None


@dataclass(frozen=True)
class OrderLine:
    """A line as sold."""

    id: int
    product_id: str
    sku: str | None
    name: str
    quantity: int
    unit_price_cents: int
    brand: str | None = None
    categories: tuple[str, ...] = ()
    product_url: str | None = None
    image_url: str | None = None

    @property
    def row_total_cents(self) -> int:
        return self.unit_price_cents * self.quantity

    def to_klaviyo(self) -> dict[str, Any]:
        return {
            "line_id": str(self.id),
            "quantity": self.quantity,
            "unit_price": self.unit_price_cents / 100,
            "product": {
                "id": self.product_id,
                "sku": self.sku,
                "name": self.name,
                "price": self.unit_price_cents / 100,
                "url": self.product_url,
                "image_url": self.image_url,
                "categories": list(self.categories),
                "brand": self.brand,
            },
        }


@dataclass
class Order:
    id: str
    email: str
    status: str
    total_cents: int
    currency: str
    created_at: datetime
    lines: list[OrderLine] = field(default_factory=list)
    shipping_address: dict[str, str] | None = None
    payment_id: str | None = None
    paid_at: str | None = None
    status_reason: str | None = None

    @property
    def item_count(self) -> int:
        return sum(line.quantity for line in self.lines)

    def can(self, action: str) -> bool:
        return self.status in TRANSITIONS[action][0]

    def to_klaviyo(self) -> dict[str, Any]:
        """What flask-klaviyo's ``Order.coerce`` reads: the order's own email is its identity."""
        address = self.shipping_address or {}
        return {
            "id": self.id,
            "email": self.email,
            "first_name": address.get("first_name"),
            "last_name": address.get("last_name"),
            "items": [line.to_klaviyo() for line in self.lines],
            "total": self.total_cents / 100,
            "currency": self.currency,
            "shipping_address": dict(address) or None,
            "placed_at": self.created_at,
        }

    def to_dict(self) -> dict[str, Any]:
        """The JSON the store answers about an order."""
        return {
            "order_id": self.id,
            "status": self.status,
            "email": self.email,
            "total_cents": self.total_cents,
            "currency": self.currency,
            "items": [
                {
                    "product_id": line.product_id,
                    "sku": line.sku,
                    "name": line.name,
                    "quantity": line.quantity,
                    "unit_price_cents": line.unit_price_cents,
                }
                for line in self.lines
            ],
            "shipping_address": self.shipping_address,
        }


def _order(row: Any) -> Order:
    lines = [
        OrderLine(
            id=item["id"],
            product_id=item["product_id"],
            sku=item["sku"],
            name=item["name"],
            quantity=item["quantity"],
            unit_price_cents=item["unit_price_cents"],
            brand=item["brand"],
            categories=tuple(json.loads(item["categories"] or "[]")),
            product_url=item["product_url"],
            image_url=item["image_url"],
        )
        for item in get_db()
        .execute("SELECT * FROM order_items WHERE order_id = ? ORDER BY id", (row["id"],))
        .fetchall()
    ]
    return Order(
        id=row["id"],
        email=row["email"],
        status=row["status"],
        total_cents=row["total_cents"],
        currency=row["currency"],
        created_at=datetime.fromisoformat(row["created_at"]),
        lines=lines,
        shipping_address=json.loads(row["address"]) if row["address"] else None,
        payment_id=row["payment_id"],
        paid_at=row["paid_at"],
        status_reason=row["status_reason"],
    )


def get_order(order_id: str) -> Order | None:
    row = get_db().execute("SELECT * FROM orders WHERE id = ?", (order_id,)).fetchone()
    return _order(row) if row is not None else None


def list_orders(limit: int = 100) -> list[Order]:
    rows = get_db().execute(
        "SELECT * FROM orders ORDER BY created_at DESC, rowid DESC LIMIT ?", (limit,)
    )
    return [_order(row) for row in rows.fetchall()]


def create_order(
    db: Any,
    cart: Cart,
    *,
    email: str,
    currency: str,
    shipping_address: dict[str, str] | None,
    payment_id: str,
) -> str:
    """Insert the order and its lines from ``cart`` and close the cart (inside the caller's
    transaction); returns the new order id. Product and image URLs are taken now, absolute."""
    order_id = new_order_id()
    now = _now()
    db.execute(
        "INSERT INTO orders (id, cart_id, email, status, total_cents, address, currency, "
        "payment_id, created_at, updated_at) VALUES (?, ?, ?, 'pending_payment', ?, ?, ?, ?, ?, ?)",
        (
            order_id,
            cart.id,
            email,
            cart.total_cents,
            json.dumps(shipping_address) if shipping_address else None,
            currency,
            payment_id,
            now,
            now,
        ),
    )
    for line in cart.lines:
        product = line.product.to_klaviyo_product()
        db.execute(
            "INSERT INTO order_items (order_id, product_id, sku, name, quantity, "
            "unit_price_cents, brand, categories, product_url, image_url) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                order_id,
                line.product.id,
                line.product.sku,
                line.product.name,
                line.quantity,
                line.unit_price_cents,
                line.product.brand,
                json.dumps(list(line.product.categories)),
                product["url"],
                product["image_url"],
            ),
        )
    db.execute(
        "UPDATE carts SET status = 'ordered', email = ?, updated_at = ? WHERE id = ?",
        (email, now, cart.id),
    )
    return order_id


def transition(db: Any, order_id: str, action: str, *, reason: str | None = None) -> bool:
    """Move the order along ``action`` if its current status allows it (inside the caller's
    transaction); False when it does not, so a repeated action changes nothing."""
    sources, target = TRANSITIONS[action]
    marks = ", ".join("?" * len(sources))
    now = _now()
    paid_at = ", paid_at = ?" if action == "pay" else ""
    params: list[Any] = [target, reason, now]
    if paid_at:
        params.append(now)
    changed = db.execute(
        f"UPDATE orders SET status = ?, status_reason = COALESCE(?, status_reason), "
        f"updated_at = ?{paid_at} WHERE id = ? AND status IN ({marks})",
        (*params, order_id, *sources),
    ).rowcount
    return bool(changed)
