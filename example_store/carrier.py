"""The back office's "send shipping update" button on the orders list.

``POST /admin/orders/<order_id>/shipping-update`` (admin basic auth; form field ``status``:
``shipped``, ``out_for_delivery`` or ``delivered``) plays the carrier: the delivery is signed and
POSTed to the store's own carrier webhook, ``POST /webhooks/shipping`` (``shipping.py``), by
``provider.send``, the way the payment page calls ``/webhooks/payments``. The webhook handler,
not this button, tells Klaviyo (Shipping Update): a real carrier calls it with nobody in the
back office. ``/admin/provider`` has the same sends for every order, on a page of their own.
"""

from __future__ import annotations

import logging
from typing import Any

from flask import Blueprint, abort, flash, redirect, request, url_for
from werkzeug.wrappers import Response

from flask_klaviyo.events import SHIPPING_STATUSES

from .admin import require_admin
from .orders import get_order
from .provider import send
from .shipping import SHIPPABLE

__all__ = ["bp"]

log = logging.getLogger(__name__)

bp = Blueprint("admin_shipping", __name__, url_prefix="/admin")
bp.before_request(require_admin)


@bp.app_context_processor
def shipping_choices() -> dict[str, Any]:
    """The back office's select of shipping statuses (``admin_orders.html``)."""
    return {"shipping_statuses": SHIPPING_STATUSES}


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
    code, answer = send(order, status)
    log.info("carrier: %s for %s answered %s %s", status, order.id, code, answer)
    label = SHIPPING_STATUSES[status]
    if code >= 400:
        message = f"The carrier webhook refused {label} ({code}): {answer.get('message', '')}"
        flash(message, "error")
    else:
        outcome = answer.get("status", code)
        flash(f"{label} sent for {order.id}: the store answered {outcome}.", "info")
    return redirect(url_for("admin.orders"), code=303)
