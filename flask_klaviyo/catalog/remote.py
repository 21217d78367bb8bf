"""Reading what Klaviyo's catalog holds, page by page, paced by the shared limiter: items with
their variants (``GET /api/catalog-items?include=variants``) and categories
(``GET /api/catalog-categories``).

Klaviyo's item listing does not show which categories an item is in, so the membership a sync
sent is remembered in Redis (by item) and compared next time; an account whose API does not
list categories falls back to the categories this installation created (also remembered).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from ..delivery import kinds
from ..delivery.sender import Sender
from ..delivery.settings import DeliverySettings
from ..exceptions import KlaviyoClientError
from ..ratelimit import RateLimiter
from .plan import Held, membership_of

__all__ = [
    "CATEGORIES_KEY",
    "MEMBERSHIP_KEY",
    "VARIANTS_KEY",
    "forget_items",
    "read_catalog",
    "remember",
]

log = logging.getLogger(__name__)

ITEMS_PATH = "/api/catalog-items?include=variants&page%5Bsize%5D=100"
CATEGORIES_PATH = "/api/catalog-categories?page%5Bsize%5D=100"
MEMBERSHIP_KEY = "klaviyo:catalog:memberships"  # item external id -> membership digest
CATEGORIES_KEY = "klaviyo:catalog:categories"  # category external id -> name, as created
VARIANTS_KEY = "klaviyo:catalog:variants"  # variant external id -> its item, as sent
PREFIX = "$custom:::$default:::"


def _external(resource: Mapping[str, Any]) -> str:
    attributes = resource.get("attributes") or {}
    external = attributes.get("external_id")
    if isinstance(external, str) and external:
        return external
    return str(resource.get("id", "")).removeprefix(PREFIX)


def _pages(sender: Sender, endpoint: str, path: str) -> Iterator[Mapping[str, Any]]:
    """Every page of a listing, following ``links.next``."""
    url: str | None = path
    while url:
        answer = sender.call(endpoint, functools.partial(sender.client.send, "GET", url)).data
        if not isinstance(answer, Mapping):
            return
        yield answer
        url = (answer.get("links") or {}).get("next") or None


def read_catalog(connection: Any, *, progress: Callable[[int], None] | None = None) -> Held:
    """Everything Klaviyo's catalog holds now (plus the memberships remembered in Redis)."""
    settings = DeliverySettings.load()
    limiter = RateLimiter(connection, limits=kinds.rate_limits(settings.rate_limits))
    sender = Sender(settings.client(), None, limiter=limiter)
    held = Held()
    shown: dict[str, str] = {}
    for page in _pages(sender, "get_catalog_items", ITEMS_PATH):
        by_variant: dict[str, str] = {}
        for item in page.get("data") or ():
            external = _external(item)
            held.items[external] = dict(item.get("attributes") or {})
            held.variants.setdefault(external, {})
            relationships = item.get("relationships") or {}
            for link in (relationships.get("variants") or {}).get("data") or ():
                by_variant[str(link.get("id"))] = external
            groups = (relationships.get("categories") or {}).get("data")
            if isinstance(groups, list):  # shown (Klaviyo's listing may not): no need to recall
                shown[external] = membership_of(
                    str(link.get("id", "")).removeprefix(PREFIX) for link in groups
                )
        for variant in page.get("included") or ():
            if variant.get("type") != "catalog-variant":
                continue
            parent = by_variant.get(str(variant.get("id")))
            if parent is None:  # the variant names its item instead
                link = ((variant.get("relationships") or {}).get("item") or {}).get("data") or {}
                parent = str(link.get("id", "")).removeprefix(PREFIX)
            held.variants.setdefault(parent, {})[_external(variant)] = dict(
                variant.get("attributes") or {}
            )
        if progress is not None:
            progress(len(page.get("data") or ()))
    held.categories = _categories(sender, connection)
    held.memberships = {
        key.decode(): value.decode() for key, value in connection.hgetall(MEMBERSHIP_KEY).items()
    }
    held.memberships.update(shown)
    return held


def _categories(sender: Sender, connection: Any) -> dict[str, str]:
    try:
        found: dict[str, str] = {}
        for page in _pages(sender, "get_catalog_categories", CATEGORIES_PATH):
            for category in page.get("data") or ():
                name = (category.get("attributes") or {}).get("name")
                found[_external(category)] = str(name or "")
        return found
    except KlaviyoClientError as exc:
        if exc.status_code not in (404, 405):
            raise
        log.info("klaviyo: categories not listed (%s); using the ones created here", exc)
        return {k.decode(): v.decode() for k, v in connection.hgetall(CATEGORIES_KEY).items()}


def remember(
    connection: Any,
    memberships: Mapping[str, str],
    categories: Mapping[str, str],
    variants: Mapping[str, str] | None = None,
) -> None:
    """What a sync queued that Klaviyo's listings will not show back (and which items and
    variants exist, for ``catalog_changed``)."""
    pipe = connection.pipeline(transaction=False)
    if variants:
        pipe.hset(VARIANTS_KEY, mapping=dict(variants))
    if memberships:
        pipe.hset(MEMBERSHIP_KEY, mapping=dict(memberships))
    if categories:
        pipe.hset(CATEGORIES_KEY, mapping=dict(categories))
    pipe.execute()


def forget_items(
    connection: Any, items: list[str], variants: list[str], categories: list[str]
) -> None:
    """Deleted resources are no longer known to exist."""
    pipe = connection.pipeline(transaction=False)
    for key, ids in (
        (MEMBERSHIP_KEY, items),
        (VARIANTS_KEY, variants),
        (CATEGORIES_KEY, categories),
    ):
        if ids:
            pipe.hdel(key, *ids)
    pipe.execute()
