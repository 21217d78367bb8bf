""" "Notify me when it's back": back-in-stock subscriptions from a product page.

``POST /products/<product_id>/notify`` (form or JSON: ``email``, optional ``variant``) checks
the form, then calls ``klaviyo.notify_back_in_stock``; Klaviyo emails the shopper when the
variant's inventory in its catalog goes from 0 to more (the back office's stock change queues
that catalog update, ``admin_stock.py``).

Without ``variant`` the subscription is for the product's first variant that is sold out
(for a product sold one way, its only variant). A variant that can be bought now is refused
(409): there is nothing to wait for. A bad email, an unknown variant or a product with nothing
sold out is a 400 (404 for an unknown product) with the message beside the form on the product
page (JSON ``{"error", "message"}`` to a JSON client), and nothing is queued. JSON clients get
202 ``{"status": "subscribed", "product_id", "variant"}``; a form, a 303 back to the product.
"""

from __future__ import annotations

import logging
from typing import Any

from flask import Blueprint, abort, flash, redirect, session, url_for
from werkzeug.wrappers import Response

from flask_klaviyo import KlaviyoSchemaError

from . import catalog, variants
from .catalog import Product
from .extensions import klaviyo
from .http import json_error, request_data, wants_json
from .validation import MAX_EMAIL_LENGTH, valid_email
from .variants import Variant
from .views import product_page

__all__ = ["bp"]

logger = logging.getLogger(__name__)

bp = Blueprint("stock", __name__)


class Refused(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def _variant(product_id: str, asked: Any) -> Variant:
    choices = variants.list_variants(product_id)
    if asked is None or asked == "":
        waiting = next((v for v in choices if not v.in_stock), None)
        if waiting is None:
            raise Refused(400, "nothing_sold_out", "Everything here is in stock: no need to wait.")
        return waiting
    if not isinstance(asked, str):
        raise Refused(400, "invalid_variant", "Please choose one of the options.")
    found = next((v for v in choices if v.id == asked.strip()), None)
    if found is None:
        raise Refused(400, "unknown_variant", "That option isn't one of this product's.")
    if found.in_stock:
        raise Refused(409, "in_stock", f"{found.title} is in stock: add it to your cart.")
    return found


def _refuse(product: Product, refused: Refused, email: Any, variant: Any) -> Response:
    if wants_json():
        return json_error(refused.status, refused.code, refused.message)
    page = product_page(
        product,
        variant if isinstance(variant, str) else None,
        notify_error=refused.message,
        notify_email=email[:MAX_EMAIL_LENGTH] if isinstance(email, str) else None,
    )
    return Response(page, status=refused.status, mimetype="text/html")


@bp.post("/products/<product_id>/notify")
def notify(product_id: str) -> Response | tuple[dict[str, Any], int]:
    product = catalog.get_product(product_id)
    if product is None:
        abort(404, description="That product isn't in our catalog (any more).")
    data = request_data()
    try:
        email = valid_email(data.get("email") or session.get("email"))
        if email is None:
            raise Refused(
                400, "invalid_email", "Please enter a valid email address, like you@example.com."
            )
        variant = _variant(product.id, data.get("variant"))
        try:
            klaviyo.notify_back_in_stock(email=email, variant=variant.id)
        except KlaviyoSchemaError as exc:  # the store's checks above should make this unreachable
            logger.warning("back-in-stock subscription refused by flask-klaviyo: %s", exc)
            raise Refused(400, "invalid_subscription", "We couldn't take that request.") from exc
    except Refused as refused:
        return _refuse(product, refused, data.get("email"), data.get("variant"))
    label = variant.name_with(product.name)
    if wants_json():
        body = {"status": "subscribed", "product_id": product.id, "variant": variant.id}
        return body, 202
    flash(f"We'll email {email} when {label} is back in stock.", "info")
    return redirect(url_for("store.product", product_id=product.id, variant=variant.id), code=303)
