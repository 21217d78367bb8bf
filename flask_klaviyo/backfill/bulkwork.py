"""A backfill is bulk work, and says so to the shared limiter.

The outbox holds only a few seconds of a run (the workers could not tell a backfill from a busy
store by its depth), so a run marks the endpoints it feeds (``RateLimiter.bulk``, renewed while
it runs): every worker then takes each rate window's budget at the burst rate. And while the
workers wait for a window's reset (the budget spent), the run may queue up to the next window's
budget of events, so that window's burst finds them ready instead of waiting on the run's CPU.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from .._settings import MAX_DRAIN_BATCH
from ..delivery import kinds
from ..delivery.operations import Operation
from ..delivery.settings import DeliverySettings
from ..events import Event
from ..ratelimit import RateLimiter

__all__ = ["BULK_RENEW", "EVENTS_ENDPOINT", "BulkWork"]

log = logging.getLogger(__name__)

BULK_RENEW = 5.0  # seconds between renewals of the mark (it lasts a window, 15 s at least)
EVENTS_ENDPOINT = "bulk_create_events"  # where a backfill's events go, many a request
WAITING = 1 / 60  # of a steady period: a wait this long is the window's reset, not its pace


class BulkWork:
    """The limiter's bulk-work mark on the endpoints a run feeds, and how far ahead it may
    queue."""

    def __init__(self, connection: Any) -> None:
        settings = DeliverySettings.load()
        self.limiter = RateLimiter(connection, limits=kinds.rate_limits(settings.rate_limits))
        self.batch = settings.drain_batch or MAX_DRAIN_BATCH
        self.endpoints: set[str] = set()
        self.renewed = 0.0

    def add(self, item: Event | Operation) -> None:
        """``item`` is queued: its endpoint is marked from now on."""
        if isinstance(item, Event):
            endpoint = EVENTS_ENDPOINT
        else:
            try:
                endpoint = kinds.get(item.kind).endpoint
            except LookupError:
                return
        if endpoint not in self.endpoints:
            self.endpoints.add(endpoint)
            self.renewed = 0.0

    def renew(self) -> None:
        """Mark (again, at most every BULK_RENEW seconds)."""
        now = time.monotonic()
        if now - self.renewed < BULK_RENEW:
            return
        self.renewed = now
        for endpoint in self.endpoints:
            self.limiter.bulk(endpoint)

    def ahead(self) -> int:
        """Outbox entries the run may queue now: the next steady window's budget of events
        while the workers wait for the window's reset (its budget spent), else 0."""
        if EVENTS_ENDPOINT not in self.endpoints or EVENTS_ENDPOINT not in self.limiter.limits:
            return 0
        steady = self.limiter.steady(EVENTS_ENDPOINT)
        if self.limiter.wait_time(EVENTS_ENDPOINT) < steady.period * WAITING:
            return 0
        return steady.limit * self.batch
