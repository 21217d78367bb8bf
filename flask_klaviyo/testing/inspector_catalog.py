"""The inspector's catalog: items (each with its variants and their inventory), categories and
back-in-stock subscriptions, as escaped HTML (no script, no external asset)."""

from __future__ import annotations

import html
import logging
from typing import Any

from ._config import INSPECTOR_ROWS
from .state import State

log = logging.getLogger(__name__)

ITEM_COLUMNS = ("id", "title", "price", "published", "categories", "variants")
VARIANT_COLUMNS = ("id", "sku", "title", "price", "inventory", "policy", "published")
CATEGORY_COLUMNS = ("id", "name", "items")
BACK_IN_STOCK_COLUMNS = ("email", "phone_number", "variant", "channels", "received")


def _cell(value: Any) -> str:
    return f"<td>{html.escape('' if value is None else str(value))}</td>"


def _head(columns: tuple[str, ...]) -> str:
    return "<thead><tr>" + "".join(f"<th>{html.escape(c)}</th>" for c in columns) + "</tr></thead>"


def _rows(rows: list[list[Any]]) -> str:
    return "".join("<tr>" + "".join(_cell(value) for value in row) + "</tr>" for row in rows)


def _variants(state: State, ids: list[str]) -> str:
    """An item's variants: a count, and a table of them behind a <details>."""
    variants = [state.catalog_variants[v] for v in ids if v in state.catalog_variants]
    if not variants:
        return "<td>none</td>"
    stock = sum(v.get("inventory_quantity") or 0 for v in variants)
    rows = [
        [
            v["id"],
            v.get("sku"),
            v.get("title"),
            v.get("price"),
            v.get("inventory_quantity"),
            v.get("inventory_policy"),
            v.get("published"),
        ]
        for v in variants
    ]
    summary = f"{len(variants)} variant(s), {stock:g} in stock"
    return (
        f"<td><details><summary>{html.escape(summary)}</summary><table>"
        f"{_head(VARIANT_COLUMNS)}<tbody>{_rows(rows)}</tbody></table></details></td>"
    )


def render(state: State) -> str:
    """The catalog sections of the page (caller holds ``state.lock``)."""
    state.jobs.settle_due()
    categories = state.catalog_categories
    items = list(state.catalog.values())[-INSPECTOR_ROWS:]
    if items:
        body = []
        for item in reversed(items):
            names = [categories[c].get("name") or c for c in item["categories"] if c in categories]
            cells = [item["id"], item.get("title"), item.get("price"), item.get("published")]
            body.append(
                "<tr>"
                + "".join(_cell(value) for value in [*cells, ", ".join(map(str, names))])
                + _variants(state, item["variants"])
                + "</tr>"
            )
        item_html = f"<table>{_head(ITEM_COLUMNS)}<tbody>{''.join(body)}</tbody></table>"
    else:
        item_html = "<p class=empty>No catalog items yet.</p>"
    counts: dict[str, int] = {}
    for item in state.catalog.values():
        for category in item["categories"]:
            counts[category] = counts.get(category, 0) + 1
    category_rows = [
        [c["id"], c.get("name"), counts.get(c["id"], 0)]
        for c in list(categories.values())[-INSPECTOR_ROWS:]
    ]
    subscriptions = [
        [s["email"], s["phone_number"], s["variant"], ", ".join(s["channels"]), s["received_at"]]
        for s in reversed(state.back_in_stock[-INSPECTOR_ROWS:])
    ]
    return (
        f"<h2>Catalog items ({len(state.catalog)}; {len(state.catalog_variants)} variants)</h2>"
        + item_html
        + f"<h2>Catalog categories ({len(categories)})</h2>"
        + _section(CATEGORY_COLUMNS, category_rows, "No catalog categories yet.")
        + "<h2>Back-in-stock subscriptions</h2>"
        + _section(BACK_IN_STOCK_COLUMNS, subscriptions, "No back-in-stock subscriptions yet.")
    )


def _section(columns: tuple[str, ...], rows: list[list[Any]], empty: str) -> str:
    if not rows:
        return f"<p class=empty>{html.escape(empty)}</p>"
    return f"<table>{_head(columns)}<tbody>{_rows(rows)}</tbody></table>"
