"""``flask klaviyo status``: the delivery state gathered once, shown to a person or a machine,
and checked against thresholds so a monitor can page someone.

:func:`gather` reads everything into a :class:`Status` (a handful of Redis round trips, none on
any request's path); :func:`render` makes the summary a person reads; :func:`problems` says what
needs a human, given :class:`Thresholds`. When Redis cannot be reached, the status still says so
(and what the local spool holds): that is the moment it is needed most.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import redis
from rq import Queue, Worker

from .delivery.deadletters import DeadLetters
from .delivery.operations import kind_of
from .delivery.outbox import Outbox
from .delivery.parking import Parking
from .delivery.spool import Spool
from .delivery.stats import read_counters
from .ratelimit import RateLimiter, Window

__all__ = ["Status", "Thresholds", "gather", "problems", "render"]

log = logging.getLogger(__name__)

SCAN_LIMIT = 10_000  # outbox entries / dead letters read to break them down (the rest counted)


@dataclass(frozen=True)
class Thresholds:
    """When ``--check`` says a human is needed (seconds unless named otherwise)."""

    max_waiting_age: float = 300.0  # the oldest waiting operation is older than this
    max_new_dead_letters: int = 0  # more dead letters than this appeared within the window
    dead_letter_window: float = 900.0
    max_spool_age: float = 300.0  # the spool has held operations longer than this
    max_heartbeat_age: float = 480.0  # no worker of the queue has a heartbeat this recent


@dataclass
class Waiting:
    count: int
    oldest_seconds: float


@dataclass
class WorkerSeen:
    name: str
    state: str
    heartbeat_seconds: float | None  # since its last heartbeat
    queues: list[str]
    current_job: str | None


@dataclass
class Status:
    """Everything ``flask klaviyo status`` shows; ``to_dict()`` is its ``--json``."""

    queue: str
    redis_url: str
    at: float = field(default_factory=time.time)
    redis_error: str | None = None
    waiting: int = 0
    in_delivery: int = 0
    oldest_waiting_seconds: float | None = None
    waiting_by_kind: dict[str, Waiting] = field(default_factory=dict)
    waiting_scanned: int = 0  # entries read for the breakdown (at most SCAN_LIMIT)
    queued_jobs: int = 0
    failed_jobs: int = 0
    handled: int = 0
    handled_per_minute: list[int] = field(default_factory=list)  # oldest first, this minute last
    delivery_rate: float = 0.0  # handled per minute over the last 5 full minutes
    throttled: int = 0  # Klaviyo's 429s, all time
    last_error: str | None = None
    last_error_at: float | None = None
    dead_letters: int = 0
    dead_letters_by_reason: dict[str, int] = field(default_factory=dict)
    dead_letters_recent: int = 0  # within the thresholds' window
    parked: dict[str, int] = field(default_factory=dict)
    spool_bytes: int = 0
    spool_oldest_seconds: float | None = None
    rate_limited: dict[str, float] = field(default_factory=dict)  # endpoint -> seconds blocked
    workers: list[WorkerSeen] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)


def gather(
    connection: redis.Redis,
    *,
    queue: str,
    redis_url: str,
    spool: Spool,
    limits: dict[str, tuple[Window, ...]] | None = None,
    window: float = Thresholds.dead_letter_window,
    now: float | None = None,
) -> Status:
    """Read the delivery state of ``queue``; a Redis failure is reported, not raised."""
    now = time.time() if now is None else now
    status = Status(queue=queue, redis_url=masked_url(redis_url), at=now)
    status.spool_bytes = spool.size()
    status.spool_oldest_seconds = _spool_age(spool, now)
    try:
        _gather_redis(status, connection, limits=limits, window=window, now=now)
    except (redis.RedisError, OSError) as exc:
        status.redis_error = f"{type(exc).__name__}: {exc}"
        log.warning("klaviyo: status could not read Redis: %s", exc)
    return status


def _gather_redis(
    status: Status,
    connection: redis.Redis,
    *,
    limits: dict[str, tuple[Window, ...]] | None,
    window: float,
    now: float,
) -> None:
    outbox = Outbox(connection, queue_name=status.queue)
    status.waiting = outbox.depth()
    status.in_delivery = outbox.pending()
    age = outbox.oldest_age()
    status.oldest_waiting_seconds = round(age, 1) if age is not None else None
    status.waiting_by_kind, status.waiting_scanned = _waiting_by_kind(connection, outbox, now)
    status.queued_jobs = outbox.queue.count
    status.failed_jobs = outbox.queue.failed_job_registry.count
    counters = read_counters(connection, now=now)
    status.handled, status.throttled = counters.handled, counters.throttled
    status.handled_per_minute = counters.per_minute
    status.delivery_rate = round(counters.rate(), 1)
    status.last_error, status.last_error_at = counters.last_error, counters.last_error_at
    dead = DeadLetters(connection)
    status.dead_letters = dead.count()
    status.dead_letters_by_reason, status.dead_letters_recent = _dead_letters(dead, now - window)
    status.parked = Parking(connection).stats(now=now)
    for endpoint, values in RateLimiter(connection, limits=limits).state().items():
        blocked = float(values.get("blocked_for") or 0.0)
        if blocked > 0:
            status.rate_limited[endpoint] = round(blocked, 1)
    status.workers = _workers(connection, status.queue, now)


def _waiting_by_kind(connection: Any, outbox: Outbox, now: float) -> tuple[dict[str, Waiting], int]:
    """Waiting operations by kind with the age of each kind's oldest, from the oldest
    SCAN_LIMIT entries (in pages: a long backlog is not read in one reply)."""
    by_kind: dict[str, Waiting] = {}
    scanned = 0
    start = "-"
    while scanned < SCAN_LIMIT:
        page = connection.xrange(outbox.stream, min=start, count=min(1000, SCAN_LIMIT - scanned))
        if not page:
            break
        for entry_id, fields in page:
            scanned += 1
            try:
                kind = kind_of(json.loads(fields[b"e"]))
            except (ValueError, KeyError, TypeError, AttributeError):
                kind = "unreadable"
            if kind not in by_kind:
                millis = int(entry_id.decode().split("-", 1)[0])
                by_kind[kind] = Waiting(0, round(max(0.0, now - millis / 1000), 1))
            by_kind[kind].count += 1
        start = "(" + page[-1][0].decode()
    return by_kind, scanned


def _dead_letters(dead: DeadLetters, since: float) -> tuple[dict[str, int], int]:
    """Dead letters by reason, and how many arrived since ``since`` (the first SCAN_LIMIT)."""
    reasons: dict[str, int] = {}
    recent = 0
    for number, (_, raw) in enumerate(dead.connection.hscan_iter(dead.key, count=1000)):
        if number >= SCAN_LIMIT:
            reasons["(not read)"] = dead.count() - SCAN_LIMIT
            break
        try:
            record = json.loads(raw)
            reason, dead_at = str(record.get("reason")), float(record.get("dead_at") or 0)
        except (ValueError, TypeError, AttributeError):
            reason, dead_at = "unreadable", 0.0
        reasons[reason] = reasons.get(reason, 0) + 1
        recent += dead_at >= since
    return reasons, recent


def _workers(connection: Any, queue: str, now: float) -> list[WorkerSeen]:
    """RQ's registered workers that listen on ``queue`` (a dead one drops out after its TTL)."""
    seen = []
    for worker in Worker.all(connection=connection, queue=Queue(queue, connection=connection)):
        beat = worker.last_heartbeat
        state = worker.get_state()
        if beat is not None and beat.tzinfo is None:
            beat = beat.replace(tzinfo=UTC)
        seen.append(
            WorkerSeen(
                name=worker.name,
                state=str(getattr(state, "value", state)),
                heartbeat_seconds=round(now - beat.timestamp(), 1) if beat else None,
                queues=list(worker.queue_names()),
                current_job=worker.get_current_job_id(),
            )
        )
    return sorted(seen, key=lambda w: w.name)


def _spool_age(spool: Spool, now: float) -> float | None:
    """Seconds since the spool's oldest entry was queued (the file's age when unreadable)."""
    try:
        with open(spool.path, encoding="utf-8") as handle:
            first = json.loads(handle.readline())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        first = None
    queued: float | None = None
    if isinstance(first, dict):
        if "queued_at" in first:  # an operation
            queued = float(first["queued_at"])
        elif isinstance(first.get("time"), str) and not first.get("backfill"):
            queued = datetime.fromisoformat(first["time"]).timestamp()
    if queued is None:
        try:
            queued = spool.path.stat().st_mtime
        except OSError:
            return None
    return round(max(0.0, now - queued), 1)


def masked_url(url: str) -> str:
    """The Redis URL without its password (status output lands in logs and tickets)."""
    parts = urlsplit(url)
    if not parts.password:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    netloc = f"{user}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def problems(status: Status, limits: Thresholds) -> list[str]:
    """What needs a human, one sentence each; empty when all is well."""
    found = []
    if status.redis_error is not None:
        found.append(f"Redis cannot be reached ({status.redis_error})")
    age = status.oldest_waiting_seconds
    if age is not None and age > limits.max_waiting_age:
        found.append(
            f"the oldest waiting operation is {_ago(age)} old "
            f"(over {_ago(limits.max_waiting_age)}): workers are missing, stuck or throttled"
        )
    if status.dead_letters_recent > limits.max_new_dead_letters:
        found.append(
            f"{status.dead_letters_recent} dead letter(s) in the last "
            f"{_ago(limits.dead_letter_window)} (over {limits.max_new_dead_letters}): see "
            "`flask klaviyo status`, fix, then `flask klaviyo replay`"
        )
    spool_age = status.spool_oldest_seconds
    if status.spool_bytes and spool_age is not None and spool_age > limits.max_spool_age:
        found.append(
            f"the spool has held operations for {_ago(spool_age)} "
            f"({status.spool_bytes:,} bytes): Redis was unreachable and nothing moved them back"
        )
    if status.redis_error is None:
        fresh = [
            w
            for w in status.workers
            if w.heartbeat_seconds is not None and w.heartbeat_seconds <= limits.max_heartbeat_age
        ]
        if not fresh:
            found.append(
                f"no worker on queue {status.queue!r} has been seen in the last "
                f"{_ago(limits.max_heartbeat_age)}: start `flask klaviyo worker` (or `rq worker`)"
            )
    return found


def render(status: Status) -> list[str]:
    """The summary a person reads, one fact a line."""
    lines = [f"queue {status.queue!r} on {status.redis_url}"]
    if status.redis_error is not None:
        lines.append(f"  Redis unreachable: {status.redis_error}")
    oldest = status.oldest_waiting_seconds
    lines.append(
        f"waiting      {status.waiting:,} ({status.in_delivery:,} being delivered)"
        + (f", oldest {_ago(oldest)}" if oldest is not None else "")
    )
    for kind, waiting in sorted(status.waiting_by_kind.items()):
        lines.append(f"  {kind:<28} {waiting.count:>8,}  oldest {_ago(waiting.oldest_seconds)}")
    if status.waiting_scanned < status.waiting:
        lines.append(f"  (by kind: the oldest {status.waiting_scanned:,} read)")
    lines.append(
        f"delivery     {status.delivery_rate:,.1f}/min over 5 min; {status.handled:,} handled "
        f"in all; {status.throttled:,} throttled (429)"
    )
    if status.last_error:
        when = f"{_ago(status.at - status.last_error_at)} ago" if status.last_error_at else ""
        lines.append(f"last error   {when}: {status.last_error}")
    else:
        lines.append("last error   none recorded")
    lines.append(
        f"dead letters {status.dead_letters:,} ({status.dead_letters_recent:,} recent)"
        + "".join(
            f"; {reason} {count:,}"
            for reason, count in sorted(status.dead_letters_by_reason.items())
        )
    )
    parked = status.parked
    lines.append(
        f"parked       {parked.get('waiting', 0):,} event(s) of {parked.get('visitors', 0):,} "
        f"anonymous visitor(s); released {parked.get('released', 0):,}, expired "
        f"{parked.get('expired', 0):,}, dropped {parked.get('dropped', 0):,}"
    )
    spool_age = status.spool_oldest_seconds
    lines.append(
        f"spool        {status.spool_bytes:,} bytes"
        + (f", oldest {_ago(spool_age)}" if status.spool_bytes and spool_age is not None else "")
    )
    blocked = ", ".join(f"{e} for {_ago(s)}" for e, s in sorted(status.rate_limited.items()))
    lines.append(f"rate limits  {'blocked: ' + blocked if blocked else 'nothing blocked'}")
    lines.append(f"jobs         {status.queued_jobs:,} queued, {status.failed_jobs:,} failed (RQ)")
    if not status.workers:
        lines.append("workers      none seen")
    for worker in status.workers:
        beat = worker.heartbeat_seconds
        lines.append(
            f"worker       {worker.name} {worker.state}, heartbeat "
            + (f"{_ago(beat)} ago" if beat is not None else "never")
            + (f", running {worker.current_job}" if worker.current_job else "")
        )
    for problem in status.problems:
        lines.append(f"PROBLEM: {problem}")
    return lines


def _ago(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    seconds = max(0.0, seconds)
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    if seconds < 172800:
        return f"{seconds / 3600:.1f}h"
    return f"{seconds / 86400:.1f}d"
