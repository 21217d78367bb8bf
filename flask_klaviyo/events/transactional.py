"""The order notifications of seed 001's transactional section: Failed Payment and Shipping
Update, each the order's information plus what happened.

Their unique_ids are never the bare order id: an order may fail to pay more than once (one
Failed Payment per attempt) and passes through every shipping status (one Shipping Update per
order and status), and Klaviyo keeps only the first event per unique_id.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from ..exceptions import KlaviyoSchemaError
from ..models import Order
from .model import FAILED_PAYMENT, SHIPPING_UPDATE, Event
from .orders import PLACED_DISCOUNT_KEYS, _order_event
from .values import _identifier, _known

__all__ = ["SHIPPING_STATUSES", "failed_payment", "shipping_update"]

# The carrier's status -> seed 001's UpdateType, exactly as the guide spells it.
SHIPPING_STATUSES: Mapping[str, str] = {
    "shipped": "Shipped",
    "out_for_delivery": "Out for delivery",
    "delivered": "Delivered",
}


def failed_payment(
    order: Any,
    *,
    failure: str,
    next_steps: str | None = None,
    attempt: str | None = None,
    profile: Mapping[str, Any] | None = None,
    time: datetime | None = None,
    currency: str | None = None,
    **extra: Any,
) -> Event:
    """Failed Payment: ``PaymentFailure`` (why), ``PaymentNextSteps`` (what to do) and the
    order's information; value is the order total that was not paid.

    ``attempt`` names the payment attempt (a charge id): one event per attempt, unique_id
    ``{order id}_failed_{attempt}`` (``{order id}_failed`` without one: once per order).
    """
    order = Order.coerce(order)
    base = f"{_identifier(order.id)}_failed"
    return _order_event(
        FAILED_PAYMENT,
        order,
        profile=profile,
        time=time,
        currency=currency,
        discount_keys=PLACED_DISCOUNT_KEYS,
        extra={**_known({"PaymentFailure": failure, "PaymentNextSteps": next_steps}), **extra},
        unique_id=f"{base}_{attempt}" if attempt else base,
    )


def shipping_update(
    order: Any,
    *,
    status: str,
    tracking_number: str | None = None,
    carrier: str | None = None,
    profile: Mapping[str, Any] | None = None,
    time: datetime | None = None,
    currency: str | None = None,
    **extra: Any,
) -> Event:
    """Shipping Update: ``UpdateType`` "Shipped", "Out for delivery" or "Delivered" (``status``
    is ``shipped``, ``out_for_delivery`` or ``delivered``), the order's information and the
    carrier's ``TrackingNumber`` and ``Carrier`` when known. unique_id
    ``{order id}_{status}``: one per order and status."""
    update_type = SHIPPING_STATUSES.get(status) if isinstance(status, str) else None
    if update_type is None:
        raise KlaviyoSchemaError(
            SHIPPING_UPDATE, "status", f"must be one of {sorted(SHIPPING_STATUSES)}, got {status!r}"
        )
    order = Order.coerce(order)
    known = _known(
        {"UpdateType": update_type, "TrackingNumber": tracking_number, "Carrier": carrier}
    )
    return _order_event(
        SHIPPING_UPDATE,
        order,
        profile=profile,
        time=time,
        currency=currency,
        discount_keys=PLACED_DISCOUNT_KEYS,
        extra={**known, **extra},
        unique_id=f"{_identifier(order.id)}_{status}",
    )
