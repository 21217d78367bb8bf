"""Klaviyo's catalog: items, variants and categories from the store's catalog source, kept in
Klaviyo through the Catalog API (``sync``, incremental changes) or served as a feed.

Light on purpose: import the modules (:mod:`.model`, :mod:`.plan`, :mod:`.remote`,
:mod:`.sync`, :mod:`.feed`) for what they hold.
"""

from __future__ import annotations

from .model import CatalogCategory, CatalogItem, CatalogVariant, compound_id

__all__ = ["CatalogCategory", "CatalogItem", "CatalogVariant", "compound_id"]
