"""The storefront's nouns as Klaviyo's ecommerce metrics see them: Product, LineItem, Cart, Order.

These are plain dataclasses. They do not validate: a merchant's data is checked once, on the
built event (:func:`flask_klaviyo.events.validate_event`), where an error can name the exact
Klaviyo field. ``coerce`` accepts the shapes storefronts already have (dicts, ORM rows, objects
with a ``to_klaviyo_product()`` method) so views can hand over what they render.

Money may be ``int``, ``float`` or ``Decimal``. A ``str`` price is kept as it is (never parsed):
it must surface as a schema error rather than be guessed at. Totals that cannot be computed
from such values are ``None``.
"""

from __future__ import annotations

from .coerce import Money, is_money, sum_money, union
from .shop import Address, Cart, LineItem, Order, Product

__all__ = [
    "Address",
    "Cart",
    "LineItem",
    "Money",
    "Order",
    "Product",
    "is_money",
    "sum_money",
    "union",
]
