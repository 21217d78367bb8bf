"""The order-lifecycle half of the ``Klaviyo`` facade beyond placing an order: Failed Payment
and Shipping Update (seed 001's order notifications). The builders are in
:mod:`.events.transactional`; partial cancellations and refunds go through ``order_canceled`` /
``order_refunded`` with ``items=``, ``amount=`` and ``sequence=`` (:mod:`.events.orders`).

Like every order event they go under the order's own identity (its email), never the browser
that happens to call (a webhook has none).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from . import queueing
from ._state import enabled
from .events import FAILED_PAYMENT, SHIPPING_UPDATE, Event, failed_payment, shipping_update
from .models import Order

__all__ = ["LifecycleAPI"]


class LifecycleAPI:
    """Mixed into :class:`flask_klaviyo.Klaviyo`."""

    resolve_profile: Callable[[Mapping[str, Any] | None], dict[str, Any]]
    submit: Callable[[Event], Event | None]

    def payment_failed(
        self,
        order: Any,
        *,
        failure: str,
        next_steps: str | None = None,
        attempt: str | None = None,
        profile: Mapping[str, Any] | None = None,
        **properties: Any,
    ) -> Event | None:
        """Failed Payment: why (``failure``), what to do next (``next_steps``) and the order's
        information; one per payment ``attempt`` (e.g. the provider's charge id)."""
        return self._lifecycle_event(
            FAILED_PAYMENT,
            failed_payment,
            order,
            profile,
            failure=failure,
            next_steps=next_steps,
            attempt=attempt,
            **properties,
        )

    def shipping_updated(
        self,
        order: Any,
        *,
        status: str,
        tracking_number: str | None = None,
        carrier: str | None = None,
        profile: Mapping[str, Any] | None = None,
        **properties: Any,
    ) -> Event | None:
        """Shipping Update for ``status`` ``shipped``, ``out_for_delivery`` or ``delivered``
        (UpdateType "Shipped", "Out for delivery", "Delivered"); one per order and status."""
        return self._lifecycle_event(
            SHIPPING_UPDATE,
            shipping_update,
            order,
            profile,
            status=status,
            tracking_number=tracking_number,
            carrier=carrier,
            **properties,
        )

    def _lifecycle_event(
        self,
        metric: str,
        builder: Callable[..., Event],
        order: Any,
        profile: Mapping[str, Any] | None,
        **options: Any,
    ) -> Event | None:
        if not enabled():
            return None

        def build() -> Event:
            built = Order.coerce(order)
            who = self.resolve_profile(profile or built.profile())
            return builder(built, profile=who, **options)

        event = queueing.build(metric, build)
        return None if event is None else self.submit(event)
