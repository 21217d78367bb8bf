"""Product variants (sizes, colours, grinds) and their inventory, in SQLite.

Every product has at least one variant, the way most commerce platforms keep it: a product sold
one way has a single variant whose SKU is the product's (its page shows no choice). A variant's
id is its SKU, unique across the catalog, and is what Klaviyo's catalog and back-in-stock
subscriptions know it by.

``SEED_VARIANTS`` seeds the demo at start-up like ``catalog.SEED_PRODUCTS``, with one
difference: the inventory is only the *initial* stock. Re-seeding updates titles, prices and
policies but keeps the quantities the back office set (``set_inventory``).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping
from contextlib import closing
from dataclasses import dataclass
from typing import Any

from flask import Flask

from .catalog import SEED_PRODUCTS
from .db import connect, get_db

__all__ = [
    "LOW_STOCK",
    "MAX_INVENTORY",
    "SEED_VARIANTS",
    "Variant",
    "choose_for_cart",
    "get_variant",
    "init_app",
    "list_variants",
    "seed",
    "set_inventory",
    "variants_by_product",
]

LOW_STOCK = 5  # "Only 3 left" at or below this
MAX_INVENTORY = 100_000  # what the back office may set for one variant


@dataclass(frozen=True)
class Variant:
    id: str  # the SKU
    product_id: str
    position: int
    option_name: str  # "Grind", "Colour"; '' for a product sold one way
    title: str
    price_cents: int
    inventory_quantity: int
    inventory_policy: str  # "deny" (no sale when out of stock) | "continue" (backorder)

    @classmethod
    def from_row(cls, row: Mapping[str, Any] | sqlite3.Row) -> Variant:
        return cls(**{name: row[name] for name in cls.__dataclass_fields__})

    def name_with(self, product_name: str) -> str:
        """The product's name with this variant's title, when the product comes in several
        ways ("Enamel Camp Mug, 12 oz (Navy rim)")."""
        return f"{product_name} ({self.title})" if self.option_name else product_name

    @property
    def sku(self) -> str:
        return self.id

    @property
    def in_stock(self) -> bool:
        return self.inventory_quantity > 0

    @property
    def sellable(self) -> bool:
        """In stock, or out of stock but sold on backorder."""
        return self.in_stock or self.inventory_policy == "continue"

    @property
    def availability(self) -> str:
        """What the product page says about it."""
        if self.inventory_quantity > LOW_STOCK:
            return "In stock"
        if self.in_stock:
            return f"Only {self.inventory_quantity} left"
        if self.inventory_policy == "continue":
            return "Out of stock: ships when restocked"
        return "Out of stock"


def _v(
    product_id: str,
    sku: str,
    title: str,
    stock: int,
    *,
    option: str = "",
    policy: str = "deny",
    price_cents: int | None = None,
) -> dict[str, Any]:
    return {
        "id": sku,
        "product_id": product_id,
        "option_name": option,
        "title": title,
        "inventory_quantity": stock,
        "inventory_policy": policy,
        "price_cents": price_cents,
    }


def _options(product_id: str, option: str, *rows: tuple[str, str, int]) -> list[dict[str, Any]]:
    return [_v(product_id, sku, title, stock, option=option) for sku, title, stock in rows]


# Products sold in several ways; every other product has one variant with the product's SKU.
_CHOICES: dict[str, list[dict[str, Any]]] = {
    "house-blend": _options(
        "house-blend",
        "Grind",
        ("CC-HSE-340-WB", "Whole bean", 40),
        ("CC-HSE-340-ES", "Espresso grind", 12),
        ("CC-HSE-340-FL", "Filter grind", 0),
    ),
    "ethiopia-guji": _options(
        "ethiopia-guji",
        "Grind",
        ("CC-ETH-250-WB", "Whole bean", 18),
        ("CC-ETH-250-PO", "Pour-over grind", 0),
    ),
    "enamel-camp-mug": [
        *_options(
            "enamel-camp-mug",
            "Colour",
            ("RS-MUG-012-NV", "Navy rim", 24),
            ("RS-MUG-012-FG", "Forest green", 0),
        ),
        _v("enamel-camp-mug", "RS-MUG-012-CR", "Cream", 0, option="Colour", policy="continue"),
    ],
    "summit-bottle": _options(
        "summit-bottle",
        "Colour",
        ("RS-BTL-750-RD", "Canyon red", 30),
        ("RS-BTL-750-SL", "Slate", 4),
        ("RS-BTL-750-WH", "Glacier white", 0),
    ),
    "linen-tea-towels": _options(
        "linen-tea-towels",
        "Colour",
        ("NF-TWL-LN2-BL", "Slate blue", 16),
        ("NF-TWL-LN2-SG", "Sage", 0),
    ),
    "waxed-canvas-daypack": _options(
        "waxed-canvas-daypack",
        "Colour",
        ("RS-PCK-020-TN", "Field tan", 7),
        ("RS-PCK-020-OL", "Olive", 0),
    ),
}
# Single-variant products' initial stock (anything not listed: 20). The cold brew kit is sold
# out, so its page shows "Notify me" without a choice to make.
_SINGLE_STOCK = {"cold-brew-kit": 0, "merino-camp-blanket": 3, "burr-hand-grinder": 9}


def _seed_rows() -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for product in SEED_PRODUCTS:
        choices = _CHOICES.get(product.id) or [
            _v(product.id, product.sku, "Default", _SINGLE_STOCK.get(product.id, 20))
        ]
        for position, row in enumerate(choices):
            price = row["price_cents"] if row["price_cents"] is not None else product.price_cents
            rows.append({**row, "position": position, "price_cents": price})
    return rows


SEED_VARIANTS: tuple[Variant, ...] = tuple(Variant(**row) for row in _seed_rows())

_UPSERT = """
INSERT INTO variants
    (id, product_id, position, option_name, title, price_cents, inventory_quantity,
     inventory_policy)
VALUES
    (:id, :product_id, :position, :option_name, :title, :price_cents, :inventory_quantity,
     :inventory_policy)
ON CONFLICT (id) DO UPDATE SET
    product_id = excluded.product_id, position = excluded.position,
    option_name = excluded.option_name, title = excluded.title,
    price_cents = excluded.price_cents, inventory_policy = excluded.inventory_policy
"""


def seed(conn: sqlite3.Connection) -> None:
    """Upsert ``SEED_VARIANTS``, keeping the stock of variants already there (caller commits)."""
    conn.executemany(_UPSERT, [vars(v) for v in SEED_VARIANTS])


def list_variants(product_id: str) -> list[Variant]:
    rows = get_db().execute(
        "SELECT * FROM variants WHERE product_id = ? ORDER BY position, id", (product_id,)
    )
    return [Variant.from_row(row) for row in rows.fetchall()]


def variants_by_product() -> dict[str, list[Variant]]:
    """Every variant, grouped by product id, in page order (one query for the whole catalog)."""
    grouped: dict[str, list[Variant]] = {}
    rows = get_db().execute("SELECT * FROM variants ORDER BY product_id, position, id")
    for row in rows.fetchall():
        grouped.setdefault(row["product_id"], []).append(Variant.from_row(row))
    return grouped


def get_variant(variant_id: str) -> Variant | None:
    row = get_db().execute("SELECT * FROM variants WHERE id = ?", (variant_id,)).fetchone()
    return Variant.from_row(row) if row is not None else None


def choose_for_cart(variants: list[Variant]) -> Variant | None:
    """The variant an add to cart without one means: the first one that can be sold."""
    return next((v for v in variants if v.sellable), None)


def set_inventory(db: sqlite3.Connection, variant_id: str, quantity: int) -> int | None:
    """Set a variant's stock (inside the caller's transaction); the quantity before, or None
    if there is no such variant."""
    row = db.execute(
        "SELECT inventory_quantity FROM variants WHERE id = ?", (variant_id,)
    ).fetchone()
    if row is None:
        return None
    db.execute("UPDATE variants SET inventory_quantity = ? WHERE id = ?", (quantity, variant_id))
    return int(row["inventory_quantity"])


def init_app(app: Flask) -> None:
    """Seed the variants (after ``catalog.init_app`` seeded their products)."""
    with closing(connect(app.config["STORE_DATABASE"])) as conn, conn:
        seed(conn)
