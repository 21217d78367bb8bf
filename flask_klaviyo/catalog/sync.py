"""Running a catalog sync (API mode): read the store's source, check every item, read what
Klaviyo holds, plan, queue the changes as catalog operations through the pipeline, and (with
``wait``) work the queue in this process until Klaviyo holds it all.

Categories go first (items name them); with ``wait`` the sync lets their jobs finish before
queuing items. A new item carries its variants, queued by the job follow-up once the item
exists. Deletions go last. Failed items are the dead letters the follow-ups keep.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from flask import current_app

from .._state import current_state, tolerate
from ..delivery import keys
from ..delivery.klaviyo_kinds import CATALOG_JOB_SIZE, chunked
from ..delivery.operations import Operation
from ..exceptions import KlaviyoConfigError, KlaviyoSchemaError
from ..progress import ProgressCallback
from .applier import Applier
from .model import CatalogCategory, CatalogItem, coerce_entry
from .plan import Held, Plan, plan, plan_categories, plan_items
from .remote import forget_items, read_catalog, remember

__all__ = ["SyncReport", "collect", "ensure_api_mode", "run_sync"]

log = logging.getLogger(__name__)

PUSH_CHUNK = 20  # chunks per push (2,000 resources)


@dataclass
class SyncReport:
    """What a sync planned and what became of it."""

    plan: Plan
    invalid: list[dict[str, str]] = field(default_factory=list)
    failed: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
    waited: bool = False
    dry_run: bool = False


def ensure_api_mode() -> None:
    """Klaviyo's one-method rule: a catalog fed by a feed must not be written by the API."""
    if current_app.config["KLAVIYO_CATALOG_MODE"] != "api":
        raise KlaviyoConfigError(
            "KLAVIYO_CATALOG_MODE",
            "is 'feed': Klaviyo fills a custom catalog from a feed or from the Catalog API, "
            "never both, so `catalog sync` and catalog_changed() do nothing here; Klaviyo "
            f"fetches {current_app.config['KLAVIYO_CATALOG_FEED_PATH']} about every 6 hours",
        )


def collect(
    entries: Iterable[Any],
) -> tuple[list[CatalogItem], list[CatalogCategory], list[dict[str, str]]]:
    """The source's valid items and every category, and the invalid ones (strict: the first
    raises KlaviyoSchemaError naming the item and field; lenient: a dead letter each)."""
    items: dict[str, CatalogItem] = {}
    categories: dict[str, CatalogCategory] = {}
    variant_owner: dict[str, str] = {}
    invalid: list[dict[str, str]] = []
    for entry in entries:
        try:
            found = coerce_entry(entry)
            if isinstance(found, CatalogCategory):
                categories.setdefault(found.id, found)
                continue
            found.validate()
            subject = f"catalog item {found.id!r}"
            if found.id in items:
                raise KlaviyoSchemaError(subject, "id", "repeated id in the catalog source")
            for variant in found.variants:
                owner = variant_owner.get(variant.id)
                if owner is not None:
                    raise KlaviyoSchemaError(
                        subject, "variants.id", f"{variant.id!r} is also a variant of {owner!r}"
                    )
        except KlaviyoSchemaError as exc:
            record = {"op": "catalog_item_create", "key": None, "payload": {}}
            invalid.append({"item": exc.metric, "field": exc.field, "message": exc.message})
            errors = [{"code": "invalid", "detail": str(exc), "pointer": exc.field}]
            tolerate("%s not sent: %s", exc.metric, exc, record=record, errors=errors,
                     traceback=False)  # fmt: skip
            continue
        items[found.id] = found
        for variant in found.variants:
            variant_owner[variant.id] = found.id
        for category in found.categories:
            categories.setdefault(category.id, category)
    return list(items.values()), list(categories.values()), invalid


class _CollectorPause:
    """Python's cyclic garbage collector off while a sync builds and queues its plan: the tens
    of thousands of small dicts it makes (none in a cycle) had full collections scan a growing
    heap again and again, about half the planning's CPU. On again (if it was) once queued."""

    def __init__(self) -> None:
        self.paused = False

    def __enter__(self) -> _CollectorPause:
        if gc.isenabled():
            gc.disable()
            self.paused = True
        return self

    def resume(self) -> None:
        if self.paused:
            self.paused = False
            gc.enable()

    def __exit__(self, *exc: object) -> None:
        self.resume()


class _Abandoned(Exception):
    """Reading Klaviyo's catalog is no longer wanted."""


def _push(entries: list[Operation]) -> None:
    outbox = current_state().outbox
    for start in range(0, len(entries), PUSH_CHUNK):
        outbox.push(entries[start : start + PUSH_CHUNK])


def _jobs(chunks: list[Operation]) -> int:
    """How many Klaviyo jobs (chunk operations) ``chunks`` come to, with the variant chunks
    their new items' follow-ups queue (every item created)."""
    total = len(chunks)
    for chunk in chunks:
        resources = chunk.payload.get("resources") or ()
        then = sum(len(entry["payload"].get("then") or ()) for entry in resources)
        total += -(-then // CATALOG_JOB_SIZE)
    return total


def _handled(connection: Any) -> int:
    return int(connection.hget(keys.STATS, "handled") or 0)


def run_sync(
    source: Callable[[], Iterable[Any]],
    *,
    dry_run: bool = False,
    wait: bool = True,
    timeout: float = 3600.0,
    progress: ProgressCallback | None = None,
) -> SyncReport:
    """One reconciliation of Klaviyo's catalog with ``source`` (see the module docstring)."""
    ensure_api_mode()
    started = time.monotonic()
    connection = current_state().redis
    app = current_app._get_current_object()  # type: ignore[attr-defined]

    abandon = threading.Event()

    def page_read(count: int) -> None:
        if abandon.is_set():  # the source was refused (strict): stop reading
            raise _Abandoned

    def read() -> Held:
        with app.app_context():
            return read_catalog(connection, progress=page_read)

    # Klaviyo's answers are awaited while the source is read and checked here.
    with _CollectorPause() as planning:  # on again however this ends (or once queued)
        with ThreadPoolExecutor(1, thread_name_prefix="klaviyo-catalog-read") as pool:
            reading = pool.submit(read)
            try:
                items, categories, invalid = collect(source())
            except BaseException:
                abandon.set()
                raise
            held = reading.result()
        keep = [entry["item"].removeprefix("catalog item ").strip("'") for entry in invalid]
        if dry_run:
            report = SyncReport(plan(items, categories, held, keep=keep), invalid, dry_run=True)
            report.seconds = time.monotonic() - started
            return report
        return _apply(
            items, categories, invalid, held, keep, started, wait, timeout, progress, planning
        )


def _apply(
    items: list[CatalogItem],
    categories: list[CatalogCategory],
    invalid: list[dict[str, str]],
    held: Held,
    keep: list[str],
    started: float,
    wait: bool,
    timeout: float,
    progress: ProgressCallback | None,
    planning: _CollectorPause,
) -> SyncReport:
    """Plan, queue and (``wait``) apply (:func:`run_sync`'s second half)."""
    connection = current_state().redis
    result = plan_categories(categories, held)
    report = SyncReport(result, invalid)

    def before() -> tuple[set[str], int]:  # the dead letters and handled count before writing
        return {r["id"] for r in current_state().dead_letters.all()}, _handled(connection)

    with Applier(timeout=timeout) if wait else contextlib.nullcontext() as applier:
        first = before() if result.first else None
        first_chunks = chunked(result.first)
        if applier is not None:
            applier.mark(first_chunks)
        _push(first_chunks)  # Klaviyo works on the categories while the items are planned
        plan_items(result, items, held, keep=keep)
        if result.writes() == 0:  # nothing changed: reads only
            report.seconds = time.monotonic() - started
            return report
        dead_before, base = first or before()
        then_chunks = chunked(result.then)
        total = _jobs(first_chunks) + _jobs(then_chunks)  # operations: one per Klaviyo job

        def tick() -> None:
            if progress is not None:
                progress(min(total, _handled(connection) - base), total)

        if applier is not None:
            applier.mark(then_chunks)
        if applier is not None and result.first:
            applier.wait(tick)
        if applier is None:
            _push(then_chunks)
        else:  # queued a few jobs ahead of the drains, so that several share them
            applier.wait(tick, feed=then_chunks, fed=True)
        # What catalog_changed reads later, once all is queued.
        names = {c.id: c.name for c in categories}
        known = {v.id: i.id for i in items for v in i.variants}
        remember(connection, result.memberships, names, known)
        forget_items(
            connection, result.items.delete, result.variants.delete, result.categories.delete
        )
        result.first, result.then = [], []  # queued: the report keeps the counts only
        del then_chunks
        planning.resume()  # the plan is queued: what is left is the queue's work
        if applier is not None:
            applier.wait(tick)
            report.waited = True
            report.failed = [
                record
                for record in current_state().dead_letters.all()
                if record["id"] not in dead_before
                and str((record.get("operation") or {}).get("op", "")).startswith("catalog_")
            ]
    report.seconds = time.monotonic() - started
    return report
