"""``flask --app example_store store history --orders N``: a year of realistic past orders (and,
with ``--profiles FILE``, their customers) as JSON Lines, for trying ``flask klaviyo backfill``
and for its benchmark.

Orders use the real catalog (names, SKUs, prices, categories, brands, the store's URLs), repeat
customers, discount codes, and later history: most are fulfilled, some canceled, some refunded
after delivery. The same ``--seed`` writes the same file.
"""

from __future__ import annotations

import json
import random
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any, TextIO

import click
from flask import Flask
from flask.cli import AppGroup

from .catalog import SEED_PRODUCTS, Product
from .klaviyo_catalog import DEFAULT_BASE_URL

__all__ = ["customers", "init_app", "orders", "store_cli"]

FIRST = ("Ada", "Ben", "Chloe", "Dev", "Elena", "Farid", "Grace", "Hiro", "Ines", "Jonah",
         "Kemi", "Liam", "Maya", "Noor", "Owen", "Priya", "Quinn", "Rosa", "Sam")  # fmt: skip
LAST = ("Alvarez", "Brooks", "Chen", "Dubois", "Evans", "Fischer", "Garcia", "Haddad", "Ito",
        "Jensen", "Kowalski", "Lopez", "Murphy", "Nakamura", "Okafor", "Patel")  # fmt: skip
PLACES = (  # (city, region, zip, country code, phone prefix)
    ("Boston", "MA", "02110", "US", "+1617555"),
    ("Denver", "CO", "80202", "US", "+1303555"),
    ("Portland", "OR", "97205", "US", "+1503555"),
    ("Toronto", "ON", "M5V 2T6", "CA", "+1416555"),
    ("Manchester", "England", "M1 1AE", "GB", "+44161496"),
    ("Hamburg", "HH", "20095", "DE", "+4940555"),
)
STREETS = ("Main St", "Oak Ave", "Harbour Rd", "Mill Lane", "Station St", "Elm Row")
DISCOUNT = ("WELCOME10", 0.10)
CANCEL_REASONS = ("Customer changed their mind", "Payment declined", "Out of stock")
REFUND_REASONS = ("Arrived damaged", "Not as described", "Wrong size")


def _customer(index: int) -> dict[str, Any]:
    """Customer ``index``, the same in the orders and the customers file."""
    rng = random.Random(index)
    first, last = FIRST[index % len(FIRST)], LAST[(index // len(FIRST)) % len(LAST)]
    city, region, code, country, prefix = PLACES[index % len(PLACES)]
    address = {
        "first_name": first, "last_name": last,
        "address1": f"{rng.randint(1, 999)} {rng.choice(STREETS)}", "address2": "",
        "city": city, "region": region, "zip": code, "country_code": country,
        "phone": f"{prefix}{index % 10_000:04d}",
    }  # fmt: skip
    return {
        "email": f"{first.lower()}.{last.lower()}.{index}@example.com",
        "phone_number": address["phone"] if index % 3 == 0 else None,
        "address": address,
    }


def _line(number: int, product: Product, rng: random.Random, base_url: str) -> dict[str, Any]:
    return {
        "id": str(number),
        "product_id": product.id,
        "sku": product.sku,
        "name": product.name,
        "quantity": rng.choices((1, 2, 3), weights=(70, 22, 8))[0],
        "price": product.price_cents / 100,
        "url": f"{base_url}/products/{product.id}",
        "image_url": f"{base_url}/static/{product.image}",
        "categories": list(product.categories),
        "brand": product.brand,
    }


def orders(
    count: int, *, seed: int = 0, now: datetime | None = None, base_url: str = DEFAULT_BASE_URL
) -> Iterator[dict[str, Any]]:
    """``count`` orders of the past year, oldest first, one dict per order (the file's shape)."""
    rng = random.Random(seed)
    now = now or datetime.now(UTC).replace(microsecond=0)
    start = now - timedelta(days=365)
    people = max(1, count // 3)  # repeat customers: three orders each on average
    for n in range(count):
        who = _customer(rng.randrange(people))
        placed = start + timedelta(seconds=int((n + rng.random()) * 365 * 86400 / count))
        products = rng.sample(SEED_PRODUCTS, rng.choices((1, 2, 3), weights=(55, 30, 15))[0])
        lines = [_line(n * 4 + i, p, rng, base_url) for i, p in enumerate(products)]
        subtotal = sum(line["price"] * line["quantity"] for line in lines)
        code, rate = DISCOUNT if rng.random() < 0.2 else (None, 0.0)
        discount = round(subtotal * rate, 2)
        order: dict[str, Any] = {
            "id": f"SP-H{n:07d}",
            "email": who["email"],
            "phone_number": who["phone_number"],
            "placed_at": placed.isoformat(),
            "currency": "USD",
            "total": round(subtotal - discount, 2),
            "discount_code": code,
            "discount_value": discount if code else None,
            "lines": lines,
            "billing_address": who["address"],
            "shipping_address": who["address"],
        }
        _later(order, placed, now, rng)
        yield {key: value for key, value in order.items() if value is not None}


def _later(order: dict[str, Any], placed: datetime, now: datetime, rng: random.Random) -> None:
    """What happened after: 5% canceled within hours; the rest fulfilled within days (if that
    is past), 6% of those refunded weeks later."""
    if rng.random() < 0.05:
        order["canceled_at"] = min(now, placed + timedelta(hours=rng.uniform(1, 20))).isoformat()
        order["cancel_reason"] = rng.choice(CANCEL_REASONS)
        return
    fulfilled = placed + timedelta(days=rng.uniform(1, 4))
    if fulfilled >= now:
        return
    order["fulfilled_at"] = fulfilled.isoformat()
    refunded = fulfilled + timedelta(days=rng.uniform(3, 20))
    if rng.random() < 0.06 and refunded < now:
        order["refunded_at"] = refunded.isoformat()
        order["refund_reason"] = rng.choice(REFUND_REASONS)


def customers(
    count: int, *, seed: int = 0, now: datetime | None = None
) -> Iterator[dict[str, Any]]:
    """The customers of ``orders(3 * count, seed=seed)``: names, location, properties, and for
    some the time they consented to email (and SMS) marketing."""
    rng = random.Random(seed + 1)
    now = now or datetime.now(UTC).replace(microsecond=0)
    for index in range(count):
        who = _customer(index)
        address = who["address"]
        since = now - timedelta(days=rng.randint(30, 900))
        record: dict[str, Any] = {
            "email": who["email"],
            "phone_number": who["phone_number"],
            "first_name": address["first_name"],
            "last_name": address["last_name"],
            "location": {"address1": address["address1"], "city": address["city"],
                         "region": address["region"], "zip": address["zip"],
                         "country": address["country_code"]},
            "properties": {"Customer Since": since.date().isoformat()},
        }  # fmt: skip
        if rng.random() < 0.6:
            record["email_consent_at"] = (now - timedelta(days=rng.randint(1, 700))).isoformat()
            if who["phone_number"] and rng.random() < 0.5:
                record["sms_consent_at"] = record["email_consent_at"]
        yield {key: value for key, value in record.items() if value is not None}


def write_lines(records: Iterator[dict[str, Any]], out: TextIO) -> int:
    written = 0
    for record in records:
        out.write(json.dumps(record, separators=(",", ":")) + "\n")
        written += 1
    return written


store_cli = AppGroup("store", help="Switchback Provisions' own tools.")


@store_cli.command("history")
@click.option("--orders", "count", type=click.IntRange(1), default=1000, show_default=True,
              help="How many past orders.")  # fmt: skip
@click.option("--output", "-o", type=click.File("w"), default="-", help="Where (default stdout).")
@click.option("--profiles", type=click.File("w"), help="Also write their customers here.")
@click.option("--seed", type=int, default=0, show_default=True, help="Same seed, same file.")
def history_command(count: int, output: TextIO, profiles: TextIO | None, seed: int) -> None:
    """Write a year of past orders as JSON Lines (for `flask klaviyo backfill orders FILE`)."""
    written = write_lines(orders(count, seed=seed), output)
    if profiles is not None:
        people = write_lines(customers(max(1, count // 3), seed=seed), profiles)
        click.echo(f"{people:,} customers written", err=True)
    click.echo(f"{written:,} orders written", err=output is sys.stdout or output.name == "<stdout>")


def init_app(app: Flask) -> None:
    app.cli.add_command(store_cli)
