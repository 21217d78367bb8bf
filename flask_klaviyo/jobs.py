"""RQ job functions: deliver queued events to Klaviyo.

Top-level functions with JSON-able arguments, so any RQ worker can run them: ``flask klaviyo
worker`` (settings from the app's config) or a plain ``rq worker klaviyo`` (settings from the
``KLAVIYO_*`` environment variables). Delivery is at-least-once; Klaviyo keeps each event once
by its ``unique_id``, so a retry of a batch that was half sent costs nothing.

Failures: 429 waits ``Retry-After``; 5xx, 408 and transport errors back off (capped, jittered)
and are retried, first inside the job, then by RQ; a 4xx that no retry can fix sends the event
to the dead-letter registry with Klaviyo's error, and the rest of its batch still goes.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import random
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from flask import current_app, has_app_context
from rq import get_current_job

from .client import DEFAULT_API_URL, DEFAULT_REVISION, KlaviyoClient, SendResult, get_client
from .events import Event, bulk_payload, locate_bulk_pointer, split_batches
from .exceptions import (
    KlaviyoAPIError,
    KlaviyoBadRequest,
    KlaviyoClientError,
    KlaviyoDeliveryError,
    KlaviyoRateLimited,
)
from .outbox import CONSUMER_GROUP, DeadLetters, Outbox
from .ratelimit import DEFAULT_LIMITS, RateLimiter, Window

__all__ = ["DeliverySettings", "Sender", "deliver_events", "drain", "parse_rate_limits"]

log = logging.getLogger("flask_klaviyo")

IN_JOB_ATTEMPTS = 4  # then the job fails and RQ's Retry takes over
DRAIN_ATTEMPTS = 7  # a drain rides out ~30 s of Klaviyo trouble before RQ's Retry
DRAIN_BATCH = 1000  # entries read per round: one Bulk Create Events request at most
DRAIN_SECONDS = 30.0  # then the drain hands over to a fresh job (bounded jobs, bounded memory)
READ_BLOCK_MS = 50  # wait this long for more events before a drain ends
RECLAIM_IDLE_MS = 20_000  # entries a worker took this long ago without acking: it died
BACKOFF_BASE = 0.5
BACKOFF_CAP = 30.0
RETRY_AFTER_CAP = 60.0


@dataclass(frozen=True)
class DeliverySettings:
    """Where and how to send; never part of a job's arguments (the key stays out of Redis)."""

    api_key: str | None
    api_url: str = DEFAULT_API_URL
    revision: str = DEFAULT_REVISION
    timeout: float = 10.0
    rate_limits: Mapping[str, tuple[Window, ...]] | None = None

    @classmethod
    def load(cls) -> DeliverySettings:
        """From the Flask app when the worker runs in one, else from the environment."""
        if has_app_context():
            config = current_app.config
            return cls(
                api_key=config.get("KLAVIYO_PRIVATE_API_KEY"),
                api_url=config.get("KLAVIYO_API_URL") or DEFAULT_API_URL,
                revision=config.get("KLAVIYO_REVISION") or DEFAULT_REVISION,
                timeout=float(config.get("KLAVIYO_TIMEOUT") or 10.0),
                rate_limits=parse_rate_limits(config.get("KLAVIYO_RATE_LIMITS")),
            )
        env = os.environ
        return cls(
            api_key=env.get("KLAVIYO_PRIVATE_API_KEY"),
            api_url=env.get("KLAVIYO_API_URL") or DEFAULT_API_URL,
            revision=env.get("KLAVIYO_REVISION") or DEFAULT_REVISION,
            timeout=float(env.get("KLAVIYO_TIMEOUT") or 10.0),
            rate_limits=parse_rate_limits(env.get("KLAVIYO_RATE_LIMITS")),
        )

    def client(self) -> KlaviyoClient:
        return get_client(
            self.api_key or "",
            base_url=self.api_url,
            revision=self.revision,
            timeout=self.timeout,
        )


def parse_rate_limits(raw: Any) -> dict[str, tuple[Window, ...]] | None:
    """``{"bulk_create_events": [[10, 1], [150, 60]], ...}`` (a mapping or its JSON) or None.

    Accounts with other limits set ``KLAVIYO_RATE_LIMITS``; endpoints not named keep Klaviyo's
    published defaults.
    """
    if raw in (None, ""):
        return None
    data = json.loads(raw) if isinstance(raw, str) else raw
    limits = dict(DEFAULT_LIMITS)
    for endpoint, windows in dict(data).items():
        limits[endpoint] = tuple(Window(int(limit), float(period)) for limit, period in windows)
    return limits


def backoff_delay(attempt: int, *, base: float | None = None, cap: float | None = None) -> float:
    """Capped exponential backoff with jitter in its upper half."""
    base = BACKOFF_BASE if base is None else base
    cap = BACKOFF_CAP if cap is None else cap
    ceiling = min(cap, base * (2**attempt))
    return ceiling * random.uniform(0.5, 1.0)


class Sender:
    """Sends a list of events: Create Event for one, Bulk Create Events for several."""

    def __init__(
        self,
        client: KlaviyoClient,
        dead_letters: DeadLetters | None,
        *,
        attempts: int = IN_JOB_ATTEMPTS,
        sleep: Callable[[float], None] = time.sleep,
        limiter: RateLimiter | None = None,
    ) -> None:
        self.client = client
        self.dead_letters = dead_letters
        self.attempts = attempts
        self.sleep = sleep
        self.limiter = limiter
        self.sent = 0
        self.dead = 0
        self.requests = 0

    def send(self, events: Sequence[Event]) -> dict[str, int]:
        if len(events) == 1:
            self._single(events[0])
        else:
            for batch in split_batches(list(events)):
                self._bulk(batch)
        return {"sent": self.sent, "dead": self.dead, "requests": self.requests}

    def _with_retries(self, endpoint: str, call: Callable[[], SendResult]) -> SendResult:
        for attempt in range(self.attempts):
            try:
                if self.limiter is not None:
                    self.limiter.acquire(endpoint, max_wait=RETRY_AFTER_CAP * 2)
                self.requests += 1
                result = call()
            except KlaviyoDeliveryError as exc:
                if not exc.retryable or attempt == self.attempts - 1:
                    raise
                if isinstance(exc, KlaviyoRateLimited):
                    delay = min(max(exc.retry_after or 1.0, 0.0), RETRY_AFTER_CAP)
                    if self.limiter is not None:  # every worker waits, not only this one
                        self.limiter.block(endpoint, delay)
                        log.info("klaviyo: %s; all workers wait %.1fs", exc, delay)
                        continue
                else:
                    delay = backoff_delay(attempt)
                log.info("klaviyo: %s; retrying in %.1fs", exc, delay)
                self.sleep(delay)
            else:
                if (
                    self.limiter is not None
                    and result.rate_limit_remaining == 0
                    and result.rate_limit_reset
                ):
                    self.limiter.block(endpoint, min(result.rate_limit_reset, RETRY_AFTER_CAP))
                return result
        raise AssertionError("unreachable")  # pragma: no cover

    def _single(self, event: Event) -> None:
        try:
            self._with_retries(
                "create_event", functools.partial(self.client.create_event, event.to_payload())
            )
            self.sent += 1
        except KlaviyoClientError as exc:
            self._dead(event, exc)

    def _bulk(self, batch: list[Event]) -> None:
        remaining = batch
        while remaining:
            if len(remaining) == 1:
                self._single(remaining[0])
                return
            try:
                payload = bulk_payload(remaining)
                self._with_retries(
                    "bulk_create_events", functools.partial(self.client.bulk_create_events, payload)
                )
                self.sent += len(remaining)
                return
            except KlaviyoBadRequest as exc:
                bad = {
                    index
                    for pointer in exc.pointers
                    if (index := locate_bulk_pointer(remaining, pointer)) is not None
                }
                if not bad:
                    # Klaviyo did not say which event: send them one by one to isolate it.
                    for event in remaining:
                        self._single(event)
                    return
                for index in sorted(bad):
                    self._dead(remaining[index], exc)
                remaining = [e for i, e in enumerate(remaining) if i not in bad]
            except KlaviyoClientError as exc:  # 401/403 and the like: every event is affected
                for event in remaining:
                    self._dead(event, exc)
                return

    def _dead(self, event: Event, exc: KlaviyoAPIError) -> None:
        if self.dead_letters is None:
            raise exc
        self.dead_letters.add(
            event.to_dict(),
            reason="rejected",
            errors=[e.to_dict() for e in exc.errors],
            status=exc.status_code,
        )
        self.dead += 1


def deliver_events(events: list[dict[str, Any]]) -> dict[str, int]:
    """RQ job: deliver events queued by the web process (``Event.to_dict()`` form)."""
    settings = DeliverySettings.load()
    job = get_current_job()
    dead_letters = DeadLetters(job.connection) if job is not None else None
    sender = Sender(settings.client(), dead_letters)
    result = sender.send([Event.from_dict(item) for item in events])
    log.info("klaviyo: delivered %(sent)d event(s), %(dead)d dead, %(requests)d request(s)", result)
    return result


def drain(queue_name: str = "klaviyo") -> dict[str, int]:
    """RQ job: deliver what waits in the outbox stream, many events per request.

    Reads up to ``DRAIN_BATCH`` entries at a time through the consumer group (first reclaiming
    entries a dead worker had taken), sends them (one Bulk Create Events request, or Create Event
    for a lone event) paced by the shared rate limiter, and acknowledges and deletes them once
    delivered or dead-lettered. On a failure that outlasts its retries the entries stay pending,
    the job fails, and RQ's Retry (or the next drain) reclaims them: at-least-once delivery,
    exactly-once in Klaviyo by ``unique_id``.
    """
    job = get_current_job()
    if job is None:
        raise RuntimeError("drain() runs as an RQ job (it needs the job's Redis connection)")
    connection = job.connection
    settings = DeliverySettings.load()
    outbox = Outbox(connection, queue_name=queue_name)
    outbox.ensure_group()
    consumer = f"{socket.gethostname()}-{os.getpid()}-{job.id[:8]}"
    sender = Sender(
        settings.client(),
        DeadLetters(connection),
        attempts=DRAIN_ATTEMPTS,
        limiter=RateLimiter(connection, limits=settings.rate_limits),
    )
    deadline = time.monotonic() + DRAIN_SECONDS
    delivered = 0
    try:
        while time.monotonic() < deadline:
            outbox.refresh_flag()
            entries = _take(connection, outbox.stream, consumer)
            if not entries:
                break
            ids = [entry_id for entry_id, _ in entries]
            events = [Event.from_dict(json.loads(fields[b"e"])) for _, fields in entries]
            sender.send(events)
            pipe = connection.pipeline(transaction=False)
            pipe.xack(outbox.stream, CONSUMER_GROUP, *ids)
            pipe.xdel(outbox.stream, *ids)
            pipe.execute()
            delivered += len(ids)
    finally:
        outbox.reschedule_if_waiting()
    result = {
        "events": delivered,
        "sent": sender.sent,
        "dead": sender.dead,
        "requests": sender.requests,
    }
    log.info("klaviyo: drained %(events)d event(s) in %(requests)d request(s)", result)
    return result


def _take(connection: Any, stream: str, consumer: str) -> list[tuple[bytes, dict[bytes, bytes]]]:
    """Entries a dead worker left behind, else new ones (waiting briefly for a batch)."""
    reclaimed = connection.xautoclaim(
        stream, CONSUMER_GROUP, consumer, min_idle_time=RECLAIM_IDLE_MS, count=DRAIN_BATCH
    )
    entries = [e for e in reclaimed[1] if e[1]]  # deleted entries come back empty
    if entries:
        return entries
    read = connection.xreadgroup(
        CONSUMER_GROUP, consumer, {stream: ">"}, count=DRAIN_BATCH, block=READ_BLOCK_MS
    )
    return read[0][1] if read else []
