"""Looking at Klaviyo's asynchronous jobs sooner than the scheduled follow-ups, for a process
that waits for their outcome (a catalog sync: a new item's variants are queued once its job is
complete, so each step of categories -> items -> variants waits for the one before).

RQ's scheduler moves a scheduled look to the queue with a second's granularity; the follower
reads the scheduled looks and does them itself when Klaviyo should have finished: at first
soon, then after the median time Klaviyo took for jobs of that kind. It applies a finished
job's outcome once (:func:`.followup.claim`) and removes a scheduled look with nothing left to
do; whatever it has not done, the scheduled look still does.
"""

from __future__ import annotations

import logging
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from rq import Queue
from rq.job import Job

from ..ratelimit import RateLimiter
from . import kinds
from .deadletters import DeadLetters
from .followup import (
    FINISHED,
    FOLLOW_UP_BATCH_JOB,
    apply_outcome,
    load_operations,
    look_at,
    needs_operations,
)
from .looks import claim, done_looking, may_look
from .outbox import FOLLOW_UP_JOB
from .sender import Sender
from .settings import DeliverySettings

__all__ = ["Follower"]

log = logging.getLogger(__name__)


@dataclass
class _Watched:
    """A Klaviyo job of a scheduled follow-up, looked at early."""

    kind: kinds.Kind
    job_id: str
    rq_id: str  # the scheduled follow-up that would look at it
    operations: Sequence[Mapping[str, Any]] | None  # None: kept in Redis (a batch's)
    due: float  # time.time() of the next look
    gap: float = 0.0  # the last wait between looks at this job
    carries: bool = True  # an operation carries others to queue afterwards
    since: float = 0.0  # time.time() its follow-up was scheduled (about when Klaviyo got it)


def _timestamp(value: Any) -> float | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


class Follower:
    """Looks at the queue's scheduled follow-ups (of the kinds ``wanted`` accepts) when their
    Klaviyo jobs should be done: after the median time Klaviyo took for the jobs of that kind it
    already finished; before any has, one job of the kind probes (looked at ``FIRST_LOOK``
    after, then again after twice the last wait, at least ``MIN_GAP``, at most the kind's own
    delay) while the others wait for its time (every early look is a GET of the job
    endpoint's budget, which the jobs' own looks need). Up to ``PARALLEL`` looks at once,
    every GET through the shared limiter. A finished job's outcome is applied here (once:
    :func:`claim`); a scheduled follow-up whose jobs are all done is removed."""

    FIRST_LOOK = 0.05
    MIN_GAP = 0.05
    MAX_IDLE = 0.05  # the longest sleep between two scans of the scheduled registry
    SAMPLES = 20
    PARALLEL = 8
    LEASE = 5.0  # seconds a scheduled follow-up watched here is kept from falling due

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
        self.concurrency = settings.drain_concurrency
        limiter = RateLimiter(connection, limits=kinds.rate_limits(settings.rate_limits))
        self.sender = Sender(settings.client(), self.dead_letters, limiter=limiter)
        self.scheduled: dict[str, set[str] | None] = {}  # RQ job id -> Klaviyo jobs left
        self.watched: dict[str, _Watched] = {}  # Klaviyo job id -> when to look
        self.took: dict[str, list[float]] = {}  # kind -> seconds Klaviyo took, latest last
        self.probing: dict[str, str] = {}  # kind without a time yet -> the job that probes
        self.pool = ThreadPoolExecutor(self.PARALLEL, thread_name_prefix="klaviyo-look")
        self.looking: dict[str, tuple[_Watched, Future[Mapping[str, Any] | None]]] = {}
        self.held_until = 0.0
        self.looks = 0
        self.applied = 0

    def close(self) -> None:
        self.pool.shutdown(wait=True)
        self._collect()

    def step(self) -> float:
        """Start a look at every watched job that is due and whose endpoint has a rate slot
        (one without is put off until it has: a look sleeping for a window would hold a
        thread, and the jobs of other endpoints, behind it); take in the looks that ended.
        Returns the seconds until the next is due."""
        self._scan()
        self._collect()
        now = time.time()
        limiter = self.sender.limiter
        assert limiter is not None
        slots: dict[str, float] = {}
        for watched in list(self.watched.values()):
            if watched.due > now or watched.job_id in self.looking:
                continue
            kind = watched.kind.name
            if kind not in self.took and self.probing.setdefault(kind, watched.job_id) != (
                watched.job_id
            ):
                continue  # its kind's probe is out: it waits for the time that finds
            if len(self.looking) >= self.PARALLEL:
                break
            assert watched.kind.job is not None  # (only kinds with jobs are watched)
            endpoint = watched.kind.job.endpoint
            if endpoint not in slots:
                slots[endpoint] = limiter.wait_time(endpoint)
            if slots[endpoint] > 0:
                watched.due = now + slots[endpoint]
                continue
            slots.pop(endpoint)  # this look may take the slot: ask again for the next
            self.looking[watched.job_id] = (watched, self.pool.submit(self._look, watched))
        dues = [w.due for w in self.watched.values() if w.job_id not in self.looking]
        return min([self.MAX_IDLE, *(due - time.time() for due in dues)])

    def _collect(self) -> None:
        """The looks that ended: their outcome recorded (a job still running, looked at again
        later)."""
        for job_id, (watched, look) in list(self.looking.items()):
            if look.done():
                del self.looking[job_id]
                self._after(watched, look.result())

    def _scan(self) -> None:
        ids = set(self.registry.get_job_ids())
        for gone in set(self.scheduled) - ids:  # ran (or was removed) elsewhere
            for job_id in self.scheduled.pop(gone) or ():
                self.watched.pop(job_id, None)
        new = [rq_id for rq_id in ids if rq_id not in self.scheduled]
        for rq_id, job in zip(new, Job.fetch_many(new, connection=self.connection), strict=True):
            found = self._watch(rq_id, job)
            self.scheduled[rq_id] = {w.job_id for w in found} if found else None
            for watched in found:
                self.watched.setdefault(watched.job_id, watched)
        now = time.time()
        if now >= self.held_until - self.LEASE / 2:  # renew every lease
            self._hold([rq_id for rq_id, left in self.scheduled.items() if left])
            self.held_until = now + self.LEASE
        else:
            self._hold([rq_id for rq_id in new if self.scheduled.get(rq_id)])

    def _hold(self, rq_ids: list[str]) -> None:
        """Keep the scheduler off the follow-ups being looked at here: each is due ``LEASE``
        seconds from now, renewed while this follower runs (if it stops, they fall due and
        the workers do what is left). Only ones not due yet are moved (``XX``, ``GT``): one
        the scheduler may be moving to the queue right now is left alone."""
        if not rq_ids:
            return
        now = time.time()
        scores = self.connection.zmscore(self.registry.key, rq_ids)
        later = {
            rq_id: now + self.LEASE
            for rq_id, score in zip(rq_ids, scores, strict=True)
            if score is not None and score > now + 0.2
        }
        if later:
            self.connection.zadd(self.registry.key, later, xx=True, gt=True)

    def _watch(self, rq_id: str, job: Job | None) -> list[_Watched]:
        """The Klaviyo jobs a scheduled follow-up would look at (none: not one of ours)."""
        if job is None or not job.args or job.args[0] != self.queue_name:
            return []
        if job.func_name == FOLLOW_UP_BATCH_JOB and len(job.args) >= 2:
            pairs = [(e[0], e[1], None, bool(e[2]) if len(e) > 2 else True) for e in job.args[1]]
        elif job.func_name == FOLLOW_UP_JOB and len(job.args) >= 4:
            pairs = [(job.args[1], job.args[2], job.args[3], True)]
        else:
            return []
        since = job.created_at.timestamp() if job.created_at is not None else time.time()
        found = []
        for kind_name, job_id, operations, carries in pairs:
            if not self.wanted(kind_name):
                return []  # a follow-up with jobs of other kinds is left to the workers
            try:
                kind = kinds.get(kind_name)
            except LookupError:
                return []
            if kind.job is None:
                return []
            took = self.took.get(kind_name)
            wait = statistics.median(took) if took else self.FIRST_LOOK
            found.append(
                _Watched(
                    kind,
                    job_id,
                    rq_id,
                    operations,
                    since + wait,
                    gap=wait,
                    carries=carries,
                    since=since,
                )
            )
        return found

    def _look(self, watched: _Watched) -> Mapping[str, Any] | None:
        """One look (in a pool thread): the attributes of a finished job whose outcome this
        call applied or found applied ({}), of an unfinished one, or None after an error."""
        spec = watched.kind.job
        assert spec is not None
        look_now = may_look(self.connection, watched.job_id)
        if look_now is None:
            return {}
        if not look_now:  # a scheduled follow-up is looking: see again later
            return {"status": "being looked at"}
        try:
            attributes, status = look_at(self.sender, spec, watched.job_id)
            if status in FINISHED and claim(self.connection, watched.job_id):
                operations = watched.operations
                if operations is None and needs_operations(attributes, watched.carries):
                    operations = load_operations(self.connection, watched.job_id)
                apply_outcome(
                    self.connection,
                    self.queue_name,
                    watched.kind,
                    watched.job_id,
                    attributes,
                    operations or [],
                    self.dead_letters,
                    concurrency=self.concurrency,
                )
                self.applied += 1
            return attributes
        except Exception as exc:  # the scheduled follow-up is still there to do it
            log.info("klaviyo: early look at job %s failed (%s)", watched.job_id, exc)
            return None
        finally:
            done_looking(self.connection, watched.job_id)
            self.looks += 1

    def _after(self, watched: _Watched, attributes: Mapping[str, Any] | None) -> None:
        spec = watched.kind.job
        assert spec is not None
        if self.probing.get(watched.kind.name) == watched.job_id and not (
            attributes and str(attributes.get("status") or "") not in FINISHED
        ):
            del self.probing[watched.kind.name]  # it is over: a time, or the next one probes
        if attributes is None:  # left to the scheduled follow-ups: no longer held here
            self.watched.pop(watched.job_id, None)
            for rq_id in self._holding(watched.job_id):
                self.scheduled[rq_id] = None
            return
        if attributes and str(attributes.get("status") or "") not in FINISHED:
            watched.gap = min(max(2 * watched.gap, self.MIN_GAP), spec.delay or self.MIN_GAP)
            watched.due = time.time() + watched.gap
            return
        if attributes:  # finished ({}: applied elsewhere, no time to learn)
            started = _timestamp(attributes.get("created_at"))
            ended = _timestamp(attributes.get("completed_at"))
            took = self.took.setdefault(watched.kind.name, [])
            first = not took
            if started is not None and ended is not None and ended >= started:
                took.append(ended - started)
            else:  # no times in the answer: how long it took us to find it finished
                took.append(max(0.0, time.time() - watched.since))
            del took[: -self.SAMPLES]
            if first:  # the others of its kind, held for this time: due when as old as it was
                for other in self.watched.values():
                    if other.kind is watched.kind and other is not watched:
                        other.due = max(other.due, other.since + took[0])
        self.watched.pop(watched.job_id, None)
        for rq_id in self._holding(watched.job_id):  # every follow-up that would look at it
            left = self.scheduled[rq_id]
            assert left is not None
            left.discard(watched.job_id)
            if not left:
                self._forget(rq_id)

    def _holding(self, job_id: str) -> list[str]:
        """The scheduled follow-ups held here that would look at ``job_id``: more than one
        when a follow-up that found it being looked at here scheduled another look."""
        return [rq_id for rq_id, left in self.scheduled.items() if left and job_id in left]

    def _forget(self, rq_id: str) -> None:
        """A scheduled follow-up with nothing left to do (if the scheduler moved it to the
        queue meanwhile, it finds the markers and returns without a look)."""
        self.scheduled.pop(rq_id, None)
        if self.registry.remove(rq_id):
            self.connection.delete(Job.key_for(rq_id))
