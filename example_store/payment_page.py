"""The simulated payment provider's own page, and the back office's "simulate a payment" buttons.

``GET /pay/<order_id>`` is what a provider's dashboard shows for one payment: the amount, the
webhook the provider sends (``POST /webhooks/payments``, signed), every delivery the store has
recorded for the order, and the path from that webhook to Klaviyo. The shopper who placed the
order (or the admin) may see it; the confirmation page links to it.

While the order waits for its payment, the page has two buttons, "Approve" and "Decline": they
send ``payment.succeeded`` / ``payment.failed`` the way the provider would (signed, through the
store's own webhook route, :func:`provider.send`), which is how a demo with
``STORE_PAYMENTS_AUTO_CALLBACK`` off gets its orders paid. The back office's buttons
(``POST /admin/orders/<order_id>/payment/<outcome>``, behind the admin's basic auth) do the same.

Nothing here sends anything to Klaviyo itself: Placed Order goes out from the webhook handler
(``webhook.py``), whichever of these paths called it, and whether or not a browser is watching.
"""

from __future__ import annotations

import logging
from typing import Any

from flask import Blueprint, abort, current_app, flash, redirect, render_template, session, url_for
from werkzeug.wrappers import Response

from . import payments
from .admin import is_admin, require_admin
from .db import get_db
from .orders import Order, get_order
from .provider import send
from .views import SESSION_ORDERS

__all__ = ["admin_bp", "bp", "simulate"]

log = logging.getLogger(__name__)

bp = Blueprint("payment_page", __name__)
admin_bp = Blueprint("admin_payments", __name__, url_prefix="/admin")
admin_bp.before_request(require_admin)

OUTCOMES = {"succeeded": payments.PAYMENT_SUCCEEDED, "failed": payments.PAYMENT_FAILED}


def _visible_order(order_id: str) -> Order:
    """The order, if this browser placed it or the admin asks; else 404 (as the order page)."""
    mine = order_id in session.get(SESSION_ORDERS, [])
    found = get_order(order_id) if mine or is_admin() else None
    if found is None:
        abort(404, description="We couldn't find that payment.")
    return found


def _deliveries(order_id: str) -> list[dict[str, Any]]:
    rows = get_db().execute(
        "SELECT id, event_type, received_at FROM webhook_deliveries WHERE order_id = ?"
        " ORDER BY received_at, rowid",
        (order_id,),
    )
    return [dict(row) for row in rows]


def simulate(order: Order, outcome: str) -> str:
    """Send the provider's webhook for ``order`` now (``provider.send``: signed, through the
    store's own webhook route); returns what the store answered, in words."""
    kind = OUTCOMES[outcome]
    status, answer = send(order, kind)
    log.info("payment page: %s for %s answered %s %s", kind, order.id, status, answer)
    if status >= 400:
        return f"The store refused {kind} ({status}): {answer.get('message', '')}"
    if answer.get("status") == "processed":
        return f"The store accepted {kind}: order {order.id} is now {_words(answer)}."
    return f"The store answered {status} but changed nothing (order {_words(answer)})."


def _words(answer: dict[str, Any]) -> str:
    return str(answer.get("order_status") or answer.get("status") or "unchanged").replace("_", " ")


@bp.get("/pay/<order_id>")
def payment(order_id: str) -> str:
    order = _visible_order(order_id)
    config = current_app.config
    return render_template(
        "payment_page.html",
        order=order,
        deliveries=_deliveries(order.id),
        webhook_url=url_for("webhooks.payments", _external=True),
        auto_callback=bool(config["STORE_PAYMENTS_AUTO_CALLBACK"]),
        delay=float(config["STORE_PAYMENTS_DELAY"]),
    )


@bp.post("/pay/<order_id>/<outcome>")
def pay(order_id: str, outcome: str) -> Response:
    if outcome not in OUTCOMES:
        abort(404)
    order = _visible_order(order_id)
    flash(simulate(order, outcome), "info")
    return redirect(url_for("payment_page.payment", order_id=order.id), code=303)


@admin_bp.post("/orders/<order_id>/payment/<outcome>")
def admin_pay(order_id: str, outcome: str) -> Response:
    if outcome not in OUTCOMES:
        abort(404)
    order = get_order(order_id)
    if order is None:
        abort(404, description=f"There is no order {order_id}.")
    flash(simulate(order, outcome), "info")
    return redirect(url_for("admin.orders"), code=303)
