"""Everything the stand-in remembers, behind one lock, and the call an endpoint handler gets.

Handler threads (the socket server), the in-process transport and the Python API all meet
here; every read and write happens with ``state.lock`` held, so the stores need no locks of
their own.
"""

from __future__ import annotations

import itertools
import logging
import threading
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

from ._config import MAX_RECORDED_REQUESTS
from .jobs import JobBook
from .jsonapi import Request
from .profiles import ProfileStore
from .ratewindows import RateWindows, Windows
from .subscriptions import SubscriptionBook

log = logging.getLogger(__name__)


@dataclass
class Fault:
    """One queued misbehaviour, spent by the next API request."""

    status: int | None  # None: hold the connection, then drop it without an answer
    retry_after: float | None = None
    code: str | None = None
    detail: str | None = None
    pointer: str | None = None
    hold: float = 0.0
    reset: bool = False  # with status None: reset the connection (RST) instead of closing it


@dataclass
class ForcedFailure:
    """An item a test wants a bulk job to fail, and the error it should carry."""

    detail: str
    code: str = "invalid"
    title: str = "Invalid input."


class State:
    """The stand-in's memory. ``clear`` forgets everything a reset forgets."""

    def __init__(self, *, keep_events: bool) -> None:
        self.lock = threading.RLock()
        self.changed = threading.Condition(self.lock)
        self.keep_events = keep_events
        self.profiles = ProfileStore(on_merge=self._repoint)
        self.subscriptions = SubscriptionBook()
        self.jobs = JobBook()
        self.enforced = RateWindows()  # configured limits: counted and enforced
        self.observed = RateWindows()  # Klaviyo's steady windows: counted for the headers only
        self.latency = 0.0
        self.limits: dict[str, Windows] = {}
        self.time_scale = 1.0
        self.job_delay = 0.0
        self.clear()

    def clear(self) -> None:
        with self.lock:
            self.events: list[dict[str, Any]] = []
            self.requests: deque[dict[str, Any]] = deque(maxlen=MAX_RECORDED_REQUESTS)
            self.faults: deque[Fault] = deque()
            self.profiles.clear()
            self.subscriptions.clear()
            self.deletions: list[dict[str, Any]] = []  # what Request Profile Deletion was asked
            self.jobs.clear()
            self.catalog: dict[str, dict[str, Any]] = {}  # items by id (catalog_store.py)
            self.catalog_variants: dict[str, dict[str, Any]] = {}
            self.catalog_categories: dict[str, dict[str, Any]] = {}
            self.catalog_order = itertools.count(1)  # creation order, for pagination cursors
            self.back_in_stock: list[dict[str, Any]] = []
            self.mapped_metrics: dict[str, dict[str, Any]] = {}  # mapped_metrics.py
            self.endpoint_counts: Counter[str] = Counter()  # every API request, unbounded
            self.catalog_failures: dict[str, ForcedFailure] = {}  # item id or external id
            self.import_failures: dict[str, ForcedFailure] = {}  # a profile identifier
            self.observed.clear()
            self.enforced.clear()
            self.duplicates = 0
            # the latest duplicates (metric, unique_id, profile_id, endpoint): dedup hits
            self.dedup_hits: deque[dict[str, Any]] = deque(maxlen=MAX_RECORDED_REQUESTS)
            self.rejected = 0
            self.request_count = 0
            self.accepted = 0
            self.throttled = 0

    def _repoint(self, gone: str, keep: str) -> None:
        """A merge: the survivor takes the events and consent records of the other profile."""
        for event in self.events:
            if event["profile_id"] == gone:
                event["profile_id"] = keep
        self.subscriptions.repoint(gone, keep)

    def delete_profile(self, profile_id: str) -> int:
        """A deletion: the profile, its events and its consent records go (Klaviyo deletes a
        profile with its activity). Returns how many events went with it."""
        with self.lock:
            self.profiles.remove(profile_id)
            kept = [event for event in self.events if event["profile_id"] != profile_id]
            gone = len(self.events) - len(kept)
            self.events = kept
            self.subscriptions.drop_profile(profile_id)
            self.changed.notify_all()
            return gone

    def record(
        self, request: Request, endpoint: str | None, status: int | None, errors: Any
    ) -> None:
        """One line of the request log (API requests only), counted for the inspector."""
        with self.lock:
            self.request_count += 1
            if endpoint is not None:
                self.endpoint_counts[endpoint] += 1
            if status is None or status >= 400:
                self.rejected += 1
            self.requests.append(
                {
                    "method": request.method,
                    "path": request.path,
                    "query": dict(request.query),
                    "headers": dict(request.headers),
                    "body": request.parsed if self.keep_events else None,
                    "status": status,
                    "endpoint": endpoint,
                    "errors": errors,
                    "received_at": request.received_at,
                }
            )


@dataclass
class Call:
    """What an endpoint handler is given: the request (body parsed), its path parameters, the
    stand-in's memory, and the base URL for the ``links`` Klaviyo puts in its answers."""

    endpoint: str
    request: Request
    body: Any
    raw: bytes
    params: dict[str, str]
    state: State
    base_url: str
    extra: dict[str, Any] = field(default_factory=dict)
