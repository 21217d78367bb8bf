"""A simulated payment provider: it "charges" an order, then calls the store back with a signed
webhook, the way Stripe or Adyen would.

The store never learns that an order is paid from the shopper's browser: it learns it from
``POST /webhooks/payments``, which the provider sends whether or not the shopper is still on the
page. That is why Placed Order is fired from the webhook handler and not the confirmation page.

What a delivery looks like (amounts in minor units, like every provider)::

    POST /webhooks/payments
    Content-Type: application/json
    X-Store-Signature: t=1767225600,v1=<hex HMAC-SHA256(secret, "1767225600.<body>")>

    {"id": "evt_...", "type": "payment.succeeded", "created": 1767225600,
     "data": {"order_id": "SP-7F3A9C21", "amount": 7150, "currency": "USD",
              "payment_id": "pay_..."}}

With ``STORE_PAYMENTS_AUTO_CALLBACK`` (the default), :func:`charge` starts a background thread in
the web process that waits ``STORE_PAYMENTS_DELAY`` seconds, then POSTs the delivery to the store
(``STORE_PAYMENTS_CALLBACK_URL``, else the URL the shopper reached the store by) and retries with
backoff until the store answers 2xx. Like a real provider it keeps the delivery id across retries
and signs every attempt afresh. Tests turn the thread off and deliver with :func:`signed_delivery`
themselves (as many times as they like); ``flask --app example_store payments deliver ORDER_ID``
does the same from a shell.

An email address with ``+decline`` in it (``ann+decline@shop.test``) gets ``payment.failed``
(with ``data.failure_message``): the store sends Klaviyo a Failed Payment.
"""

from __future__ import annotations

import json
import logging
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import click
import httpx
from flask import Flask, current_app
from flask.cli import AppGroup

from flask_klaviyo.webhooks import SIGNATURE_HEADER, sign

__all__ = [
    "PAYMENT_FAILED",
    "PAYMENT_SUCCEEDED",
    "WEBHOOK_PATH",
    "Delivery",
    "charge",
    "deliver",
    "init_app",
    "new_payment_id",
    "signed_delivery",
    "wait_idle",
]

log = logging.getLogger(__name__)

PAYMENT_SUCCEEDED = "payment.succeeded"
PAYMENT_FAILED = "payment.failed"
WEBHOOK_PATH = "/webhooks/payments"
DECLINE_MARKER = "+decline"
DECLINED = "Your card was declined."

DEFAULT_DELAY = 1.0  # seconds between the charge and the first callback
MAX_ATTEMPTS = 8
BACKOFF_CAP = 30.0
REQUEST_TIMEOUT = 10.0

_threads: set[threading.Thread] = set()
_threads_lock = threading.Lock()


def new_payment_id() -> str:
    return f"pay_{secrets.token_hex(12)}"


@dataclass(frozen=True)
class Delivery:
    """One webhook event; retries resend it with the same ``id`` (the store dedups on it)."""

    type: str
    order_id: str
    amount: int  # minor units: cents
    currency: str
    payment_id: str | None = None
    id: str = field(default_factory=lambda: f"evt_{secrets.token_hex(12)}")
    created: int = field(default_factory=lambda: int(time.time()))
    failure_message: str | None = None  # payment.failed: why, in the provider's words

    def body(self) -> bytes:
        data: dict[str, Any] = {
            "order_id": self.order_id,
            "amount": self.amount,
            "currency": self.currency,
            "payment_id": self.payment_id,
        }
        if self.failure_message is not None:
            data["failure_message"] = self.failure_message
        return json.dumps(
            {"id": self.id, "type": self.type, "created": self.created, "data": data},
            separators=(",", ":"),
        ).encode()


def signed_delivery(
    secret: str | bytes, delivery: Delivery, *, timestamp: int | None = None
) -> tuple[bytes, dict[str, str]]:
    """(body, headers) of one attempt: what to POST to ``/webhooks/payments``."""
    body = delivery.body()
    headers = {
        "Content-Type": "application/json",
        SIGNATURE_HEADER: sign(secret, body, timestamp=timestamp),
        "User-Agent": "example-store-payments/1.0",
    }
    return body, headers


def deliver(
    url: str,
    secret: str | bytes,
    delivery: Delivery,
    *,
    attempts: int = MAX_ATTEMPTS,
    sleep: Callable[[float], None] = time.sleep,
    client: httpx.Client | None = None,
) -> int | None:
    """POST ``delivery`` until the store answers 2xx; returns that status, or None on giving up.

    408, 429 and 5xx answers and transport errors are retried with capped exponential backoff;
    another 4xx is final (the store refused this delivery: retrying will not change its mind).
    """
    owned = client is None
    http = client or httpx.Client(timeout=REQUEST_TIMEOUT)
    try:
        for attempt in range(attempts):
            if attempt:
                sleep(min(BACKOFF_CAP, 0.5 * 2**attempt))
            body, headers = signed_delivery(secret, delivery)  # a fresh timestamp every attempt
            try:
                response = http.post(url, content=body, headers=headers)
            except httpx.HTTPError as exc:
                log.warning("payments: delivery %s to %s failed: %s", delivery.id, url, exc)
                continue
            if response.is_success:
                return response.status_code
            if response.status_code in (408, 429) or response.status_code >= 500:
                log.warning(
                    "payments: %s answered %s to %s", url, response.status_code, delivery.id
                )
                continue
            log.error(
                "payments: %s refused delivery %s (%s): %s",
                url,
                delivery.id,
                response.status_code,
                response.text[:200],
            )
            return None
        log.error("payments: gave up on delivery %s after %d attempts", delivery.id, attempts)
        return None
    finally:
        if owned:
            http.close()


def charge(
    *,
    order_id: str,
    amount: int,
    currency: str,
    email: str,
    payment_id: str,
    callback_url: str,
) -> Delivery:
    """Charge the order (always approved, unless the email says ``+decline``) and, with
    ``STORE_PAYMENTS_AUTO_CALLBACK``, call the store back from a background thread.

    Returns the delivery the provider will send (tests deliver it themselves when the
    callback is off). Needs an app context for the settings; the thread does not.
    """
    config = current_app.config
    outcome = PAYMENT_FAILED if DECLINE_MARKER in email.partition("@")[0] else PAYMENT_SUCCEEDED
    delivery = Delivery(
        type=outcome,
        order_id=order_id,
        amount=amount,
        currency=currency,
        payment_id=payment_id,
        failure_message=DECLINED if outcome == PAYMENT_FAILED else None,
    )
    if config["STORE_PAYMENTS_AUTO_CALLBACK"]:
        url = config["STORE_PAYMENTS_CALLBACK_URL"] or callback_url
        secret = config["KLAVIYO_WEBHOOK_SECRET"]
        delay = float(config["STORE_PAYMENTS_DELAY"])
        thread = threading.Thread(
            target=_callback_later,
            args=(url, secret, delivery, delay),
            name=f"payments:{order_id}",
            daemon=True,
        )
        with _threads_lock:
            _threads.add(thread)
        thread.start()
    return delivery


def _callback_later(url: str, secret: str, delivery: Delivery, delay: float) -> None:
    try:
        time.sleep(delay)
        deliver(url, secret, delivery)
    except Exception:
        log.exception("payments: the callback for %s crashed", delivery.order_id)
    finally:
        with _threads_lock:
            _threads.discard(threading.current_thread())


def wait_idle(timeout: float = 30.0) -> bool:
    """Wait for every pending callback thread to finish (tests, a graceful stop)."""
    deadline = time.monotonic() + timeout
    while True:
        with _threads_lock:
            pending = list(_threads)
        if not pending:
            return True
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        pending[0].join(remaining)


# -- flask --app example_store payments deliver ORDER_ID ---------------------------------------

payments_cli = AppGroup("payments", help="The simulated payment provider.")


@payments_cli.command("deliver")
@click.argument("order_id")
@click.option("--type", "event_type", default=PAYMENT_SUCCEEDED, show_default=True)
@click.option("--id", "delivery_id", default=None, help="Reuse a delivery id (a provider retry).")
@click.option("--url", default=None, help="POST to a running store instead of in-process.")
def deliver_command(
    order_id: str, event_type: str, delivery_id: str | None, url: str | None
) -> None:
    """Send the provider's webhook for ORDER_ID now (signed with KLAVIYO_WEBHOOK_SECRET)."""
    from .orders import get_order

    order = get_order(order_id)
    if order is None:
        raise click.ClickException(f"no order {order_id!r}")
    extra: dict[str, Any] = {"id": delivery_id} if delivery_id else {}
    delivery = Delivery(
        type=event_type,
        order_id=order.id,
        amount=order.total_cents,
        currency=order.currency,
        payment_id=order.payment_id,
        failure_message=DECLINED if event_type == PAYMENT_FAILED else None,
        **extra,
    )
    secret = current_app.config["KLAVIYO_WEBHOOK_SECRET"]
    if url:
        status = deliver(url.rstrip("/") + WEBHOOK_PATH, secret, delivery, attempts=3)
        if status is None:
            raise click.ClickException("the store did not accept the delivery")
        click.echo(f"{delivery.id}: {status}")
        return
    body, headers = signed_delivery(secret, delivery)
    response = current_app.test_client().post(WEBHOOK_PATH, data=body, headers=headers)
    click.echo(f"{delivery.id}: {response.status_code} {response.get_data(as_text=True).strip()}")
    if response.status_code >= 400:
        raise click.exceptions.Exit(1)


def init_app(app: Flask) -> None:
    app.config.setdefault("STORE_PAYMENTS_AUTO_CALLBACK", True)
    app.config.setdefault("STORE_PAYMENTS_DELAY", DEFAULT_DELAY)
    app.config.setdefault("STORE_PAYMENTS_CALLBACK_URL", None)
    app.cli.add_command(payments_cli)
