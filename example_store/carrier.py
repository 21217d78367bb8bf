"""A simulated carrier, and the back office's "send shipping update" button.

``POST /admin/orders/<order_id>/shipping-update`` (admin basic auth) plays the carrier: it signs
a ``shipment.updated`` delivery with ``KLAVIYO_WEBHOOK_SECRET`` and POSTs it to the store's own
carrier webhook, ``POST /webhooks/shipping``, through the app (no network), the way the payment
provider's page calls ``/webhooks/payments`` (``provider.py``). The webhook handler, not this
button, tells Klaviyo (Shipping Update): a real carrier calls it without anyone in the back office.

A delivery (amounts and ids as a carrier sends them)::

    {"id": "evt_...", "type": "shipment.updated", "created": 1767225600,
     "data": {"order_id": "SP-7F3A9C21", "carrier": "Switchback Post",
              "tracking_number": "SBP...", "status": "in_transit",
              "tracking_url": "https://.../track/SBP..."}}

If the store has no carrier webhook route, the button says so and sends nothing.
"""

from __future__ import annotations

import json
import logging
import secrets
import time
from typing import Any

from flask import Blueprint, abort, current_app, flash, redirect, url_for
from werkzeug.wrappers import Response

from flask_klaviyo.webhooks import SIGNATURE_HEADER, sign

from .admin import require_admin
from .orders import Order, get_order

__all__ = ["SHIPPING_WEBHOOK_PATH", "bp", "shipment_body", "webhook_available"]

log = logging.getLogger(__name__)

bp = Blueprint("admin_shipping", __name__, url_prefix="/admin")
bp.before_request(require_admin)

SHIPPING_WEBHOOK_PATH = "/webhooks/shipping"
SHIPMENT_UPDATED = "shipment.updated"
CARRIER = "Switchback Post"
SHIPPABLE = ("paid", "fulfilled")


def webhook_available() -> bool:
    """Whether this store has a carrier webhook to call."""
    adapter = current_app.url_map.bind("localhost")
    return bool(adapter.test(SHIPPING_WEBHOOK_PATH, method="POST"))


def shipment_body(order: Order, status: str = "in_transit") -> bytes:
    tracking = f"SBP{order.id.removeprefix('SP-')}"
    payload: dict[str, Any] = {
        "id": f"evt_{secrets.token_hex(12)}",
        "type": SHIPMENT_UPDATED,
        "created": int(time.time()),
        "data": {
            "order_id": order.id,
            "carrier": CARRIER,
            "tracking_number": tracking,
            "status": status,
            "tracking_url": url_for("store.order", order_id=order.id, _external=True),
        },
    }
    return json.dumps(payload, separators=(",", ":")).encode()


@bp.post("/orders/<order_id>/shipping-update")
def shipping_update(order_id: str) -> Response:
    order = get_order(order_id)
    if order is None:
        abort(404, description=f"There is no order {order_id}.")
    if order.status not in SHIPPABLE:
        abort(409, description=f"A {order.status.replace('_', ' ')} order has nothing to ship.")
    if not webhook_available():
        message = f"This store has no carrier webhook ({SHIPPING_WEBHOOK_PATH}): nothing sent."
        flash(message, "error")
        return redirect(url_for("admin.orders"), code=303)
    body = shipment_body(order)
    headers = {
        "Content-Type": "application/json",
        SIGNATURE_HEADER: sign(current_app.config["KLAVIYO_WEBHOOK_SECRET"], body),
        "User-Agent": "example-store-carrier/1.0",
    }
    response = current_app.test_client().post(SHIPPING_WEBHOOK_PATH, data=body, headers=headers)
    log.info("carrier: shipping update for %s answered %s", order.id, response.status_code)
    if response.status_code >= 400:
        flash(f"The carrier webhook refused the update ({response.status_code}).", "error")
    else:
        flash(f"Sent a shipping update for {order.id} ({CARRIER}, in transit).", "info")
    return redirect(url_for("admin.orders"), code=303)
