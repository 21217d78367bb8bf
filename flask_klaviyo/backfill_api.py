"""The history half of the ``Klaviyo`` facade: past orders and customers, resumable (the work is
in :mod:`.backfill`).

A file (a path: JSON Lines, README "Historical data") is read line by line and checkpointed
under its own name, so running it again resumes. An iterable (rows straight from the store's
database) is numbered from 1; pass ``checkpoint="some-name"`` to make it resumable too (the
iterable must then yield the same records in the same order on a rerun).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from flask import current_app

from .backfill.orders import order_events
from .backfill.profiles import BULK_IMPORT, profile_operations
from .backfill.reader import Numbered, count_lines, fingerprint, numbered, read_jsonl
from .backfill.runner import BackfillReport, Convert, run_backfill
from .delivery.profile_kinds import PROFILE_IMPORT_CHUNK
from .progress import ProgressCallback

__all__ = ["BackfillAPI"]

Records = Iterable[Any] | str | os.PathLike[str]


class BackfillAPI:
    """Mixed into :class:`flask_klaviyo.Klaviyo`."""

    def backfill_orders(
        self,
        records: Records,
        *,
        checkpoint: str | None = None,
        dry_run: bool = False,
        restart: bool = False,
        wait: bool = False,
        progress: ProgressCallback | None = None,
    ) -> BackfillReport:
        """Past orders: Placed Order, Ordered Product per line, and Fulfilled / Canceled /
        Refunded Order where the record has their time, each at its own time, with
        ``backfill: true`` and live tracking's unique_ids. ``wait``: return once delivered."""
        currency = current_app.config["KLAVIYO_CURRENCY"]
        return _run(
            "orders",
            records,
            lambda record: list(order_events(record, currency=currency)),
            checkpoint=checkpoint,
            dry_run=dry_run,
            restart=restart,
            wait=wait,
            progress=progress,
        )

    def backfill_profiles(
        self,
        records: Records,
        *,
        list_id: str | None = None,
        source: str | None = None,
        checkpoint: str | None = None,
        dry_run: bool = False,
        restart: bool = False,
        wait: bool = False,
        progress: ProgressCallback | None = None,
    ) -> BackfillReport:
        """Past customers through Bulk Import Profiles; ``email_consent_at`` /
        ``sms_consent_at`` become historical subscriptions to ``list_id`` (or the record's)."""
        return _run(
            "profiles",
            records,
            lambda record: profile_operations(record, list_id=list_id, source=source),
            bundle=(BULK_IMPORT, PROFILE_IMPORT_CHUNK),
            checkpoint=checkpoint,
            dry_run=dry_run,
            restart=restart,
            wait=wait,
            progress=progress,
        )


def _run(kind: str, records: Records, convert: Convert, **options: Any) -> BackfillReport:
    source: Callable[[int], Iterator[Numbered]]
    total: int | None
    if isinstance(records, str | os.PathLike):
        path = records
        source = lambda after: read_jsonl(path, after=after)  # noqa: E731
        total = count_lines(path)
        options["checkpoint"] = options["checkpoint"] or fingerprint(kind, path)
    else:
        items = records
        source = lambda after: numbered(items, after=after)  # noqa: E731
        total = len(items) if hasattr(items, "__len__") else None  # type: ignore[arg-type]
    return run_backfill(kind, source, convert, total=total, **options)
