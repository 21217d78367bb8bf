"""The back office's stock page: every variant's inventory, and a form to set it.

``POST /admin/products/<product_id>/stock`` (form or JSON: ``quantity``, optional ``variant``;
without it, the product's only variant, and a product sold several ways answers 400) sets the
inventory and hands the product, as the catalog source describes it, to
``klaviyo.catalog_changed``: Klaviyo's catalog has the new stock within seconds, and when a
variant goes from 0 to more, Klaviyo sends the back-in-stock emails shoppers asked for.
Setting the quantity it already has changes nothing and queues nothing.

Same basic auth as the order pages (``admin.require_admin``).
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, abort, flash, redirect, render_template, url_for
from werkzeug.wrappers import Response

from . import catalog, variants
from .admin import require_admin
from .db import transaction
from .extensions import klaviyo
from .http import json_error, request_data, wants_json
from .klaviyo_catalog import catalog_product
from .variants import MAX_INVENTORY, Variant

__all__ = ["bp"]

bp = Blueprint("admin_stock", __name__, url_prefix="/admin")
bp.before_request(require_admin)


@bp.get("/products")
def products() -> str:
    grouped = variants.variants_by_product()
    rows = [(product, grouped.get(product.id, [])) for product in catalog.list_products()]
    return render_template("admin_products.html", rows=rows, max_inventory=MAX_INVENTORY)


def _quantity(raw: Any) -> int | None:
    if isinstance(raw, bool):
        return None
    if isinstance(raw, str) and raw.strip().isdigit() and len(raw.strip()) <= 7:
        raw = int(raw.strip())
    if isinstance(raw, int) and 0 <= raw <= MAX_INVENTORY:
        return raw
    return None


def _variant(product_id: str, asked: Any) -> Variant | str:
    """The variant to restock, or what is wrong with the request."""
    choices = variants.list_variants(product_id)
    if asked is None or asked == "":
        if len(choices) == 1:
            return choices[0]
        return "This product comes in several variants: say which one (variant)."
    found = next((v for v in choices if isinstance(asked, str) and v.id == asked.strip()), None)
    return found if found is not None else "That variant isn't one of this product's."


def _refused(code: str, message: str) -> Response:
    if wants_json():
        return json_error(400, code, message)
    abort(400, description=message)


@bp.post("/products/<product_id>/stock")
def set_stock(product_id: str) -> Response | tuple[dict[str, Any], int]:
    product = catalog.get_product(product_id)
    if product is None:
        if wants_json():
            return json_error(404, "unknown_product", f"there is no product {product_id!r}")
        abort(404, description=f"There is no product {product_id}.")
    data = request_data()
    quantity = _quantity(data.get("quantity"))
    if quantity is None:
        return _refused(
            "invalid_quantity", f"quantity must be a whole number from 0 to {MAX_INVENTORY:,}"
        )
    variant = _variant(product.id, data.get("variant"))
    if isinstance(variant, str):
        return _refused("invalid_variant", variant)
    with transaction() as db:
        previous = variants.set_inventory(db, variant.id, quantity)
    changed = previous != quantity
    if changed:
        klaviyo.catalog_changed(catalog_product(product.id))
    if wants_json():
        body = {
            "product_id": product.id,
            "variant": variant.id,
            "inventory_quantity": quantity,
            "previous": previous,
            "changed": changed,
        }
        return body, 200
    name = variant.name_with(product.name)
    if changed:
        flash(f"{name}: stock {previous} → {quantity}.", "info")
    else:
        flash(f"{name} already had {quantity} in stock.", "info")
    return redirect(url_for("admin_stock.products"), code=303)
