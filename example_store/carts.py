"""Carts in SQLite, found through the cart id kept in the shopper's session.

A cart and its lines are plain objects whose attribute names flask-klaviyo's ``Cart.coerce`` and
``LineItem.coerce`` already read (``id``, ``items``, ``checkout_url``; a line's ``product``,
``quantity``, ``unit_price``, ``line_id``), so views hand them to ``@tracks`` as they are. Money
is kept in integer cents; ``unit_price`` is the dollars Klaviyo shows.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from flask import session, url_for

from . import catalog
from .catalog import Product
from .db import get_db, transaction

__all__ = [
    "MAX_QUANTITY",
    "Cart",
    "CartError",
    "CartLine",
    "add_item",
    "current_cart",
    "mark_checkout_started",
    "set_quantity",
]

MAX_QUANTITY = 99  # of one product in one cart
SESSION_KEY = "cart_id"


class CartError(ValueError):
    """A change the cart refuses (unknown product, bad quantity); ``code`` is for JSON clients."""

    def __init__(self, code: str, message: str) -> None:
        self.code = code
        self.message = message
        super().__init__(message)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


@dataclass(frozen=True)
class CartLine:
    """One product in a cart, at the price it was added for."""

    id: int
    product: Product
    quantity: int
    unit_price_cents: int

    @property
    def line_id(self) -> str:
        return str(self.id)

    @property
    def unit_price(self) -> float:
        return self.unit_price_cents / 100

    @property
    def row_total_cents(self) -> int:
        return self.unit_price_cents * self.quantity

    def to_dict(self) -> dict[str, Any]:
        """The JSON API's line, which is also what ``@tracks`` reads on the JSON route."""
        return {
            "line_id": self.line_id,
            "product_id": self.product.id,
            "product": self.product.to_klaviyo_product(),
            "quantity": self.quantity,
            "unit_price": self.unit_price,
            "unit_price_cents": self.unit_price_cents,
            "row_total_cents": self.row_total_cents,
        }


@dataclass
class Cart:
    """A shopper's cart. ``id`` is None until something is added (no row for browsers)."""

    id: str | None = None
    lines: list[CartLine] = field(default_factory=list)
    revision: int = 0
    checkout_revision: int | None = None

    @property
    def items(self) -> list[CartLine]:
        return self.lines

    @property
    def checkout_url(self) -> str:
        return url_for("store.checkout", _external=True)

    @property
    def total_cents(self) -> int:
        return sum(line.row_total_cents for line in self.lines)

    @property
    def count(self) -> int:
        return sum(line.quantity for line in self.lines)

    @property
    def checkout_started(self) -> bool:
        """Started Checkout was already sent for exactly these contents."""
        return self.checkout_revision == self.revision

    def line_for(self, product_id: str) -> CartLine | None:
        return next((line for line in self.lines if line.product.id == product_id), None)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "items": [line.to_dict() for line in self.lines],
            "item_count": self.count,
            "total_cents": self.total_cents,
            "total": self.total_cents / 100,
            "checkout_url": self.checkout_url,
        }


def _load(cart_id: str) -> Cart | None:
    db = get_db()
    row = db.execute(
        "SELECT id, revision, checkout_revision FROM carts WHERE id = ? AND status = 'open'",
        (cart_id,),
    ).fetchone()
    if row is None:
        return None
    lines = [
        CartLine(
            id=item["line_id"],
            product=Product.from_row(item),
            quantity=item["quantity"],
            unit_price_cents=item["unit_price_cents"],
        )
        for item in db.execute(
            "SELECT cart_items.id AS line_id, cart_items.quantity, cart_items.unit_price_cents, "
            "products.* FROM cart_items JOIN products ON products.id = cart_items.product_id "
            "WHERE cart_items.cart_id = ? ORDER BY cart_items.id",
            (cart_id,),
        ).fetchall()
    ]
    return Cart(
        id=row["id"],
        lines=lines,
        revision=row["revision"],
        checkout_revision=row["checkout_revision"],
    )


def current_cart() -> Cart:
    """The session's open cart, or an empty one (not stored until something is added)."""
    cart_id = session.get(SESSION_KEY)
    if isinstance(cart_id, str):
        cart = _load(cart_id)
        if cart is not None:
            return cart
    return Cart()


def _parse_quantity(raw: Any, *, allow_zero: bool = False) -> int:
    if isinstance(raw, bool):
        raise CartError("invalid_quantity", "quantity must be a whole number")
    if isinstance(raw, str):
        raw = raw.strip() or "1"
        if not raw.isdigit() or len(raw) > 4:
            raise CartError("invalid_quantity", "quantity must be a whole number")
        raw = int(raw)
    if not isinstance(raw, int):
        raise CartError("invalid_quantity", "quantity must be a whole number")
    low = 0 if allow_zero else 1
    if not low <= raw <= MAX_QUANTITY:
        raise CartError("invalid_quantity", f"quantity must be between {low} and {MAX_QUANTITY}")
    return raw


def _product(product_id: Any) -> Product:
    if not isinstance(product_id, str) or not product_id.strip():
        raise CartError("invalid_product_id", "product_id is required")
    found = catalog.get_product(product_id.strip())
    if found is None:
        raise CartError("unknown_product", f"there is no product {product_id.strip()[:80]!r}")
    return found


def add_item(product_id: Any, quantity: Any = 1) -> tuple[Cart, CartLine]:
    """Add ``quantity`` of a product; returns the cart after the add and the line *as added*
    (its quantity is how many were just added, what Added to Cart's AddedItemQuantity says)."""
    product = _product(product_id)
    count = _parse_quantity(1 if quantity is None else quantity)
    cart_id = session.get(SESSION_KEY)
    if not isinstance(cart_id, str) or _load(cart_id) is None:
        cart_id = None
    with transaction() as db:
        if cart_id is None:
            cart_id = uuid.uuid4().hex
            db.execute(
                "INSERT INTO carts (id, status, created_at, updated_at) VALUES (?, 'open', ?, ?)",
                (cart_id, _now(), _now()),
            )
        row = db.execute(
            "SELECT quantity FROM cart_items WHERE cart_id = ? AND product_id = ?",
            (cart_id, product.id),
        ).fetchone()
        if row is not None and row["quantity"] + count > MAX_QUANTITY:
            raise CartError(
                "invalid_quantity",
                f"at most {MAX_QUANTITY} of one product per cart; you have {row['quantity']}",
            )
        db.execute(
            "INSERT INTO cart_items (cart_id, product_id, quantity, unit_price_cents) "
            "VALUES (?, ?, ?, ?) ON CONFLICT (cart_id, product_id) DO UPDATE SET "
            "quantity = quantity + excluded.quantity, unit_price_cents = excluded.unit_price_cents",
            (cart_id, product.id, count, product.price_cents),
        )
        db.execute(
            "UPDATE carts SET revision = revision + 1, updated_at = ? WHERE id = ?",
            (_now(), cart_id),
        )
    session[SESSION_KEY] = cart_id
    cart = _load(cart_id)
    assert cart is not None
    line = cart.line_for(product.id)
    assert line is not None
    added = CartLine(
        id=line.id, product=product, quantity=count, unit_price_cents=line.unit_price_cents
    )
    return cart, added


def set_quantity(product_id: Any, quantity: Any) -> Cart:
    """Change a line's quantity (0 removes it). Not a funnel event: nothing is tracked."""
    product = _product(product_id)
    count = _parse_quantity(quantity, allow_zero=True)
    cart = current_cart()
    if cart.id is None or cart.line_for(product.id) is None:
        raise CartError("not_in_cart", f"{product.name} is not in your cart")
    with transaction() as db:
        if count == 0:
            db.execute(
                "DELETE FROM cart_items WHERE cart_id = ? AND product_id = ?",
                (cart.id, product.id),
            )
        else:
            db.execute(
                "UPDATE cart_items SET quantity = ? WHERE cart_id = ? AND product_id = ?",
                (count, cart.id, product.id),
            )
        db.execute(
            "UPDATE carts SET revision = revision + 1, updated_at = ? WHERE id = ?",
            (_now(), cart.id),
        )
    return current_cart()


def mark_checkout_started(cart: Cart) -> bool:
    """Record that Started Checkout goes out for this cart as it is now; False if it already
    went (a reload, the page after the email form) so the metric counts checkouts, not views.

    Conditional on the revision, so two concurrent requests cannot both claim it.
    """
    if cart.id is None:
        return False
    with transaction() as db:
        claimed = db.execute(
            "UPDATE carts SET checkout_revision = revision WHERE id = ? AND revision = ? "
            "AND (checkout_revision IS NULL OR checkout_revision != revision)",
            (cart.id, cart.revision),
        ).rowcount
    if claimed:
        cart.checkout_revision = cart.revision
    return bool(claimed)
