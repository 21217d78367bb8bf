"""Operator tools behind ``flask klaviyo replay`` and ``flask klaviyo verify``."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from .delivery.deadletters import DeadLetters
from .delivery.operations import Operation
from .delivery.outbox import Outbox
from .delivery.settings import DeliverySettings
from .events import Event, custom_event, validate_event
from .exceptions import KlaviyoSchemaError

__all__ = ["DEFAULT_BACKFILL_AFTER", "ReplayReport", "replay_dead_letters", "verify_dedup"]

# Older than this when re-sent: ``backfill=true``, so Klaviyo records it without firing flows
# (a shopper must not get a browse-abandonment email for last week's visit).
DEFAULT_BACKFILL_AFTER = timedelta(hours=1)
VERIFY_METRIC = "flask-klaviyo verify"


@dataclass
class ReplayReport:
    requeued: int = 0
    backfilled: int = 0
    still_invalid: list[str] = field(default_factory=list)
    skipped: int = 0


def replay_dead_letters(
    dead_letters: DeadLetters,
    outbox: Outbox,
    *,
    metric: str | None = None,
    since: datetime | None = None,
    backfill_after: timedelta = DEFAULT_BACKFILL_AFTER,
    now: datetime | None = None,
    dry_run: bool = False,
    progress: Callable[[int, int], None] | None = None,
    record_id: str | None = None,
) -> ReplayReport:
    """Queue dead-lettered events and operations again (after a fix), idempotently.

    Each keeps its ``unique_id``, so a replay of something Klaviyo already has is a no-op there.
    An event that still fails validation stays a dead letter and is reported. ``record_id``:
    that dead letter only (the inspector's replay button). ``progress`` is called with (records
    looked at, records in all) as it goes.
    """
    now = now or datetime.now(UTC)
    report = ReplayReport()
    records = [r for r in dead_letters.all() if record_id is None or r["id"] == record_id]
    for number, record in enumerate(records):
        if progress is not None:
            progress(number, len(records))
        if "operation" in record:  # another kind: re-queued as it was (its key, its payload)
            operation = Operation.from_dict(record["operation"])
            dead_at = datetime.fromtimestamp(float(record.get("dead_at", 0)), UTC)
            if metric or (since and dead_at < since) or not operation.payload:
                report.skipped += 1  # --metric names events; a job record holds no payload
                continue
            if not dry_run:
                outbox.push([operation])
                dead_letters.remove(record["id"])
            report.requeued += 1
            continue
        event = Event.from_dict(record["event"])
        dead_at = datetime.fromtimestamp(float(record.get("dead_at", 0)), UTC)
        if (metric and event.metric != metric) or (since and dead_at < since):
            report.skipped += 1
            continue
        if now - event.time > backfill_after and not event.backfill:
            event = replace(event, backfill=True)
            report.backfilled += 1
        try:
            validate_event(event)
        except KlaviyoSchemaError as exc:
            report.still_invalid.append(f"{record['id']}: {exc}")
            continue
        if not dry_run:
            outbox.push([event])
            dead_letters.remove(record["id"])
        report.requeued += 1
    if progress is not None:
        progress(len(records), len(records))
    return report


def verify_dedup(
    settings: DeliverySettings,
    *,
    company_id: str,
    client_url: str,
    email: str,
    timeout: float = 10.0,
) -> dict[str, Any]:
    """Send one event twice — server (Create Event) and browser-style (client endpoint, share
    mode) — with one ``unique_id``; report what the configured Klaviyo kept.

    Against the local stand-in the answer is read back; against Klaviyo itself the report says
    what to look for in the metric's activity feed.
    """
    unique_id = f"verify-{uuid.uuid4().hex[:16]}"
    event = custom_event(
        VERIFY_METRIC, {"Check": "dedup"}, profile={"email": email}, unique_id=unique_id
    )
    validate_event(event)
    server = settings.client().create_event(event.to_payload())
    with httpx.Client(timeout=timeout) as http:
        browser = http.post(
            f"{client_url.rstrip('/')}/client/events",
            params={"company_id": company_id},
            headers={"revision": settings.revision, "Content-Type": "application/vnd.api+json"},
            json=event.to_payload(),
        )
        report: dict[str, Any] = {
            "unique_id": unique_id,
            "metric": VERIFY_METRIC,
            "server_status": server.status_code,
            "browser_status": browser.status_code,
            "kept": None,
        }
        probe = http.get(
            f"{settings.api_url.rstrip('/')}/_fake/events", params={"metric": VERIFY_METRIC}
        )
        if probe.status_code == 200:  # the local stand-in can say what it kept
            deadline = time.monotonic() + timeout
            kept = [e for e in probe.json() if e.get("unique_id") == unique_id]
            while not kept and time.monotonic() < deadline:
                time.sleep(0.1)
                probe = http.get(
                    f"{settings.api_url.rstrip('/')}/_fake/events", params={"metric": VERIFY_METRIC}
                )
                kept = [e for e in probe.json() if e.get("unique_id") == unique_id]
            report["kept"] = len(kept)
    report["ok"] = (
        report["server_status"] == 202
        and report["browser_status"] == 202
        and report["kept"] in (1, None)
    )
    return report
