"""The drain: what waits in a queue's outbox stream, delivered many operations per request.

A drain (one RQ job) reads up to a batch of entries through the consumer group (first
reclaiming entries a dead worker had taken), groups them by kind, coalesces what a kind merges,
sends each group in its endpoint's form paced by the shared limiter, schedules the follow-up of
any asynchronous job Klaviyo accepted, then acknowledges and deletes the entries. Operations
whose endpoint has no rate slot within ``PATIENCE`` are carried, still held, to the next round
instead of slept on, so what arrives meanwhile for another endpoint goes at once. On a failure
that outlasts its retries the entries stay pending, the job fails, and RQ's Retry (or the next
drain) reclaims them: at-least-once delivery, exactly-once in Klaviyo by ``unique_id``. Entries
failing longer than the retry horizon become dead letters with the last error.
"""

from __future__ import annotations

import json
import logging
import math
import os
import socket
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, NamedTuple

import redis

from .._settings import MAX_DRAIN_BATCH
from ..exceptions import KlaviyoDeliveryError
from ..inspect.journal import Journal, delivery_records
from ..ratelimit import RateLimiter
from . import (
    counters,
    keys,
    kinds,
    klaviyo_kinds,  # noqa: F401 - importing it registers Klaviyo's kinds
)
from .deadletters import DeadLetters, dead_letter_past_horizon
from .dispatch import Unsent, dispatch
from .followup import schedule_follow_ups
from .keys import CONSUMER_GROUP
from .operations import is_operation_text
from .outbox import Outbox
from .sender import Sender
from .settings import DeliverySettings
from .stats import SenderMarks, record_batch, record_error

__all__ = ["Drain"]

log = logging.getLogger(__name__)

DRAIN_ATTEMPTS = 7  # a drain rides out ~30 s of Klaviyo trouble before RQ's Retry
DRAIN_BATCH = MAX_DRAIN_BATCH  # entries read per round: one Bulk Create Events request at most
DRAIN_SECONDS = 30.0  # then the drain hands over to a fresh job (bounded jobs, bounded memory)
READ_BLOCK_MS = 50  # wait this long for more events before a drain ends
TOUCH_SECONDS = 5.0  # a drain holding entries longer re-claims them (sooner if they may be
# reclaimed sooner: a quarter of KLAVIYO_RECLAIM_AFTER), so nobody thinks it died
LINGER_SECONDS = 1.0  # a partial batch waits at most this long per look for the endpoint's pace
FOLLOW_UP_EVERY = 0.1  # seconds between scheduled follow-ups of jobs accepted during a send
BACKLOG_LOOK_SECONDS = 5.0  # full batches: how often the backlog is told to the limiter
EVENTS_ENDPOINT = "bulk_create_events"  # where a backlog of events goes
# A batch's operations whose endpoint has no rate slot within this are carried to the next
# round (still held) instead of waited for: meanwhile the drain takes and sends what came in.
PATIENCE = 0.25
# A drain carrying entries reads what arrives meanwhile, blocking at most this: well under any
# client's socket timeout (the web side's is 2 s; a sync's own drains use that client).
CARRY_BLOCK = 0.5


class _InFlight(NamedTuple):
    """The batch being sent: what it will leave unsent, its entries, their items."""

    future: Future[Unsent]
    entries: list[tuple[bytes, dict[bytes, bytes]]]
    items: list[Any]


class Drain:
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
        self.limiter = RateLimiter(
            connection, limits=kinds.rate_limits(settings.rate_limits), sleep=self.sleep
        )
        self.sender = Sender(
            settings.client(),
            DeadLetters(connection),
            attempts=DRAIN_ATTEMPTS,
            limiter=self.limiter,
            sleep=self.sleep,
        )
        self.held: list[bytes] = []  # entry ids taken and not yet acknowledged
        self.touched = time.monotonic()
        # held entries are re-claimed this often: well before another drain may reclaim them
        self.touch_every = max(0.05, min(TOUCH_SECONDS, settings.reclaim_idle_ms() / 4000))
        self.in_flight: _InFlight | None = None  # the batch being sent
        # a batch's entries whose endpoint had no slot (with their items), and when it will
        self.carry: list[tuple[tuple[bytes, dict[bytes, bytes]], Any]] = []
        self.carry_at = 0.0
        # a read while carrying blocks at most this (touches come in between)
        self.block_cap = min(self.touch_every / 2, CARRY_BLOCK)
        # Klaviyo jobs' follow-ups are scheduled as the jobs are accepted (at most FOLLOW_UP_EVERY
        # apart), not after the whole batch: a new catalog item's variants need not wait for it.
        self.followed_at = 0.0
        self.sender.on_job = self.job_accepted
        self.journal = Journal(connection) if settings.inspector else None  # dev only
        if self.journal is not None:
            self.sender.answers, self.sender.deaths = [], []
        if settings.metrics:  # KLAVIYO_METRICS: the Prometheus counters, on the ack
            counters.watch(self.sender)
        self.delivered = 0
        self.helpers = 0
        self.backlog_looked = 0.0  # when the backlog was last told to the limiter
        self.marks = SenderMarks()  # what of the sender's tallies status has been told

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
                        if self.sending_operations():
                            self.finish_send()
                        self.touch()
                        new = self.take_more()
                        if not new and not self.carry:
                            if self.in_flight is None:
                                break
                            self.finish_send()
                            continue
                        carried, self.carry = self.carry, []
                        entries = [*(entry for entry, _ in carried), *new]
                        self.hold(entries, fresh=not carried)
                        if len(entries) >= self.batch:
                            self.ask_for_help()
                        else:  # no backlog: the pace counts from the request now in flight
                            self.finish_send()
                            entries = self.linger(entries)
                        self.submit(pool, entries, [item for _, item in carried], PATIENCE)
                    self.finish_send()
                    if self.carry:  # the deadline: what waits for its window goes, then hand over
                        carried, self.carry = self.carry, []
                        entries = [entry for entry, _ in carried]
                        self.submit(pool, entries, [item for _, item in carried], None)
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

    def submit(
        self,
        pool: ThreadPoolExecutor,
        entries: list[tuple[bytes, dict[bytes, bytes]]],
        carried: list[Any],
        patience: float | None,
    ) -> None:
        """Hand ``entries`` to the sending thread once the batch before is done; the first
        ``len(carried)`` were decoded before (``carried``, their items), the rest are now."""
        raw = [fields[b"e"] for _, fields in entries]
        items = [*carried, *(json.loads(r) for r in raw[len(carried) :])]
        self.finish_send()
        future = pool.submit(dispatch, self.sender, items, raw, patience=patience)
        self.in_flight = _InFlight(future, entries, items)

    def finish_send(self) -> None:
        """Wait for the batch being sent; acknowledge and delete its entries once it is done
        (delivered or dead-lettered); what it left for its endpoint's window is carried (still
        held). A failure leaves them pending, to be reclaimed."""
        flight, self.in_flight = self.in_flight, None
        if flight is None:
            return
        ids = [entry_id for entry_id, _ in flight.entries]
        try:
            unsent = flight.future.result()
        except KlaviyoDeliveryError as exc:
            record_error(self.connection, str(exc))
            dead = dead_letter_past_horizon(
                self.connection, self.stream, ids, exc, self.settings.retry_horizon
            )
            if self.settings.metrics:  # the failure path: a round trip of their own
                counters.count_failure(self.connection, flight.items, dead, self.sender)
            raise
        items = flight.items
        if unsent.positions:
            later = set(unsent.positions)
            self.carry = [(flight.entries[p], flight.items[p]) for p in unsent.positions]
            self.carry_at = time.monotonic() + unsent.wait
            ids = [entry_id for p, entry_id in enumerate(ids) if p not in later]
            items = [item for p, item in enumerate(items) if p not in later]
        self.follow_up_jobs()  # before the ack: a crash between them re-sends, never forgets
        if not ids:
            return
        pipe = self.connection.pipeline(transaction=False)
        pipe.xack(self.stream, CONSUMER_GROUP, *ids)
        pipe.xdel(self.stream, *ids)
        pipe.hdel(keys.failing(self.stream), *ids)  # first failures of entries now delivered
        record_batch(pipe, len(ids), self.sender, self.marks)  # status's counters, same trip
        notes = counters.Notes.take(self.sender)  # what the sender noted for this batch
        if self.journal is not None:  # the inspector's record rides on the acknowledgement
            self.journal.add(pipe, delivery_records(items, notes.answers, notes.deaths))
        if self.settings.metrics:  # so do the Prometheus counters
            counters.add_batch(pipe, ids, items, notes)
        pipe.execute()
        self.delivered += len(ids)
        done = set(ids)
        self.held = [entry_id for entry_id in self.held if entry_id not in done]

    def take_more(self) -> list[tuple[bytes, dict[bytes, bytes]]]:
        """New entries; while some are carried, waiting for them to have a slot (a new entry
        ends the wait: it may be for an endpoint that has one now)."""
        if not self.carry:
            return self.take(self.batch, block=READ_BLOCK_MS)
        wait = max(0.0, self.carry_at - time.monotonic())
        room = self.batch - len(self.carry)
        if room <= 0:
            self.sleep(wait)
            return []
        block = max(1, round(min(wait, self.block_cap) * 1000))  # (0 would block for ever)
        try:
            return self.take(room, block=block)
        except redis.TimeoutError:  # a client with a shorter timeout: nothing came meanwhile
            return []

    def sending_operations(self) -> bool:
        """The batch in flight holds operations: no next batch is read meanwhile. Their
        endpoints may be waiting for a rate window, and what this drain read would wait behind
        them; left in the outbox, another drain takes it (events are read ahead: one endpoint,
        and decoding the next batch while one is sent is the drain's throughput)."""
        return self.in_flight is not None and any("op" in item for item in self.in_flight.items)

    def job_accepted(self) -> None:
        if time.monotonic() - self.followed_at >= FOLLOW_UP_EVERY:
            self.follow_up_jobs()

    def follow_up_jobs(self) -> None:
        """Schedule a look at the asynchronous jobs Klaviyo accepted from this drain's send (one
        RQ job for them all; their operations kept in Redis beside it)."""
        self.followed_at = time.monotonic()
        jobs, self.sender.jobs = self.sender.jobs, []
        schedule_follow_ups(self.connection, self.outbox.queue, jobs)

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

    def hold(self, entries: list[tuple[bytes, dict[bytes, bytes]]], *, fresh: bool = True) -> None:
        """These entries (and the batch being sent) are ours until acknowledged. ``fresh``: all
        just read (claimed now); carried ones were claimed earlier, and the next touch counts
        from then, or another drain would take them back while they wait here."""
        sending = [e for e, _ in self.in_flight.entries] if self.in_flight is not None else []
        self.held = [*sending, *(entry_id for entry_id, _ in entries)]
        if fresh:
            self.touched = time.monotonic()

    def linger(
        self, entries: list[tuple[bytes, dict[bytes, bytes]]]
    ) -> list[tuple[bytes, dict[bytes, bytes]]]:
        """Until the events endpoint's pace allows a request, gather more events (up to a
        batch). A batch holding operations goes at once: their endpoints are not the events',
        and the sender keeps each one's pace."""
        while len(entries) < self.batch and not any(
            is_operation_text(fields[b"e"]) for _, fields in entries
        ):
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
        """A full batch: more drains, up to the configured concurrency, if more is waiting; and
        now and then the backlog, in requests, to the limiter (a window's worth is bulk work)."""
        helper = self.outbox.add_drain(self.settings.drain_concurrency)
        if helper is not None:
            self.helpers += 1
        now = time.monotonic()
        if now - self.backlog_looked >= BACKLOG_LOOK_SECONDS:
            self.backlog_looked = now
            self.limiter.queued(EVENTS_ENDPOINT, self.outbox.depth() / self.batch)

    def sleep(self, seconds: float) -> None:
        """Sleep, re-claiming the held entries every ``touch_every`` (they are not abandoned).
        Jobs accepted and not yet followed up are scheduled first: a wait for a rate window
        would otherwise hold their looks (a new item's variants) until the next acceptance."""
        if seconds > 0 and self.sender.jobs:
            self.follow_up_jobs()
        end = time.monotonic() + max(0.0, seconds)
        while True:
            left = end - time.monotonic()
            if left <= 0:
                return
            time.sleep(min(left, self.touch_every / 2))
            self.touch()

    def touch(self) -> None:
        if not self.held or time.monotonic() - self.touched < self.touch_every:
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
