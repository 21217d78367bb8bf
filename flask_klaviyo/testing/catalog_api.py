"""The catalog half of FakeKlaviyo's Python API: what the catalog holds, back-in-stock
subscriptions, and how many catalog writes arrived. A mixin like driving.py."""

from __future__ import annotations

import copy
import logging
from typing import Any

from . import catalog_store, registry
from .state import State

log = logging.getLogger(__name__)


class CatalogView:
    """Reads of the catalog after every due bulk job completed (copies; thread-safe)."""

    state: State

    @property
    def catalog_items(self) -> dict[str, dict[str, Any]]:
        """``{item id: attributes}``, with ``categories`` and ``variants`` (lists of ids),
        ``created`` / ``updated`` (ISO strings), ``integration_type``, ``catalog_type``."""
        with self.state.lock:
            self.state.jobs.settle_due()
            return catalog_store.snapshot(self.state.catalog)

    @property
    def catalog_variants(self) -> dict[str, dict[str, Any]]:
        """``{variant id: attributes}``, with ``item`` (the item's id), ``sku``,
        ``inventory_quantity``, ``inventory_policy``, ``price``, ``created`` / ``updated``."""
        with self.state.lock:
            self.state.jobs.settle_due()
            return catalog_store.snapshot(self.state.catalog_variants)

    @property
    def catalog_categories(self) -> dict[str, dict[str, Any]]:
        """``{category id: attributes}`` (``external_id``, ``name``), with ``items``: the ids of
        the items in it."""
        with self.state.lock:
            self.state.jobs.settle_due()
            shown = catalog_store.snapshot(self.state.catalog_categories)
            for identifier, category in shown.items():
                category["items"] = catalog_store.items_of(self.state, identifier)
            return shown

    def back_in_stock(self, variant: str | None = None) -> list[dict[str, Any]]:
        """Accepted back-in-stock subscriptions, oldest first: ``email``, ``phone_number``,
        ``external_id``, ``profile_id``, ``variant`` (its id), ``item``, ``channels``
        (``["EMAIL", "SMS"]``...), ``received_at``; ``variant`` keeps that variant's."""
        with self.state.lock:
            rows = self.state.back_in_stock
            return copy.deepcopy([r for r in rows if variant is None or r["variant"] == variant])

    def request_counts(self) -> dict[str, int]:
        """API requests received per endpoint name (any status; not bounded like ``requests``)."""
        with self.state.lock:
            return dict(self.state.endpoint_counts)

    def writes(self, kind: str | None = None) -> int:
        """Catalog write requests received (bulk create / update / delete jobs, any status).

        ``kind``: ``"items"``, ``"variants"``, ``"categories"``, an action (``"create"``,
        ``"update"``, ``"delete"``) or one endpoint name (``"bulk_update_catalog_items"``)."""
        names = registry.CATALOG_WRITES
        if kind is not None:
            names = tuple(
                n for n in names if n == kind or n.endswith(f"_catalog_{kind}") or f"_{kind}_" in n
            )
            if not names:
                raise ValueError(f"no catalog write endpoint matches {kind!r}")
        with self.state.lock:
            return sum(self.state.endpoint_counts[name] for name in names)
