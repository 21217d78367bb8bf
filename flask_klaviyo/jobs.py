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

import contextlib
import functools
import json
import logging
import math
import os
import random
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from flask import current_app, has_app_context
from rq import get_current_job

from .client import DEFAULT_API_URL, DEFAULT_REVISION, KlaviyoClient, SendResult, get_client
from .events import (
    IDENTIFIER_KEYS,
    MAX_BULK_BYTES,
    MAX_BULK_EVENTS,
    Event,
    _bulk_envelope,
    _present,
    _profile_data,
    as_utc,
    bulk_payload,
    locate_bulk_pointer,
    split_batches,
)
from .exceptions import (
    KlaviyoAPIError,
    KlaviyoBadRequest,
    KlaviyoClientError,
    KlaviyoDeliveryError,
    KlaviyoRateLimited,
)
from .outbox import CONSUMER_GROUP, DeadLetters, Outbox
from .ratelimit import DEFAULT_LIMITS, RateLimiter, Window

__all__ = [
    "DeliverySettings",
    "Sender",
    "deliver_events",
    "drain",
    "parse_rate_limits",
    "raw_bulk_payload",
]

log = logging.getLogger("flask_klaviyo")

IN_JOB_ATTEMPTS = 4  # then the job fails and RQ's Retry takes over
DRAIN_ATTEMPTS = 7  # a drain rides out ~30 s of Klaviyo trouble before RQ's Retry
STATS_KEY = "klaviyo:stats"  # handled count and the last Klaviyo error, for `status`
DRAIN_BATCH = 1000  # entries read per round: one Bulk Create Events request at most
DRAIN_SECONDS = 30.0  # then the drain hands over to a fresh job (bounded jobs, bounded memory)
READ_BLOCK_MS = 50  # wait this long for more events before a drain ends
RECLAIM_IDLE_MS = 20_000  # entries a worker took this long ago without acking: it died
TOUCH_SECONDS = 5.0  # a drain holding entries longer re-claims them, so nobody thinks it died
LINGER_SECONDS = 1.0  # a partial batch waits at most this long per look for the endpoint's pace
DEFAULT_DRAIN_CONCURRENCY = 4  # drain jobs at once on a backlog (fanned out by the drains)
THROTTLED_MAX = 60  # 429s in a row on one request before the job gives up to RQ's Retry
BACKOFF_BASE = 0.5
BACKOFF_CAP = 30.0
RETRY_AFTER_CAP = 60.0
# An event that keeps failing (429/5xx/timeouts) this long becomes a dead letter with the last
# error instead of being retried forever (KLAVIYO_RETRY_HORIZON, seconds).
DEFAULT_RETRY_HORIZON = 6 * 3600.0
# Upper bound of the bytes one outbox entry adds to a bulk body beyond its own JSON: the
# event's JSON:API wrapper and the metric object, plus its profile entry's wrapper.
ENTRY_OVERHEAD_BYTES = 256


@dataclass(frozen=True)
class DeliverySettings:
    """Where and how to send; never part of a job's arguments (the key stays out of Redis)."""

    api_key: str | None
    api_url: str = DEFAULT_API_URL
    revision: str = DEFAULT_REVISION
    timeout: float = 10.0
    rate_limits: Mapping[str, tuple[Window, ...]] | None = None
    drain_concurrency: int = DEFAULT_DRAIN_CONCURRENCY
    drain_batch: int | None = None  # None: DRAIN_BATCH (1,000, Klaviyo's bulk maximum)
    retry_horizon: float = DEFAULT_RETRY_HORIZON  # seconds of failures before a dead letter
    reclaim_after: float | None = None  # None: RECLAIM_IDLE_MS

    @classmethod
    def load(cls) -> DeliverySettings:
        """From the Flask app when the worker runs in one, else from the environment."""
        source: Mapping[str, Any] = current_app.config if has_app_context() else os.environ
        return cls(
            api_key=source.get("KLAVIYO_PRIVATE_API_KEY"),
            api_url=source.get("KLAVIYO_API_URL") or DEFAULT_API_URL,
            revision=source.get("KLAVIYO_REVISION") or DEFAULT_REVISION,
            timeout=float(source.get("KLAVIYO_TIMEOUT") or 10.0),
            rate_limits=parse_rate_limits(source.get("KLAVIYO_RATE_LIMITS")),
            drain_concurrency=_whole(
                source.get("KLAVIYO_DRAIN_CONCURRENCY"),
                "KLAVIYO_DRAIN_CONCURRENCY",
                DEFAULT_DRAIN_CONCURRENCY,
                high=64,
            ),
            drain_batch=_whole(
                source.get("KLAVIYO_DRAIN_BATCH"), "KLAVIYO_DRAIN_BATCH", None, high=MAX_BULK_EVENTS
            ),
            retry_horizon=seconds_setting(
                source.get("KLAVIYO_RETRY_HORIZON"), "KLAVIYO_RETRY_HORIZON", DEFAULT_RETRY_HORIZON
            ),
            reclaim_after=seconds_setting(
                source.get("KLAVIYO_RECLAIM_AFTER"), "KLAVIYO_RECLAIM_AFTER", None, zero=True
            ),
        )

    def reclaim_idle_ms(self) -> int:
        """How long an entry a drain took may stay unacknowledged before another reclaims it."""
        return RECLAIM_IDLE_MS if self.reclaim_after is None else int(self.reclaim_after * 1000)

    def client(self) -> KlaviyoClient:
        return get_client(
            self.api_key or "",
            base_url=self.api_url,
            revision=self.revision,
            timeout=self.timeout,
        )


def _whole(raw: Any, name: str, default: int | None, *, high: int) -> int | None:
    """A whole number from 1 to ``high`` in config or the environment (unset: ``default``)."""
    if raw in (None, ""):
        return default
    value = None
    if isinstance(raw, int) and not isinstance(raw, bool):
        value = raw
    elif isinstance(raw, str) and raw.strip().isdigit():
        value = int(raw)
    if value is None or not 1 <= value <= high:
        raise ValueError(f"{name} must be a whole number from 1 to {high}, got {raw!r}")
    return value


def seconds_setting(raw: Any, name: str, default: Any, *, zero: bool = False) -> Any:
    """A number of seconds (> 0, or >= 0 with ``zero``) from config or the environment, where
    it may be a numeric string; unset: ``default``."""
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        return default
    value = None
    if isinstance(raw, int | float) and not isinstance(raw, bool):
        value = float(raw)
    elif isinstance(raw, str):
        with contextlib.suppress(ValueError):
            value = float(raw)
    if value is None or not math.isfinite(value) or value < 0 or (value == 0 and not zero):
        least = ">= 0" if zero else "> 0"
        raise ValueError(f"{name} must be a number of seconds {least}, got {raw!r}")
    return value


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


def _identity(profile: Mapping[str, Any]) -> tuple[tuple[str, str], ...] | None:
    """The identifiers that make a profile, as :func:`events._profile_key` compares them (email
    trimmed and lower-cased); None when one is not a string (the careful path handles that)."""
    found = []
    for key in IDENTIFIER_KEYS:
        value = profile.get(key)
        if value is None or value == "":
            continue
        if not isinstance(value, str):
            return None
        found.append((key, value.strip().lower() if key == "email" else value))
    return tuple(found)


def _raw_event_attributes(item: Mapping[str, Any]) -> dict[str, Any]:
    """``Event.from_dict(item).event_attributes()`` without building the Event."""
    when = item.get("time")
    if not (isinstance(when, str) and when.endswith("+00:00")):
        when = as_utc(when).isoformat()
    attributes: dict[str, Any] = {"properties": item.get("properties") or {}, "time": when}
    if item.get("value") is not None:
        attributes["value"] = item["value"]
    if item.get("value_currency") is not None:
        attributes["value_currency"] = item["value_currency"]
    if item.get("unique_id") is not None:
        attributes["unique_id"] = item["unique_id"]
    if item.get("backfill"):
        attributes["backfill"] = True
    attributes["metric"] = {"data": {"type": "metric", "attributes": {"name": item["metric"]}}}
    return attributes


def raw_bulk_payload(
    items: Sequence[Mapping[str, Any]],
    sizes: Sequence[int] | None = None,
    *,
    max_events: int = MAX_BULK_EVENTS,
    max_bytes: int = MAX_BULK_BYTES,
) -> dict[str, Any] | None:
    """The Bulk Create Events body for outbox entries (``Event.to_dict()`` form), built straight
    from them: what ``bulk_payload([Event.from_dict(i) for i in items])`` gives, at a fraction
    of the cost (no Event objects, no canonical JSON per event, no size probe per event).

    None when one request cannot be proven safe cheaply: a lone event, too many, a body that
    might pass ``max_bytes`` (``sizes``, the entries' JSON lengths, bound it), a repeated
    (profile, metric, unique_id), an event without a unique_id or a non-string identifier.
    The caller then takes the careful path (:func:`events.split_batches`).
    """
    if not 1 < len(items) <= max_events:
        return None
    if sizes is None or sum(sizes) + ENTRY_OVERHEAD_BYTES * (len(items) + 1) > max_bytes:
        return None
    groups: dict[tuple[tuple[str, str], ...], list[Mapping[str, Any]]] = {}
    seen: set[tuple[Any, str, str]] = set()
    for item in items:
        key = _identity(item.get("profile") or {})
        metric, unique_id = item.get("metric"), item.get("unique_id")
        if key is None or not isinstance(metric, str) or not isinstance(unique_id, str):
            return None
        repeat = (key, metric, unique_id)
        if repeat in seen:
            return None
        seen.add(repeat)
        groups.setdefault(key, []).append(item)
    entries = []
    for group in groups.values():
        merged: dict[str, Any] = {}
        for item in group:
            for name, value in (item.get("profile") or {}).items():
                if name not in merged and _present(value):
                    merged[name] = value
        attributes: dict[str, Any] = {
            "profile": {"data": _profile_data(merged, meta_inside=False)},
            "events": {
                "data": [{"type": "event", "attributes": _raw_event_attributes(i)} for i in group]
            },
        }
        if all(item.get("backfill") for item in group):
            attributes["backfill"] = True
        entries.append({"type": "event-bulk-create", "attributes": attributes})
    return _bulk_envelope(entries)


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
        self.throttled = 0  # 429s answered to this sender (each waited out, then retried)

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
        try:
            self._with_retries(
                "bulk_create_events", functools.partial(self.client.bulk_create_events, payload)
            )
        except KlaviyoClientError as exc:
            self._bulk([Event.from_dict(item) for item in items], first_error=exc)
        else:
            self.sent += len(items)
        return self.result()

    def _with_retries(self, endpoint: str, call: Callable[[], SendResult]) -> SendResult:
        """``call`` until it is accepted: 429s wait Retry-After (every worker waits) and do not
        count as attempts up to THROTTLED_MAX in a row; other retryable errors back off."""
        attempt = 0
        throttled = 0
        while True:
            try:
                if self.limiter is not None:
                    self.limiter.acquire(endpoint, max_wait=RETRY_AFTER_CAP * 2)
                self.requests += 1
                result = call()
            except KlaviyoDeliveryError as exc:
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
                if (
                    self.limiter is not None
                    and result.rate_limit_remaining == 0
                    and result.rate_limit_reset
                ):
                    self.limiter.block(endpoint, min(result.rate_limit_reset, RETRY_AFTER_CAP))
                return result

    def _single(self, event: Event) -> None:
        try:
            self._with_retries(
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
                payload = bulk_payload(remaining)
                self._with_retries(
                    "bulk_create_events", functools.partial(self.client.bulk_create_events, payload)
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
    connection = job.connection if job is not None else None
    sender = Sender(
        settings.client(),
        DeadLetters(connection) if connection is not None else None,
        limiter=(
            RateLimiter(connection, limits=settings.rate_limits) if connection is not None else None
        ),
    )
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

    A full batch means a backlog: the drain then asks for a helper, up to
    ``KLAVIYO_DRAIN_CONCURRENCY`` drains at once (the consumer group gives each entry to one).
    A partial batch waits for the endpoint's steady pace (gathering what arrives meanwhile), so
    a trickle of events goes out in few requests without spending the minute's budget at once.
    """
    job = get_current_job()
    if job is None:
        raise RuntimeError("drain() runs as an RQ job (it needs the job's Redis connection)")
    return _Drain(job.connection, queue_name, job.id, DeliverySettings.load()).run()


def failing_key(stream: str) -> str:
    """The hash beside an outbox stream: entry id -> when a drain first gave up on it."""
    return f"{stream}:failing"


def dead_letter_past_horizon(
    connection: Any, stream: str, ids: Sequence[bytes], exc: KlaviyoDeliveryError, horizon: float
) -> int:
    """After a drain gave up on ``ids`` (retryable errors outlasted its retries): remember when
    each first failed, and move those failing for ``horizon`` seconds or more to the dead-letter
    registry with the last error, acknowledged and deleted, instead of retrying them forever.
    The rest stay pending for the next drain. Returns how many became dead letters."""
    if not ids:
        return 0
    failing = failing_key(stream)
    now = time.time()
    pipe = connection.pipeline(transaction=False)
    for entry_id in ids:
        pipe.hsetnx(failing, entry_id, now)
    pipe.expire(failing, int(max(2 * horizon, 86400)))
    pipe.hmget(failing, list(ids))
    since = pipe.execute()[-1]
    expired = [
        entry_id
        for entry_id, first in zip(ids, since, strict=True)
        if first is not None and now - float(first) >= horizon
    ]
    if not expired:
        return 0
    if isinstance(exc, KlaviyoAPIError):
        status: int | None = exc.status_code
        errors = [error.to_dict() for error in exc.errors]
    else:
        status, errors = None, []
    if not errors:
        errors = [{"code": type(exc).__name__, "detail": str(exc)}]
    pipe = connection.pipeline(transaction=False)
    for entry_id in expired:
        pipe.xrange(stream, entry_id, entry_id)
    dead_letters = DeadLetters(connection)
    for rows in pipe.execute():
        for _, fields in rows:
            dead_letters.add(
                json.loads(fields[b"e"]), reason="retry_horizon", errors=errors, status=status
            )
    pipe = connection.pipeline(transaction=False)
    pipe.xack(stream, CONSUMER_GROUP, *expired)
    pipe.xdel(stream, *expired)
    pipe.hdel(failing, *expired)
    pipe.execute()
    log.error(
        "klaviyo: %d event(s) failed for longer than the retry horizon (%.0fs) and are kept as "
        "dead letters (replay them after the fix); last error: %s",
        len(expired),
        horizon,
        exc,
    )
    return len(expired)


class _Drain:
    """One drain job's state: its consumer, the entries it holds, its sender and limiter."""

    def __init__(
        self, connection: Any, queue_name: str, job_id: str, settings: DeliverySettings
    ) -> None:
        self.connection = connection
        self.job_id = job_id
        self.settings = settings
        self.outbox = Outbox(connection, queue_name=queue_name)
        self.stream = self.outbox.stream
        self.batch = settings.drain_batch or DRAIN_BATCH
        self.consumer = f"{socket.gethostname()}-{os.getpid()}-{job_id[:8]}"
        self.limiter = RateLimiter(connection, limits=settings.rate_limits, sleep=self.sleep)
        self.sender = Sender(
            settings.client(),
            DeadLetters(connection),
            attempts=DRAIN_ATTEMPTS,
            limiter=self.limiter,
            sleep=self.sleep,
        )
        self.held: list[bytes] = []  # entry ids taken and not yet acknowledged
        self.touched = time.monotonic()
        self.in_flight: tuple[Future[dict[str, int]], list[bytes]] | None = None
        self.delivered = 0
        self.helpers = 0

    def run(self) -> dict[str, int]:
        """Read, send, acknowledge; the next batch is read and decoded while one is sent."""
        outbox = self.outbox
        outbox.ensure_group()
        outbox.join_drain(self.job_id)
        deadline = time.monotonic() + DRAIN_SECONDS
        try:
            with ThreadPoolExecutor(max_workers=1, thread_name_prefix="klaviyo-send") as pool:
                try:
                    while time.monotonic() < deadline:
                        outbox.keep_drain(self.job_id)
                        entries = self.take(self.batch, block=READ_BLOCK_MS)
                        if not entries:
                            if self.in_flight is None:
                                break
                            self.finish_send()
                            continue
                        self.hold(entries)
                        if len(entries) >= self.batch:
                            self.ask_for_help()
                        else:  # no backlog: the pace counts from the request now in flight
                            self.finish_send()
                            entries = self.linger(entries)
                        ids = [entry_id for entry_id, _ in entries]
                        raw = [fields[b"e"] for _, fields in entries]
                        items = [json.loads(r) for r in raw]
                        self.finish_send()
                        future = pool.submit(self.sender.send_raw, items, [len(r) for r in raw])
                        self.in_flight = (future, ids)
                finally:
                    self.finish_send()
        finally:
            outbox.leave_drain(self.job_id, self.consumer)
            outbox.reschedule_if_waiting(
                reclaim_after=max(1, math.ceil(self.settings.reclaim_idle_ms() / 1000))
            )
        result = {
            "events": self.delivered,
            "sent": self.sender.sent,
            "dead": self.sender.dead,
            "requests": self.sender.requests,
            "throttled": self.sender.throttled,
            "helpers": self.helpers,
        }
        log.info("klaviyo: drained %(events)d event(s) in %(requests)d request(s)", result)
        return result

    def finish_send(self) -> None:
        """Wait for the batch being sent; acknowledge and delete its entries once it is done
        (delivered or dead-lettered). A failure leaves them pending, to be reclaimed."""
        if self.in_flight is None:
            return
        future, ids = self.in_flight
        self.in_flight = None
        try:
            future.result()
        except KlaviyoDeliveryError as exc:
            self.connection.hset(
                STATS_KEY, mapping={"last_error": str(exc)[:500], "last_error_at": time.time()}
            )
            dead_letter_past_horizon(
                self.connection, self.stream, ids, exc, self.settings.retry_horizon
            )
            raise
        pipe = self.connection.pipeline(transaction=False)
        pipe.xack(self.stream, CONSUMER_GROUP, *ids)
        pipe.xdel(self.stream, *ids)
        pipe.hdel(failing_key(self.stream), *ids)  # first failures of entries now delivered
        pipe.hincrby(STATS_KEY, "handled", len(ids))  # delivered or dead-lettered
        pipe.execute()
        self.delivered += len(ids)
        done = set(ids)
        self.held = [entry_id for entry_id in self.held if entry_id not in done]

    def take(self, count: int, *, block: int | None) -> list[tuple[bytes, dict[bytes, bytes]]]:
        """Entries a dead worker left behind, else new ones (waiting ``block`` ms for some)."""
        reclaimed = self.connection.xautoclaim(
            self.stream,
            CONSUMER_GROUP,
            self.consumer,
            min_idle_time=self.settings.reclaim_idle_ms(),
            count=count,
        )
        # Deleted entries come back empty; entries this drain holds already are not new to it.
        held = set(self.held)
        entries = [e for e in reclaimed[1] if e[1] and e[0] not in held]
        if entries:
            return entries
        read = self.connection.xreadgroup(
            CONSUMER_GROUP, self.consumer, {self.stream: ">"}, count=count, block=block
        )
        return read[0][1] if read else []

    def hold(self, entries: list[tuple[bytes, dict[bytes, bytes]]]) -> None:
        """These entries (and the batch being sent) are ours until acknowledged."""
        sending = self.in_flight[1] if self.in_flight is not None else []
        self.held = [*sending, *(entry_id for entry_id, _ in entries)]
        self.touched = time.monotonic()

    def linger(
        self, entries: list[tuple[bytes, dict[bytes, bytes]]]
    ) -> list[tuple[bytes, dict[bytes, bytes]]]:
        """Until the endpoint's pace allows a request, gather more entries (up to a batch)."""
        while len(entries) < self.batch:
            endpoint = "create_event" if len(entries) == 1 else "bulk_create_events"
            wait = self.limiter.wait_time(endpoint, pace=True)
            if wait <= 0.001:
                break
            self.sleep(min(wait, LINGER_SECONDS))
            more = self.take(self.batch - len(entries), block=None)
            if more:
                entries = entries + more
                self.hold(entries)
        return entries

    def ask_for_help(self) -> None:
        """A full batch: more drains, up to the configured concurrency, if more is waiting."""
        helper = self.outbox.add_drain(self.settings.drain_concurrency)
        if helper is not None:
            self.helpers += 1

    def sleep(self, seconds: float) -> None:
        """Sleep, re-claiming the held entries every TOUCH_SECONDS (they are not abandoned)."""
        end = time.monotonic() + max(0.0, seconds)
        while True:
            left = end - time.monotonic()
            if left <= 0:
                return
            time.sleep(min(left, TOUCH_SECONDS / 2))
            self.touch()

    def touch(self) -> None:
        if not self.held or time.monotonic() - self.touched < TOUCH_SECONDS:
            return
        self.connection.xclaim(
            self.stream,
            CONSUMER_GROUP,
            self.consumer,
            min_idle_time=0,
            message_ids=self.held,
            justid=True,
        )
        self.outbox.keep_drain(self.job_id)
        self.touched = time.monotonic()
