"""The store's products: the seed catalog, the ``Product`` type views render, and its queries.

``SEED_PRODUCTS`` is the source of truth for the demo catalog: ``seed`` upserts it at start-up,
so an edit here reaches an existing database without deleting it.
"""

from __future__ import annotations

import functools
import json
import sqlite3
from collections.abc import Mapping
from contextlib import closing
from dataclasses import dataclass
from typing import Any

from flask import Flask, current_app, has_request_context, request, url_for

from .db import connect, get_db

__all__ = [
    "SEED_PRODUCTS",
    "Product",
    "get_product",
    "init_app",
    "list_categories",
    "list_products",
    "seed",
]


@dataclass(frozen=True)
class Product:
    """One product as the store keeps it: money in integer cents, never floats."""

    id: str
    sku: str
    name: str
    description: str
    price_cents: int
    compare_at_cents: int | None
    brand: str
    categories: tuple[str, ...]
    image: str  # path under static/

    @classmethod
    def from_row(cls, row: Mapping[str, Any] | sqlite3.Row) -> Product:
        return cls(
            id=row["id"],
            sku=row["sku"],
            name=row["name"],
            description=row["description"],
            price_cents=row["price_cents"],
            compare_at_cents=row["compare_at_cents"],
            brand=row["brand"],
            categories=tuple(json.loads(row["categories"] or "[]")),
            image=row["image"],
        )

    @property
    def on_sale(self) -> bool:
        return self.compare_at_cents is not None and self.compare_at_cents > self.price_cents

    def to_klaviyo_product(self) -> dict[str, Any]:
        """How flask-klaviyo sees this product (``@tracks("Viewed Product")`` calls this).

        Prices in dollars, URLs absolute (Klaviyo's emails link to them), so it needs a request
        context (or ``SERVER_NAME``) for ``url_for``.
        """
        if has_request_context():  # every product page asks: remembered per app and host
            app = current_app._get_current_object()  # type: ignore[attr-defined]
            url, image_url = _absolute_urls(app, _root(request.environ), self.id, self.image)
        else:
            url, image_url = _build_absolute_urls(self.id, self.image)
        return {
            "id": self.id,
            "name": self.name,
            "price": self.price_cents / 100,
            "sku": self.sku,
            "url": url,
            "image_url": image_url,
            "categories": list(self.categories),
            "brand": self.brand,
            "compare_at_price": (
                self.compare_at_cents / 100 if self.compare_at_cents is not None else None
            ),
        }


@functools.lru_cache(maxsize=4096)
def _absolute_urls(
    app: Flask, root: tuple[Any, ...], product_id: str, image: str
) -> tuple[str, str]:
    """A product's page and image URLs; the same for every request to one app at one root, and
    two external ``url_for``s cost as much as the rest of the Viewed Product event."""
    return _build_absolute_urls(product_id, image)


def _root(environ: Mapping[str, Any]) -> tuple[Any, ...]:
    """What an external ``url_for`` reads of the request: its scheme, host and mount point,
    straight from the WSGI environ (``request.root_url`` re-encodes them: ~25 us a page)."""
    return tuple(environ.get(key) for key in _ROOT_KEYS)


_ROOT_KEYS = ("wsgi.url_scheme", "HTTP_HOST", "SERVER_NAME", "SERVER_PORT", "SCRIPT_NAME")


def _build_absolute_urls(product_id: str, image: str) -> tuple[str, str]:
    return (
        url_for("store.product", product_id=product_id, _external=True),
        url_for("static", filename=image, _external=True),
    )


def _product(
    id: str,
    sku: str,
    name: str,
    description: str,
    price_cents: int,
    brand: str,
    categories: tuple[str, ...],
    compare_at_cents: int | None = None,
) -> Product:
    return Product(
        id=id,
        sku=sku,
        name=name,
        description=description,
        price_cents=price_cents,
        compare_at_cents=compare_at_cents,
        brand=brand,
        categories=categories,
        image=f"products/{id}.svg",
    )


RIDGELINE = "Ridgeline Supply Co."
CINDER = "Cinder & Crema"
HEARTHWOOD = "Hearthwood"
NORTHFOLD = "Northfold Mills"

SEED_PRODUCTS: tuple[Product, ...] = (
    _product(
        "gooseneck-kettle",
        "RS-KTL-090",
        "Ridgeline Gooseneck Kettle, 0.9 L",
        "A stainless pour-over kettle with a slow, steady gooseneck spout and a heat-proof "
        "walnut-toned handle. Works on gas, electric and a camp stove.",
        5400,
        RIDGELINE,
        ("Coffee", "Kitchen", "Camp Kitchen"),
        compare_at_cents=6400,
    ),
    _product(
        "house-blend",
        "CC-HSE-340",
        "House Blend Coffee, 340 g",
        "Our everyday medium roast from Brazil and Colombia: milk chocolate, toasted hazelnut "
        "and a clean, sweet finish. Roasted on Mondays and Thursdays.",
        1750,
        CINDER,
        ("Coffee", "Bestsellers"),
    ),
    _product(
        "ethiopia-guji",
        "CC-ETH-250",
        "Ethiopia Guji Natural, 250 g",
        "A sun-dried single origin from the Guji zone with notes of blueberry, jasmine and "
        "cacao nib. Lovely as a pour-over, surprising as espresso.",
        2100,
        CINDER,
        ("Coffee", "Gifts"),
    ),
    _product(
        "enamel-camp-mug",
        "RS-MUG-012",
        "Enamel Camp Mug, 12 oz",
        "Speckled enamel over steel with a rolled navy rim. Goes from the campfire grate to "
        "the breakfast table and shrugs off drops on granite.",
        1600,
        RIDGELINE,
        ("Outdoor", "Camp Kitchen", "Coffee"),
        compare_at_cents=2000,
    ),
    _product(
        "summit-bottle",
        "RS-BTL-750",
        "Summit Insulated Bottle, 750 ml",
        "Double-walled and vacuum sealed: cold for 24 hours, hot for 12. Powder-coated in "
        "canyon red with a leak-proof cap that carries on one finger.",
        3400,
        RIDGELINE,
        ("Outdoor", "Bestsellers"),
    ),
    _product(
        "burr-hand-grinder",
        "CC-GRD-001",
        "Conical Burr Hand Grinder",
        "Steel conical burrs with 40 click settings, from espresso-fine to French-press "
        "coarse. Small enough for a pack, consistent enough for the counter.",
        8900,
        CINDER,
        ("Coffee", "Camp Kitchen", "Gifts"),
        compare_at_cents=10900,
    ),
    _product(
        "merino-camp-blanket",
        "NF-BLK-MER",
        "Merino Camp Blanket",
        "Woven from undyed and madder-red merino with a classic point stripe. Warm when damp, "
        "soft enough for the sofa, 150 x 200 cm.",
        14800,
        NORTHFOLD,
        ("Outdoor", "Home", "Textiles"),
    ),
    _product(
        "linen-tea-towels",
        "NF-TWL-LN2",
        "Linen Tea Towels, Set of 2",
        "Stonewashed European linen with a slate-blue border stripe. Thirsty from the first "
        "wash and softer with every one after.",
        2400,
        NORTHFOLD,
        ("Kitchen", "Home", "Textiles"),
    ),
    _product(
        "stoneware-dripper",
        "HW-DRP-002",
        "Stoneware Pour-Over Dripper",
        "Hand-thrown stoneware with spiral ribs for an even draw. Fits #2 cone filters and "
        "sits on most mugs and carafes.",
        3200,
        HEARTHWOOD,
        ("Coffee", "Kitchen"),
    ),
    _product(
        "cast-iron-skillet",
        "HW-SKL-010",
        "Cast Iron Skillet, 10 in",
        "Pre-seasoned, smooth-milled cast iron that sears on the stove, bakes cornbread in the "
        "oven and cooks eggs over coals.",
        4500,
        HEARTHWOOD,
        ("Kitchen", "Camp Kitchen", "Bestsellers"),
        compare_at_cents=5200,
    ),
    _product(
        "beeswax-pillar-candle",
        "HW-CDL-PIL",
        "Beeswax Pillar Candle",
        "Poured from pure beeswax with a cotton wick: about 60 hours of clean, honey-scented "
        "light. 7.5 x 12 cm.",
        2200,
        HEARTHWOOD,
        ("Home", "Gifts"),
    ),
    _product(
        "waxed-canvas-daypack",
        "RS-PCK-020",
        "Waxed Canvas Daypack, 20 L",
        "Waxed cotton canvas with leather straps and a padded laptop sleeve. Sheds drizzle on "
        "the trail and looks better with every scuff.",
        12800,
        RIDGELINE,
        ("Outdoor", "Gifts"),
        compare_at_cents=15000,
    ),
    _product(
        "maple-serving-board",
        "HW-BRD-MPL",
        "Maple Serving Board",
        "Cut from a single piece of hard maple and finished with food-safe oil. A handle with a "
        "leather loop for hanging, 45 x 20 cm.",
        5800,
        HEARTHWOOD,
        ("Kitchen", "Home", "Gifts"),
    ),
    _product(
        "cold-brew-kit",
        "CC-CBK-001",
        "Cold Brew Kit, 1 L",
        "A glass jar with a fine stainless filter and a bag of our coarse-ground Cold Brew "
        "Blend. Steep overnight, pour over ice for a week.",
        3800,
        CINDER,
        ("Coffee", "Kitchen", "Bestsellers"),
    ),
)

_UPSERT = """
INSERT INTO products
    (id, sku, name, description, price_cents, compare_at_cents, brand, categories, image)
VALUES
    (:id, :sku, :name, :description, :price_cents, :compare_at_cents, :brand, :categories, :image)
ON CONFLICT (id) DO UPDATE SET
    sku = excluded.sku, name = excluded.name, description = excluded.description,
    price_cents = excluded.price_cents, compare_at_cents = excluded.compare_at_cents,
    brand = excluded.brand, categories = excluded.categories, image = excluded.image
"""


def seed(conn: sqlite3.Connection) -> None:
    """Upsert ``SEED_PRODUCTS`` (the caller commits)."""
    conn.executemany(
        _UPSERT,
        [
            {
                "id": p.id,
                "sku": p.sku,
                "name": p.name,
                "description": p.description,
                "price_cents": p.price_cents,
                "compare_at_cents": p.compare_at_cents,
                "brand": p.brand,
                "categories": json.dumps(list(p.categories)),
                "image": p.image,
            }
            for p in SEED_PRODUCTS
        ],
    )


def init_app(app: Flask) -> None:
    """Seed the catalog into the store's database (after ``db.init_app`` made the schema)."""
    with closing(connect(app.config["STORE_DATABASE"])) as conn, conn:
        seed(conn)


def list_products(category: str | None = None) -> list[Product]:
    """All products by name, or those in ``category``."""
    if category is None:
        cursor = get_db().execute("SELECT * FROM products ORDER BY name")
    else:
        cursor = get_db().execute(
            "SELECT * FROM products WHERE EXISTS "
            "(SELECT 1 FROM json_each(products.categories) WHERE value = ?) ORDER BY name",
            (category,),
        )
    return [Product.from_row(row) for row in cursor.fetchall()]


def list_categories() -> list[str]:
    cursor = get_db().execute(
        "SELECT DISTINCT value FROM products, json_each(products.categories) ORDER BY value"
    )
    return [row[0] for row in cursor.fetchall()]


def get_product(product_id: str) -> Product | None:
    row = get_db().execute("SELECT * FROM products WHERE id = ?", (product_id,)).fetchone()
    return Product.from_row(row) if row is not None else None
