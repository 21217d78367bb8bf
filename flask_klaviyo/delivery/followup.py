"""Following up Klaviyo's asynchronous jobs (catalog jobs, bulk profile import).

Klaviyo accepts such a request with a job id and works on it later; an item can still fail
there. The drain schedules a look at the job (an RQ job, so RQ's retries and failed registry
apply); an unfinished job is looked at again after the kind's delay; a finished one turns every
error it reports into a dead letter of the operation its pointer names, with Klaviyo's error.

A job that only counts its failures (Bulk Import Profiles: ``failed_count``) lists them at its
own endpoint (``import-errors``, paged): they are read, every page, before the outcome is
applied, so each failed profile is its own dead letter with Klaviyo's error.

An operation may carry others to queue once Klaviyo has applied it (``payload["then"]``, stored
entries: a new catalog item's variants). They are queued when its job completes without an error
for it; a failed operation keeps them in its dead letter, and a replay brings both back.

The drain schedules one look (one RQ job) for all the jobs of one send, and keeps their
operations in Redis as JSON meanwhile. A process that waits for the outcome (a catalog sync)
may look sooner (:mod:`.follower`); the outcome is applied once between them (a marker per
Klaviyo job, ``keys.followed_up``).
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import Any

import httpx
from rq import Queue

from ..exceptions import ErrorDetail, KlaviyoDeliveryError
from ..ratelimit import RateLimiter
from . import keys, kinds, klaviyo_kinds  # importing klaviyo_kinds registers Klaviyo's kinds
from .deadletters import DeadLetters
from .looks import FOLLOWED_TTL, claim, done_looking, may_look
from .operations import Operation
from .outbox import FAILURE_TTL, FOLLOW_UP_JOB, JOB_TIMEOUT, Outbox
from .sender import Sender
from .settings import DeliverySettings

__all__ = [
    "FINISHED",
    "FOLLOW_UP_BATCH_JOB",
    "apply_outcome",
    "follow_up_batch",
    "follow_up_job",
    "job_attributes",
    "load_operations",
    "look_at",
    "needs_operations",
    "schedule_follow_ups",
    "with_listed_errors",
]

log = logging.getLogger(__name__)

FINISHED = frozenset(("complete", "cancelled"))
FOLLOW_UP_BATCH_JOB = "flask_klaviyo.jobs.follow_up_batch"  # stored in queued jobs: keep stable
MAX_ERROR_PAGES = 1000  # a job's listed errors read at most (a job holds 10,000 items at most)


def schedule_follow_ups(
    connection: Any,
    queue: Queue,
    jobs: Sequence[tuple[str, str, Sequence[Mapping[str, Any]] | bytes]],
) -> None:
    """One scheduled look at every Klaviyo job a drain's send was answered with (``(kind, job
    id, operations)``): the operations are kept in Redis as JSON beside it (an RQ job's
    arguments are pickled and compressed: slow for thousands of payloads; a whole catalog
    chunk's as it was stored in the outbox), one RQ job for all,
    given ``[kind, job id, 1 if an operation carries others for afterwards else 0]``."""
    if not jobs:
        return
    pipe = connection.pipeline(transaction=False)
    for _, job_id, operations in jobs:
        stored = operations if isinstance(operations, bytes) else _dumps(operations)
        pipe.set(keys.follow_up_operations(job_id), stored, ex=FOLLOWED_TTL)
    pipe.execute()
    delay = min(_spec(kind).delay for kind, _, _ in jobs)
    pending = [[kind, job_id, int(_carries(operations))] for kind, job_id, operations in jobs]
    _enqueue_batch(queue, pending, 1, delay)


_encode = json.JSONEncoder(separators=(",", ":"), check_circular=False, default=str).encode


def _dumps(operations: Sequence[Mapping[str, Any]]) -> str:
    return _encode(list(operations))


def _carries(operations: Sequence[Mapping[str, Any]] | bytes) -> bool:
    """Whether an operation carries others to queue afterwards. In a stored chunk (compact
    JSON) the key is looked for as bytes: text that quotes it only costs a needless load."""
    if isinstance(operations, bytes):
        return b'"then":[{' in operations
    return any((op.get("payload") or {}).get("then") for op in operations)


def load_operations(connection: Any, job_id: str) -> list[dict[str, Any]] | None:
    """The operations a Klaviyo job was sent with (None once its outcome was applied)."""
    raw = connection.get(keys.follow_up_operations(job_id))
    if raw is None:
        return None
    stored = json.loads(raw)
    if klaviyo_kinds.is_chunk(stored):  # kept as it was queued: its resources' operations
        chunk = Operation.from_dict(stored)
        return [member.to_dict() for member in klaviyo_kinds.chunk_members(chunk)]
    return list(stored)


def needs_operations(attributes: Mapping[str, Any], carries: bool) -> bool:
    """Whether applying a finished job's outcome needs its operations: errors to place, or
    operations to queue afterwards (``carries``) from a complete job."""
    if attributes.get("errors"):
        return True
    return carries and str(attributes.get("status") or "") == "complete"


def _spec(kind_name: str) -> kinds.JobFollowUp:
    spec = kinds.get(kind_name).job
    if spec is None:
        raise LookupError(f"operation kind {kind_name!r} has no asynchronous job to follow up")
    return spec


def _enqueue_batch(queue: Queue, pending: list[list[str]], look: int, delay: float) -> None:
    queue.enqueue_in(
        timedelta(seconds=delay),
        FOLLOW_UP_BATCH_JOB,
        queue.name,
        pending,
        look,
        job_timeout=JOB_TIMEOUT,
        failure_ttl=FAILURE_TTL,
        result_ttl=600,
        description=f"follow up {len(pending)} klaviyo job(s), look {look}",
    )


def look_at(sender: Sender, spec: kinds.JobFollowUp, job_id: str) -> tuple[Mapping[str, Any], str]:
    """One look at a Klaviyo job (its GET, paced): its attributes and status, with the failures
    a finished job only counts listed (import-errors)."""
    path = spec.path.format(job_id=job_id)
    answer = sender.call(spec.endpoint, functools.partial(sender.client.send, "GET", path))
    attributes = job_attributes(answer.data)
    status = str(attributes.get("status") or "")
    if status in FINISHED:
        attributes = with_listed_errors(sender, spec, job_id, attributes)
    return attributes, status


def follow_up_batch(
    connection: Any,
    settings: DeliverySettings,
    queue_name: str,
    pending: Sequence[Sequence[str]],
    look: int,
) -> dict[str, Any]:
    """Look once at each ``[kind, job id]`` not followed up yet; the unfinished ones are looked
    at again in one job after the shortest of their kinds' delays, or, past a kind's
    ``max_looks``, their operations become dead letters (``job_unfinished``).

    A job whose endpoint has no rate slot now, or that another is looking at, is not waited
    for: it comes back in a job of its own once there is a slot (or after the delay), its look
    not counted. Sleeping for the slot would hold the job's look lease all that while, and a
    waiting sync's follower could not take it over."""
    limiter = RateLimiter(connection, limits=kinds.rate_limits(settings.rate_limits))
    dead_letters = DeadLetters(connection)
    sender = Sender(settings.client(), dead_letters, limiter=limiter)
    unfinished: list[list[str]] = []
    put_off: list[list[str]] = []
    put_off_for = float("inf")
    slots: dict[str, float] = {}  # endpoint -> seconds to its next slot (asked once per slot)
    counts = {"finished": 0, "dead": 0, "followed": 0}
    for kind_name, job_id, *rest in pending:
        kind = kinds.get(kind_name)
        spec = _spec(kind_name)
        if spec.endpoint not in slots:
            slots[spec.endpoint] = limiter.wait_time(spec.endpoint)
        wait = slots[spec.endpoint]
        look_now = may_look(connection, job_id) if wait <= 0 else False
        if look_now is None:
            counts["followed"] += 1
            continue
        if not look_now:  # no slot, or another is looking (a waiting sync): later, uncounted
            put_off.append([kind_name, job_id, *rest])
            put_off_for = min(put_off_for, wait if wait > 0 else spec.delay)
            continue
        slots.pop(spec.endpoint)  # this look takes the slot: ask again for the next
        try:
            attributes, status = look_at(sender, spec, job_id)
        except KlaviyoDeliveryError as exc:  # the others of the batch are still looked at
            log.warning("klaviyo: looking at %s job %s failed: %s", kind_name, job_id, exc)
            attributes, status = {}, f"not looked at: {exc}"[:200]
        finally:
            done_looking(connection, job_id)
        if status not in FINISHED and look < spec.max_looks:
            unfinished.append([kind_name, job_id, *rest])
            continue
        operations = load_operations(connection, job_id) or []
        if status not in FINISHED:
            if claim(connection, job_id):
                error = {"code": "job_unfinished", "detail": f"job {job_id} still {status!r}"}
                for operation in operations:
                    dead_letters.add(dict(operation), reason="job_unfinished", errors=[error])
                counts["dead"] += len(operations)
                connection.delete(keys.follow_up_operations(job_id))
            continue
        if claim(connection, job_id):
            counts["dead"] += apply_outcome(
                connection, queue_name, kind, job_id, attributes, operations, dead_letters,
                concurrency=settings.drain_concurrency,
            )  # fmt: skip
            counts["finished"] += 1
    if unfinished:
        delay = min(_spec(entry[0]).delay for entry in unfinished)
        _enqueue_batch(Queue(queue_name, connection=connection), unfinished, look + 1, delay)
    if put_off:
        _enqueue_batch(Queue(queue_name, connection=connection), put_off, look, put_off_for)
    return {**counts, "unfinished": len(unfinished), "put_off": len(put_off), "look": look}


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
    look_now = may_look(connection, job_id)
    if look_now is None:  # an eager follower got there first
        return {"status": "followed", "look": look, "dead": 0}
    again = functools.partial(
        Queue(queue_name, connection=connection).enqueue_in,
        timedelta(seconds=spec.delay),
        FOLLOW_UP_JOB,
        queue_name,
        kind_name,
        job_id,
        list(operations),
        job_timeout=JOB_TIMEOUT,
        failure_ttl=FAILURE_TTL,
        result_ttl=600,
        description=f"follow up klaviyo {kind_name} job {job_id}",
    )
    if not look_now:  # another is looking at it (a waiting sync): this look, after the delay
        again(look)
        return {"status": "looking elsewhere", "look": look, "dead": 0}
    limiter = RateLimiter(connection, limits=kinds.rate_limits(settings.rate_limits))
    dead_letters = DeadLetters(connection)
    sender = Sender(settings.client(), dead_letters, limiter=limiter)
    try:
        attributes, status = look_at(sender, spec, job_id)
    finally:
        done_looking(connection, job_id)
    if status not in FINISHED:
        if look < spec.max_looks:
            again(look + 1)
            return {"status": status, "look": look, "dead": 0}
        error = {"code": "job_unfinished", "detail": f"job {job_id} still {status!r}"}
        for operation in operations:
            dead_letters.add(dict(operation), reason="job_unfinished", errors=[error])
        return {"status": status, "look": look, "dead": len(operations)}
    if not claim(connection, job_id):
        return {"status": "followed", "look": look, "dead": 0}
    dead = apply_outcome(connection, queue_name, kind, job_id, attributes, operations, dead_letters,
                         concurrency=settings.drain_concurrency)  # fmt: skip
    return {"status": status, "look": look, "dead": dead}


def apply_outcome(
    connection: Any,
    queue_name: str,
    kind: kinds.Kind,
    job_id: str,
    attributes: Mapping[str, Any],
    operations: Sequence[Mapping[str, Any]],
    dead_letters: DeadLetters,
    *,
    concurrency: int = 1,
) -> int:
    """A finished job: its errors become dead letters, what its applied operations carry is
    queued (with a drain of its own when fewer than ``concurrency`` run: the running one may be
    busy sending a backlog). Returns how many operations failed."""
    status = str(attributes.get("status") or "")
    failed = _dead_items(kind, job_id, attributes.get("errors") or [], operations, dead_letters)
    if status == "complete":
        _queue_then(connection, queue_name, operations, failed, concurrency)
    connection.delete(keys.follow_up_operations(job_id))
    if status == "cancelled":
        log.warning("klaviyo: %s job %s was cancelled in Klaviyo", kind.name, job_id)
    log.info("klaviyo: %s job %s %s, %d item(s) failed", kind.name, job_id, status, len(failed))
    return len(failed)


def with_listed_errors(
    sender: Sender, spec: kinds.JobFollowUp, job_id: str, attributes: Mapping[str, Any]
) -> Mapping[str, Any]:
    """A finished job's attributes with its ``errors``: for a job that only counts them
    (``failed_count``), read from ``spec.errors_path`` page by page (``links.next``, whose
    path alone is followed: the key never goes to another host). Raises KlaviyoDeliveryError
    (the job is looked at again, its outcome not yet applied)."""
    if spec.errors_path is None or attributes.get("errors") or not attributes.get("failed_count"):
        return attributes
    endpoint = spec.errors_endpoint or spec.endpoint
    errors: list[dict[str, Any]] = []
    url: str | None = spec.errors_path.format(job_id=job_id)
    for _ in range(MAX_ERROR_PAGES):
        if not url:
            break
        answer = sender.call(endpoint, functools.partial(sender.client.send, "GET", url))
        page = answer.data if isinstance(answer.data, Mapping) else {}
        for resource in page.get("data") or ():
            error = resource.get("attributes") if isinstance(resource, Mapping) else None
            if isinstance(error, Mapping):  # code, title, detail, source (the profile's pointer)
                errors.append({"id": resource.get("id"), **error})
        links = page.get("links") if isinstance(page.get("links"), Mapping) else {}
        following = links.get("next") if isinstance(links, Mapping) else None
        url = httpx.URL(following).raw_path.decode() if isinstance(following, str) else None
    if not errors:  # counted but not listed: kept with the job id (no failure is silent)
        errors = [{"code": "job_failed", "detail": f"{attributes['failed_count']} item(s) failed"}]
    return {**attributes, "errors": errors}


def job_attributes(answer: Any) -> Mapping[str, Any]:
    """The attributes of Klaviyo's answer to a GET of a job ({} when it has none)."""
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
    connection: Any,
    queue_name: str,
    operations: Sequence[Mapping[str, Any]],
    failed: set[int],
    concurrency: int,
) -> None:
    """What the job's applied operations carry for afterwards, into the outbox."""
    follows = [
        Operation.from_dict(entry)
        for index, operation in enumerate(operations)
        if index not in failed
        for entry in (operation.get("payload") or {}).get("then") or ()
    ]
    if follows:  # catalog resources as chunks: one entry per Klaviyo job, not per resource
        outbox = Outbox(connection, queue_name=queue_name)
        outbox.push(klaviyo_kinds.chunked(follows))
        if concurrency > 1:
            outbox.add_drain(concurrency)
