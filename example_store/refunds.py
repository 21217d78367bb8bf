"""Refunds, partial ones too: each is recorded in ``order_refunds`` with its sequence number and
sent to Klaviyo as a Refunded Order worth what was refunded.

The sequence carries flask-klaviyo's rule (README, "Order lifecycle"): an order's first refund
goes under the order id, so Klaviyo's CLV nets it out of the Placed Order; later ones under
``{order id}_refund_{n}``, or Klaviyo would drop them as repeats. When the refunds reach the
order's total the order becomes ``refunded``. All inside the caller's transaction: the sequence
number and the event are decided together, so two refunds cannot share a number.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from .extensions import klaviyo
from .orders import Order, get_order, transition

__all__ = ["REFUNDABLE", "Refund", "RefundError", "refund", "refunded_cents"]

REFUNDABLE = ("paid", "fulfilled")


class RefundError(Exception):
    """A refund the order cannot take; ``code`` for JSON clients, ``message`` for people."""

    def __init__(self, code: str, message: str) -> None:
        self.code = code
        self.message = message
        super().__init__(message)


@dataclass(frozen=True)
class Refund:
    order_id: str
    sequence: int
    amount_cents: int
    refunded_cents: int  # all refunds of the order so far, this one included
    status: str  # the order's status after it


def refunded_cents(db: Any, order_id: str) -> int:
    row = db.execute(
        "SELECT COALESCE(SUM(amount_cents), 0) FROM order_refunds WHERE order_id = ?", (order_id,)
    ).fetchone()
    return int(row[0])


def refund(
    db: Any,
    order: Order,
    *,
    amount_cents: int | None = None,
    line_ids: Iterable[int] = (),
    reason: str | None = None,
    final: bool = False,
) -> Refund:
    """Refund ``amount_cents`` (default: the lines' total, else all that is left) of ``order``;
    ``final`` refunds all that is left whatever was asked (the admin's "Refund" button)."""
    if order.status not in REFUNDABLE and not (final and order.status == "refunded"):
        raise RefundError("invalid_transition", f"A {order.status} order cannot be refunded.")
    wanted = {int(line_id) for line_id in line_ids}
    lines = [line for line in order.lines if line.id in wanted]
    if len(lines) != len(wanted):
        raise RefundError("unknown_line", "Refund lines of this order only.")
    already = refunded_cents(db, order.id)
    left = order.total_cents - already
    if final or (amount_cents is None and not lines):
        amount_cents = left
    elif amount_cents is None:
        amount_cents = sum(line.row_total_cents for line in lines)
    if amount_cents <= 0 or amount_cents > left:
        raise RefundError(
            "invalid_amount", f"Refund between 1 and {left} cents (what is left of the order)."
        )
    (count,) = db.execute(
        "SELECT COUNT(*) FROM order_refunds WHERE order_id = ?", (order.id,)
    ).fetchone()
    sequence = int(count) + 1
    db.execute(
        "INSERT INTO order_refunds (order_id, seq, amount_cents, line_ids, reason, created_at) "
        "VALUES (?, ?, ?, ?, ?, ?)",
        (
            order.id,
            sequence,
            amount_cents,
            json.dumps(sorted(wanted)),
            reason,
            datetime.now(UTC).isoformat(timespec="seconds"),
        ),
    )
    if already + amount_cents >= order.total_cents:
        transition(db, order.id, "refund", reason=reason)
    klaviyo.order_refunded(
        order.to_klaviyo(),
        reason=reason,
        items=[line.to_klaviyo() for line in lines] if lines else None,
        amount=amount_cents / 100,
        sequence=sequence,
    )
    after = get_order(order.id)
    return Refund(
        order_id=order.id,
        sequence=sequence,
        amount_cents=amount_cents,
        refunded_cents=already + amount_cents,
        status=after.status if after else order.status,
    )
