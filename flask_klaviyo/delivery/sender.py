"""Sending a batch to Klaviyo with retries: events (Create Event for one, Bulk Create Events for
several, split and pointer-sorted) and every other operation kind (its endpoint, its body).

Failures: 429 waits ``Retry-After`` for every worker (the shared limiter is blocked) and does not
count as an attempt; 5xx, 408 and transport errors back off (capped, jittered) and are retried,
first here, then by RQ; a 4xx that no retry can fix sends the operation an error pointer names
(or, without one, each in turn) to the dead letters, and the rest of its batch still goes.
"""

from __future__ import annotations

import functools
import logging
import random
import time
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import replace
from typing import Any

from ..client import KlaviyoClient, SendResult, encode_body
from ..events import Event
from ..events.bulk import bulk_payload, locate_bulk_pointer, raw_bulk_payload, split_batches
from ..exceptions import (
    ErrorDetail,
    KlaviyoAPIError,
    KlaviyoBadRequest,
    KlaviyoClientError,
    KlaviyoDeliveryError,
    KlaviyoRateLimited,
)
from ..ratelimit import RateLimiter
from .deadletters import DeadLetters
from .kinds import Kind
from .operations import Operation

__all__ = ["FollowUp", "Sender", "backoff_delay"]

log = logging.getLogger(__name__)

IN_JOB_ATTEMPTS = 4  # then the job fails and RQ's Retry takes over
THROTTLED_MAX = 60  # 429s in a row on one request before the job gives up to RQ's Retry
BACKOFF_BASE = 0.5
BACKOFF_CAP = 30.0
RETRY_AFTER_CAP = 60.0

# (kind name, Klaviyo's job id, the operations the job holds, in the job's order: as dicts, or
# as the stored JSON of the one catalog chunk they all came from)
FollowUp = tuple[str, str, list[dict[str, Any]] | bytes]


def backoff_delay(attempt: int, *, base: float | None = None, cap: float | None = None) -> float:
    """Capped exponential backoff with jitter in its upper half."""
    base = BACKOFF_BASE if base is None else base
    cap = BACKOFF_CAP if cap is None else cap
    ceiling = min(cap, base * (2**attempt))
    return ceiling * random.uniform(0.5, 1.0)


class Sender:
    """Sends events (Create Event for one, Bulk Create Events for several) and operations of
    other kinds, through one retry loop; keeps what cannot be sent as dead letters."""

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
        self.throttled = 0  # 429s answered to this sender (each waited out, then retried)
        self.last_error: str | None = None  # Klaviyo's last error answer (or the transport's)
        self.last_error_at: float | None = None
        self.jobs: list[FollowUp] = []  # asynchronous jobs Klaviyo accepted, to follow up
        self.on_job: Callable[[], None] | None = None  # told of each job as Klaviyo accepts it
        # Redis, for kinds that remember what Klaviyo answered (profile ids)
        self.connection = dead_letters.connection if dead_letters is not None else None
        # For the inspector's journal (None: not kept): Klaviyo's answers (endpoint, status)
        # and the entries kept as dead letters (entry, status, first error's detail).
        self.answers: list[tuple[str, int]] | None = None
        self.deaths: list[tuple[dict[str, Any], int | None, str]] | None = None
        # For the metrics (None: not kept; delivery/counters.py): the limiter's waits (endpoint,
        # seconds) and the entries dropped unsent (their person forgotten).
        self.waits: list[tuple[str, float]] | None = None
        self.dropped: list[Mapping[str, Any]] | None = None

    def result(self) -> dict[str, int]:
        return {"sent": self.sent, "dead": self.dead, "requests": self.requests}

    def send(self, events: Sequence[Event]) -> dict[str, int]:
        if len(events) == 1:
            self._single(events[0])
        else:
            for batch in split_batches(list(events)):
                self._bulk(batch)
        return self.result()

    def send_raw(
        self, items: Sequence[Mapping[str, Any]], sizes: Sequence[int] | None = None
    ) -> dict[str, int]:
        """Send outbox entries (``Event.to_dict()`` form; ``sizes``: their JSON lengths).

        The common case, events that fit one bulk request, goes straight from the entries to
        the request body (:func:`raw_bulk_payload`); anything else, and any error to sort out,
        through Event objects and :meth:`send`.
        """
        payload = raw_bulk_payload(items, sizes)
        if payload is None:
            return self.send([Event.from_dict(item) for item in items])
        body = encode_body(payload)
        try:
            self.call("bulk_create_events", functools.partial(self.client.bulk_create_events, body))
        except KlaviyoClientError as exc:
            self._bulk([Event.from_dict(item) for item in items], first_error=exc)
        else:
            self.sent += len(items)
        return self.result()

    def call(self, endpoint: str, call: Callable[[], SendResult]) -> SendResult:
        """``call`` until it is accepted: 429s wait Retry-After (every worker waits) and do not
        count as attempts up to THROTTLED_MAX in a row; other retryable errors back off. An
        answer's RateLimit-* headers go to the limiter (what is left of the steady window)."""
        attempt = 0
        throttled = 0
        while True:
            try:
                if self.limiter is not None:
                    waited = self.limiter.acquire(endpoint, max_wait=RETRY_AFTER_CAP * 2)
                    if waited > 0 and self.waits is not None:
                        self.waits.append((endpoint, waited))
                self.requests += 1
                result = call()
            except KlaviyoDeliveryError as exc:
                self.last_error, self.last_error_at = str(exc), time.time()
                if self.answers is not None:  # 0: no answer (a timeout, a reset)
                    self.answers.append((endpoint, getattr(exc, "status_code", 0)))
                if isinstance(exc, KlaviyoRateLimited) and throttled < THROTTLED_MAX:
                    throttled += 1
                    self.throttled += 1
                    delay = min(max(exc.retry_after or 1.0, 0.0), RETRY_AFTER_CAP)
                    if self.limiter is not None:  # every worker waits, not only this one
                        self.limiter.block(endpoint, delay)
                        log.info("klaviyo: %s; all workers wait %.1fs", exc, delay)
                    else:
                        log.info("klaviyo: %s; retrying in %.1fs", exc, delay)
                        self.sleep(delay)
                    continue
                attempt += 1
                if not exc.retryable or attempt >= self.attempts:
                    raise
                delay = backoff_delay(attempt - 1)
                log.info("klaviyo: %s; retrying in %.1fs", exc, delay)
                self.sleep(delay)
            else:
                if self.limiter is not None:  # Klaviyo's word on the steady window
                    self.limiter.observe(endpoint, result)
                if self.answers is not None:
                    self.answers.append((endpoint, result.status_code))
                return result

    def _single(self, event: Event) -> None:
        try:
            self.call(
                "create_event", functools.partial(self.client.create_event, event.to_payload())
            )
            self.sent += 1
        except KlaviyoClientError as exc:
            self._dead(event, exc)

    def _bulk(self, batch: list[Event], *, first_error: KlaviyoClientError | None = None) -> None:
        """One bulk request for ``batch``; a 400 naming events dead-letters them and re-sends the
        rest. ``first_error``: the answer to a first try already made (by :meth:`send_raw`)."""
        remaining = batch
        error = first_error
        while remaining:
            if len(remaining) == 1 and error is None:
                self._single(remaining[0])
                return
            try:
                if error is not None:
                    raise error
                body = encode_body(bulk_payload(remaining))
                self.call(
                    "bulk_create_events", functools.partial(self.client.bulk_create_events, body)
                )
                self.sent += len(remaining)
                return
            except KlaviyoBadRequest as exc:
                error = None
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

    def send_operations(
        self, kind: Kind, operations: Sequence[Operation], *, stored: bytes | None = None
    ) -> dict[str, int]:
        """Operations of one kind: grouped (``kind.group``), in batches of ``kind.batch_limit``.
        ``stored``: the JSON they were all read from (one catalog chunk), which their job's
        follow-up keeps as it is when the job holds them all."""
        groups: dict[Hashable, list[Operation]] = {}
        for operation in operations:
            group = kind.group(operation.payload) if kind.group is not None else None
            groups.setdefault(group, []).append(operation)
        for members in groups.values():
            for start in range(0, len(members), kind.batch_limit):
                batch = members[start : start + kind.batch_limit]
                if kind.send is not None:
                    kind.send(self, kind, batch)
                else:
                    whole = stored if len(batch) == len(operations) else None
                    self._operation_batch(kind, batch, whole)
        return self.result()

    def _operation_batch(
        self, kind: Kind, batch: list[Operation], stored: bytes | None = None
    ) -> None:
        remaining = batch
        while remaining:
            payloads = [operation.payload for operation in remaining]
            try:
                body = encode_body(kind.body(payloads))  # before the rate slot is taken
                url = kind.url(payloads)
            except Exception as exc:  # a payload the kind cannot make a body of
                detail = f"{kind.name}: no request body: {type(exc).__name__}: {exc}"
                for operation in remaining:
                    self.keep_dead(operation.to_dict(), "invalid", [{"detail": detail}], None)
                return
            try:
                result = self.call(
                    kind.endpoint, functools.partial(self.client.send, kind.method, url, body)
                )
            except KlaviyoBadRequest as exc:
                bad = {
                    index
                    for pointer in exc.pointers
                    if (index := kind.locate(payloads, pointer)) is not None
                }
                if not bad:  # Klaviyo did not say which: one by one isolates it
                    if len(remaining) == 1:
                        self._dead_operation(remaining[0], exc)
                    else:
                        for operation in remaining:
                            self._operation_batch(kind, [operation])
                    return
                for index in sorted(bad):
                    self._dead_operation(remaining[index], exc)
                remaining = [op for i, op in enumerate(remaining) if i not in bad]
                continue
            except KlaviyoClientError as exc:  # 401/403/409...: every operation is affected
                for operation in remaining:
                    self._dead_operation(operation, exc)
                if exc.status_code == 409 and kind.conflict is not None and len(remaining) == 1:
                    self._after_conflict(kind, remaining[0])
                return
            self.sent += len(remaining)
            if kind.answered is not None and len(remaining) == 1:
                kind.answered(remaining[0].payload, result.data, self.connection)
            if kind.job is not None:
                job_id = _job_id(result.data)
                if job_id is None:
                    log.warning("klaviyo: %s answered without a job id; not followed up", kind.name)
                else:
                    kept = (
                        stored
                        if stored is not None and remaining is batch  # none set aside
                        else [op.to_dict() for op in remaining]
                    )
                    self.jobs.append((kind.name, job_id, kept))
                    if self.on_job is not None:
                        self.on_job()
            return

    def _after_conflict(self, kind: Kind, operation: Operation) -> None:
        """Send the kind's fallback for a conflict once (never retried into a loop)."""
        assert kind.conflict is not None
        fallback = kind.conflict(operation.payload)
        if fallback is None:
            return
        retry = Operation(kind.name, fallback, operation.key, operation.queued_at)
        self._operation_batch(replace(kind, conflict=None), [retry])

    def _dead_operation(self, operation: Operation, exc: KlaviyoAPIError) -> None:
        self.keep_dead(
            operation.to_dict(), "rejected", [e.to_dict() for e in exc.errors], exc.status_code
        )

    def keep_dead(
        self, entry: dict[str, Any], reason: str, errors: list[dict[str, Any]], status: int | None
    ) -> None:
        if self.dead_letters is None:
            raise KlaviyoClientError(status or 400, [ErrorDetail.from_json(e) for e in errors])
        self.dead_letters.add(entry, reason=reason, errors=errors, status=status)
        self.dead += 1
        self._note_death(entry, status, errors)

    def _dead(self, event: Event, exc: KlaviyoAPIError) -> None:
        if self.dead_letters is None:
            raise exc
        errors = [e.to_dict() for e in exc.errors]
        entry = event.to_dict()
        self.dead_letters.add(entry, reason="rejected", errors=errors, status=exc.status_code)
        self.dead += 1
        self._note_death(entry, exc.status_code, errors)

    def _note_death(
        self, entry: dict[str, Any], status: int | None, errors: Sequence[Mapping[str, Any]]
    ) -> None:
        if self.deaths is not None:
            detail = next((str(e.get("detail")) for e in errors if e.get("detail")), "")
            self.deaths.append((entry, status, detail))


def _job_id(answer: Any) -> str | None:
    """The id of the job in Klaviyo's 202 answer (``{"data": {"type": ..., "id": ...}}``)."""
    data = answer.get("data") if isinstance(answer, Mapping) else None
    job_id = data.get("id") if isinstance(data, Mapping) else None
    return job_id if isinstance(job_id, str) and job_id else None
