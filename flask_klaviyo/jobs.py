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
import logging
import os
import random
import time
from collections.abc import Callable, Sequence
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
from .outbox import DeadLetters

__all__ = ["DeliverySettings", "Sender", "deliver_events"]

log = logging.getLogger("flask_klaviyo")

IN_JOB_ATTEMPTS = 4  # then the job fails and RQ's Retry takes over
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
            )
        env = os.environ
        return cls(
            api_key=env.get("KLAVIYO_PRIVATE_API_KEY"),
            api_url=env.get("KLAVIYO_API_URL") or DEFAULT_API_URL,
            revision=env.get("KLAVIYO_REVISION") or DEFAULT_REVISION,
            timeout=float(env.get("KLAVIYO_TIMEOUT") or 10.0),
        )

    def client(self) -> KlaviyoClient:
        return get_client(
            self.api_key or "",
            base_url=self.api_url,
            revision=self.revision,
            timeout=self.timeout,
        )


def backoff_delay(attempt: int, *, base: float = BACKOFF_BASE, cap: float = BACKOFF_CAP) -> float:
    """Capped exponential backoff with full jitter in its upper half."""
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
    ) -> None:
        self.client = client
        self.dead_letters = dead_letters
        self.attempts = attempts
        self.sleep = sleep
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

    def _with_retries(self, call: Callable[[], SendResult]) -> SendResult:
        for attempt in range(self.attempts):
            try:
                self.requests += 1
                return call()
            except KlaviyoDeliveryError as exc:
                if not exc.retryable or attempt == self.attempts - 1:
                    raise
                if isinstance(exc, KlaviyoRateLimited) and exc.retry_after is not None:
                    delay = min(max(exc.retry_after, 0.0), RETRY_AFTER_CAP)
                else:
                    delay = backoff_delay(attempt)
                log.info("klaviyo: %s; retrying in %.1fs", exc, delay)
                self.sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover

    def _single(self, event: Event) -> None:
        try:
            self._with_retries(functools.partial(self.client.create_event, event.to_payload()))
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
                self._with_retries(functools.partial(self.client.bulk_create_events, payload))
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
