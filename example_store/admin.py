"""The back office: a list of orders with buttons to fulfil, cancel and refund them.

Closed (404) unless ``STORE_ADMIN_PASSWORD`` is set; then HTTP basic auth, user ``admin``. Each
action moves the order along (``orders.TRANSITIONS``) and sends its Klaviyo metric with the
order id as unique_id, under the order's own email (never the admin's browser identity):
Fulfilled Order, Canceled Order (with ``Reason``) and Refunded Order (with ``Reason``). Repeating
an action that already happened changes nothing and sends nothing. ``partial-refund`` refunds
part of an order (``refunds.py``: each refund numbered, worth what was refunded); "Refund" then
refunds what is left.
"""

from __future__ import annotations

import hmac
from typing import Any

from flask import (
    Blueprint,
    abort,
    current_app,
    flash,
    redirect,
    render_template,
    request,
    url_for,
)
from werkzeug.wrappers import Response

from .db import transaction
from .extensions import klaviyo
from .http import json_error, request_data, wants_json
from .orders import TRANSITIONS, get_order, list_orders, transition
from .refunds import RefundError, refund

__all__ = ["ADMIN_USER", "bp"]

ADMIN_USER = "admin"
REALM = "Switchback Provisions admin"
ACTIONS = ("fulfill", "cancel", "refund")
MAX_REASON_CHARS = 200
PAST_TENSE = {"fulfill": "fulfilled", "cancel": "canceled", "refund": "refunded"}

bp = Blueprint("admin", __name__, url_prefix="/admin")


def _same(given: str | None, expected: str) -> bool:
    return hmac.compare_digest((given or "").encode(), expected.encode())


def is_admin() -> bool:
    """The request carries the admin's basic-auth credentials (and admin is configured)."""
    password = current_app.config.get("STORE_ADMIN_PASSWORD")
    auth = request.authorization
    if not password or auth is None or auth.type != "basic":
        return False
    # Both compared, always: the time taken says nothing about which one was wrong.
    user_ok = _same(auth.username, ADMIN_USER)
    password_ok = _same(auth.password, password)
    return user_ok and password_ok


@bp.before_request
def require_admin() -> Response | None:
    if not current_app.config.get("STORE_ADMIN_PASSWORD"):
        abort(404)  # closed: as if there were no back office at all
    if is_admin():
        return None
    message = "Sign in as admin (HTTP basic auth) to manage orders."
    if wants_json():
        response = json_error(401, "unauthorized", message)
    else:
        response = Response(message, status=401, mimetype="text/plain")
    response.headers["WWW-Authenticate"] = f'Basic realm="{REALM}", charset="UTF-8"'
    return response


@bp.get("/")
def home() -> Response:
    return redirect(url_for("admin.orders"), code=303)


@bp.get("/orders")
def orders() -> str:
    return render_template("admin_orders.html", orders=list_orders(), actions=ACTIONS)


def _send(db: Any, action: str, order: Any, previous_status: str, reason: str | None) -> None:
    data = order.to_klaviyo()
    if action == "fulfill":
        klaviyo.order_fulfilled(data)
    elif action == "refund":
        refund(db, order, reason=reason, final=True)  # what is left, after any partial ones
    elif previous_status != "pending_payment":
        # Klaviyo never saw an unpaid order placed: canceling it has nothing to subtract.
        klaviyo.order_canceled(data, reason=reason)


@bp.post("/orders/<order_id>/<action>")
def act(order_id: str, action: str) -> Response | tuple[dict[str, Any], int]:
    if action not in ACTIONS:
        abort(404)
    order = get_order(order_id)
    if order is None:
        if wants_json():
            return json_error(404, "unknown_order", f"there is no order {order_id!r}")
        abort(404, description=f"There is no order {order_id}.")
    reason = (request.form.get("reason") or "").strip()[:MAX_REASON_CHARS] or None
    if request.is_json:
        data = request.get_json(silent=True)
        if isinstance(data, dict) and isinstance(data.get("reason"), str):
            reason = data["reason"].strip()[:MAX_REASON_CHARS] or None
    target = TRANSITIONS[action][1]
    with transaction() as db:
        changed = transition(db, order.id, action, reason=reason)
        if changed:
            updated = get_order(order.id)
            assert updated is not None
            _send(db, action, updated, order.status, reason)
    if not changed and order.status != target:
        message = f"A {order.status.replace('_', ' ')} order cannot be {PAST_TENSE[action]}."
        if wants_json():
            return json_error(409, "invalid_transition", message, order_status=order.status)
        abort(409, description=message)
    if wants_json():
        return {"order_id": order.id, "status": target, "changed": changed}, 200
    if changed:
        flash(f"Order {order.id} {PAST_TENSE[action]}.", "info")
    else:
        flash(f"Order {order.id} was already {PAST_TENSE[action]}.", "info")
    return redirect(url_for("admin.orders"), code=303)


@bp.post("/orders/<order_id>/partial-refund")
def partial_refund(order_id: str) -> Response | tuple[dict[str, Any], int]:
    """Refund part of an order: ``amount_cents`` (JSON) or ``amount`` (form, e.g. "4.50")
    and/or ``line_ids`` / ``line_id`` (the lines refunded); ``reason``. Refunded Order goes out
    with what was refunded and the order's next refund number (``refunds.py``)."""
    order = get_order(order_id)
    if order is None:
        if wants_json():
            return json_error(404, "unknown_order", f"there is no order {order_id!r}")
        abort(404, description=f"There is no order {order_id}.")
    data = request_data()
    try:
        amount, line_ids = _refund_request(data)
        reason = str(data.get("reason") or "").strip()[:MAX_REASON_CHARS] or None
        with transaction() as db:
            done = refund(db, order, amount_cents=amount, line_ids=line_ids, reason=reason)
    except RefundError as exc:
        if wants_json():
            status = 409 if exc.code == "invalid_transition" else 400
            return json_error(status, exc.code, exc.message)
        flash(exc.message, "error")
        return redirect(url_for("admin.orders"), code=303)
    if wants_json():
        return done.__dict__, 200
    flash(f"Order {order.id}: refund {done.sequence} of {done.amount_cents / 100:.2f}.", "info")
    return redirect(url_for("admin.orders"), code=303)


def _refund_request(data: dict[str, Any]) -> tuple[int | None, list[int]]:
    """(amount in cents or None, line ids) from a JSON body or a form."""
    amount: int | None = None
    if data.get("amount_cents") is not None:
        raw = data["amount_cents"]
        if isinstance(raw, bool) or not isinstance(raw, int):
            raise RefundError("invalid_amount", "amount_cents must be a whole number of cents")
        amount = raw
    elif str(data.get("amount") or "").strip():
        try:
            amount = round(float(str(data["amount"]).strip()) * 100)
        except (ValueError, OverflowError):
            raise RefundError("invalid_amount", "amount must be a sum like 4.50") from None
    raw_lines: Any = data.get("line_ids")
    if raw_lines is None:
        raw_lines = request.form.getlist("line_id")
    if not isinstance(raw_lines, list):
        raise RefundError("unknown_line", "line_ids must be a list of line ids")
    try:
        line_ids = [int(line) for line in raw_lines if not isinstance(line, bool)]
    except (TypeError, ValueError):
        raise RefundError("unknown_line", "line ids are whole numbers") from None
    return amount, line_ids
