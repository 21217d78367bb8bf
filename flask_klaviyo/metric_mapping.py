"""The account's metric mapping: which metric Klaviyo's CLV, benchmarks and revenue reports read
as revenue (Placed Order), cancelled and refunded sales, ordered products, checkouts, carts and
product views (seed 001, "Important": map your metrics at the account level).

``plan`` is pure: the mapped metrics now (Get Mapped Metrics), the account's metrics (Get
Metrics, for the ids by name) and the wanted names give one :class:`Change` per mapping:
``set`` (will be patched), ``unchanged`` (already a metric of that name: patching would spend
the budget for nothing), ``missing`` (no metric of that name yet: Klaviyo creates a metric with
its first event, so send one first). ``apply`` sends one Update Mapped Metric per ``set``,
paced by the shared limiter; that endpoint allows 30 updates a day, so when the day's budget is
spent the rest are left ``deferred`` rather than waited for.

Several metrics may share a name (one per integration: a Shopify and an API "Placed Order"):
a mapping already on one of them is left alone; otherwise the API's (what this extension
sends) is chosen.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from typing import Any

from .delivery import kinds
from .delivery.sender import Sender
from .delivery.settings import DeliverySettings
from .events.model import (
    ADDED_TO_CART,
    CANCELED_ORDER,
    ORDERED_PRODUCT,
    PLACED_ORDER,
    REFUNDED_ORDER,
    STARTED_CHECKOUT,
    VIEWED_PRODUCT,
)
from .exceptions import KlaviyoError
from .ratelimit import RateLimiter

__all__ = [
    "GET_ENDPOINT",
    "METRICS_ENDPOINT",
    "UPDATE_ENDPOINT",
    "WANTED",
    "Change",
    "Metric",
    "apply",
    "map_metrics",
    "mapped_now",
    "metrics_by_name",
    "plan",
    "update_body",
]

log = logging.getLogger(__name__)

# Klaviyo's mapping ids (update_mapped_metric.json) -> the metric this extension sends for it.
WANTED: Mapping[str, str] = {
    "revenue": PLACED_ORDER,
    "ordered_product": ORDERED_PRODUCT,
    "cancelled_sales": CANCELED_ORDER,
    "refunded_sales": REFUNDED_ORDER,
    "started_checkout": STARTED_CHECKOUT,
    "added_to_cart": ADDED_TO_CART,
    "viewed_product": VIEWED_PRODUCT,
}
GET_ENDPOINT = "get_mapped_metrics"
UPDATE_ENDPOINT = "update_mapped_metric"
METRICS_ENDPOINT = "get_metrics"
MAPPED_PATH = "/api/mapped-metrics?include=metric"
METRICS_PATH = "/api/metrics"
API_INTEGRATION = "API"
# A wait longer than this for an update slot is the daily window, not the burst or the minute.
DAILY_WAIT = 120.0


@dataclass(frozen=True)
class Metric:
    """One metric of the account."""

    id: str
    name: str
    integration: str | None = None  # its integration's name ("API" for ours)


@dataclass(frozen=True)
class Change:
    """What becomes of one mapping. ``status``: set, unchanged, missing, deferred, failed, or
    updated (after ``apply``)."""

    mapping: str
    wanted: str
    status: str
    metric_id: str | None = None  # the metric it should point at
    was_id: str | None = None  # what it points at now (a metric or custom metric id)
    was_name: str | None = None
    detail: str | None = None

    def describe(self) -> str:
        was = self.was_name or self.was_id or "nothing"
        if self.status in ("set", "updated", "deferred", "failed"):
            text = f"{self.mapping}: {was} -> {self.wanted} ({self.metric_id}) [{self.status}]"
        elif self.status == "unchanged":
            text = f"{self.mapping}: {self.wanted} ({self.was_id}) [unchanged]"
        else:
            text = f"{self.mapping}: no {self.wanted!r} metric yet (send one first) [missing]"
        return f"{text}: {self.detail}" if self.detail else text


# -- reading Klaviyo's answers (pure) -----------------------------------------------------------


def mapped_now(document: Mapping[str, Any]) -> dict[str, tuple[str | None, str | None]]:
    """Get Mapped Metrics' answer -> {mapping: (target id or None, its name if included)}."""
    names = {
        str(item.get("id")): (item.get("attributes") or {}).get("name")
        for item in document.get("included") or ()
        if isinstance(item, Mapping)
    }
    found: dict[str, tuple[str | None, str | None]] = {}
    for resource in document.get("data") or ():
        relationships = resource.get("relationships") or {}
        target = None
        for name in ("metric", "custom-metric"):
            data = (relationships.get(name) or {}).get("data")
            if isinstance(data, Mapping) and data.get("id"):
                target = str(data["id"])
                break
        found[str(resource.get("id"))] = (target, names.get(target) if target else None)
    return found


def metrics_by_name(pages: Iterable[Mapping[str, Any]]) -> dict[str, list[Metric]]:
    """Get Metrics' pages -> {name: every metric of that name}."""
    found: dict[str, list[Metric]] = {}
    for page in pages:
        for resource in page.get("data") or ():
            attributes = resource.get("attributes") or {}
            name = attributes.get("name")
            if not isinstance(name, str):
                continue
            integration = attributes.get("integration")
            source = integration.get("name") if isinstance(integration, Mapping) else None
            found.setdefault(name, []).append(Metric(str(resource.get("id")), name, source))
    return found


def plan(
    current: Mapping[str, tuple[str | None, str | None]],
    metrics: Mapping[str, list[Metric]],
    wanted: Mapping[str, str] = WANTED,
) -> list[Change]:
    """One Change per wanted mapping (pure: what ``apply`` would do, and ``--dry-run`` prints)."""
    changes = []
    for mapping, name in wanted.items():
        was_id, was_name = current.get(mapping, (None, None))
        candidates = metrics.get(name, [])
        if was_id is not None and any(m.id == was_id for m in candidates):
            changes.append(Change(mapping, name, "unchanged", was_id, was_id, name))
            continue
        if not candidates:
            changes.append(Change(mapping, name, "missing", None, was_id, was_name))
            continue
        chosen = next((m for m in candidates if m.integration == API_INTEGRATION), candidates[0])
        changes.append(Change(mapping, name, "set", chosen.id, was_id, was_name))
    return changes


def update_body(change: Change) -> dict[str, Any]:
    """Update Mapped Metric's body (MappedMetricPartialUpdateQuery): the mapping, pointed at
    the metric by id."""
    return {
        "data": {
            "type": "mapped-metric",
            "id": change.mapping,
            "relationships": {"metric": {"data": {"type": "metric", "id": change.metric_id}}},
        }
    }


# -- talking to Klaviyo ----------------------------------------------------------------------------


def _pages(sender: Sender, endpoint: str, path: str) -> Iterator[Mapping[str, Any]]:
    url: str | None = path
    while url:
        answer = sender.call(endpoint, functools.partial(sender.client.send, "GET", url)).data
        if not isinstance(answer, Mapping):
            return
        yield answer
        url = (answer.get("links") or {}).get("next") or None


def apply(
    changes: list[Change], sender: Sender, limiter: RateLimiter | None = None
) -> list[Change]:
    """Send every ``set`` change (one PATCH each); returns the changes with their outcome."""
    done: list[Change] = []
    spent = False
    for change in changes:
        if change.status != "set":
            done.append(change)
            continue
        if not spent and limiter is not None:
            spent = limiter.wait_time(UPDATE_ENDPOINT) > DAILY_WAIT
        if spent:
            detail = "Update Mapped Metric allows 30 a day; run again tomorrow"
            done.append(replace(change, status="deferred", detail=detail))
            continue
        path = f"/api/mapped-metrics/{change.mapping}"
        call = functools.partial(sender.client.send, "PATCH", path, update_body(change))
        try:
            sender.call(UPDATE_ENDPOINT, call)
        except (KlaviyoError, TimeoutError) as exc:  # reported per mapping; the others go on
            log.warning("klaviyo: mapping %s failed: %s", change.mapping, exc)
            done.append(replace(change, status="failed", detail=str(exc)[:300]))
            continue
        done.append(replace(change, status="updated"))
    return done


def map_metrics(connection: Any, *, dry_run: bool = False) -> list[Change]:
    """Read the mapping and the metrics, plan, and (unless ``dry_run``) apply."""
    settings = DeliverySettings.load()
    limiter = RateLimiter(connection, limits=kinds.rate_limits(settings.rate_limits))
    sender = Sender(settings.client(), None, limiter=limiter)
    read = functools.partial(sender.client.send, "GET", MAPPED_PATH)
    mapped = sender.call(GET_ENDPOINT, read).data
    metrics = metrics_by_name(_pages(sender, METRICS_ENDPOINT, METRICS_PATH))
    changes = plan(mapped_now(mapped if isinstance(mapped, Mapping) else {}), metrics)
    if dry_run:
        return changes
    return apply(changes, sender, limiter)
