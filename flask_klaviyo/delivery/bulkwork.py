"""Bulk work (a backfill, a catalog sync) says so to the shared limiter.

The outbox holds only a few seconds of a run (the workers could not tell a backfill from a busy
store by its depth), so a run marks the endpoints it feeds (``RateLimiter.bulk``, renewed while
it runs): every worker then takes each rate window's budget at the burst rate. A burst the run
still has to build events for is bound by its CPU (parsing, building and checking an event costs
about what sending it does), so the run queues ahead, up to a steady window's budget of events
(at most BULK_AHEAD entries): the next window's burst, a run's last window above all, finds them
ready. Redis holds that much of the history, never more.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from .._settings import MAX_DRAIN_BATCH
from ..events import Event
from ..ratelimit import RateLimiter
from . import kinds
from .operations import Operation
from .settings import DeliverySettings

__all__ = ["BULK_AHEAD", "BULK_RENEW", "EVENTS_ENDPOINT", "BulkWork"]

log = logging.getLogger(__name__)

BULK_RENEW = 5.0  # seconds between renewals of the mark (it lasts a window, 15 s at least)
EVENTS_ENDPOINT = "bulk_create_events"  # where a backfill's events go, many a request
BULK_AHEAD = 100_000  # outbox entries a run may queue ahead, at most (~1.1 KB each in Redis)


class BulkWork:
    """The limiter's bulk-work mark on the endpoints a run feeds, and how far ahead it may
    queue."""

    def __init__(self, connection: Any, *, ahead: int | None = None) -> None:
        settings = DeliverySettings.load()
        self.most_ahead = BULK_AHEAD if ahead is None else ahead
        self.limiter = RateLimiter(connection, limits=kinds.rate_limits(settings.rate_limits))
        self.batch = settings.drain_batch or MAX_DRAIN_BATCH
        self.endpoints: set[str] = set()
        self.renewed = 0.0

    def add(self, item: Event | Operation) -> None:
        """``item`` is queued: its endpoint (and its kind's job looks) is marked from now on."""
        if isinstance(item, Event):
            marked = [EVENTS_ENDPOINT]
        else:
            try:
                kind = kinds.get(item.kind)
            except LookupError:
                return
            marked = [kind.endpoint]
            if kind.job is not None:  # as many looks at Klaviyo's jobs as requests, or more
                marked.append(kind.job.endpoint)
                if kind.job.errors_endpoint:
                    marked.append(kind.job.errors_endpoint)
        for endpoint in marked:
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
        """Outbox entries a run of events may queue ahead: a steady window's budget of them, at
        most BULK_AHEAD or the run's own bound (0 before it queued any event)."""
        if EVENTS_ENDPOINT not in self.endpoints or EVENTS_ENDPOINT not in self.limiter.limits:
            return 0
        return min(self.limiter.steady(EVENTS_ENDPOINT).limit * self.batch, self.most_ahead)
