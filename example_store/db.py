"""SQLite through the standard library: one connection per request, closed at teardown.

The schema already holds the tables the whole funnel needs (carts, orders, payment webhooks); they
stay minimal until the features that use them arrive. ``init_app`` creates the schema and seeds the
catalog idempotently, so every process that builds the app (web, workers) can run it safely.
"""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

from flask import Flask, current_app, g

__all__ = ["SCHEMA", "TABLES", "close_db", "connect", "get_db", "init_app", "init_db"]

SCHEMA = """
CREATE TABLE IF NOT EXISTS products (
    id               TEXT PRIMARY KEY,
    sku              TEXT NOT NULL UNIQUE,
    name             TEXT NOT NULL,
    description      TEXT NOT NULL DEFAULT '',
    price_cents      INTEGER NOT NULL CHECK (price_cents >= 0),
    compare_at_cents INTEGER CHECK (compare_at_cents IS NULL OR compare_at_cents >= 0),
    brand            TEXT,
    categories       TEXT NOT NULL DEFAULT '[]',  -- JSON list of names
    image            TEXT                         -- path under static/
);

CREATE TABLE IF NOT EXISTS carts (
    id         TEXT PRIMARY KEY,
    email      TEXT,
    status     TEXT NOT NULL DEFAULT 'open',      -- open | ordered
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);

CREATE TABLE IF NOT EXISTS cart_items (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    cart_id          TEXT NOT NULL REFERENCES carts(id) ON DELETE CASCADE,
    product_id       TEXT NOT NULL REFERENCES products(id),
    quantity         INTEGER NOT NULL CHECK (quantity > 0),
    unit_price_cents INTEGER NOT NULL,
    UNIQUE (cart_id, product_id)
);

CREATE TABLE IF NOT EXISTS orders (
    id             TEXT PRIMARY KEY,
    cart_id        TEXT REFERENCES carts(id),
    email          TEXT NOT NULL,
    status         TEXT NOT NULL DEFAULT 'pending',  -- paid | fulfilled | canceled | refunded
    total_cents    INTEGER NOT NULL,
    discount_code  TEXT,
    discount_cents INTEGER NOT NULL DEFAULT 0,
    address        TEXT,                             -- JSON
    created_at     TEXT NOT NULL,
    updated_at     TEXT NOT NULL
);

CREATE TABLE IF NOT EXISTS order_items (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    order_id         TEXT NOT NULL REFERENCES orders(id) ON DELETE CASCADE,
    product_id       TEXT NOT NULL,
    sku              TEXT,
    name             TEXT NOT NULL,                  -- as sold, even if the product changes
    quantity         INTEGER NOT NULL CHECK (quantity > 0),
    unit_price_cents INTEGER NOT NULL
);

CREATE TABLE IF NOT EXISTS webhook_deliveries (
    id          TEXT PRIMARY KEY,                    -- the provider's delivery id: dedup
    event_type  TEXT NOT NULL,
    order_id    TEXT REFERENCES orders(id),
    payload     TEXT NOT NULL,
    received_at TEXT NOT NULL
);
"""

TABLES = ("products", "carts", "cart_items", "orders", "order_items", "webhook_deliveries")


def connect(path: str | Path) -> sqlite3.Connection:
    """A connection with rows by name and foreign keys enforced."""
    conn = sqlite3.connect(path, timeout=10.0)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA foreign_keys = ON")
    return conn


def get_db() -> sqlite3.Connection:
    """This request's (or app context's) connection, opened on first use."""
    if "store_db" not in g:
        g.store_db = connect(current_app.config["STORE_DATABASE"])
    return g.store_db  # type: ignore[no-any-return]


def close_db(exc: BaseException | None = None) -> None:
    conn = g.pop("store_db", None)
    if conn is not None:
        conn.close()


def init_db(path: str | Path) -> None:
    """Create the schema and seed the catalog; safe to run any number of times, concurrently."""
    from .catalog import seed

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with closing(connect(path)) as conn:
        # WAL lets the web process read while a worker writes; the setting persists in the file.
        conn.execute("PRAGMA journal_mode = WAL")
        conn.executescript(SCHEMA)
        with conn:
            seed(conn)


def init_app(app: Flask) -> None:
    init_db(app.config["STORE_DATABASE"])
    app.teardown_appcontext(close_db)
