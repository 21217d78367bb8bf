"""The Prometheus counters' write side: fields of one Redis hash (``keys.METRICS``), counted up
on round trips delivery already makes, only while ``KLAVIYO_METRICS`` is on.

Why Redis and not ``prometheus_client``'s own metrics: the delivery state already lives there,
shared by every web process and worker on every host, so one hash counts for all of them and
the endpoint (:mod:`flask_klaviyo.metrics`) reads it at scrape time: multiprocess-safe under
gunicorn and across machines, with no ``PROMETHEUS_MULTIPROC_DIR``. The request side counts in
the outbox push script (``PUSH_COUNTED``, still one round trip); a drain counts in the pipeline
that acknowledges its batch. Fields (parts joined by ``|``; a metric name comes last, so it may
hold a ``|`` itself):

    queued|<kind>|<metric>       pushed to the outbox (the request side)
    delivered|<kind>|<metric>    accepted by Klaviyo
    retried|<kind>|<metric>      met a retryable answer (429, 408, 5xx, no answer): once per
                                 drain that had to retry it, whether it then went or not
    dead|<kind>|<metric>         kept as a dead letter (refused, or failing past the horizon)
    dropped|<kind>|<metric>      never sent: its person was forgotten while it waited
    answer|<endpoint>|<code>     Klaviyo's answers by HTTP status
    transport|<endpoint>         requests that got no answer (timeout, connection reset)
    waits|<endpoint>             times the rate limiter made a request wait; wait_seconds|...
    batch|<le>, batch_sum        drain batch sizes (per bucket, not cumulative)
    latency|<kind>|<le>, latency_sum|<kind>   seconds from queued (the stream entry's id, Redis's
                                 clock) to accepted (the worker's clock)

``<metric>`` is empty for kinds other than events.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..events import Event
from . import keys, kinds, scripts
from .operations import EVENT_KIND, Operation, kind_of

if TYPE_CHECKING:
    from .sender import Sender

__all__ = [
    "BATCH_BUCKETS",
    "LATENCY_BUCKETS",
    "PUSH_COUNTED_SHA",
    "STAGES",
    "Notes",
    "add_batch",
    "count_failure",
    "parse",
    "push_command",
    "queued_fields",
    "watch",
]

log = logging.getLogger(__name__)

STAGES = ("queued", "delivered", "retried", "dead", "dropped")
BATCH_BUCKETS = (1, 2, 5, 10, 25, 50, 100, 250, 500, 1000)  # Bulk Create Events holds 1,000
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)
INF = "+Inf"
EVENT_ENDPOINTS = frozenset({"create_event", "bulk_create_events"})
NO_ANSWER = 0  # the status the sender notes for a request that got none (timeout, reset)
PUSH_COUNTED_SHA = scripts.sha(scripts.PUSH_COUNTED)


def _le(bound: float) -> str:
    return str(float(bound))


_BATCH_LE = [(bound, _le(bound)) for bound in BATCH_BUCKETS]
_LATENCY_LE = [(bound, _le(bound)) for bound in LATENCY_BUCKETS]


def _bucket(value: float, bounds: Sequence[tuple[float, str]]) -> str:
    """The smallest bucket that holds ``value`` (its ``le`` label)."""
    for bound, label in bounds:
        if value <= bound:
            return label
    return INF


# -- the request side ---------------------------------------------------------------------------
def queued_fields(items: Sequence[Event | Operation]) -> list[str]:
    """One ``queued`` field per item, in order (what PUSH_COUNTED counts up)."""
    return [
        f"queued|{item.kind}|" if isinstance(item, Operation) else f"queued|event|{item.metric}"
        for item in items
    ]


def push_command(
    stream: str,
    flag: str,
    flag_ttl: int,
    entries: Sequence[str],
    items: Sequence[Event | Operation],
) -> tuple[Any, ...]:
    """The outbox push as ``PUSH_COUNTED``: the entries plus their ``queued`` counters."""
    return (
        "EVALSHA",
        PUSH_COUNTED_SHA,
        3,
        stream,
        flag,
        keys.METRICS,
        flag_ttl,
        len(entries),
        *entries,
        *queued_fields(items),
    )


# -- the drain side -----------------------------------------------------------------------------
@dataclass
class Notes:
    """What a sender noted while it sent a batch (see :func:`watch`)."""

    answers: list[tuple[str, int]] = field(default_factory=list)  # (endpoint, status or 0)
    deaths: list[tuple[dict[str, Any], int | None, str]] = field(default_factory=list)
    dropped: list[Mapping[str, Any]] = field(default_factory=list)  # entries of forgotten people
    waits: list[tuple[str, float]] = field(default_factory=list)  # (endpoint, seconds waited)

    @classmethod
    def take(cls, sender: Sender) -> Notes:
        """The sender's notes since the last take; it starts afresh (lists it keeps stay on)."""
        notes = cls(
            sender.answers or [], sender.deaths or [], sender.dropped or [], sender.waits or []
        )
        for name in ("answers", "deaths", "dropped", "waits"):
            if getattr(sender, name) is not None:
                setattr(sender, name, [])
        return notes


def watch(sender: Sender) -> None:
    """Have ``sender`` note its answers, dead letters, dropped entries and limiter waits."""
    for name in ("answers", "deaths", "dropped", "waits"):
        if getattr(sender, name) is None:
            setattr(sender, name, [])


def _labels(entry: Mapping[str, Any]) -> str:
    kind = kind_of(entry)
    return f"{kind}|{entry.get('metric') or ''}" if kind == EVENT_KIND else f"{kind}|"


def _identity(entry: Mapping[str, Any]) -> tuple[Any, ...]:
    """What tells stored entries apart: an event's metric and unique_id, an operation's key."""
    if "op" in entry:
        return (entry["op"], entry.get("key"))
    return (entry.get("metric"), entry.get("unique_id"))


def _endpoints(entry: Mapping[str, Any]) -> frozenset[str]:
    """The endpoints that carry ``entry`` (an operation of an unknown kind: none)."""
    kind = kind_of(entry)
    if kind == EVENT_KIND:
        return EVENT_ENDPOINTS
    try:
        return frozenset({kinds.get(kind).endpoint})
    except LookupError:
        return frozenset()


def _retryable(status: int) -> bool:
    return status in (NO_ANSWER, 408, 429) or status >= 500


def _count_notes(counts: Counter[str], sums: Counter[str], notes: Notes) -> None:
    for endpoint, status in notes.answers:
        if status == NO_ANSWER:
            counts[f"transport|{endpoint}"] += 1
        else:
            counts[f"answer|{endpoint}|{status}"] += 1
    for endpoint, seconds in notes.waits:
        counts[f"waits|{endpoint}"] += 1
        sums[f"wait_seconds|{endpoint}"] += seconds


def _write(pipe: Any, counts: Mapping[str, int], sums: Mapping[str, float]) -> None:
    for name, count in counts.items():
        if count:
            pipe.hincrby(keys.METRICS, name, count)
    for name, total in sums.items():
        if total:
            pipe.hincrbyfloat(keys.METRICS, name, round(total, 6))


def add_batch(
    pipe: Any,
    ids: Sequence[bytes],
    items: Sequence[Mapping[str, Any]],
    notes: Notes,
    *,
    now: float | None = None,
) -> None:
    """Queue on ``pipe`` (the drain's acknowledgement) the counters of a batch done: each item
    delivered, dead or dropped (and retried, if its endpoint met a retryable answer), its
    latency, the batch's size, Klaviyo's answers and the limiter's waits."""
    now = time.time() if now is None else now
    counts: Counter[str] = Counter()
    sums: Counter[str] = Counter()
    dead = {_identity(entry) for entry, _, _ in notes.deaths}
    dropped = {_identity(entry) for entry in notes.dropped}
    retrying = {endpoint for endpoint, status in notes.answers if _retryable(status)}
    for entry_id, item in zip(ids, items, strict=True):
        labels = _labels(item)
        who = _identity(item)
        if who in dropped:
            counts["dropped|" + labels] += 1
            continue
        if retrying and not retrying.isdisjoint(_endpoints(item)):
            counts["retried|" + labels] += 1
        if who in dead:
            counts["dead|" + labels] += 1
            continue
        counts["delivered|" + labels] += 1
        kind = labels.split("|", 1)[0]
        seconds = max(0.0, now - int(entry_id.split(b"-", 1)[0]) / 1000)
        counts[f"latency|{kind}|{_bucket(seconds, _LATENCY_LE)}"] += 1
        sums[f"latency_sum|{kind}"] += seconds
    counts[f"batch|{_bucket(len(ids), _BATCH_LE)}"] += 1
    counts["batch_sum"] += len(ids)
    _count_notes(counts, sums, notes)
    _write(pipe, counts, sums)


def count_failure(
    connection: Any,
    items: Sequence[Mapping[str, Any]],
    past_horizon: Sequence[Mapping[str, Any]],
    sender: Sender,
) -> None:
    """Count a batch a drain gave up on, in a round trip of its own (the failure path): each
    item retried (left pending for the next drain) or dead (a dead letter on the way, or
    ``past_horizon``), and the sender's answers and waits."""
    notes = Notes.take(sender)
    counts: Counter[str] = Counter()
    sums: Counter[str] = Counter()
    dead = {_identity(entry) for entry, _, _ in notes.deaths}
    dead.update(_identity(entry) for entry in past_horizon)
    for item in items:
        stage = "dead|" if _identity(item) in dead else "retried|"
        counts[stage + _labels(item)] += 1
    _count_notes(counts, sums, notes)
    pipe = connection.pipeline(transaction=False)
    _write(pipe, counts, sums)
    pipe.execute()


# -- the read side (the scrape) -----------------------------------------------------------------
def parse(raw: Mapping[bytes, bytes]) -> dict[str, Any]:
    """The hash as read (``HGETALL``) into counts by label:

    ``stages[stage][(kind, metric)]``, ``answers[(endpoint, code)]``, ``transport[endpoint]``,
    ``waits[endpoint]``, ``wait_seconds[endpoint]``, ``batch[le]``, ``batch_sum``,
    ``latency[kind][le]``, ``latency_sum[kind]``. A field it does not know is skipped.
    """
    out: dict[str, Any] = {
        "stages": {stage: {} for stage in STAGES},
        "answers": {},
        "transport": {},
        "waits": {},
        "wait_seconds": {},
        "batch": {},
        "batch_sum": 0.0,
        "latency": {},
        "latency_sum": {},
    }
    for key, value in raw.items():
        name = key.decode("utf-8", "replace")
        try:
            number = float(value)
            head, _, rest = name.partition("|")
            if head in out["stages"]:
                kind, _, metric = rest.partition("|")
                out["stages"][head][(kind, metric)] = number
            elif head == "answer":
                endpoint, _, code = rest.partition("|")
                out["answers"][(endpoint, code)] = number
            elif head in ("transport", "waits", "wait_seconds", "latency_sum"):
                out[head][rest] = number
            elif head == "batch":
                out["batch"][rest] = number
            elif head == "batch_sum":
                out["batch_sum"] = number
            elif head == "latency":
                kind, _, le = rest.partition("|")
                out["latency"].setdefault(kind, {})[le] = number
            else:
                log.debug("klaviyo: metrics field %r not known; skipped", name)
        except ValueError:
            log.warning("klaviyo: metrics field %r is not a number; skipped", name)
    return out
