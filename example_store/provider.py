"""The demo's payment provider and carrier, by hand: ``/admin/provider`` lists the orders with a
button for every webhook they could send (payment succeeded or failed; shipped, out for delivery,
delivered). Each button signs the delivery with the store's secret and POSTs it to the store's
own webhook endpoint in-process, exactly as the real sender would, then shows the answer.

Behind the admin's basic auth (closed, 404, without ``STORE_ADMIN_PASSWORD``): sending these is
what a provider does, not a shopper.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, abort, current_app, flash, redirect, render_template, url_for
from werkzeug.wrappers import Response

from flask_klaviyo.events import SHIPPING_STATUSES

from .admin import require_admin
from .orders import get_order, list_orders
from .payments import (
    DECLINED,
    PAYMENT_FAILED,
    PAYMENT_SUCCEEDED,
    WEBHOOK_PATH,
    Delivery,
    signed_delivery,
)
from .shipping import SHIPPABLE, SHIPPING_PATH, shipping_body, signed_shipping

__all__ = ["SENDS", "bp", "send"]

bp = Blueprint("provider", __name__, url_prefix="/admin/provider")
bp.before_request(require_admin)

# what a button sends -> its label
SENDS: dict[str, str] = {
    PAYMENT_SUCCEEDED: "Payment succeeded",
    PAYMENT_FAILED: "Payment failed",
    **{status: label for status, label in SHIPPING_STATUSES.items()},
}
DEMO_CARRIER = "UPS"


def _available(order: Any) -> list[str]:
    if order.status == "pending_payment":
        return [PAYMENT_SUCCEEDED, PAYMENT_FAILED]
    if order.status in SHIPPABLE:
        return list(SHIPPING_STATUSES)
    return []


def send(order: Any, what: str) -> tuple[int, dict[str, Any]]:
    """Sign and POST one delivery for ``order`` to the store itself; (status, JSON answer)."""
    secret = current_app.config["KLAVIYO_WEBHOOK_SECRET"]
    if what in (PAYMENT_SUCCEEDED, PAYMENT_FAILED):
        delivery = Delivery(
            type=what,
            order_id=order.id,
            amount=order.total_cents,
            currency=order.currency,
            payment_id=order.payment_id,
            failure_message=DECLINED if what == PAYMENT_FAILED else None,
        )
        path = WEBHOOK_PATH
        body, headers = signed_delivery(secret, delivery)
    else:
        path = SHIPPING_PATH
        tracking = f"1Z{order.id.replace('-', '')}"
        body = shipping_body(order.id, what, tracking_number=tracking, carrier=DEMO_CARRIER)
        headers = signed_shipping(secret, body)
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    with app.app_context():  # its own g and database connection, like a separate request
        answer = app.test_client().post(path, data=body, headers=headers)
    return answer.status_code, answer.get_json(silent=True) or {}


@bp.get("/")
def page() -> str:
    orders = list_orders()
    return render_template(
        "provider.html",
        orders=orders,
        available={order.id: _available(order) for order in orders},
        sends=SENDS,
    )


@bp.post("/<order_id>/<what>")
def act(order_id: str, what: str) -> Response:
    if what not in SENDS:
        abort(404)
    order = get_order(order_id)
    if order is None:
        abort(404, description=f"There is no order {order_id}.")
    status, answer = send(order, what)
    outcome = answer.get("status") or answer.get("error") or "?"
    flash(f"{SENDS[what]} for {order.id}: the store answered {status} ({outcome}).", "info")
    return redirect(url_for("provider.page"), code=303)
