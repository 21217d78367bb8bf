"""The store's SQLite catalog as flask-klaviyo's catalog source.

``products()`` is registered with ``@klaviyo.catalog_source``: ``flask --app example_store
klaviyo catalog sync`` reconciles Klaviyo's catalog with it, and ``catalog_product(id)`` is what
the back office hands ``klaviyo.catalog_changed`` after a stock change.

Klaviyo's emails link to these URLs, so they are absolute: the request's own host while one is
active (an admin's stock change), else ``STORE_BASE_URL`` (a sync from a shell or at start-up).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

from flask import current_app, has_request_context, url_for

from . import catalog, variants
from .catalog import Product
from .extensions import klaviyo
from .variants import Variant

__all__ = ["DEFAULT_BASE_URL", "absolute_url", "catalog_entry", "catalog_product", "products"]

DEFAULT_BASE_URL = "http://127.0.0.1:5000"


def absolute_url(endpoint: str, **values: Any) -> str:
    """``url_for(endpoint, _external=True)``, also outside a request (from ``STORE_BASE_URL``)."""
    if has_request_context():
        return url_for(endpoint, _external=True, **values)
    base = urlsplit(current_app.config.get("STORE_BASE_URL") or DEFAULT_BASE_URL)
    adapter = current_app.url_map.bind(
        base.netloc, script_name=base.path or "/", url_scheme=base.scheme or "http"
    )
    return adapter.build(endpoint, values, force_external=True)


def _variant_entry(product: Product, variant: Variant, product_url: str) -> dict[str, Any]:
    return {
        "id": variant.id,
        "sku": variant.sku,
        "title": variant.name_with(product.name),
        "price": variant.price_cents / 100,
        "inventory_quantity": variant.inventory_quantity,
        "inventory_policy": variant.inventory_policy,
        "url": product_url if variant.option_name == "" else f"{product_url}?variant={variant.id}",
        "image_url": absolute_url("static", filename=product.image),
    }


def catalog_entry(product: Product, product_variants: list[Variant]) -> dict[str, Any]:
    """One product as the catalog source yields it (prices in dollars, URLs absolute)."""
    url = absolute_url("store.product", product_id=product.id)
    return {
        "id": product.id,
        "title": product.name,
        "description": product.description,
        "price": product.price_cents / 100,
        "url": url,
        "image_url": absolute_url("static", filename=product.image),
        "categories": list(product.categories),
        "published": True,
        "variants": [_variant_entry(product, v, url) for v in product_variants],
    }


def catalog_product(product_id: str) -> dict[str, Any] | None:
    """The catalog entry of one product, read now (after a change), or None."""
    product = catalog.get_product(product_id)
    if product is None:
        return None
    return catalog_entry(product, variants.list_variants(product_id))


@klaviyo.catalog_source
def products() -> Iterator[dict[str, Any]]:
    """Every product with its variants, for ``klaviyo catalog sync``."""
    grouped = variants.variants_by_product()
    for product in catalog.list_products():
        yield catalog_entry(product, grouped.get(product.id, []))
