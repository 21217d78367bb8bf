"""``POST /webhooks/shipping``: the carrier says a parcel was shipped, is out for delivery or was
delivered; Klaviyo gets a Shipping Update (UpdateType "Shipped", "Out for delivery",
"Delivered") under the order's own email.

Signed like the payment provider's deliveries, with the same secret and the same checks
(:func:`example_store.webhook.authenticated_body`: size, media type, signature, replay window).
The body::

    {"order_id": "SP-7F3A9C21", "status": "out_for_delivery",
     "tracking_number": "1Z999AA10123456784", "carrier": "UPS"}

``status`` is ``shipped``, ``out_for_delivery`` or ``delivered``; ``tracking_number`` and
``carrier`` are optional. A carrier retries until it gets a 2xx: each (order, status) is recorded
in ``webhook_deliveries`` once, in the transaction that queues the event, so a repeat answers 200
``duplicate`` and queues nothing (and Klaviyo would keep one event per order and status anyway).
An order that was never paid (or was canceled) has nothing to ship: 200 ``ignored``, not recorded.

``flask --app example_store carrier deliver ORDER_ID STATUS`` sends one from a shell.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from datetime import UTC, datetime
from typing import Any

import click
from flask import Blueprint, Flask, current_app
from flask.cli import AppGroup
from werkzeug.wrappers import Response

from flask_klaviyo.events import SHIPPING_STATUSES
from flask_klaviyo.webhooks import SIGNATURE_HEADER, sign

from .db import transaction
from .extensions import klaviyo
from .http import json_error
from .orders import get_order
from .webhook import authenticated_body

__all__ = ["SHIPPABLE", "SHIPPING_PATH", "bp", "init_app", "shipping_body", "signed_shipping"]

log = logging.getLogger(__name__)

bp = Blueprint("shipping", __name__)

SHIPPING_PATH = "/webhooks/shipping"
EVENT_TYPE = "shipping.update"
SHIPPABLE = ("paid", "fulfilled")
MAX_FIELD_CHARS = 200


def shipping_body(
    order_id: str,
    status: str,
    *,
    tracking_number: str | None = None,
    carrier: str | None = None,
) -> bytes:
    """What the carrier POSTs (compact JSON; optional fields only when known)."""
    payload: dict[str, Any] = {"order_id": order_id, "status": status}
    if tracking_number:
        payload["tracking_number"] = tracking_number
    if carrier:
        payload["carrier"] = carrier
    return json.dumps(payload, separators=(",", ":")).encode()


def signed_shipping(
    secret: str | bytes, body: bytes, *, timestamp: int | None = None
) -> dict[str, str]:
    """The headers of one carrier delivery of ``body``, signed with the store's secret."""
    return {
        "Content-Type": "application/json",
        SIGNATURE_HEADER: sign(secret, body, timestamp=timestamp),
        "User-Agent": "example-store-carrier/1.0",
    }


class _Invalid(Exception):
    pass


def _optional(payload: dict[str, Any], key: str) -> str | None:
    value = payload.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip() or len(value) > MAX_FIELD_CHARS:
        raise _Invalid(f"{key} must be a non-empty string of at most {MAX_FIELD_CHARS} characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise _Invalid(f"{key} is not valid Unicode") from None
    return value.strip()


def _parse(body: bytes) -> tuple[str, str, str | None, str | None]:
    """(order id, status, tracking number, carrier) of a well-formed delivery."""
    try:
        payload = json.loads(body.decode("utf-8"))
    except (ValueError, RecursionError):
        raise _Invalid("the body is not valid JSON") from None
    if not isinstance(payload, dict):
        raise _Invalid("the body must be a JSON object")
    order_id = _optional(payload, "order_id")
    if order_id is None:
        raise _Invalid("order_id is required")
    status = payload.get("status")
    if status not in SHIPPING_STATUSES:
        raise _Invalid(f"status must be one of {', '.join(SHIPPING_STATUSES)}")
    return order_id, status, _optional(payload, "tracking_number"), _optional(payload, "carrier")


@bp.post(SHIPPING_PATH)
def shipping() -> Response | tuple[dict[str, Any], int]:
    body = authenticated_body()
    if isinstance(body, Response):
        return body
    try:
        order_id, status, tracking_number, carrier = _parse(body)
    except _Invalid as exc:
        return json_error(400, "invalid_payload", str(exc))
    order = get_order(order_id)
    if order is None:
        return json_error(404, "unknown_order", f"there is no order {order_id!r}")
    if order.status not in SHIPPABLE:
        return {"status": "ignored", "order_id": order_id, "order_status": order.status}, 200
    delivery_id = f"shipping:{order_id}:{status}"
    with transaction() as db:
        try:
            db.execute(
                "INSERT INTO webhook_deliveries (id, event_type, order_id, payload, received_at) "
                "VALUES (?, ?, ?, ?, ?)",
                (
                    delivery_id,
                    EVENT_TYPE,
                    order_id,
                    body.decode(),
                    datetime.now(UTC).isoformat(timespec="seconds"),
                ),
            )
        except sqlite3.IntegrityError:
            return {"status": "duplicate", "order_id": order_id, "shipping_status": status}, 200
        # Inside the transaction: a failure to build (strict mode) records nothing, so the
        # carrier's retry gets another chance.
        klaviyo.shipping_updated(
            order.to_klaviyo(), status=status, tracking_number=tracking_number, carrier=carrier
        )
    log.info("shipping: %s is %s", order_id, status)
    return {"status": "processed", "order_id": order_id, "shipping_status": status}, 200


# -- flask --app example_store carrier deliver ORDER_ID STATUS ---------------------------------

carrier_cli = AppGroup("carrier", help="The simulated carrier.")


@carrier_cli.command("deliver")
@click.argument("order_id")
@click.argument("status", type=click.Choice(list(SHIPPING_STATUSES)))
@click.option("--tracking-number", default=None)
@click.option("--carrier", "carrier_name", default=None)
def deliver_command(
    order_id: str, status: str, tracking_number: str | None, carrier_name: str | None
) -> None:
    """Send the carrier's signed webhook for ORDER_ID now (in-process)."""
    body = shipping_body(order_id, status, tracking_number=tracking_number, carrier=carrier_name)
    headers = signed_shipping(current_app.config["KLAVIYO_WEBHOOK_SECRET"], body)
    response = current_app.test_client().post(SHIPPING_PATH, data=body, headers=headers)
    click.echo(f"{response.status_code} {response.get_data(as_text=True).strip()}")
    if response.status_code >= 400:
        raise click.exceptions.Exit(1)


def init_app(app: Flask) -> None:
    app.register_blueprint(bp)
    app.cli.add_command(carrier_cli)
