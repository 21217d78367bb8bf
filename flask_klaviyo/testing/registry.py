"""The endpoint registry: one entry per Klaviyo endpoint the stand-in answers.

Adding an endpoint is one module with a ``handle(call) -> Answer`` function plus one entry
here: its name (the key of ``rate_limits``), method, path pattern (``{name}`` captures a path
segment into ``call.params``), handler and Klaviyo's published windows (burst per second,
steady per minute, from ../shared/klaviyo/README.md). The dispatcher does the rest: faults,
rate windows, the key or company id, revision, media type, size, decoding, JSON, recording.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from . import (
    back_in_stock,
    catalog_categories,
    catalog_items,
    catalog_read,
    catalog_variants,
    deletion,
    events,
    mapped_metrics,
    profile_bulk_import,
    profile_import,
    profile_update,
    subscribe,
    unsubscribe,
)
from ._config import MAX_BODY_BYTES, MAX_PROFILE_BYTES
from .jsonapi import Answer
from .ratewindows import Windows
from .state import Call

log = logging.getLogger(__name__)

FAST: Windows = ((350, 1.0), (3500, 60.0))
BULK: Windows = ((10, 1.0), (150, 60.0))
MEDIUM: Windows = ((75, 1.0), (750, 60.0))
PRIVACY: Windows = ((3, 1.0), (60, 60.0))
SMALL: Windows = ((3, 1.0), (60, 60.0))
MAPPING_UPDATE: Windows = ((1, 1.0), (15, 60.0), (30, 86400.0))  # and 30 a day


@dataclass(frozen=True)
class Endpoint:
    """One Klaviyo endpoint: where it is, who answers it, and how fast it may be called."""

    name: str
    method: str
    pattern: str
    handler: Callable[[Call], Answer]
    limits: Windows
    client: bool = False  # a browser endpoint: company_id instead of a key, CORS headers
    max_body: int = MAX_BODY_BYTES  # after decoding
    regex: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        source = re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", re.escape(self.pattern))
        object.__setattr__(self, "regex", re.compile(f"^{source}$"))

    @property
    def steady(self) -> tuple[int, float]:
        """The longest window: what the ``RateLimit-*`` headers describe."""
        return max(self.limits, key=lambda window: window[1])


ENDPOINTS: tuple[Endpoint, ...] = (
    Endpoint("create_event", "POST", "/api/events", events.handle, FAST),
    Endpoint("bulk_create_events", "POST", "/api/event-bulk-create-jobs", events.handle, BULK),
    Endpoint("create_client_event", "POST", "/client/events", events.handle, FAST, client=True),
    Endpoint(
        "bulk_create_client_events",
        "POST",
        "/client/event-bulk-create",
        events.handle,
        BULK,
        client=True,
    ),
    Endpoint(
        "create_or_update_profile",
        "POST",
        "/api/profile-import",
        profile_import.handle,
        MEDIUM,
        max_body=MAX_PROFILE_BYTES,
    ),
    Endpoint(
        "update_profile",
        "PATCH",
        "/api/profiles/{id}",
        profile_update.handle,
        MEDIUM,
        max_body=MAX_PROFILE_BYTES,
    ),
    Endpoint(
        "bulk_subscribe_profiles",
        "POST",
        "/api/profile-subscription-bulk-create-jobs",
        subscribe.handle,
        MEDIUM,
    ),
    Endpoint(
        "bulk_unsubscribe_profiles",
        "POST",
        "/api/profile-subscription-bulk-delete-jobs",
        unsubscribe.handle,
        MEDIUM,
    ),
    Endpoint(
        "request_profile_deletion",
        "POST",
        "/api/data-privacy-deletion-jobs",
        deletion.handle,
        PRIVACY,
    ),
    Endpoint(
        "bulk_import_profiles",
        "POST",
        "/api/profile-bulk-import-jobs",
        profile_bulk_import.create_job,
        BULK,
    ),
    Endpoint(
        "get_bulk_import_profiles_job",
        "GET",
        "/api/profile-bulk-import-jobs/{job_id}",
        profile_bulk_import.get_job,
        BULK,
    ),
    Endpoint(
        "get_bulk_import_profiles_job_import_errors",
        "GET",
        "/api/profile-bulk-import-jobs/{job_id}/import-errors",
        profile_bulk_import.get_import_errors,
        BULK,
    ),
)


ACTIONS = ("create", "update", "delete")  # a catalog resource's bulk jobs


def _catalog_jobs(module: Any, plural: str, short: str, get_limits: dict[str, Windows]) -> tuple:
    """The six endpoints of one catalog resource: bulk create / update / delete jobs, and the
    GET of each job (Klaviyo's operation names, e.g. ``get_bulk_delete_catalog_items_job``)."""
    found = []
    for action in ACTIONS:
        path = f"/api/catalog-{short}-bulk-{action}-jobs"
        found.append(
            Endpoint(
                f"bulk_{action}_catalog_{plural}",
                "POST",
                path,
                getattr(module, f"{action}_job"),
                MEDIUM,
            )
        )
        found.append(
            Endpoint(
                f"get_bulk_{action}_catalog_{plural}_job",
                "GET",
                path + "/{job_id}",
                getattr(module, f"get_{action}_job"),
                get_limits.get(action, MEDIUM),
            )
        )
    return tuple(found)


CATALOG: tuple[Endpoint, ...] = (
    *_catalog_jobs(catalog_items, "items", "item", {"delete": FAST}),
    *_catalog_jobs(catalog_variants, "variants", "variant", {"delete": FAST}),
    *_catalog_jobs(
        catalog_categories,
        "categories",
        "category",
        dict.fromkeys(("create", "update", "delete"), FAST),
    ),
    Endpoint("get_catalog_items", "GET", "/api/catalog-items", catalog_read.get_items, FAST),
    Endpoint(
        "get_catalog_variants", "GET", "/api/catalog-variants", catalog_read.get_variants, FAST
    ),
    Endpoint(
        "get_catalog_categories",
        "GET",
        "/api/catalog-categories",
        catalog_read.get_categories,
        FAST,
    ),
    Endpoint(
        "create_back_in_stock_subscription",
        "POST",
        "/api/back-in-stock-subscriptions",
        back_in_stock.handle,
        FAST,
    ),
)
ENDPOINTS += CATALOG
ENDPOINTS += (
    Endpoint("get_metrics", "GET", "/api/metrics", mapped_metrics.get_metrics, BULK),
    Endpoint(
        "get_mapped_metrics", "GET", "/api/mapped-metrics", mapped_metrics.get_mapped_metrics, SMALL
    ),
    Endpoint(
        "update_mapped_metric",
        "PATCH",
        "/api/mapped-metrics/{id}",
        mapped_metrics.update_mapped_metric,
        MAPPING_UPDATE,
    ),
)
# The catalog's write requests (what a re-sync with nothing changed must not send).
CATALOG_WRITES: tuple[str, ...] = tuple(
    e.name for e in CATALOG if e.method == "POST" and e.name.startswith("bulk_")
)
BY_NAME = {endpoint.name: endpoint for endpoint in ENDPOINTS}

# Klaviyo's published limits (burst per second, steady per minute), for ``rate_limits="klaviyo"``.
# Klaviyo counts them in fixed windows per account and answers 429 with Retry-After past either.
KLAVIYO_RATE_LIMITS: dict[str, Windows] = {e.name: e.limits for e in ENDPOINTS}


def match(method: str, path: str) -> tuple[Endpoint | None, Endpoint | None, dict[str, str]]:
    """(the endpoint for this method and path, the first one at this path, path parameters)."""
    at_path: Endpoint | None = None
    for endpoint in ENDPOINTS:
        found = endpoint.regex.match(path)
        if found is None:
            continue
        at_path = at_path or endpoint
        if endpoint.method == method:
            return endpoint, at_path, found.groupdict()
    return None, at_path, {}
