"""Following up Klaviyo's asynchronous jobs (catalog jobs, bulk profile import).

Klaviyo accepts such a request with a job id and works on it later; an item can still fail
there. The drain schedules a look at the job (an RQ job, so RQ's retries and failed registry
apply); an unfinished job is looked at again after the kind's delay; a finished one turns every
error it reports into a dead letter of the operation its pointer names, with Klaviyo's error.

An operation may carry others to queue once Klaviyo has applied it (``payload["then"]``, stored
entries: a new catalog item's variants). They are queued when its job completes without an error
for it; a failed operation keeps them in its dead letter, and a replay brings both back.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import Any

from rq import Queue

from ..exceptions import ErrorDetail
from ..ratelimit import RateLimiter
from . import (
    kinds,
    klaviyo_kinds,  # noqa: F401 - importing it registers Klaviyo's kinds
)
from .deadletters import DeadLetters
from .operations import Operation
from .outbox import FAILURE_TTL, FOLLOW_UP_JOB, JOB_TIMEOUT, Outbox
from .sender import Sender
from .settings import DeliverySettings

__all__ = ["FINISHED", "follow_up_job"]

log = logging.getLogger(__name__)

FINISHED = frozenset(("complete", "cancelled"))


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
    failed = _dead_items(kind, job_id, attributes.get("errors") or [], operations, dead_letters)
    dead = len(failed)
    if status == "complete":
        _queue_then(connection, queue_name, operations, failed)
    if status == "cancelled":
        log.warning("klaviyo: %s job %s was cancelled in Klaviyo", kind_name, job_id)
    log.info("klaviyo: %s job %s %s, %d item(s) failed", kind_name, job_id, status, dead)
    return {"status": status, "look": look, "dead": dead}


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
