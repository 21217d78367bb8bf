"""Klaviyo's built-in ecommerce metrics, built from the storefront's models, and checked before
anything is queued.

The property names are Klaviyo's own, exactly as its integration guide spells them (seed 001;
Viewed Product also seed 003). Every event carries a deterministic ``unique_id`` so retries,
replays and the in-page bridge never count twice (DESIGN.md, "Stable event IDs").

Builders never validate; :func:`validate_event` does, once, and raises
:class:`~flask_klaviyo.exceptions.KlaviyoSchemaError` naming the metric and the exact field.
An event it accepts also fits Klaviyo's OpenAPI request schema.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from json.encoder import encode_basestring  # type: ignore[attr-defined]
from typing import Any, Literal

from .exceptions import KlaviyoSchemaError
from .identity.identifiers import (
    E164_PATTERN,
    EMAIL_PATTERN,
    IDENTIFIER_KEYS,
    LOCATION_COORDINATE_KEYS,
    LOCATION_STRING_KEYS,
    META_KEYS,
    PROFILE_OBJECT_KEYS,
    PROFILE_STRING_KEYS,
    SENDABLE_IDENTIFIERS,
    mask_email,
    mask_phone,
    mask_profile,
)
from .models import Cart, LineItem, Order, Product, is_money
from .models import _union as models_union

__all__ = [
    "ADDED_TO_CART",
    "BUILT_IN_METRICS",
    "CANCELED_ORDER",
    "DEFAULT_CURRENCY",
    "FULFILLED_ORDER",
    "MAX_BULK_BYTES",
    "MAX_BULK_EVENTS",
    "MAX_METRIC_NAME",
    "MAX_PAYLOAD_BYTES",
    "MAX_PROPERTIES",
    "MAX_STRING_BYTES",
    "METRIC_SCHEMAS",
    "ORDERED_PRODUCT",
    "PLACED_ORDER",
    "REFUNDED_ORDER",
    "REQUIRED_PROPERTIES",
    "STARTED_CHECKOUT",
    "VIEWED_PRODUCT",
    "Event",
    "MetricSchema",
    "Rule",
    "added_to_cart",
    "as_utc",
    "bulk_payload",
    "canceled_order",
    "canonical_json",
    "custom_event",
    "encoded_size",
    "events_at_pointer",
    "fulfilled_order",
    "locate_bulk_pointer",
    "mask_email",
    "mask_phone",
    "mask_profile",
    "ordered_products",
    "placed_order",
    "refunded_order",
    "split_batches",
    "stable_id",
    "started_checkout",
    "validate_event",
    "viewed_product",
]

VIEWED_PRODUCT = "Viewed Product"
ADDED_TO_CART = "Added to Cart"
STARTED_CHECKOUT = "Started Checkout"
PLACED_ORDER = "Placed Order"
ORDERED_PRODUCT = "Ordered Product"
FULFILLED_ORDER = "Fulfilled Order"
CANCELED_ORDER = "Canceled Order"
REFUNDED_ORDER = "Refunded Order"
BULK_OPERATION = "Bulk Create Events"

DEFAULT_CURRENCY = "USD"

# Klaviyo's documented limits (Create Event / Bulk Create Events OpenAPI descriptions).
MAX_PROPERTIES = 400
# Property values nested deeper than this are refused (Klaviyo names no limit; this keeps every
# JSON encoder, ours and Klaviyo's, far from its recursion limit).
MAX_NESTING = 100
MAX_STRING_BYTES = 100 * 1024
MAX_PAYLOAD_BYTES = 5 * 1024 * 1024
MAX_METRIC_NAME = 127  # "must be less than 128 characters"
MAX_BULK_EVENTS = 1000
MAX_BULK_BYTES = 5_000_000  # "5MB": the decimal reading is the safe one
EARLIEST_TIME = datetime(1990, 1, 1, tzinfo=UTC)  # "must be after the year 1990"
MAX_FUTURE = timedelta(days=365)  # "can only be up to 1 year in the future"
STABLE_ID_HEX_CHARS = 24  # 96 bits: no collision among a profile's events in practice

_PROFILE_KEYS = frozenset((*PROFILE_STRING_KEYS, *PROFILE_OBJECT_KEYS))
CURRENCY_PATTERN = re.compile(r"^[A-Z]{3}$")
MONEY_STEP = Decimal("0.01")


# --------------------------------------------------------------------------------------------
# Event
# --------------------------------------------------------------------------------------------


def as_utc(value: datetime | date | str | float | None) -> datetime:
    """Aware UTC, whatever the storefront handed over: naive datetimes are taken as UTC,
    numbers as UNIX seconds (the legacy Track API's ``time``)."""
    if value is None:
        return datetime.now(UTC)
    if value.__class__ is datetime and value.tzinfo is UTC:
        return value  # already what we want (every event's time passes here twice)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return datetime.fromtimestamp(value, UTC)
    if isinstance(value, str):
        value = datetime.fromisoformat(value.replace("Z", "+00:00"))
    elif not isinstance(value, datetime):
        value = datetime(value.year, value.month, value.day)
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


@dataclass
class Event:
    """One Klaviyo event: ``to_dict`` is what RQ jobs carry, ``to_payload`` what Klaviyo takes."""

    metric: str
    properties: dict[str, Any]
    profile: dict[str, Any]
    time: datetime
    value: float | None = None
    value_currency: str | None = None
    unique_id: str | None = None
    backfill: bool = False

    def __post_init__(self) -> None:
        # A naive time would serialise without an offset, which Klaviyo's schema rejects.
        self.time = as_utc(self.time)

    def to_dict(self) -> dict[str, Any]:
        return {
            "metric": self.metric,
            "properties": self.properties,
            "profile": self.profile,
            "time": self.time.isoformat(),
            "value": self.value,
            "value_currency": self.value_currency,
            "unique_id": self.unique_id,
            "backfill": self.backfill,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Event:
        return cls(
            metric=data["metric"],
            properties=dict(data.get("properties") or {}),
            profile=dict(data.get("profile") or {}),
            time=as_utc(data["time"]),
            value=data.get("value"),
            value_currency=data.get("value_currency"),
            unique_id=data.get("unique_id"),
            backfill=bool(data.get("backfill", False)),
        )

    def event_attributes(self) -> dict[str, Any]:
        """The event's JSON:API attributes without the profile (a bulk entry's shape)."""
        attributes: dict[str, Any] = {
            "properties": self.properties,
            "time": self.time.isoformat(),
        }
        if self.value is not None:
            attributes["value"] = self.value
        if self.value_currency is not None:
            attributes["value_currency"] = self.value_currency
        if self.unique_id is not None:
            attributes["unique_id"] = self.unique_id
        if self.backfill:
            attributes["backfill"] = True
        attributes["metric"] = {"data": {"type": "metric", "attributes": {"name": self.metric}}}
        return attributes

    def to_payload(self) -> dict[str, Any]:
        """The exact Create Event body."""
        attributes = self.event_attributes()
        attributes["profile"] = {"data": _profile_data(self.profile, meta_inside=True)}
        return {"data": {"type": "event", "attributes": attributes}}

    def profile_key(self) -> str:
        """Canonical JSON of the identifiers: events with equal keys belong to one profile."""
        return _profile_key(self.profile)

    def dedup_key(self) -> tuple[str, str, str]:
        """What Klaviyo dedups on; without a unique_id it uses the time to the second."""
        unique = self.unique_id
        if unique is None:
            unique = "@" + self.time.replace(microsecond=0).isoformat()
        return (self.profile_key(), self.metric, unique)


def _profile_key(profile: Mapping[str, Any]) -> str:
    identifiers = {key: profile[key] for key in IDENTIFIER_KEYS if _present(profile.get(key))}
    if isinstance(identifiers.get("email"), str):
        identifiers["email"] = identifiers["email"].strip().lower()
    return canonical_json(identifiers)


def _present(value: Any) -> bool:
    """None and "" say nothing about a profile (and Klaviyo rejects an empty email)."""
    return value is not None and value != ""


def _profile_data(profile: Mapping[str, Any], *, meta_inside: bool) -> dict[str, Any]:
    """A profile resource object. ``id`` is the resource id, not an attribute; ``meta`` sits in
    the attributes for Create Event but beside them for Bulk Create Events (the two schemas
    differ)."""
    attributes = {
        key: value
        for key, value in profile.items()
        if _present(value) and key != "id" and (meta_inside or key != "meta")
    }
    data: dict[str, Any] = {"type": "profile"}
    if _present(profile.get("id")):
        data["id"] = profile["id"]
    data["attributes"] = attributes
    if not meta_inside and _present(profile.get("meta")):
        data["meta"] = profile["meta"]
    return data


def canonical_json(value: Any) -> str:
    """One spelling per value, so digests and keys are stable across processes."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def encoded_size(body: Any) -> int:
    """Bytes on the wire, serialised the way the client sends it (compact UTF-8 JSON)."""
    return len(json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode())


def stable_id(*parts: Any) -> str:
    """A short deterministic digest: the same parts give the same unique_id on every retry."""
    if all(part.__class__ is str for part in parts):
        # canonical_json of a list of plain strings, without the encoder's setup
        text = "[" + ",".join(map(encode_basestring, parts)) + "]"
    else:
        text = canonical_json(list(parts))
    # surrogatepass: a lone surrogate in an id still digests (validation then names its field)
    digest = hashlib.sha256(text.encode("utf-8", "surrogatepass"))
    digest = digest.hexdigest()
    return digest[:STABLE_ID_HEX_CHARS]


# --------------------------------------------------------------------------------------------
# Builders
# --------------------------------------------------------------------------------------------


def _money(amount: Any) -> Any:
    """Floats rounded to cents (JSON cannot carry Decimal); anything else is left for
    validate_event to name, never converted (a str price is a bug in the caller)."""
    if amount is None:
        return None
    if amount.__class__ is float:
        return round(amount, 2)  # the common case (inf and nan stay what they are)
    if not is_money(amount):
        return amount
    if isinstance(amount, Decimal):
        if amount.is_snan():
            return math.nan  # a signaling NaN cannot become a float; validation names it
        if not amount.is_finite():
            return float(amount)
        try:
            return float(amount.quantize(MONEY_STEP, rounding=ROUND_HALF_UP))
        except InvalidOperation:  # more digits than the context holds: far from a price
            return float(amount)
    try:
        return round(float(amount), 2)
    except OverflowError:  # an int beyond any float: not a finite number, validation says so
        return math.inf


def _identifier(value: Any) -> Any:
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return value


def _known(properties: Mapping[str, Any]) -> dict[str, Any]:
    """Omit what the storefront does not know instead of sending nulls."""
    return {key: value for key, value in properties.items() if value is not None}


def _list_or_none(values: Iterable[str]) -> list[str] | None:
    listed = list(values)
    return listed or None


def _union(groups: Iterable[Iterable[Any]]) -> list[Any]:
    """Each item once, in first-seen order (models._union: unhashable items are kept too)."""
    return models_union(groups)


def _jsonable(value: Any, depth: int = 0) -> Any:
    """Turn the Python values a merchant naturally passes into JSON ones; leave the rest for
    validate_event to name."""
    if depth > MAX_NESTING:
        return value  # too deep (or a cycle): validation names it
    if isinstance(value, Decimal):
        return math.nan if value.is_snan() else float(value)
    if isinstance(value, datetime):
        try:
            return as_utc(value).isoformat()
        except OverflowError:  # an aware time at the very edge of datetime's range
            return value
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Mapping):
        return {key: _jsonable(item, depth + 1) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(item, depth + 1) for item in value]
    return value


def _too_deep(value: Any) -> bool:
    """Whether containers nest deeper than MAX_NESTING or contain themselves (without
    recursing: this guards what would recurse)."""
    path: set[int] = set()  # containers on the way down to the current one
    stack: list[tuple[Any, int, bool]] = [(value, 0, False)]
    while stack:
        item, depth, leaving = stack.pop()
        if leaving:
            path.discard(id(item))
            continue
        if isinstance(item, Mapping):
            children: list[Any] = list(item.values())
        elif isinstance(item, list | tuple):
            children = list(item)
        else:
            continue
        if depth >= MAX_NESTING or id(item) in path:
            return True
        path.add(id(item))
        stack.append((item, depth, True))
        stack.extend((child, depth + 1, False) for child in children)
    return False


def _event_time(metric: Any, value: Any) -> datetime:
    """``as_utc`` for a builder: a value that is no time at all is named, not a crash."""
    try:
        return as_utc(value)
    except (TypeError, ValueError, AttributeError, OverflowError, OSError):
        raise KlaviyoSchemaError(str(metric), "time", f"not a time: {_describe(value)}") from None


def _profile(profile: Mapping[str, Any] | None) -> dict[str, Any]:
    return dict(profile or {})


def _value_currency(value: Any, currency: str | None) -> str | None:
    return currency if value is not None else None


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


def _order_item(line: LineItem) -> dict[str, Any]:
    """An Items entry of Placed Order and the order status metrics (seed 001)."""
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
            "Categories": list(product.categories),
            "Brand": product.brand,
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
    categories = _union([product.categories, *(line.product.categories for line in cart.items)])
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


def _order_properties(
    order: Order,
    *,
    discount_keys: tuple[str, str],
    reason: str | None = None,
) -> dict[str, Any]:
    code_key, value_key = discount_keys
    billing = order.billing_address.to_properties() if order.billing_address else None
    shipping = order.shipping_address.to_properties() if order.shipping_address else None
    return _known(
        {
            "OrderId": _identifier(order.id),
            "Reason": reason,
            "Categories": order.categories,
            "ItemNames": order.item_names,
            "Brands": _list_or_none(order.brands),
            code_key: order.discount_code,
            value_key: _money(order.discount_value),
            "Items": [_order_item(line) for line in order.items],
            "BillingAddress": billing or None,
            "ShippingAddress": shipping or None,
        }
    )


# Seed 001 spells the discount keys without a space in its Placed Order and Fulfilled Order
# examples and with a space in its Canceled Order and Refunded Order examples. Each metric
# follows its own example literally, so flows and segments built from Klaviyo's docs match.
PLACED_DISCOUNT_KEYS = ("DiscountCode", "DiscountValue")
FULFILLED_DISCOUNT_KEYS = ("DiscountCode", "DiscountValue")
CANCELED_DISCOUNT_KEYS = ("Discount Code", "Discount Value")
REFUNDED_DISCOUNT_KEYS = ("Discount Code", "Discount Value")


def _order_event(
    metric: str,
    order: Any,
    *,
    profile: Mapping[str, Any] | None,
    time: datetime | date | None,
    currency: str | None,
    discount_keys: tuple[str, str],
    reason: str | None = None,
    extra: Mapping[str, Any] | None = None,
) -> Event:
    order = Order.coerce(order)
    properties = _order_properties(order, discount_keys=discount_keys, reason=reason)
    properties.update(_jsonable(dict(extra or {})))
    total = _money(order.total)
    return Event(
        metric=metric,
        properties=properties,
        profile=_profile(order.profile() if profile is None else profile),
        time=_event_time(metric, time),
        value=total,
        value_currency=order.currency or currency or DEFAULT_CURRENCY,
        # The order id, the same for all four order metrics: Klaviyo's CLV pairs them by it.
        unique_id=str(_identifier(order.id)),
    )


def placed_order(
    order: Any,
    *,
    profile: Mapping[str, Any] | None = None,
    time: datetime | None = None,
    currency: str | None = None,
) -> Event:
    """Placed Order; ``currency`` is only a fallback for an order without its own."""
    order = Order.coerce(order)
    return _order_event(
        PLACED_ORDER,
        order,
        profile=profile,
        time=time or order.placed_at,
        currency=currency,
        discount_keys=PLACED_DISCOUNT_KEYS,
    )


def _ordered_product_keys(order: Order) -> list[str]:
    """``line id or SKU`` per line, made unique within the order: two lines of one SKU must not
    share a unique_id or Klaviyo keeps only the first."""
    seen: dict[str, int] = {}
    keys = []
    for line in order.items:
        base = str(line.id or line.product.sku or _identifier(line.product.id))
        seen[base] = seen.get(base, 0) + 1
        keys.append(base if seen[base] == 1 else f"{base}_{seen[base]}")
    return keys


def ordered_products(
    order: Any,
    *,
    profile: Mapping[str, Any] | None = None,
    time: datetime | None = None,
    currency: str | None = None,
) -> list[Event]:
    """One Ordered Product per line; value is the line's total before order adjustments."""
    order = Order.coerce(order)
    when = _event_time(ORDERED_PRODUCT, time or order.placed_at)
    who = order.profile() if profile is None else profile
    events = []
    for line, key in zip(order.items, _ordered_product_keys(order), strict=True):
        product = line.product
        # A price that is not a number leaves no row total; carry it so validation names it.
        value = _money(line.row_total if line.row_total is not None else line.price)
        properties = _known(
            {
                "OrderId": _identifier(order.id),
                "ProductID": _identifier(product.id),
                "SKU": product.sku,
                "ProductName": product.name,
                "Quantity": line.quantity,
                "ProductURL": product.url,
                "ImageURL": product.image_url,
                "Categories": list(product.categories),
                "ProductBrand": product.brand,
            }
        )
        events.append(
            Event(
                metric=ORDERED_PRODUCT,
                properties=properties,
                profile=_profile(who),
                time=when,
                value=value,
                value_currency=order.currency or currency or DEFAULT_CURRENCY,
                unique_id=f"{_identifier(order.id)}_{key}",
            )
        )
    return events


def fulfilled_order(
    order: Any,
    *,
    profile: Mapping[str, Any] | None = None,
    time: datetime | None = None,
    currency: str | None = None,
    **extra: Any,
) -> Event:
    """Fulfilled Order: Placed Order's payload at fulfilment time, plus e.g. TrackingNumber."""
    return _order_event(
        FULFILLED_ORDER,
        order,
        profile=profile,
        time=time,
        currency=currency,
        discount_keys=FULFILLED_DISCOUNT_KEYS,
        extra=extra,
    )


def canceled_order(
    order: Any,
    *,
    reason: str | None = None,
    profile: Mapping[str, Any] | None = None,
    time: datetime | None = None,
    currency: str | None = None,
    **extra: Any,
) -> Event:
    """Canceled Order; unique_id equals Placed Order's so CLV subtracts it."""
    return _order_event(
        CANCELED_ORDER,
        order,
        profile=profile,
        time=time,
        currency=currency,
        discount_keys=CANCELED_DISCOUNT_KEYS,
        reason=reason,
        extra=extra,
    )


def refunded_order(
    order: Any,
    *,
    reason: str | None = None,
    profile: Mapping[str, Any] | None = None,
    time: datetime | None = None,
    currency: str | None = None,
    **extra: Any,
) -> Event:
    """Refunded Order; unique_id equals Placed Order's so CLV subtracts it."""
    return _order_event(
        REFUNDED_ORDER,
        order,
        profile=profile,
        time=time,
        currency=currency,
        discount_keys=REFUNDED_DISCOUNT_KEYS,
        reason=reason,
        extra=extra,
    )


def custom_event(
    metric: str,
    properties: Mapping[str, Any] | None,
    *,
    profile: Mapping[str, Any] | None,
    value: Any = None,
    unique_id: str | None = None,
    time: datetime | None = None,
    currency: str | None = None,
) -> Event:
    """Any other metric. Without a unique_id, the same properties in the same second are one
    event (a double-submitted form), different ones are two."""
    when = _event_time(metric, time)
    if _too_deep(properties):
        raise KlaviyoSchemaError(
            str(metric), "properties", f"nested deeper than {MAX_NESTING} levels (or a cycle)"
        )
    props = _jsonable(dict(properties or {}))
    if unique_id is None:
        unique_id = stable_id(metric, canonical_json(props), int(when.timestamp()))
    return Event(
        metric=metric,
        properties=props,
        profile=_profile(profile),
        time=when,
        value=_money(value),
        value_currency=currency,
        unique_id=unique_id,
    )


# --------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------

RuleKind = Literal["text", "id", "number", "quantity", "strings", "object"]


@dataclass(frozen=True)
class Rule:
    """What one property must hold; ``required`` properties must be present."""

    kind: RuleKind
    required: bool = False


@dataclass(frozen=True)
class MetricSchema:
    """The properties a built-in metric needs for Klaviyo's flows, CLV and segments to read it.

    Klaviyo accepts an event without them but then does not recognise it (seed 000).
    """

    properties: Mapping[str, Rule] = field(default_factory=dict)
    value_required: bool = False
    items_required: bool = False


ITEM_RULES: Mapping[str, Rule] = {
    "ProductID": Rule("id", required=True),
    "ProductName": Rule("text", required=True),
    "Quantity": Rule("quantity", required=True),
    "ItemPrice": Rule("number", required=True),
    "RowTotal": Rule("number", required=True),
    "SKU": Rule("text"),
    "ProductURL": Rule("text"),
    "ImageURL": Rule("text"),
    "ProductCategories": Rule("strings"),
    "Categories": Rule("strings"),
    "Brand": Rule("text"),
}

_ORDER_RULES: Mapping[str, Rule] = {
    "OrderId": Rule("text", required=True),
    "Categories": Rule("strings"),
    "ItemNames": Rule("strings"),
    "Brands": Rule("strings"),
    "DiscountValue": Rule("number"),
    "Discount Value": Rule("number"),
    "BillingAddress": Rule("object"),
    "ShippingAddress": Rule("object"),
}

METRIC_SCHEMAS: Mapping[str, MetricSchema] = {
    VIEWED_PRODUCT: MetricSchema(
        {
            "ProductID": Rule("id", required=True),
            "ProductName": Rule("text", required=True),
            "Price": Rule("number"),
            "CompareAtPrice": Rule("number"),
            "Categories": Rule("strings"),
        }
    ),
    ADDED_TO_CART: MetricSchema(
        {
            "AddedItemProductID": Rule("id", required=True),
            "AddedItemProductName": Rule("text"),
            "AddedItemPrice": Rule("number"),
            "AddedItemQuantity": Rule("quantity"),
            "AddedItemCategories": Rule("strings"),
            "ItemNames": Rule("strings"),
        },
        value_required=True,
        items_required=True,
    ),
    STARTED_CHECKOUT: MetricSchema(
        {"ItemNames": Rule("strings"), "Categories": Rule("strings")},
        value_required=True,
        items_required=True,
    ),
    PLACED_ORDER: MetricSchema(_ORDER_RULES, value_required=True, items_required=True),
    ORDERED_PRODUCT: MetricSchema(
        {
            "OrderId": Rule("text", required=True),
            "ProductID": Rule("id", required=True),
            "ProductName": Rule("text", required=True),
            "Quantity": Rule("quantity"),
            "Categories": Rule("strings"),
        },
        value_required=True,
    ),
    FULFILLED_ORDER: MetricSchema(_ORDER_RULES, value_required=True),
    CANCELED_ORDER: MetricSchema(_ORDER_RULES, value_required=True),
    REFUNDED_ORDER: MetricSchema(_ORDER_RULES, value_required=True),
}
BUILT_IN_METRICS = tuple(METRIC_SCHEMAS)
REQUIRED_PROPERTIES: Mapping[str, tuple[str, ...]] = {
    metric: tuple(name for name, rule in schema.properties.items() if rule.required)
    + (("Items",) if schema.items_required else ())
    for metric, schema in METRIC_SCHEMAS.items()
}


def _describe(value: Any) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text[:40]}{'...' if len(text) > 40 else ''}"


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _rule_problem(kind: RuleKind, value: Any) -> str | None:
    """Why ``value`` does not satisfy ``kind``, or None."""
    if kind == "text":
        ok = isinstance(value, str) and value.strip() != ""
        expected = "a non-empty string"
    elif kind == "id":
        ok = (isinstance(value, str) and value.strip() != "") or (
            isinstance(value, int) and not isinstance(value, bool)
        )
        expected = "a non-empty string or an integer"
    elif kind == "number":
        ok = _is_number(value)
        expected = "a finite number"
    elif kind == "quantity":
        ok = isinstance(value, int) and not isinstance(value, bool) and value > 0
        expected = "an integer above 0"
    elif kind == "strings":
        ok = isinstance(value, list) and all(isinstance(item, str) for item in value)
        expected = "a list of strings"
    else:
        ok = isinstance(value, Mapping)
        expected = "an object"
    return None if ok else f"must be {expected}, got {_describe(value)}"


def _check_rules(
    metric: str, container: Mapping[str, Any], rules: Mapping[str, Rule], prefix: str
) -> None:
    for name, rule in rules.items():
        path = f"{prefix}{name}"
        if name not in container or container[name] is None:
            if rule.required:
                raise KlaviyoSchemaError(metric, path, f"required for {metric}")
            continue
        problem = _rule_problem(rule.kind, container[name])
        if problem:
            raise KlaviyoSchemaError(metric, path, problem)


def _utf8_size(metric: str, value: str, path: str) -> int:
    try:
        return len(value.encode())
    except UnicodeEncodeError:  # a lone surrogate (bytes decoded with surrogateescape, say)
        raise KlaviyoSchemaError(metric, path, "not valid Unicode (a lone surrogate)") from None


def _child_path(path: str, key: str) -> str:
    """``Items[0].ItemPrice``; a key that would read as nothing (blank, dots) is quoted."""
    plain = key.strip() == key and key and "." not in key and "[" not in key
    step = key if plain else f"[{key!r}]"
    if not path:
        return step
    return f"{path}.{step}" if plain else f"{path}{step}"


def _check_json(metric: str, value: Any, path: str, depth: int = 0) -> None:
    """Everything must be plain JSON, numbers finite, strings within Klaviyo's 100 KB."""
    where = path or "properties"
    if value is None or isinstance(value, bool):
        return
    if isinstance(value, str):
        size = _utf8_size(metric, value, where)
        if size > MAX_STRING_BYTES:
            raise KlaviyoSchemaError(
                metric, where, f"string of {size} bytes exceeds {MAX_STRING_BYTES}"
            )
        return
    if isinstance(value, int):
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise KlaviyoSchemaError(metric, where, f"{value} is not a JSON number")
        return
    if isinstance(value, Mapping | list | tuple) and depth >= MAX_NESTING:
        raise KlaviyoSchemaError(
            metric, where, f"nested deeper than {MAX_NESTING} levels (or a cycle)"
        )
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                raise KlaviyoSchemaError(metric, where, f"key {key!r} is not a string")
            if _utf8_size(metric, key, where) > MAX_STRING_BYTES:
                raise KlaviyoSchemaError(metric, where, "a key exceeds 100 KB")
            _check_json(metric, item, _child_path(path, key), depth + 1)
        return
    if isinstance(value, list | tuple):
        for index, item in enumerate(value):
            _check_json(metric, item, f"{path}[{index}]", depth + 1)
        return
    hint = " (convert Decimal to float)" if isinstance(value, Decimal) else ""
    raise KlaviyoSchemaError(metric, where, f"{type(value).__name__} is not JSON{hint}")


def _check_profile(metric: str, profile: Any) -> None:
    if not isinstance(profile, Mapping):
        raise KlaviyoSchemaError(metric, "profile", f"must be a mapping, got {_describe(profile)}")
    for key, value in profile.items():
        _check_profile_entry(metric, key, value)
    _check_json(metric, dict(profile), "profile")
    _check_profile_fields(metric, profile)


def _check_profile_entry(metric: str, key: Any, value: Any) -> None:
    """A known profile attribute holding a string or an object, as Klaviyo types it."""
    if key not in _PROFILE_KEYS:
        raise KlaviyoSchemaError(
            metric, f"profile.{key}", f"not a Klaviyo profile attribute: {key!r}"
        )
    if value is None:
        return
    if key in PROFILE_STRING_KEYS and not isinstance(value, str):
        raise KlaviyoSchemaError(
            metric, f"profile.{key}", f"must be a string, got {_describe(value)}"
        )
    if key in PROFILE_OBJECT_KEYS and not isinstance(value, Mapping):
        raise KlaviyoSchemaError(
            metric, f"profile.{key}", f"must be an object, got {_describe(value)}"
        )


def _check_profile_fields(metric: str, profile: Mapping[str, Any]) -> None:
    """What _check_profile asks of a profile's values once they are known to be plain JSON."""
    if profile.get("location") is not None:
        _check_location(metric, profile["location"])
    if profile.get("meta") is not None:
        _check_meta(metric, profile["meta"])

    email = profile.get("email")
    if email not in (None, "") and not EMAIL_PATTERN.match(email):
        raise KlaviyoSchemaError(metric, "profile.email", f"not an email address: {email!r}")
    phone = profile.get("phone_number")
    if phone not in (None, "") and not E164_PATTERN.match(phone):
        raise KlaviyoSchemaError(
            metric, "profile.phone_number", f"not E.164 (+ and 7 to 15 digits): {phone!r}"
        )
    if any(profile.get(key) not in (None, "") for key in SENDABLE_IDENTIFIERS):
        return
    if profile.get("external_id") not in (None, ""):
        raise KlaviyoSchemaError(
            metric,
            "profile",
            "external_id alone creates a profile that never merges with the shopper's "
            "(a permanent duplicate); send it together with email or phone_number",
        )
    if profile.get("anonymous_id") not in (None, ""):
        raise KlaviyoSchemaError(
            metric,
            "profile",
            "anonymous-only events must not be sent (orphan profiles); park them until the "
            "visitor is known",
        )
    raise KlaviyoSchemaError(
        metric, "profile", "needs one of email, phone_number, _kx or id to identify the profile"
    )


def _check_location(metric: str, location: Mapping[str, Any]) -> None:
    for key, value in location.items():
        path = f"profile.location.{key}"
        if key in LOCATION_STRING_KEYS:
            ok = value is None or isinstance(value, str)
        elif key in LOCATION_COORDINATE_KEYS:
            ok = value is None or isinstance(value, str) or _is_number(value)
        else:
            raise KlaviyoSchemaError(metric, path, f"not a Klaviyo location field: {key!r}")
        if not ok:
            raise KlaviyoSchemaError(metric, path, f"wrong type: {_describe(value)}")


def _check_meta(metric: str, meta: Mapping[str, Any]) -> None:
    for key, value in meta.items():
        path = f"profile.meta.{key}"
        if key not in META_KEYS:
            raise KlaviyoSchemaError(metric, path, f"not a Klaviyo profile meta field: {key!r}")
        if value is None:
            continue
        if not isinstance(value, Mapping):
            raise KlaviyoSchemaError(metric, path, f"must be an object, got {_describe(value)}")
        for operation, argument in value.items():
            if operation == "unset" and key == "patch_properties":
                ok = (
                    argument is None
                    or isinstance(argument, str)
                    or (isinstance(argument, list) and all(isinstance(a, str) for a in argument))
                )
            elif operation in ("append", "unappend"):
                # Only patch_properties' operations are nullable in the schema.
                ok = isinstance(argument, Mapping) or (
                    argument is None and key == "patch_properties"
                )
            else:
                raise KlaviyoSchemaError(metric, f"{path}.{operation}", "unknown operation")
            if not ok:
                raise KlaviyoSchemaError(metric, f"{path}.{operation}", "wrong type")


def _check_metric_name(metric: Any) -> None:
    if not isinstance(metric, str) or not metric.strip():
        raise KlaviyoSchemaError(
            str(metric), "metric", "the metric name must be a non-empty string"
        )
    if len(metric) > MAX_METRIC_NAME:
        raise KlaviyoSchemaError(
            metric,
            "metric",
            f"name of {len(metric)} characters; Klaviyo needs fewer than {MAX_METRIC_NAME + 1}",
        )
    _utf8_size(metric, metric, "metric")


def _check_time(metric: str, when: Any) -> None:
    if not isinstance(when, datetime) or when.tzinfo is None:
        raise KlaviyoSchemaError(
            metric, "time", f"must be an aware datetime, got {_describe(when)}"
        )
    if when <= EARLIEST_TIME:
        raise KlaviyoSchemaError(metric, "time", f"{when.isoformat()} is not after 1990-01-01")
    if when > datetime.now(UTC) + MAX_FUTURE:
        raise KlaviyoSchemaError(
            metric, "time", f"{when.isoformat()} is more than a year in the future"
        )


def _check_properties(metric: str, properties: Any) -> None:
    if not isinstance(properties, Mapping):
        raise KlaviyoSchemaError(
            metric, "properties", f"must be an object, got {_describe(properties)}"
        )
    if len(properties) > MAX_PROPERTIES:
        raise KlaviyoSchemaError(
            metric, "properties", f"{len(properties)} properties; Klaviyo allows {MAX_PROPERTIES}"
        )
    _check_json(metric, dict(properties), "")
    schema = METRIC_SCHEMAS.get(metric)
    if schema is None:
        return
    _check_rules(metric, properties, schema.properties, "")
    items = properties.get("Items")
    if items is None:
        if schema.items_required:
            raise KlaviyoSchemaError(metric, "Items", f"required for {metric}")
        return
    if not isinstance(items, list):
        raise KlaviyoSchemaError(metric, "Items", f"must be a list, got {_describe(items)}")
    if not items:
        if schema.items_required:
            raise KlaviyoSchemaError(metric, "Items", "must not be empty")
        return
    for index, item in enumerate(items):
        if not isinstance(item, Mapping):
            raise KlaviyoSchemaError(metric, f"Items[{index}]", "must be an object")
        _check_rules(metric, item, ITEM_RULES, f"Items[{index}].")


def _check_value(metric: str, event: Event) -> None:
    schema = METRIC_SCHEMAS.get(metric)
    if event.value is None:
        if schema is not None and schema.value_required:
            raise KlaviyoSchemaError(metric, "value", f"required for {metric} (revenue and CLV)")
    elif not _is_number(event.value):
        raise KlaviyoSchemaError(
            metric, "value", f"must be a finite number, got {_describe(event.value)}"
        )
    currency = event.value_currency
    if currency is not None and not (
        isinstance(currency, str) and CURRENCY_PATTERN.match(currency)
    ):
        raise KlaviyoSchemaError(
            metric, "value_currency", f"not an ISO 4217 code (like USD): {currency!r}"
        )


def _validate_event_slow(event: Event) -> None:
    """The reference validator: every value walked one call at a time, the payload serialised.

    :func:`validate_event` must agree with it on every input (accept, or the same error);
    ``tests/test_validate_fast.py`` holds them to that."""
    _check_metric_name(event.metric)
    metric = event.metric
    _check_profile(metric, event.profile)
    _check_time(metric, event.time)
    _check_properties(metric, event.properties)
    _check_value(metric, event)
    if event.unique_id is not None and not (
        isinstance(event.unique_id, str) and event.unique_id.strip()
    ):
        raise KlaviyoSchemaError(
            metric, "unique_id", f"must be a non-empty string: {event.unique_id!r}"
        )
    if event.unique_id is not None:
        _check_json(metric, event.unique_id, "unique_id")
    if not isinstance(event.backfill, bool):
        raise KlaviyoSchemaError(metric, "backfill", "must be true or false")
    _check_payload_size(metric, event)


def _check_payload_size(metric: str, event: Event) -> None:
    size = encoded_size(event.to_payload())
    if size > MAX_PAYLOAD_BYTES:
        raise KlaviyoSchemaError(
            metric, "payload", f"{size} bytes; Klaviyo accepts at most {MAX_PAYLOAD_BYTES}"
        )


# The fast path. validate_event runs on every tracked page, so the common case (exact dicts,
# lists, strings and numbers, as the builders make them) is checked in one loop per container
# instead of one call per value, and the payload's size is bounded instead of serialised. Each
# fast check only ever concludes "passes"; whenever it cannot, the reference check above runs
# in its place, in the same order, so what is accepted and the first error named (metric,
# field, message) are exactly _validate_event_slow's.

_INFINITY = math.inf
_PLAIN_INT_LIMIT = 10**20  # ints inside it are at most 21 characters of JSON
# Bytes a value adds to its container's JSON besides its strings' characters: a float's repr
# (at most 24 characters), an int inside the limit (21), true/false/null (5) or a container's
# brackets (2), plus a comma and a colon, or a string's quotes and the comma.
_BYTES_PER_VALUE = 32
_BYTES_PER_CHARACTER = 6  # compact JSON, ensure_ascii=False: "\u001f" is the longest


def _plain_json_bound(root: dict[Any, Any]) -> int | None:
    """An upper bound of ``root``'s size as compact UTF-8 JSON when one walk proves that
    _check_json passes it, else None (then the reference check decides).

    It proves that when everything is an exact dict with str keys, list, tuple, str, float,
    bool, None or an int of at most 20 digits; no container sits MAX_NESTING deep (so there is
    no cycle either); floats are finite; no string or key holds a lone surrogate or more than
    MAX_STRING_BYTES. Subclasses, Mappings that are not dicts, Decimals and the like give None.
    """
    strings: list[str] = []  # every key and string value, checked together at the end
    add_string = strings.append
    values = 0
    stack: list[tuple[Any, int]] = [(root, 1)]  # a container and the depth of its items
    while stack:
        node, depth = stack.pop()
        if type(node) is dict:
            for key in node:
                if type(key) is not str:
                    return None
            strings.extend(node)
            node = node.values()
        values += len(node)
        for item in node:
            kind = type(item)
            if kind is str:
                add_string(item)
            elif kind is float:
                if not -_INFINITY < item < _INFINITY:
                    return None
            elif kind is dict or kind is list or kind is tuple:
                if depth >= MAX_NESTING:
                    return None
                stack.append((item, depth + 1))
            elif kind is int:
                if not -_PLAIN_INT_LIMIT < item < _PLAIN_INT_LIMIT:
                    return None  # (str() refuses ints past 4300 digits: the exact path says so)
            elif item is not None and kind is not bool:
                return None
    text = "".join(strings)
    ascii_only = text.isascii()  # (constant time in CPython)
    if ascii_only:
        size = len(text)
    else:
        try:
            size = len(text.encode())  # UTF-8 refuses any surrogate code point
        except UnicodeEncodeError:
            return None
    if size > MAX_STRING_BYTES:  # only then can one string be over the limit
        if ascii_only:
            longest = max(map(len, strings))
        else:
            longest = max(len(string.encode()) for string in strings)
        if longest > MAX_STRING_BYTES:
            return None
    return 2 + _BYTES_PER_CHARACTER * size + 2 * len(strings) + _BYTES_PER_VALUE * values


_CompiledRules = tuple[tuple[str, RuleKind, bool], ...]
_compiled_rules: dict[int, tuple[Mapping[str, Rule], _CompiledRules]] = {}


def _rules_of(rules: Mapping[str, Rule]) -> _CompiledRules:
    """``rules`` as (name, kind, required) triples, compiled once per rule table (the tables
    are constants; a table replaced by another one is compiled afresh)."""
    cached = _compiled_rules.get(id(rules))
    if cached is None or cached[0] is not rules:
        cached = (rules, tuple((name, rule.kind, rule.required) for name, rule in rules.items()))
        _compiled_rules[id(rules)] = cached
    return cached[1]


def _broken_rule(metric: str, container: dict[str, Any], rules: _CompiledRules) -> Any:
    """_check_rules' first failure in an exact dict as (name, message), or None."""
    for name, kind, required in rules:
        value = container.get(name)  # an exact dict: absent and None read alike
        if value is None:
            if required:
                return name, f"required for {metric}"
            continue
        # Exact types that plainly satisfy the rule; anything else asks _rule_problem.
        kind_of = type(value)
        if kind_of is str:
            if (kind == "text" or kind == "id") and value.strip():
                continue
        elif kind_of is float:
            if kind == "number" and -_INFINITY < value < _INFINITY:
                continue
        elif kind_of is int:
            if kind == "id" or (kind == "quantity" and value > 0):
                continue
        elif kind_of is list:
            if kind == "strings":
                for item in value:
                    if type(item) is not str:
                        break
                else:
                    continue
        elif kind_of is dict and kind == "object":
            continue
        problem = _rule_problem(kind, value)
        if problem:
            return name, problem
    return None


def _check_profile_fast(metric: str, profile: Any) -> int | None:
    """_check_profile; returns an upper bound of the profile's compact JSON size, or None."""
    if type(profile) is not dict:
        _check_profile(metric, profile)
        return None
    for key, value in profile.items():
        if type(key) is not str:
            _check_profile(metric, profile)
            return None
        _check_profile_entry(metric, key, value)
    bound = _plain_json_bound(profile)
    if bound is None:
        _check_json(metric, dict(profile), "profile")
    # The usual profile, a valid email (and phone), passes _check_profile_fields: the email
    # alone identifies it. Anything else is checked by it.
    get = profile.get
    email = get("email")
    phone = get("phone_number")
    if not (
        type(email) is str
        and email
        and EMAIL_PATTERN.match(email)
        and (phone is None or (type(phone) is str and (not phone or E164_PATTERN.match(phone))))
        and get("location") is None
        and get("meta") is None
    ):
        _check_profile_fields(metric, profile)
    return bound


def _check_properties_fast(metric: str, properties: Any) -> int | None:
    """_check_properties; returns an upper bound of the properties' compact JSON size, or
    None."""
    if type(properties) is not dict or len(properties) > MAX_PROPERTIES:
        _check_properties(metric, properties)
        return None
    bound = _plain_json_bound(properties)
    if bound is None:
        _check_json(metric, dict(properties), "")
    schema = METRIC_SCHEMAS.get(metric)
    if schema is None:
        return bound
    broken = _broken_rule(metric, properties, _rules_of(schema.properties))
    if broken is not None:
        raise KlaviyoSchemaError(metric, *broken)
    items = properties.get("Items")
    if items is None:
        if schema.items_required:
            raise KlaviyoSchemaError(metric, "Items", f"required for {metric}")
        return bound
    if not isinstance(items, list):
        raise KlaviyoSchemaError(metric, "Items", f"must be a list, got {_describe(items)}")
    if not items:
        if schema.items_required:
            raise KlaviyoSchemaError(metric, "Items", "must not be empty")
        return bound
    item_rules = _rules_of(ITEM_RULES)
    for index, item in enumerate(items):
        if type(item) is dict:
            broken = _broken_rule(metric, item, item_rules)
            if broken is not None:
                name, message = broken
                raise KlaviyoSchemaError(metric, f"Items[{index}].{name}", message)
        elif isinstance(item, Mapping):
            _check_rules(metric, item, ITEM_RULES, f"Items[{index}].")
        else:
            raise KlaviyoSchemaError(metric, f"Items[{index}]", "must be an object")
    return bound


# What the Create Event body (Event.to_payload, serialised by encoded_size) adds to the JSON of
# the properties P and of the profile, at most:
#   {"data":{"type":"event","attributes":{"properties":P,"time":"T","value":V,
#   "value_currency":"C","unique_id":"U","backfill":true,"metric":{"data":{"type":"metric",
#   "attributes":{"name":"M"}}},"profile":{"data":{"type":"profile","id":I,"attributes":A}}}}}
# is under 300 bytes of fixed text besides P, T, V, C, U, M, I and A. T, an aware datetime's
# isoformat, is at most 42 characters (microseconds, an offset with seconds and microseconds);
# V, a finite int or float, at most 310 (|int| < 2**1024 has 309 digits). C, U and M are
# strings, each once, at most _BYTES_PER_CHARACTER per character (validate_event adds those).
# The profile part holds the id entry I and the attributes A, which are the profile's entries
# minus those with None or "" and minus the id: a subset of the profile's own JSON entries,
# spelled identically, plus at most one more comma. So the body is at most the two bounds,
# the strings' characters and this.
_PAYLOAD_OVERHEAD_BYTES = 1024
_PLAIN_OPTIONAL_STR = frozenset({str, type(None)})
_PLAIN_OPTIONAL_NUMBER = frozenset({int, float, type(None)})


def validate_event(event: Event) -> None:
    """Raise KlaviyoSchemaError for an event Klaviyo would reject, misread or not recognise."""
    _check_metric_name(event.metric)
    metric = event.metric
    profile_bound = _check_profile_fast(metric, event.profile)
    _check_time(metric, event.time)
    properties_bound = _check_properties_fast(metric, event.properties)
    _check_value(metric, event)
    unique_id = event.unique_id
    if unique_id is not None:
        if not (isinstance(unique_id, str) and unique_id.strip()):
            raise KlaviyoSchemaError(
                metric, "unique_id", f"must be a non-empty string: {unique_id!r}"
            )
        # An ASCII str is valid UTF-8 of its length; anything else is measured by _check_json.
        if (
            type(unique_id) is not str
            or not unique_id.isascii()
            or len(unique_id) > MAX_STRING_BYTES
        ):
            _check_json(metric, unique_id, "unique_id")
    if not isinstance(event.backfill, bool):
        raise KlaviyoSchemaError(metric, "backfill", "must be true or false")
    # The body's size is bounded from the two walks; serialised only when the bound is over
    # the limit, or when a value is of a type whose JSON the bound does not cover.
    currency = event.value_currency
    if (
        properties_bound is not None
        and profile_bound is not None
        and type(event) is Event
        and type(event.time) is datetime
        and type(metric) is str
        and type(unique_id) in _PLAIN_OPTIONAL_STR
        and type(currency) in _PLAIN_OPTIONAL_STR
        and type(event.value) in _PLAIN_OPTIONAL_NUMBER
    ):
        characters = len(metric) + len(unique_id or "") + len(currency or "")
        bound = (
            properties_bound
            + profile_bound
            + _BYTES_PER_CHARACTER * characters
            + _PAYLOAD_OVERHEAD_BYTES
        )
        if bound <= MAX_PAYLOAD_BYTES:
            return
    _check_payload_size(metric, event)


# --------------------------------------------------------------------------------------------
# Bulk Create Events
# --------------------------------------------------------------------------------------------


def _profile_groups(events: Sequence[Event]) -> list[list[int]]:
    """Indexes of ``events`` per distinct profile, profiles and events in first-seen order."""
    groups: dict[str, list[int]] = {}
    for index, event in enumerate(events):
        groups.setdefault(event.profile_key(), []).append(index)
    return list(groups.values())


def _merged_profile(events: Sequence[Event], indexes: Sequence[int]) -> dict[str, Any]:
    """One profile for a bulk entry: the first event's attributes, completed by later ones."""
    merged: dict[str, Any] = {}
    for index in indexes:
        for key, value in events[index].profile.items():
            if _present(value) and key not in merged:
                merged[key] = value
    return merged


def _bulk_entry(events: Sequence[Event], indexes: Sequence[int]) -> dict[str, Any]:
    attributes: dict[str, Any] = {
        "profile": {"data": _profile_data(_merged_profile(events, indexes), meta_inside=False)},
        "events": {
            "data": [{"type": "event", "attributes": events[i].event_attributes()} for i in indexes]
        },
    }
    if all(events[i].backfill for i in indexes):
        attributes["backfill"] = True
    return {"type": "event-bulk-create", "attributes": attributes}


def _bulk_envelope(entries: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "data": {
            "type": "event-bulk-create-job",
            "attributes": {"events-bulk-create": {"data": entries}},
        }
    }


def _first_repeat(events: Sequence[Event]) -> tuple[int, int] | None:
    seen: dict[tuple[str, str, str], int] = {}
    for index, event in enumerate(events):
        key = event.dedup_key()
        if key in seen:
            return seen[key], index
        seen[key] = index
    return None


def bulk_payload(events: Sequence[Event]) -> dict[str, Any]:
    """The Bulk Create Events body: one entry per distinct profile, in first-seen order.

    Refuses what Klaviyo would fail as a whole: no events, more than 1,000, or one
    (profile, metric, unique_id) twice. :func:`split_batches` produces batches that pass.
    """
    if not events:
        raise KlaviyoSchemaError(BULK_OPERATION, "events", "no events to send")
    if len(events) > MAX_BULK_EVENTS:
        raise KlaviyoSchemaError(
            BULK_OPERATION, "events", f"{len(events)} events; at most {MAX_BULK_EVENTS} per request"
        )
    repeat = _first_repeat(events)
    if repeat is not None:
        first, again = repeat
        raise KlaviyoSchemaError(
            BULK_OPERATION,
            "events",
            f"events {first} and {again} share profile, metric ({events[again].metric!r}) and "
            f"unique_id ({events[again].unique_id!r}); Klaviyo would fail the whole request",
        )
    return _bulk_envelope([_bulk_entry(events, group) for group in _profile_groups(events)])


def _parse_bulk_pointer(pointer: str) -> tuple[int, int | None] | None:
    """(profile entry, event within it or None) named by a JSON pointer into a bulk body."""
    tokens = [t.replace("~1", "/").replace("~0", "~") for t in pointer.strip().split("/")]
    if "events-bulk-create" not in tokens:
        return None
    rest = tokens[tokens.index("events-bulk-create") + 1 :]
    if len(rest) < 2 or rest[0] != "data" or not rest[1].isdigit():
        return None
    entry = int(rest[1])
    rest = rest[2:]
    if rest[:3] == ["attributes", "events", "data"] and len(rest) >= 4:
        return (entry, int(rest[3])) if rest[3].isdigit() else None
    return entry, None


def events_at_pointer(events: Sequence[Event], pointer: str) -> list[int]:
    """Indexes in ``events`` (as passed to bulk_payload) that an error pointer covers: one event,
    or every event of a profile entry. Empty when the pointer names nothing specific."""
    position = _parse_bulk_pointer(pointer)
    if position is None:
        return []
    entry, event_index = position
    groups = _profile_groups(events)
    if entry >= len(groups):
        return []
    group = groups[entry]
    if event_index is None:
        return list(group)
    return [group[event_index]] if event_index < len(group) else []


def locate_bulk_pointer(events: Sequence[Event], pointer: str) -> int | None:
    """The index of the event an error pointer names (a profile's first event for a pointer
    to the profile entry), or None."""
    covered = events_at_pointer(events, pointer)
    return covered[0] if covered else None


@dataclass
class _Batch:
    indexes: list[int] = field(default_factory=list)
    keys: set[tuple[str, str, str]] = field(default_factory=set)
    profiles: dict[str, set[str]] = field(default_factory=dict)
    size: int = 0


# Room for `,"backfill":true` on an entry and separators: sizes are upper bounds.
ENTRY_SLACK_BYTES = 32


def _added_bytes(batch: _Batch, event: Event, profile_key: str) -> int:
    """Upper bound of the bytes ``event`` adds to ``batch``'s bulk body."""
    event_bytes = encoded_size({"type": "event", "attributes": event.event_attributes()}) + 1
    known = batch.profiles.get(profile_key)
    if known is None:
        skeleton = {
            "type": "event-bulk-create",
            "attributes": {
                "profile": {"data": _profile_data(event.profile, meta_inside=False)},
                "events": {"data": []},
            },
        }
        return event_bytes + encoded_size(skeleton) + 1 + ENTRY_SLACK_BYTES
    # An existing entry only grows by the profile attributes this event adds.
    new_attributes = {k: v for k, v in event.profile.items() if _present(v) and k not in known}
    return event_bytes + (encoded_size(new_attributes) + 1 if new_attributes else 0)


def split_batches(
    events: Sequence[Event],
    *,
    max_events: int = MAX_BULK_EVENTS,
    max_bytes: int = MAX_BULK_BYTES,
) -> list[list[Event]]:
    """Batches for Bulk Create Events: within the count and byte limits and never one
    (profile, metric, unique_id) twice (a repeat goes to a later batch, where Klaviyo skips it).

    Each event goes into the first batch it fits, so repeats do not fragment the rest.
    """
    envelope = encoded_size(_bulk_envelope([]))
    batches: list[_Batch] = []
    first_open = 0  # batches before this one are full by count
    for index, event in enumerate(events):
        key = event.dedup_key()
        profile_key = key[0]
        placed = False
        for batch in batches[first_open:]:
            if len(batch.indexes) >= max_events or key in batch.keys:
                continue
            added = _added_bytes(batch, event, profile_key)
            if batch.size + added > max_bytes:
                continue
            _place(batch, index, event, key, added)
            placed = True
            break
        if not placed:
            batch = _Batch(size=envelope)
            added = _added_bytes(batch, event, profile_key)
            if envelope + added > max_bytes:
                raise KlaviyoSchemaError(
                    event.metric,
                    "payload",
                    f"one event needs {envelope + added} bytes, "
                    f"more than a bulk request's {max_bytes}",
                )
            _place(batch, index, event, key, added)
            batches.append(batch)
        while first_open < len(batches) and len(batches[first_open].indexes) >= max_events:
            first_open += 1
    return [[events[i] for i in batch.indexes] for batch in batches]


def _place(batch: _Batch, index: int, event: Event, key: tuple[str, str, str], added: int) -> None:
    batch.indexes.append(index)
    batch.keys.add(key)
    batch.profiles.setdefault(key[0], set()).update(
        k for k, v in event.profile.items() if _present(v)
    )
    batch.size += added
