"""The shopping metrics before an order: Viewed Product, Added to Cart, Started Checkout.

The property names are Klaviyo's own, exactly as its integration guide spells them (seed 001;
Viewed Product also seed 003).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from ..models import Cart, LineItem, Product, union
from .ids import stable_id
from .model import ADDED_TO_CART, DEFAULT_CURRENCY, STARTED_CHECKOUT, VIEWED_PRODUCT, Event
from .values import (
    _event_time,
    _identifier,
    _known,
    _list_or_none,
    _money,
    _profile,
    _value_currency,
)

__all__ = ["added_to_cart", "started_checkout", "viewed_product"]


def _cart_item(line: LineItem) -> dict[str, Any]:
    """An Items entry of Added to Cart / Started Checkout (seed 001)."""
    product = line.product
    return _known(
        {
            "ProductID": _identifier(product.id),
            "SKU": product.sku,
            "ProductName": product.name,
            "Quantity": line.quantity,
            "ItemPrice": _money(line.price),
            "RowTotal": _money(line.row_total),
            "ProductURL": product.url,
            "ImageURL": product.image_url,
            "ProductCategories": list(product.categories),
        }
    )


def viewed_product(
    product: Any,
    *,
    profile: Mapping[str, Any] | None,
    render_id: str,
    visitor: str = "",
    time: datetime | None = None,
    currency: str | None = DEFAULT_CURRENCY,
) -> Event:
    """Viewed Product, one per page view: the render id is part of the unique_id."""
    product = Product.coerce(product)
    price = _money(product.price)
    properties = _known(
        {
            "ProductName": product.name,
            "ProductID": _identifier(product.id),
            "SKU": product.sku,
            "Categories": _list_or_none(product.categories),
            "ImageURL": product.image_url,
            "URL": product.url,
            "Brand": product.brand,
            "Price": price,
            "CompareAtPrice": _money(product.compare_at_price),
        }
    )
    return Event(
        metric=VIEWED_PRODUCT,
        properties=properties,
        profile=_profile(profile),
        time=_event_time(VIEWED_PRODUCT, time),
        value=price,
        value_currency=_value_currency(price, currency),
        unique_id=stable_id(VIEWED_PRODUCT, visitor, _identifier(product.id), render_id),
    )


def _line_identity(line: LineItem) -> list[Any]:
    return [line.id, _identifier(line.product.id), line.product.sku]


def _quantity_after_add(cart: Cart, added: LineItem) -> Any:
    """The cart line's quantity once the add happened (two adds of one product differ)."""
    for line in cart.items:
        same_line = added.id is not None and line.id == added.id
        same_product = added.id is None and (
            _identifier(line.product.id) == _identifier(added.product.id)
            and line.product.sku == added.product.sku
        )
        if same_line or same_product:
            return line.quantity
    return added.quantity


def added_to_cart(
    cart: Any,
    added: Any,
    *,
    profile: Mapping[str, Any] | None,
    mutation: str | None = None,
    time: datetime | None = None,
    currency: str | None = DEFAULT_CURRENCY,
) -> Event:
    """Added to Cart: the whole cart plus the line just added.

    ``mutation`` names this particular change to the cart (a cart revision, a request id); by
    default it is the line's quantity after the add and the time to the second.
    """
    cart = Cart.coerce(cart)
    added = LineItem.coerce(added)
    when = _event_time(ADDED_TO_CART, time)
    product = added.product
    if mutation is None:
        mutation = f"{_quantity_after_add(cart, added)}@{int(when.timestamp())}"
    # Seed 001 shows AddedItemCategories as the union over the cart, the added item's own
    # categories first: ["Fiction", "Classics", "Children"]. (Seed 003, the older guide, shows
    # only the added item's categories; we follow seed 001.)
    categories = union([product.categories, *(line.product.categories for line in cart.items)])
    total = _money(cart.total)
    properties = _known(
        {
            "AddedItemProductName": product.name,
            "AddedItemProductID": _identifier(product.id),
            "AddedItemSKU": product.sku,
            "AddedItemCategories": _list_or_none(categories),
            "AddedItemImageURL": product.image_url,
            "AddedItemURL": product.url,
            "AddedItemPrice": _money(added.price),
            "AddedItemQuantity": added.quantity,
            "ItemNames": cart.item_names,
            "CheckoutURL": cart.checkout_url,
            "Items": [_cart_item(line) for line in cart.items],
        }
    )
    return Event(
        metric=ADDED_TO_CART,
        properties=properties,
        profile=_profile(profile),
        time=when,
        value=total,
        value_currency=_value_currency(total, currency),
        unique_id=stable_id(ADDED_TO_CART, _identifier(cart.id), _line_identity(added), mutation),
    )


def started_checkout(
    cart: Any,
    *,
    profile: Mapping[str, Any] | None,
    time: datetime | None = None,
    currency: str | None = DEFAULT_CURRENCY,
) -> Event:
    """Started Checkout; unique_id is the seed's rule, cart id and UNIX time, so a shopper who
    returns later with more items starts checkout again."""
    cart = Cart.coerce(cart)
    when = _event_time(STARTED_CHECKOUT, time)
    total = _money(cart.total)
    properties = _known(
        {
            "ItemNames": cart.item_names,
            "CheckoutURL": cart.checkout_url,
            "Categories": cart.categories,
            "Items": [_cart_item(line) for line in cart.items],
        }
    )
    return Event(
        metric=STARTED_CHECKOUT,
        properties=properties,
        profile=_profile(profile),
        time=when,
        value=total,
        value_currency=_value_currency(total, currency),
        unique_id=f"{_identifier(cart.id)}_{int(when.timestamp())}",
    )
