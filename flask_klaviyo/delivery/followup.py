"""Following up Klaviyo's asynchronous jobs (catalog jobs, bulk profile import).

Klaviyo accepts such a request with a job id and works on it later; an item can still fail
there. The drain schedules a look at the job (an RQ job, so RQ's retries and failed registry
apply); an unfinished job is looked at again after the kind's delay; a finished one turns every
error it reports into a dead letter of the operation its pointer names, with Klaviyo's error.

An operation may carry others to queue once Klaviyo has applied it (``payload["then"]``, stored
entries: a new catalog item's variants). They are queued when its job completes without an error
for it; a failed operation keeps them in its dead letter, and a replay brings both back.

A process that waits for the outcome (a catalog sync) runs a :class:`Follower` beside the
scheduled looks: it looks at the scheduled jobs as soon as Klaviyo is expected to have finished
them (learned from the jobs Klaviyo reports finished), instead of after RQ's scheduler. The
outcome is applied once between the two (a marker per Klaviyo job, ``keys.followed_up``).
"""

from __future__ import annotations

import functools
import logging
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from rq import Queue
from rq.job import Job

from ..exceptions import ErrorDetail
from ..ratelimit import RateLimiter
from . import (
    keys,
    kinds,
    klaviyo_kinds,  # noqa: F401 - importing it registers Klaviyo's kinds
)
from .deadletters import DeadLetters
from .operations import Operation
from .outbox import FAILURE_TTL, FOLLOW_UP_JOB, JOB_TIMEOUT, Outbox
from .sender import Sender
from .settings import DeliverySettings

__all__ = ["FINISHED", "Follower", "follow_up_job"]

log = logging.getLogger(__name__)

FINISHED = frozenset(("complete", "cancelled"))
FOLLOWED_TTL = 86400  # the applied-once marker outlives any follow-up of its job


def follow_up_job(
    connection: Any,
    settings: DeliverySettings,
    queue_name: str,
    kind_name: str,
    job_id: str,
    operations: Sequence[Mapping[str, Any]],
    look: int,
) -> dict[str, Any]:
    """Look at one job once; returns its status and how many items became dead letters."""
    kind = kinds.get(kind_name)
    spec = kind.job
    if spec is None:
        raise LookupError(f"operation kind {kind_name!r} has no asynchronous job to follow up")
    if connection.exists(keys.followed_up(job_id)):  # an eager follower got there first
        return {"status": "followed", "look": look, "dead": 0}
    limiter = RateLimiter(connection, limits=kinds.rate_limits(settings.rate_limits))
    dead_letters = DeadLetters(connection)
    sender = Sender(settings.client(), dead_letters, limiter=limiter)
    path = spec.path.format(job_id=job_id)
    answer = sender.call(spec.endpoint, functools.partial(sender.client.send, "GET", path))
    attributes = _attributes(answer.data)
    status = str(attributes.get("status") or "")
    if status not in FINISHED:
        if look < spec.max_looks:
            Queue(queue_name, connection=connection).enqueue_in(
                timedelta(seconds=spec.delay),
                FOLLOW_UP_JOB,
                queue_name,
                kind_name,
                job_id,
                list(operations),
                look + 1,
                job_timeout=JOB_TIMEOUT,
                failure_ttl=FAILURE_TTL,
                result_ttl=600,
                description=f"follow up klaviyo {kind_name} job {job_id}",
            )
            return {"status": status, "look": look, "dead": 0}
        error = {"code": "job_unfinished", "detail": f"job {job_id} still {status!r}"}
        for operation in operations:
            dead_letters.add(dict(operation), reason="job_unfinished", errors=[error])
        return {"status": status, "look": look, "dead": len(operations)}
    if not claim(connection, job_id):
        return {"status": "followed", "look": look, "dead": 0}
    dead = apply_outcome(connection, queue_name, kind, job_id, attributes, operations, dead_letters)
    return {"status": status, "look": look, "dead": dead}


def claim(connection: Any, job_id: str) -> bool:
    """True for the one caller that applies a finished job's outcome."""
    return bool(connection.set(keys.followed_up(job_id), "1", nx=True, ex=FOLLOWED_TTL))


def apply_outcome(
    connection: Any,
    queue_name: str,
    kind: kinds.Kind,
    job_id: str,
    attributes: Mapping[str, Any],
    operations: Sequence[Mapping[str, Any]],
    dead_letters: DeadLetters,
) -> int:
    """A finished job: its errors become dead letters, what its applied operations carry is
    queued. Returns how many operations failed."""
    status = str(attributes.get("status") or "")
    failed = _dead_items(kind, job_id, attributes.get("errors") or [], operations, dead_letters)
    if status == "complete":
        _queue_then(connection, queue_name, operations, failed)
    if status == "cancelled":
        log.warning("klaviyo: %s job %s was cancelled in Klaviyo", kind.name, job_id)
    log.info("klaviyo: %s job %s %s, %d item(s) failed", kind.name, job_id, status, len(failed))
    return len(failed)


def _attributes(answer: Any) -> Mapping[str, Any]:
    data = answer.get("data") if isinstance(answer, Mapping) else None
    attributes = data.get("attributes") if isinstance(data, Mapping) else None
    return attributes if isinstance(attributes, Mapping) else {}


def _dead_items(
    kind: kinds.Kind,
    job_id: str,
    errors: Sequence[Any],
    operations: Sequence[Mapping[str, Any]],
    dead_letters: DeadLetters,
) -> set[int]:
    """Each error to the operation its pointer names; one the job cannot place is kept with the
    job id, so no failure is silent. Returns the failed indexes (-1: an error not placed)."""
    assert kind.job is not None
    payloads = [operation.get("payload") or {} for operation in operations]
    by_index: dict[int, list[dict[str, Any]]] = {}
    unplaced: list[dict[str, Any]] = []
    for error in errors:
        if not isinstance(error, Mapping):
            continue
        source = error.get("source")
        pointer = source.get("pointer") if isinstance(source, Mapping) else None
        index = kind.job.locate(payloads, pointer) if isinstance(pointer, str) else None
        detail = ErrorDetail.from_json(dict(error)).to_dict()  # the shape every dead letter has
        (unplaced if index is None else by_index.setdefault(index, [])).append(detail)
    for index, item_errors in sorted(by_index.items()):
        dead_letters.add(dict(operations[index]), reason="job_failed", errors=item_errors)
    if unplaced:
        record = {"op": kind.name, "key": None, "payload": {"job_id": job_id}}
        dead_letters.add(record, reason="job_failed", errors=unplaced)
    return set(by_index) | ({-1} if unplaced else set())


def _queue_then(
    connection: Any, queue_name: str, operations: Sequence[Mapping[str, Any]], failed: set[int]
) -> None:
    """What the job's applied operations carry for afterwards, into the outbox."""
    follows = [
        Operation.from_dict(entry)
        for index, operation in enumerate(operations)
        if index not in failed
        for entry in (operation.get("payload") or {}).get("then") or ()
    ]
    if follows:
        Outbox(connection, queue_name=queue_name).push(follows)


@dataclass
class _Watched:
    """A scheduled follow-up the follower looks at early."""

    kind: kinds.Kind
    job_id: str
    operations: Sequence[Mapping[str, Any]]
    due: float  # time.time() of the next look
    gap: float = 0.0  # the last wait between looks at this job


def _timestamp(value: Any) -> float | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


class Follower:
    """Looks at the queue's scheduled follow-ups (of the kinds ``wanted`` accepts) when their
    Klaviyo job should be done: at first ``FIRST_LOOK`` after the follow-up was scheduled, then
    after the median time Klaviyo took for the jobs of that kind it already finished; an
    unfinished job is looked at again after twice the last wait (at least ``MIN_GAP``, at most
    the kind's own delay). Every GET goes through the shared limiter. A finished job's outcome
    is applied here (once: :func:`claim`) and its scheduled follow-up removed."""

    FIRST_LOOK = 0.05
    MIN_GAP = 0.05
    MAX_IDLE = 0.05  # the longest sleep between two scans of the scheduled registry
    SAMPLES = 20

    def __init__(
        self,
        connection: Any,
        settings: DeliverySettings,
        queue_name: str,
        wanted: Callable[[str], bool] = lambda kind: True,
    ) -> None:
        self.connection = connection
        self.queue_name = queue_name
        self.registry = Queue(queue_name, connection=connection).scheduled_job_registry
        self.wanted = wanted
        self.dead_letters = DeadLetters(connection)
        limiter = RateLimiter(connection, limits=kinds.rate_limits(settings.rate_limits))
        self.sender = Sender(settings.client(), self.dead_letters, limiter=limiter)
        self.watched: dict[str, _Watched | None] = {}  # RQ job id -> what it follows up
        self.took: dict[str, list[float]] = {}  # kind -> seconds Klaviyo took, latest last
        self.looks = 0
        self.applied = 0

    def step(self) -> float:
        """Look at every watched job that is due; returns the seconds until the next one."""
        self._scan()
        now = time.time()
        for rq_id, watched in list(self.watched.items()):
            if watched is not None and watched.due <= now:
                self._look(rq_id, watched)
        dues = [w.due for w in self.watched.values() if w is not None]
        return min([self.MAX_IDLE, *(due - time.time() for due in dues)])

    def _scan(self) -> None:
        ids = set(self.registry.get_job_ids())
        for gone in set(self.watched) - ids:  # ran (or was removed) elsewhere
            del self.watched[gone]
        new = [rq_id for rq_id in ids if rq_id not in self.watched]
        for rq_id, job in zip(new, Job.fetch_many(new, connection=self.connection), strict=True):
            self.watched[rq_id] = self._watch(job)

    def _watch(self, job: Job | None) -> _Watched | None:
        if job is None or job.func_name != FOLLOW_UP_JOB or len(job.args) < 4:
            return None
        queue_name, kind_name, job_id, operations = job.args[:4]
        if queue_name != self.queue_name or not self.wanted(kind_name):
            return None
        try:
            kind = kinds.get(kind_name)
        except LookupError:
            return None
        if kind.job is None:
            return None
        since = job.created_at.timestamp() if job.created_at is not None else time.time()
        took = self.took.get(kind_name)
        wait = statistics.median(took) if took else self.FIRST_LOOK
        return _Watched(kind, job_id, operations, since + wait, gap=wait)

    def _look(self, rq_id: str, watched: _Watched) -> None:
        spec = watched.kind.job
        assert spec is not None
        if self.connection.exists(keys.followed_up(watched.job_id)):
            self._forget(rq_id)
            return
        path = spec.path.format(job_id=watched.job_id)
        try:
            answer = self.sender.call(
                spec.endpoint, functools.partial(self.sender.client.send, "GET", path)
            )
        except Exception as exc:  # the scheduled follow-up is still there to do it
            log.info("klaviyo: eager look at job %s failed (%s); left to the worker", rq_id, exc)
            self.watched[rq_id] = None
            return
        self.looks += 1
        attributes = _attributes(answer.data)
        if str(attributes.get("status") or "") not in FINISHED:
            watched.gap = min(max(2 * watched.gap, self.MIN_GAP), spec.delay or self.MIN_GAP)
            watched.due = time.time() + watched.gap
            return
        started = _timestamp(attributes.get("created_at"))
        ended = _timestamp(attributes.get("completed_at"))
        if started is not None and ended is not None and ended >= started:
            took = self.took.setdefault(watched.kind.name, [])
            took.append(ended - started)
            del took[: -self.SAMPLES]
        if claim(self.connection, watched.job_id):
            apply_outcome(
                self.connection,
                self.queue_name,
                watched.kind,
                watched.job_id,
                attributes,
                watched.operations,
                self.dead_letters,
            )
            self.applied += 1
        self._forget(rq_id)

    def _forget(self, rq_id: str) -> None:
        """The scheduled follow-up is not needed any more (if the scheduler moved it to the
        queue meanwhile, it finds the marker and returns without a look)."""
        self.watched.pop(rq_id, None)
        if self.registry.remove(rq_id):
            self.connection.delete(Job.key_for(rq_id))
