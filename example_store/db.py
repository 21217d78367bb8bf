"""SQLite through the standard library: one connection per request, closed at teardown.

The schema holds the whole funnel: products and their variants (with inventory), carts (kept
by id in the session; a line per product variant), orders with the lines as sold, the payment
provider's webhook deliveries (their ids deduplicate retries), shopper accounts and the
newsletter consents shoppers gave.
``init_app`` creates the schema and adds columns a database from an older version lacks (and
widens the cart line's key to the variant), idempotently, so every process that builds the app
(web, workers) can run it safely. This module knows tables, not what goes in them:
``catalog.init_app`` and ``variants.init_app`` seed them.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path

from flask import Flask, current_app, g

__all__ = [
    "ADDED_COLUMNS",
    "SCHEMA",
    "TABLES",
    "close_db",
    "connect",
    "get_db",
    "init_app",
    "init_db",
    "transaction",
]

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

CREATE TABLE IF NOT EXISTS variants (
    id                 TEXT PRIMARY KEY,               -- the variant's SKU: unique in the catalog
    product_id         TEXT NOT NULL REFERENCES products(id) ON DELETE CASCADE,
    position           INTEGER NOT NULL DEFAULT 0,     -- order on the product page
    option_name        TEXT NOT NULL DEFAULT '',       -- "Grind", "Colour" ('' for a lone variant)
    title              TEXT NOT NULL,
    price_cents        INTEGER NOT NULL CHECK (price_cents >= 0),
    inventory_quantity INTEGER NOT NULL DEFAULT 0 CHECK (inventory_quantity >= 0),
    inventory_policy   TEXT NOT NULL DEFAULT 'deny'    -- deny | continue (sell when out)
        CHECK (inventory_policy IN ('deny', 'continue'))
);

CREATE INDEX IF NOT EXISTS variants_by_product ON variants (product_id, position);

CREATE TABLE IF NOT EXISTS carts (
    id         TEXT PRIMARY KEY,
    email      TEXT,
    status     TEXT NOT NULL DEFAULT 'open',      -- open | ordered
    revision   INTEGER NOT NULL DEFAULT 0,        -- bumped by every change to the items
    checkout_revision INTEGER,                    -- the revision Started Checkout was sent for
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);

CREATE TABLE IF NOT EXISTS cart_items (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    cart_id          TEXT NOT NULL REFERENCES carts(id) ON DELETE CASCADE,
    product_id       TEXT NOT NULL REFERENCES products(id),
    variant_id       TEXT NOT NULL DEFAULT '',        -- '' in carts from before variants
    quantity         INTEGER NOT NULL CHECK (quantity > 0),
    unit_price_cents INTEGER NOT NULL,
    UNIQUE (cart_id, product_id, variant_id)
);

CREATE TABLE IF NOT EXISTS orders (
    id             TEXT PRIMARY KEY,
    cart_id        TEXT REFERENCES carts(id),
    email          TEXT NOT NULL,
    -- pending_payment | paid | payment_failed | fulfilled | canceled | refunded
    status         TEXT NOT NULL DEFAULT 'pending_payment',
    total_cents    INTEGER NOT NULL,
    discount_code  TEXT,
    discount_cents INTEGER NOT NULL DEFAULT 0,
    address        TEXT,                             -- JSON: the shipping address
    currency       TEXT NOT NULL DEFAULT 'USD',
    payment_id     TEXT,                             -- the provider's charge id
    paid_at        TEXT,
    status_reason  TEXT,                             -- why it was canceled or refunded
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
    unit_price_cents INTEGER NOT NULL,
    brand            TEXT,
    categories       TEXT NOT NULL DEFAULT '[]',     -- JSON list of names
    product_url      TEXT,                           -- absolute, as the shopper saw it
    image_url        TEXT
);

CREATE TABLE IF NOT EXISTS order_refunds (                -- refunds.py: partial ones too
    order_id     TEXT NOT NULL REFERENCES orders(id) ON DELETE CASCADE,
    seq          INTEGER NOT NULL,                   -- 1, 2, ...: the refund's unique_id rule
    amount_cents INTEGER NOT NULL CHECK (amount_cents > 0),
    line_ids     TEXT NOT NULL DEFAULT '[]',         -- JSON: the order_items refunded
    reason       TEXT,
    created_at   TEXT NOT NULL,
    PRIMARY KEY (order_id, seq)
);

CREATE TABLE IF NOT EXISTS webhook_deliveries (
    id          TEXT PRIMARY KEY,                    -- the provider's delivery id: dedup
    event_type  TEXT NOT NULL,
    order_id    TEXT REFERENCES orders(id),
    payload     TEXT NOT NULL,
    received_at TEXT NOT NULL
);

CREATE TABLE IF NOT EXISTS accounts (
    id            TEXT PRIMARY KEY,                  -- AC-XXXXXXXX: random, not a count
    email         TEXT NOT NULL UNIQUE,              -- lower-cased
    password_hash TEXT NOT NULL,                     -- werkzeug.security
    first_name    TEXT NOT NULL DEFAULT '',
    last_name     TEXT NOT NULL DEFAULT '',
    phone_number  TEXT,                              -- E.164
    reset_nonce   TEXT NOT NULL,                     -- in reset links; changed on use: no replay
    created_at    TEXT NOT NULL,
    updated_at    TEXT NOT NULL
);

CREATE TABLE IF NOT EXISTS newsletter_signups (
    id            INTEGER PRIMARY KEY AUTOINCREMENT, -- the consent the shopper gave, as given
    list_id       TEXT NOT NULL,
    email         TEXT,
    phone_number  TEXT,                              -- E.164, only with SMS consent
    channels      TEXT NOT NULL,                     -- "email" or "email,sms"
    source        TEXT NOT NULL,                     -- which form
    status        TEXT NOT NULL,                     -- subscribed | confirmation_sent
    consented_at  TEXT NOT NULL,
    consented_ts  REAL NOT NULL                      -- the same, for the double-submit window
);

CREATE INDEX IF NOT EXISTS newsletter_signups_by_email
    ON newsletter_signups (email, list_id, consented_ts);
"""

# The cart_items statement alone (``_widen_cart_line_key`` recreates the table from it).
_CART_ITEMS_ONLY = next(
    statement + ";"
    for statement in SCHEMA.split(";")
    if "TABLE IF NOT EXISTS cart_items" in statement
)

TABLES = (
    "products",
    "variants",
    "carts",
    "cart_items",
    "orders",
    "order_items",
    "order_refunds",
    "webhook_deliveries",
    "accounts",
    "newsletter_signups",
)

# Columns added after the first schema: (table, column, declaration) for ALTER TABLE ADD COLUMN.
ADDED_COLUMNS = (
    ("carts", "revision", "INTEGER NOT NULL DEFAULT 0"),
    ("carts", "checkout_revision", "INTEGER"),
    ("cart_items", "variant_id", "TEXT NOT NULL DEFAULT ''"),
    ("orders", "currency", "TEXT NOT NULL DEFAULT 'USD'"),
    ("orders", "payment_id", "TEXT"),
    ("orders", "paid_at", "TEXT"),
    ("orders", "status_reason", "TEXT"),
    ("order_items", "brand", "TEXT"),
    ("order_items", "categories", "TEXT NOT NULL DEFAULT '[]'"),
    ("order_items", "product_url", "TEXT"),
    ("order_items", "image_url", "TEXT"),
)


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


@contextmanager
def transaction() -> Iterator[sqlite3.Connection]:
    """This request's connection inside ``BEGIN IMMEDIATE`` ... ``COMMIT`` (rollback on error).

    IMMEDIATE takes the write lock up front, so a read-then-write (is this delivery new? is the
    order still unpaid?) cannot interleave with another process doing the same.
    """
    conn = get_db()
    if conn.in_transaction:
        raise RuntimeError("a store transaction is already open on this connection")
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        conn.rollback()
        raise
    conn.commit()


def close_db(exc: BaseException | None = None) -> None:
    conn = g.pop("store_db", None)
    if conn is not None:
        conn.close()


def init_db(path: str | Path) -> None:
    """Create the schema; safe to run any number of times, concurrently."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with closing(connect(path)) as conn:
        # WAL lets the web process read while a worker writes; the setting persists in the file.
        conn.execute("PRAGMA journal_mode = WAL")
        conn.executescript(SCHEMA)
        _add_missing_columns(conn)
        _widen_cart_line_key(conn)


def _add_missing_columns(conn: sqlite3.Connection) -> None:
    """Bring a database created by an older version up to the schema (no data is touched).

    Checked inside an IMMEDIATE transaction, so two processes starting together (gunicorn's
    workers) never both add the same column.
    """

    def missing() -> list[tuple[str, str, str]]:
        have: dict[str, set[str]] = {}
        for table, _, _ in ADDED_COLUMNS:
            if table not in have:
                rows = conn.execute(f"PRAGMA table_info({table})").fetchall()
                have[table] = {row["name"] for row in rows}
        return [entry for entry in ADDED_COLUMNS if entry[1] not in have[entry[0]]]

    if not missing():
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        for table, column, declaration in missing():
            conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {declaration}")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def _unique_keys(conn: sqlite3.Connection, table: str) -> list[tuple[str, ...]]:
    keys = []
    for index in conn.execute(f"PRAGMA index_list({table})").fetchall():
        if index["unique"] and index["origin"] != "pk":
            columns = conn.execute(f"PRAGMA index_info({index['name']})").fetchall()
            keys.append(tuple(column["name"] for column in columns))
    return keys


def _widen_cart_line_key(conn: sqlite3.Connection) -> None:
    """A cart line was one per product; it is one per product *variant* now. SQLite cannot
    change a table's UNIQUE constraint, so an older ``cart_items`` is copied into a new one
    (rows kept, ids kept), inside an IMMEDIATE transaction like ``_add_missing_columns``."""
    if ("cart_id", "product_id") not in _unique_keys(conn, "cart_items"):
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        if ("cart_id", "product_id") in _unique_keys(conn, "cart_items"):
            conn.execute("ALTER TABLE cart_items RENAME TO cart_items_before_variants")
            conn.execute(_CART_ITEMS_ONLY)
            conn.execute(
                "INSERT INTO cart_items (id, cart_id, product_id, variant_id, quantity, "
                "unit_price_cents) SELECT id, cart_id, product_id, variant_id, quantity, "
                "unit_price_cents FROM cart_items_before_variants"
            )
            conn.execute("DROP TABLE cart_items_before_variants")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def init_app(app: Flask) -> None:
    init_db(app.config["STORE_DATABASE"])
    app.teardown_appcontext(close_db)
