"""Feed mode: Klaviyo's custom catalog JSON feed, served at ``KLAVIYO_CATALOG_FEED_PATH``.

Klaviyo fetches the feed about every 6 hours (and then the catalog must not be written by the
API: the one-method rule). One flat object per product, Klaviyo's feed fields: ``$id``,
``title``, ``link``, ``description``, ``price``, ``image_link``, ``categories``,
``inventory_quantity``, ``inventory_policy``; absolute URLs (checked like the API's items).

The body is streamed: the source is iterated lazily and each product written as it comes, so a
100,000-product catalog never sits in memory. The ``ETag`` is a digest streamed over the
products in a first pass (nothing kept), so a fetch with a matching ``If-None-Match`` is a 304
with no body; a changed catalog is read twice (digest, then body). ``KLAVIYO_CATALOG_FEED_TOKEN``
set: the feed needs ``?token=`` (or an ``X-Klaviyo-Feed-Token`` header): 401 without one, 404
for a wrong one.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from flask import Blueprint, Response, current_app, request, stream_with_context

from .._state import tolerate
from ..exceptions import KlaviyoSchemaError
from .model import CatalogItem, coerce_entry

__all__ = ["feed_blueprint", "feed_entry", "feed_items"]

log = logging.getLogger(__name__)

TOKEN_HEADER = "X-Klaviyo-Feed-Token"


def feed_entry(item: CatalogItem) -> dict[str, Any]:
    """One product in Klaviyo's custom catalog feed form."""
    entry: dict[str, Any] = {
        "$id": item.id,
        "title": item.title,
        "link": item.url,
        "description": item.description,
        "price": float(item.price),
        "image_link": item.image_url,
        "categories": [category.name for category in item.categories],
        "inventory_quantity": item.stock(),
        "inventory_policy": item.inventory_policy,
    }
    return {key: value for key, value in entry.items() if value is not None}


def feed_items(entries: Iterable[Any]) -> Iterator[dict[str, Any]]:
    """The source's published, valid products as feed entries, lazily. An invalid product
    raises KlaviyoSchemaError (strict) or is left out and logged (lenient)."""
    for entry in entries:
        try:
            found = coerce_entry(entry)
            if not isinstance(found, CatalogItem):
                continue  # categories travel as each product's category names
            found.validate()
        except KlaviyoSchemaError as exc:
            tolerate("%s left out of the catalog feed: %s", exc.metric, exc, traceback=False)
            continue
        if found.published:
            yield feed_entry(found)


def _encode(entry: dict[str, Any]) -> bytes:
    return json.dumps(entry, separators=(",", ":"), ensure_ascii=False, default=str).encode()


def _etag(entries: Iterable[Any]) -> str:
    digest = hashlib.sha256()
    for entry in feed_items(entries):
        digest.update(_encode(entry))
        digest.update(b"\n")
    return digest.hexdigest()[:32]


def _body(entries: Iterable[Any]) -> Iterator[bytes]:
    yield b"["
    first = True
    for entry in feed_items(entries):
        yield (b"" if first else b",\n") + _encode(entry)
        first = False
    yield b"]\n"


def _token_problem() -> Response | None:
    expected = current_app.config.get("KLAVIYO_CATALOG_FEED_TOKEN")
    if not expected:
        return None
    given = request.args.get("token") or request.headers.get(TOKEN_HEADER)
    if not given:
        return Response("a token is required\n", 401, mimetype="text/plain")
    if not hmac.compare_digest(given.encode(), str(expected).encode()):
        return Response("not found\n", 404, mimetype="text/plain")
    return None


def feed_blueprint(path: str, entries: Callable[[], Iterable[Any]]) -> Blueprint:
    """The feed's blueprint; ``entries()`` iterates the catalog source afresh."""
    blueprint = Blueprint("klaviyo_catalog_feed", __name__)

    @blueprint.get(path)
    def catalog_feed() -> Response:
        refused = _token_problem()
        if refused is not None:
            return refused
        tag = _etag(entries())
        if request.if_none_match.contains(tag):
            response = Response(status=304)
        else:
            response = Response(stream_with_context(_body(entries())), mimetype="application/json")
        response.set_etag(tag)
        response.cache_control.no_cache = True
        return response

    return blueprint
