"""A simulated carrier, and the back office's "send shipping update" button.

``POST /admin/orders/<order_id>/shipping-update`` (admin basic auth; form field ``status``:
``shipped``, ``out_for_delivery`` or ``delivered``) plays the carrier: it signs a delivery with
``KLAVIYO_WEBHOOK_SECRET`` and POSTs it to the store's own carrier webhook,
``POST /webhooks/shipping``, through the app (no network), the way the payment page calls
``/webhooks/payments`` (``payment_page.py``). The webhook handler, not this button, tells
Klaviyo (Shipping Update): a real carrier calls it with nobody in the back office.

The body, as the carrier webhook reads it::

    {"order_id": "SP-7F3A9C21", "status": "out_for_delivery",
     "tracking_number": "1ZSP7F3A9C21", "carrier": "UPS"}

A store without that webhook route (it is added separately) gets a message and nothing is sent.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from flask import Blueprint, abort, current_app, flash, redirect, request, url_for
from werkzeug.wrappers import Response

from flask_klaviyo.webhooks import SIGNATURE_HEADER, sign

from .admin import require_admin
from .orders import Order, get_order

__all__ = ["SHIPPING_STATUSES", "SHIPPING_WEBHOOK_PATH", "bp", "shipment_body", "webhook_available"]

log = logging.getLogger(__name__)

bp = Blueprint("admin_shipping", __name__, url_prefix="/admin")
bp.before_request(require_admin)

SHIPPING_WEBHOOK_PATH = "/webhooks/shipping"
SHIPPING_STATUSES = {
    "shipped": "Shipped",
    "out_for_delivery": "Out for delivery",
    "delivered": "Delivered",
}
CARRIER = "UPS"
SHIPPABLE = ("paid", "fulfilled")


@bp.app_context_processor
def shipping_choices() -> dict[str, Any]:
    """The back office's select of shipping statuses (``admin_orders.html``)."""
    return {"shipping_statuses": SHIPPING_STATUSES}


def webhook_available() -> bool:
    """Whether this store has a carrier webhook to call."""
    adapter = current_app.url_map.bind("localhost")
    try:
        adapter.match(SHIPPING_WEBHOOK_PATH, method="POST")
    except Exception:  # NotFound, MethodNotAllowed: no such route
        return False
    return True


def shipment_body(order: Order, status: str) -> bytes:
    payload: dict[str, Any] = {
        "order_id": order.id,
        "status": status,
        "tracking_number": f"1Z{order.id.replace('-', '')}",
        "carrier": CARRIER,
    }
    return json.dumps(payload, separators=(",", ":")).encode()


@bp.post("/orders/<order_id>/shipping-update")
def shipping_update(order_id: str) -> Response:
    order = get_order(order_id)
    if order is None:
        abort(404, description=f"There is no order {order_id}.")
    status = request.form.get("status") or "shipped"
    if status not in SHIPPING_STATUSES:
        abort(400, description="Choose shipped, out for delivery or delivered.")
    if order.status not in SHIPPABLE:
        abort(409, description=f"A {order.status.replace('_', ' ')} order has nothing to ship.")
    if not webhook_available():
        message = f"This store has no carrier webhook ({SHIPPING_WEBHOOK_PATH}): nothing sent."
        flash(message, "error")
        return redirect(url_for("admin.orders"), code=303)
    body = shipment_body(order, status)
    headers = {
        "Content-Type": "application/json",
        SIGNATURE_HEADER: sign(current_app.config["KLAVIYO_WEBHOOK_SECRET"], body),
        "User-Agent": "example-store-carrier/1.0",
    }
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    with app.app_context():  # its own g, as a separate request from the carrier would have
        response = app.test_client().post(SHIPPING_WEBHOOK_PATH, data=body, headers=headers)
    answer = response.get_json(silent=True) or {}
    log.info("carrier: %s for %s answered %s %s", status, order.id, response.status_code, answer)
    label = SHIPPING_STATUSES[status]
    if response.status_code >= 400:
        flash(f"The carrier webhook refused {label} ({response.status_code}).", "error")
    else:
        outcome = answer.get("status", "accepted") if isinstance(answer, dict) else "accepted"
        flash(f"{label} sent for {order.id}: the store answered {outcome}.", "info")
    return redirect(url_for("admin.orders"), code=303)
