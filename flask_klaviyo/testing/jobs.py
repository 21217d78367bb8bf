"""Klaviyo's asynchronous bulk jobs: the shape every one of them has.

A bulk endpoint answers 202 with a job (``queued``); the job is processed later, and a GET of
the job shows ``status``, ``total_count``, ``completed_count``, ``failed_count`` and what went
wrong. Here a job is processed in one go once its delay has passed (by default: at once, on the
first GET), by a function the endpoint gives, under the stand-in's lock.
"""

from __future__ import annotations

import itertools
import logging
import secrets
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ._config import JOB_EXPIRY
from .jsonapi import iso

log = logging.getLogger(__name__)


@dataclass
class Outcome:
    """What processing a job found: per-item errors (Klaviyo's job error shape) and the ids of
    the resources it created or updated."""

    errors: list[dict[str, Any]] = field(default_factory=list)
    related: list[str] = field(default_factory=list)
    failed: int = 0  # items that failed (an item may have several errors)


@dataclass
class BulkJob:
    """One job; ``process`` runs once, when the job completes."""

    id: str
    type: str
    total_count: int
    ready_at: float  # time.monotonic() after which a look at the job completes it
    process: Callable[[], Outcome]
    payload: Any = None  # what the endpoint needs to keep (e.g. the items, for errors)
    created_at: float = field(default_factory=time.time)
    started_at: float | None = None
    completed_at: float | None = None
    status: str = "queued"
    completed_count: int = 0
    failed_count: int = 0
    outcome: Outcome = field(default_factory=Outcome)

    def settle(self, now: float) -> None:
        """Queued -> processing on the first look; processing -> complete once due."""
        if self.status == "complete":
            return
        if self.started_at is None:
            self.started_at = time.time()
            self.status = "processing"
        if now < self.ready_at:
            return
        self.outcome = self.process()
        self.failed_count = self.outcome.failed
        self.completed_count = self.total_count - self.failed_count
        self.completed_at = time.time()
        self.status = "complete"

    def attributes(self, *, errors: bool) -> dict[str, Any]:
        """The job's attributes as Klaviyo answers them (``errors`` inline for catalog jobs)."""
        attributes: dict[str, Any] = {
            "status": self.status,
            "created_at": iso(self.created_at),
            "total_count": self.total_count,
            "completed_count": self.completed_count,
            "failed_count": self.failed_count,
            "completed_at": iso(self.completed_at),
            "expires_at": iso(self.created_at + JOB_EXPIRY.total_seconds()),
        }
        if errors:
            attributes["errors"] = list(self.outcome.errors) if self.status == "complete" else []
        return attributes


def job_error(
    *, pointer: str, detail: str, code: str = "invalid", title: str = "Invalid input."
) -> dict[str, Any]:
    """One entry of a job's ``errors``: exactly APIJobErrorPayload (no status, no meta)."""
    return {
        "id": str(uuid.uuid4()),
        "code": code,
        "title": title,
        "detail": detail,
        "source": {"pointer": pointer},
    }


def mint_job_id() -> str:
    """Klaviyo's job ids are opaque strings; a prefix keeps them readable in the inspector."""
    return f"{next(_COUNTER):06d}{secrets.token_hex(8)}"


_COUNTER = itertools.count(1)


class JobBook:
    """Every job the stand-in was given, by type and id (callers hold the stand-in's lock)."""

    def __init__(self) -> None:
        self.jobs: dict[tuple[str, str], BulkJob] = {}

    def clear(self) -> None:
        self.jobs = {}

    def create(
        self,
        job_type: str,
        total: int,
        process: Callable[[], Outcome],
        *,
        delay: float,
        payload: Any = None,
    ) -> BulkJob:
        job = BulkJob(
            mint_job_id(), job_type, total, time.monotonic() + delay, process, payload=payload
        )
        self.jobs[(job_type, job.id)] = job
        return job

    def get(self, job_type: str, job_id: str) -> BulkJob | None:
        """The job after every due job, in the order they were given, was processed (as
        Klaviyo works through them on its own, not only when asked)."""
        job = self.jobs.get((job_type, job_id))
        if job is not None:
            self.settle_due()
            job.settle(time.monotonic())
        return job

    def settle_due(self) -> None:
        """Complete every job whose delay has passed (the Python API's view of "later")."""
        now = time.monotonic()
        for job in self.jobs.values():
            if job.status != "complete" and now >= job.ready_at:
                job.settle(now)

    def summary(self) -> list[dict[str, Any]]:
        return [
            {"type": job.type, "id": job.id, **job.attributes(errors=True)}
            for job in self.jobs.values()
        ]
