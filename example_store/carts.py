"""Carts in SQLite, found through the cart id kept in the shopper's session.

A cart and its lines are plain objects whose attribute names flask-klaviyo's ``Cart.coerce`` and
``LineItem.coerce`` already read (``id``, ``items``, ``checkout_url``; a line's ``product``,
``quantity``, ``unit_price``, ``line_id``), so views hand them to ``@tracks`` as they are. Money
is kept in integer cents; ``unit_price`` is the dollars Klaviyo shows.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from flask import session, url_for

from . import catalog, variants
from .catalog import Product
from .db import get_db, transaction
from .variants import Variant

__all__ = [
    "MAX_QUANTITY",
    "Cart",
    "CartError",
    "CartLine",
    "add_item",
    "as_sold",
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


def as_sold(product: Product, option_name: str | None, title: str | None, sku: str) -> Product:
    """The product as a line sells it: the variant's SKU, and its title after the name when the
    product comes in several ways ("Enamel Camp Mug, 12 oz (Navy rim)"). Events and orders read
    the line's product, so Added to Cart, Started Checkout and the order lines all say which."""
    if not sku:  # a line from before variants
        return product
    name = f"{product.name} ({title})" if option_name and title else product.name
    return replace(product, sku=sku, name=name)


@dataclass(frozen=True)
class CartLine:
    """One product variant in a cart, at the price it was added for."""

    id: int
    product: Product  # as sold: the variant's SKU (see ``as_sold``)
    quantity: int
    unit_price_cents: int
    variant_id: str = ""  # '' only in carts from before variants

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
            "variant_id": self.variant_id or None,
            "sku": self.product.sku,
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

    def line_for(self, product_id: str, variant_id: str | None = None) -> CartLine | None:
        """The line of this product variant; without ``variant_id``, the product's one line."""
        lines = [line for line in self.lines if line.product.id == product_id]
        if variant_id is None:
            return lines[0] if len(lines) == 1 else None
        return next((line for line in lines if line.variant_id == variant_id), None)

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
            product=as_sold(
                Product.from_row(item), item["option_name"], item["variant_title"], item["vid"]
            ),
            quantity=item["quantity"],
            unit_price_cents=item["unit_price_cents"],
            variant_id=item["vid"],
        )
        for item in db.execute(
            "SELECT cart_items.id AS line_id, cart_items.quantity, cart_items.unit_price_cents, "
            "cart_items.variant_id AS vid, variants.option_name, variants.title AS variant_title, "
            "products.* FROM cart_items JOIN products ON products.id = cart_items.product_id "
            "LEFT JOIN variants ON variants.id = cart_items.variant_id "
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


def _variant(product: Product, variant_id: Any) -> Variant:
    """The variant asked for, or the first one that can be sold when none is named."""
    if variant_id is None or variant_id == "":
        chosen = variants.choose_for_cart(variants.list_variants(product.id))
        if chosen is None:
            raise CartError("out_of_stock", f"{product.name} is out of stock")
        return chosen
    if not isinstance(variant_id, str):
        raise CartError("invalid_variant", "variant must be a string")
    found = variants.get_variant(variant_id.strip())
    if found is None or found.product_id != product.id:
        raise CartError(
            "unknown_variant", f"{product.name} has no variant {variant_id.strip()[:80]!r}"
        )
    return found


def _check_stock(product: Product, variant: Variant, wanted: int) -> None:
    if variant.inventory_policy == "continue" or wanted <= variant.inventory_quantity:
        return
    name = variant.name_with(product.name)
    if not variant.in_stock:
        raise CartError("out_of_stock", f"{name} is out of stock")
    raise CartError(
        "not_enough_stock", f"only {variant.inventory_quantity} of {name} left in stock"
    )


def add_item(product_id: Any, quantity: Any = 1, variant_id: Any = None) -> tuple[Cart, CartLine]:
    """Add ``quantity`` of a product variant (without ``variant_id``: the product's first
    variant in stock); returns the cart after the add and the line *as added* (its quantity is
    how many were just added, what Added to Cart's AddedItemQuantity says)."""
    product = _product(product_id)
    count = _parse_quantity(1 if quantity is None else quantity)
    variant = _variant(product, variant_id)
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
            "SELECT quantity FROM cart_items WHERE cart_id = ? AND product_id = ? "
            "AND variant_id = ?",
            (cart_id, product.id, variant.id),
        ).fetchone()
        have = row["quantity"] if row is not None else 0
        if have + count > MAX_QUANTITY:
            raise CartError(
                "invalid_quantity",
                f"at most {MAX_QUANTITY} of one product per cart; you have {have}",
            )
        _check_stock(product, variant, have + count)
        db.execute(
            "INSERT INTO cart_items (cart_id, product_id, variant_id, quantity, unit_price_cents) "
            "VALUES (?, ?, ?, ?, ?) ON CONFLICT (cart_id, product_id, variant_id) DO UPDATE SET "
            "quantity = quantity + excluded.quantity, unit_price_cents = excluded.unit_price_cents",
            (cart_id, product.id, variant.id, count, variant.price_cents),
        )
        db.execute(
            "UPDATE carts SET revision = revision + 1, updated_at = ? WHERE id = ?",
            (_now(), cart_id),
        )
    session[SESSION_KEY] = cart_id
    cart = _load(cart_id)
    assert cart is not None
    line = cart.line_for(product.id, variant.id)
    assert line is not None
    added = replace(line, quantity=count)
    return cart, added


def set_quantity(product_id: Any, quantity: Any, variant_id: Any = None) -> Cart:
    """Change a line's quantity (0 removes it). Not a funnel event: nothing is tracked.

    The line is the product's variant ``variant_id``; without it, the product's only line."""
    product = _product(product_id)
    count = _parse_quantity(quantity, allow_zero=True)
    if variant_id is not None and not isinstance(variant_id, str):
        raise CartError("invalid_variant", "variant must be a string")
    cart = current_cart()
    line = cart.line_for(product.id, variant_id.strip() if variant_id else None)
    if cart.id is None or line is None:
        raise CartError("not_in_cart", f"{product.name} is not in your cart")
    if count > line.quantity and line.variant_id:
        variant = variants.get_variant(line.variant_id)
        if variant is not None:
            _check_stock(product, variant, count)
    with transaction() as db:
        if count == 0:
            db.execute("DELETE FROM cart_items WHERE id = ?", (line.id,))
        else:
            db.execute("UPDATE cart_items SET quantity = ? WHERE id = ?", (count, line.id))
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
