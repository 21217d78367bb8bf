"""``POST /webhooks/payments``: the payment provider says an order is paid (Placed Order goes
out) or that its payment failed (Failed Payment, one per payment attempt).

Everything a public endpoint must survive is checked before the order is touched, each with its
own status and a JSON ``{"error", "message"}``: an oversized body (413), a body that is not JSON
(415), a missing, malformed or wrong signature or a replayed one (400,
:mod:`flask_klaviyo.webhooks`), malformed JSON or a missing field (400), an unknown order (404).

Providers retry until they get a 2xx, so the same delivery arrives more than once: its id is
recorded in ``webhook_deliveries`` in the same transaction that marks the order paid, and a
repeat answers 200 without queueing anything. The order's status guards a second time (a new
delivery id for an order already paid changes nothing), and Klaviyo would still keep one Placed
Order per order id.
"""

from __future__ import annotations

import json
import logging
import math
import sqlite3
from datetime import UTC, datetime
from typing import Any

from flask import Blueprint, Flask, current_app, request
from werkzeug.wrappers import Response

from flask_klaviyo.webhooks import SIGNATURE_HEADER, WebhookSignatureError, verify_signature

from .db import transaction
from .extensions import klaviyo
from .http import json_error
from .orders import get_order, transition
from .payments import PAYMENT_FAILED, PAYMENT_SUCCEEDED

__all__ = ["DEFAULT_MAX_BYTES", "authenticated_body", "bp", "init_app"]

log = logging.getLogger(__name__)

bp = Blueprint("webhooks", __name__)

DEFAULT_MAX_BYTES = 64 * 1024
MAX_ID_CHARS = 200
HANDLED = (PAYMENT_SUCCEEDED, PAYMENT_FAILED)
DEFAULT_FAILURE = "The payment was declined"
NEXT_STEPS = "Please use a different payment method or contact your card provider."


class _Invalid(Exception):
    def __init__(self, code: str, message: str) -> None:
        self.code = code
        self.message = message


def _read_body(limit: int) -> bytes | None:
    """The raw body, or None when it is larger than ``limit`` (read at most limit + 1 bytes)."""
    if request.content_length is not None and request.content_length > limit:
        return None
    body = request.stream.read(limit + 1)
    return None if len(body) > limit else body


def _text(data: dict[str, Any], key: str, where: str) -> str:
    value = data.get(key)
    if not isinstance(value, str) or not value.strip():
        raise _Invalid("invalid_payload", f"{where}{key} must be a non-empty string")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate escape such as "\ud800"
        raise _Invalid("invalid_payload", f"{where}{key} is not valid Unicode") from None
    if len(value) > MAX_ID_CHARS:
        raise _Invalid("invalid_payload", f"{where}{key} is longer than {MAX_ID_CHARS} characters")
    return value.strip()


def _parse(body: bytes) -> tuple[str, str, dict[str, Any]]:
    """(delivery id, event type, data) of a well-formed delivery."""
    try:
        # UTF-8 only (RFC 8259): json.loads would also take UTF-16/32 bytes, which the
        # delivery record (and any provider) does not.
        payload = json.loads(body.decode("utf-8"))
    except (ValueError, RecursionError):  # bad JSON or bad UTF-8
        raise _Invalid("malformed_json", "the body is not valid JSON") from None
    if not isinstance(payload, dict):
        raise _Invalid("invalid_payload", "the body must be a JSON object")
    delivery_id = _text(payload, "id", "")
    event_type = _text(payload, "type", "")
    data = payload.get("data")
    if not isinstance(data, dict):
        raise _Invalid("invalid_payload", "data must be an object")
    if event_type in HANDLED:
        data = {**data, "order_id": _text(data, "order_id", "data.")}
        amount = data.get("amount")
        if amount is not None and (
            isinstance(amount, bool)
            or not isinstance(amount, int | float)
            or not math.isfinite(amount)
            or amount < 0
        ):
            raise _Invalid("invalid_payload", "data.amount must be a number >= 0")
        currency = data.get("currency")
        if currency is not None and not (
            isinstance(currency, str) and len(currency) == 3 and currency.isalpha()
        ):
            raise _Invalid("invalid_payload", "data.currency must be an ISO 4217 code like USD")
    return delivery_id, event_type, data


def _failure(data: dict[str, Any]) -> str:
    """Why the provider says the payment failed (its ``failure_message``), bounded."""
    message = data.get("failure_message")
    if isinstance(message, str) and message.strip():
        return message.strip()[:MAX_ID_CHARS]
    return DEFAULT_FAILURE


def _amount_matches(amount: Any, total_cents: int) -> bool:
    """Minor units (what providers send) or, leniently, major units."""
    if amount is None:
        return True
    return amount == total_cents or math.isclose(amount * 100, total_cents, abs_tol=0.5)


def authenticated_body() -> bytes | Response:
    """The raw body of a signed delivery, or the JSON error to answer: too large (413), not
    JSON (415), no secret configured (503), a missing, wrong or replayed signature (400). Every
    signed endpoint of the store (payments, the carrier) goes through here: one scheme."""
    config = current_app.config
    limit = config["STORE_WEBHOOK_MAX_BYTES"]
    body = _read_body(limit)
    if body is None:
        return json_error(413, "payload_too_large", f"the body is larger than {limit} bytes")
    if request.mimetype != "application/json":
        return json_error(
            415,
            "unsupported_media_type",
            f"send Content-Type: application/json, not {request.mimetype or 'nothing'}",
        )
    secret = config.get("KLAVIYO_WEBHOOK_SECRET")
    if not secret:
        return json_error(503, "not_configured", "KLAVIYO_WEBHOOK_SECRET is not set")
    try:
        verify_signature(
            secret,
            body,
            request.headers.get(SIGNATURE_HEADER),
            tolerance=config["STORE_WEBHOOK_TOLERANCE"],
        )
    except WebhookSignatureError as exc:
        log.warning("webhooks: refused a delivery to %s: %s", request.path, exc)
        return json_error(exc.status, exc.code, exc.message)
    return body


@bp.post("/webhooks/payments")
def payments() -> Response | tuple[dict[str, Any], int]:
    body = authenticated_body()
    if isinstance(body, Response):
        return body
    try:
        delivery_id, event_type, data = _parse(body)
    except _Invalid as exc:
        return json_error(400, exc.code, exc.message)

    order_id = data.get("order_id") if event_type in HANDLED else None
    if event_type in HANDLED and get_order(order_id) is None:
        # Not recorded: the provider's retry may come after the order exists (another region).
        return json_error(404, "unknown_order", f"there is no order {order_id!r}")

    with transaction() as db:
        try:
            db.execute(
                "INSERT INTO webhook_deliveries (id, event_type, order_id, payload, received_at) "
                "VALUES (?, ?, ?, ?, ?)",
                (
                    delivery_id,
                    event_type,
                    order_id,
                    body.decode(),
                    datetime.now(UTC).isoformat(timespec="seconds"),
                ),
            )
        except sqlite3.IntegrityError:
            return {"status": "duplicate", "id": delivery_id}, 200
        if event_type not in HANDLED:
            return {"status": "ignored", "id": delivery_id, "type": event_type}, 200
        assert order_id is not None
        action = "pay" if event_type == PAYMENT_SUCCEEDED else "fail_payment"
        if not transition(db, order_id, action):
            order = get_order(order_id)
            status = order.status if order else "unknown"
            return {"status": "ignored", "id": delivery_id, "order_status": status}, 200
        order = get_order(order_id)
        assert order is not None
        if not _amount_matches(data.get("amount"), order.total_cents):
            log.warning(
                "webhooks: %s paid %r, the order total is %d cents",
                order_id,
                data.get("amount"),
                order.total_cents,
            )
        # Inside the transaction: if building the events fails (strict mode), nothing is
        # recorded and the provider's retry gets another chance.
        if event_type == PAYMENT_SUCCEEDED:
            klaviyo.order_placed(order.to_klaviyo())
        else:
            klaviyo.payment_failed(
                order.to_klaviyo(),
                failure=_failure(data),
                next_steps=NEXT_STEPS,
                attempt=data.get("payment_id") or delivery_id,
            )
    return {"status": "processed", "id": delivery_id, "order_status": order.status}, 200


def init_app(app: Flask) -> None:
    app.config.setdefault("STORE_WEBHOOK_MAX_BYTES", DEFAULT_MAX_BYTES)
    app.config.setdefault("STORE_WEBHOOK_TOLERANCE", 300)
    app.register_blueprint(bp)
