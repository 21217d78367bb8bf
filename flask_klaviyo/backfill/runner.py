"""Running a backfill: records in, checked and built one by one, queued in large chunks at the
pace the workers deliver them, the checkpoint moved with every chunk.

Memory stays flat on both sides: records are streamed (never the whole file), a chunk holds
about ``CHUNK`` entries, and before each chunk the run waits while the outbox holds more than
``HIGH_WATER`` entries, until it is down to ``LOW_WATER`` (Redis never holds the whole history;
the workers are never idle for want of work). With no worker listening to the queue, the run
works the queue in this process while it waits, so a demo store needs nothing else running.

A backfill is bulk work (:mod:`..delivery.bulkwork`): the endpoints it feeds are marked for
the shared limiter while it runs, and a run of events queues ahead, up to a steady window's
budget of events (bounded), beyond ``HIGH_WATER``.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from flask import current_app
from rq import Queue, Worker
from rq.job import Job

from .._state import current_state
from ..delivery.bulkwork import BulkWork
from ..delivery.followup import FOLLOW_UP_BATCH_JOB
from ..delivery.operations import Operation
from ..delivery.outbox import DRAIN_FLAG_TTL, FOLLOW_UP_JOB, Outbox
from ..delivery.wire import compact_json
from ..delivery.workers import work_burst
from ..events import Event
from ..exceptions import KlaviyoSchemaError
from ..progress import ProgressCallback
from .checkpoint import KEEP_REJECTED, Checkpoint, Saved
from .reader import Malformed, Numbered

__all__ = ["CHUNK", "HIGH_WATER", "LOW_WATER", "BackfillReport", "run_backfill"]

log = logging.getLogger(__name__)

CHUNK = 1000  # entries per push (one round trip): about 1 MB of order events
HIGH_WATER = 20_000  # outbox entries above which the run waits for the workers
LOW_WATER = 10_000  # ... until the outbox is down to this (~4 s of work at Klaviyo's rate)
POLL = 0.1  # seconds between looks at the outbox while waiting
SAMPLES = 20  # what a dry run shows, record by record
ONCE_TTL = 24 * 3600  # the checkpoint of an unnamed run, if it never ends
# Bundling (profiles): many operations as one entry, so a Klaviyo job holds up to its maximum.
BUNDLE_ITEMS = 10_000  # Bulk Import Profiles' maximum per job
BUNDLE_BYTES = 4_000_000  # under its 5 MB
BUNDLES_WAITING = 2  # a run's bundles in the outbox at once (a drain may read them together)
MAX_ENTRIES = 20_000  # per push while a bundle fills

Item = Event | Operation
Convert = Callable[[Any], list[Item]]
Source = Callable[[int], Iterator[Numbered]]  # records after a position, numbered


@dataclass
class BackfillReport:
    """What a run did, and what the checkpoint says earlier runs did."""

    kind: str
    checkpoint: str | None
    dry_run: bool = False
    records: int = 0  # records read by this run
    skipped: int = 0  # records an earlier run already queued (the checkpoint)
    sent: dict[str, int] = field(default_factory=dict)  # by metric or operation kind
    rejected: int = 0
    rejected_lines: list[dict[str, Any]] = field(default_factory=list)  # {"line", "reason"}
    earlier: Saved | None = None  # the checkpoint as this run found it
    samples: list[str] = field(default_factory=list)
    dead: list[dict[str, Any]] = field(default_factory=list)  # refused by Klaviyo (waited)
    waited: bool = False
    seconds: float = 0.0

    @property
    def sent_total(self) -> int:
        return sum(self.sent.values())


def _describe(number: int, items: list[Item]) -> str:
    counts: dict[str, int] = {}
    for item in items:
        name = item.metric if isinstance(item, Event) else item.kind
        counts[name] = counts.get(name, 0) + 1
    first = items[0]
    about = first.unique_id if isinstance(first, Event) else first.key
    listed = ", ".join(f"{name} x{n}" if n > 1 else name for name, n in counts.items())
    return f"line {number}: {about}: {listed}"


def _listening(queue: Queue) -> bool:
    return Worker.count(connection=queue.connection, queue=queue) > 0


def _work_here(queue: Queue) -> None:
    """Deliver what waits, in this process (no worker runs for the queue).

    RQ's worker takes over SIGINT and SIGTERM for its warm shutdown and leaves its handlers
    installed: they are put back, and a Ctrl-C it received (it let the drain finish, so
    nothing is held) becomes the KeyboardInterrupt the command reports. Off the main thread
    (no signals there) the run only waits for the workers.
    """
    if threading.current_thread() is not threading.main_thread():
        log.warning("klaviyo: backfill waits for a worker on queue %r (none listens)", queue.name)
        time.sleep(1.0)
        return
    handlers = {number: signal.getsignal(number) for number in (signal.SIGINT, signal.SIGTERM)}
    try:
        worker = work_burst(queue, with_scheduler=True)
    finally:
        for number, handler in handlers.items():
            signal.signal(number, handler)
    if getattr(worker, "_shutdown_requested_date", None) is not None:
        raise KeyboardInterrupt


def _ensure_drain(outbox: Outbox) -> None:
    """Entries wait and no drain is scheduled or running (its flag lapsed: a run or a worker
    was stopped mid-drain, and nothing new arrives to schedule one): schedule one, as a
    starting worker does. An extra one is harmless (the consumer group gives each entry once)."""
    if outbox.depth() and outbox.connection.set(outbox.flag, "1", nx=True, ex=DRAIN_FLAG_TTL):
        outbox.enqueue_drain()


def _wait_for_room(
    queue: Queue, checkpoint: Checkpoint, high: int, low: int, mark: BulkWork
) -> None:
    """Before a chunk: while the outbox holds ``high`` entries or more, until it is down to
    ``low``; a run of events may queue ahead up to ``mark.ahead()`` (see bulkwork)."""
    outbox = checkpoint.outbox
    depth = outbox.depth()
    if depth < high:
        return
    while depth > low and depth >= mark.ahead():
        _wait_a_step(queue, outbox, mark)
        depth = outbox.depth()


def run_backfill(
    kind: str,
    source: Source,
    convert: Convert,
    *,
    checkpoint: str | None,
    total: int | None = None,
    dry_run: bool = False,
    restart: bool = False,
    wait: bool = False,
    progress: ProgressCallback | None = None,
    high_water: int = HIGH_WATER,
    low_water: int = LOW_WATER,
    bundle: tuple[str, str] | None = None,
    ahead: int | None = None,
) -> BackfillReport:
    """One backfill run (see the module docstring); ``checkpoint`` None: not resumable.

    ``ahead``: the most entries a run of events queues ahead (None: bulkwork's BULK_AHEAD).
    ``bundle=(kind, bundle kind)``: operations of ``kind`` travel together as one entry of
    ``bundle kind`` (``{"profiles": [{"payload", "key"}]}``), up to BUNDLE_ITEMS or
    BUNDLE_BYTES, so one Klaviyo job can hold them all.
    """
    started = time.monotonic()
    state = current_state()
    queue = Queue(current_app.config["KLAVIYO_QUEUE"], connection=state.redis)
    # Without a name the run is not resumable: its checkpoint is its own, dropped at the end.
    saved = Checkpoint(state.outbox, checkpoint or f"{kind}:once:{uuid.uuid4().hex}")
    if restart and not dry_run:
        saved.reset()
    earlier = saved.load() if checkpoint is not None else Saved()
    report = BackfillReport(kind, checkpoint, dry_run=dry_run, earlier=earlier)
    after = 0 if dry_run else earlier.position
    report.skipped = after
    dead_before = {record["id"] for record in state.dead_letters.all()} if wait else set()
    if not dry_run:
        saved.start(expire=None if checkpoint else ONCE_TTL)
    entries: list[str] = []
    sent: dict[str, int] = {}
    rejected: list[dict[str, Any]] = []
    bundled: list[dict[str, Any]] = []
    bundled_bytes = 0
    waiting: deque[str] = deque()
    chunk = MAX_ENTRIES if bundle else CHUNK
    position = after
    mark = BulkWork(state.redis, ahead=ahead)

    def flush() -> None:
        nonlocal entries, sent, rejected, bundled, bundled_bytes
        if bundled:
            assert bundle is not None
            entries.insert(0, compact_json(Operation(bundle[1], {"profiles": bundled}).to_dict()))
        if not dry_run and (entries or rejected):
            if entries:
                _wait_for_room(queue, saved, high_water, low_water, mark)
            if bundled:
                _wait_for_bundles(queue, state.outbox, waiting, mark)
            mark.renew()
            first = saved.push(position, entries, sent, rejected)
            if bundled and first:
                waiting.append(first)
        for name, count in sent.items():
            report.sent[name] = report.sent.get(name, 0) + count
        entries, sent, rejected, bundled, bundled_bytes = [], {}, [], [], 0

    for number, record in source(after):
        report.records += 1
        position = number
        items: list[Item] = []
        try:
            if isinstance(record, Malformed):
                raise ValueError(record.reason)
            items = convert(record)
        except (KlaviyoSchemaError, ValueError, TypeError) as exc:
            reason = {"line": number, "reason": str(exc)}
            rejected.append(reason)
            report.rejected += 1
            if len(report.rejected_lines) < KEEP_REJECTED:
                report.rejected_lines.append(reason)
        if dry_run and items and len(report.samples) < SAMPLES:
            report.samples.append(_describe(number, items))
        for item in items:
            name = item.metric if isinstance(item, Event) else item.kind
            sent[name] = sent.get(name, 0) + 1
            if dry_run:
                continue
            mark.add(item)
            if bundle is not None and isinstance(item, Operation) and item.kind == bundle[0]:
                member = {"payload": dict(item.payload), "key": item.key}
                bundled.append(member)
                bundled_bytes += len(compact_json(member))
            else:
                entries.append(compact_json(item.to_dict()))
        full = len(bundled) >= BUNDLE_ITEMS or bundled_bytes >= BUNDLE_BYTES
        if full or len(entries) >= chunk or len(rejected) >= CHUNK:
            flush()
        if progress is not None and report.records % CHUNK == 0:
            progress(number, total)
    flush()
    if progress is not None:
        progress(position, total)
    if not dry_run and checkpoint is not None:
        saved.finish()
    elif not dry_run:
        saved.reset()
    if wait and not dry_run:
        wait_delivered(queue, mark=mark)
        report.waited = True
        report.dead = [
            record
            for record in state.dead_letters.all()
            if record["id"] not in dead_before and _is_backfill(record)
        ]
    report.seconds = time.monotonic() - started
    return report


def _is_backfill(record: dict[str, Any]) -> bool:
    if "event" in record:
        return bool(record["event"].get("backfill"))
    return str((record.get("operation") or {}).get("op")) in ("bulk_import_profiles", "subscribe")


def _wait_for_bundles(queue: Queue, outbox: Outbox, waiting: deque[str], mark: BulkWork) -> None:
    """Until fewer than BUNDLES_WAITING of this run's bundles are still in the outbox (each
    weighs thousands of operations: the entry count alone would let too many wait)."""
    while waiting:
        if not outbox.connection.xrange(outbox.stream, waiting[0], waiting[0], count=1):
            waiting.popleft()  # delivered (delivered entries are deleted)
            continue
        if len(waiting) < BUNDLES_WAITING:
            return
        _wait_a_step(queue, outbox, mark)


def _wait_a_step(queue: Queue, outbox: Outbox, mark: BulkWork) -> None:
    """One step of waiting for the queue: the bulk mark renewed, a drain scheduled, then a
    pause while workers listen, or the queue's jobs run here when none does."""
    mark.renew()
    _ensure_drain(outbox)
    if _listening(queue):
        time.sleep(POLL)
    else:
        _work_here(queue)


def _running(queue: Queue) -> int:
    """Jobs started by a worker that is still alive. A worker that died (a Ctrl-C at the wrong
    moment, SIGKILL) leaves its job in RQ's started registry until the job's timeout, with
    nothing running it: its entries are reclaimed from the outbox, so it is no reason to wait."""
    ids = queue.started_job_registry.get_job_ids()
    if not ids:
        return 0
    connection = queue.connection
    running = 0
    for job in Job.fetch_many(ids, connection=connection):
        name = job.worker_name if job is not None else None
        if name is None or connection.exists(Worker.redis_worker_namespace_prefix + name):
            running += 1
    return running


def idle(queue: Queue) -> bool:
    """Nothing of the queue left: no waiting entry, queued or running job, nor a follow-up of
    a Klaviyo job still to come (a scheduled drain with an empty outbox has nothing to do)."""
    outbox = current_state().outbox
    if outbox.depth() or queue.count or _running(queue):
        return False
    scheduled = queue.scheduled_job_registry.get_job_ids()
    jobs = Job.fetch_many(scheduled, connection=queue.connection) if scheduled else []
    follow_ups = (FOLLOW_UP_JOB, FOLLOW_UP_BATCH_JOB)  # one Klaviyo job's, or a drain send's
    return not any(job is not None and job.func_name in follow_ups for job in jobs)


def wait_delivered(
    queue: Queue, *, timeout: float = 24 * 3600.0, mark: BulkWork | None = None
) -> None:
    """Until the queue is idle: every entry sent, every Klaviyo job followed up (by the
    workers, or here when none listens); a run's bulk-work ``mark`` is renewed meanwhile."""
    deadline = time.monotonic() + timeout
    while not idle(queue):
        if mark is not None:
            mark.renew()
        _ensure_drain(current_state().outbox)
        if time.monotonic() > deadline:
            raise TimeoutError(f"backfill: the queue was still busy after {timeout:g}s")
        if _listening(queue):
            time.sleep(POLL)
        else:
            _work_here(queue)
            time.sleep(POLL)
