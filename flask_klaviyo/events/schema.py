"""The property rules per built-in metric: what Klaviyo's flows, CLV and segments need to
recognise an event (seed 000), and what the account notifications' flow emails read (seed 001,
"Account Notifications"). Data only; :mod:`.validate` and :mod:`.validate_fast` apply it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from .model import (
    ACTIVE_ON_SITE,
    ADDED_TO_CART,
    CANCELED_ORDER,
    CREATED_ACCOUNT,
    FAILED_PAYMENT,
    FULFILLED_ORDER,
    ORDERED_PRODUCT,
    PLACED_ORDER,
    REFUNDED_ORDER,
    RESET_PASSWORD,
    SHIPPING_UPDATE,
    STARTED_CHECKOUT,
    UPDATED_ACCOUNT,
    VIEWED_PRODUCT,
)

__all__ = [
    "BUILT_IN_METRICS",
    "ITEM_RULES",
    "METRIC_SCHEMAS",
    "REQUIRED_PROPERTIES",
    "MetricSchema",
    "Rule",
    "RuleKind",
]

# "url": an absolute http(s) URL (a link a flow email puts in front of the shopper).
RuleKind = Literal["text", "id", "number", "quantity", "strings", "object", "url"]


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
    # Seed 001's order notifications: the order's information plus why the payment failed
    # (and what to do next), or which shipping status was reached.
    FAILED_PAYMENT: MetricSchema(
        {
            **_ORDER_RULES,
            "PaymentFailure": Rule("text", required=True),
            "PaymentNextSteps": Rule("text"),
        },
        value_required=True,
    ),
    SHIPPING_UPDATE: MetricSchema(
        {**_ORDER_RULES, "UpdateType": Rule("text", required=True)}, value_required=True
    ),
    # Seed 001 shows Created Account with the merchant's own properties only ("{...}").
    CREATED_ACCOUNT: MetricSchema(),
    # Seed 001's table for Updated Account, names and types exactly.
    UPDATED_ACCOUNT: MetricSchema(
        {
            "UpdateType": Rule("text", required=True),
            "UpdatedProperties": Rule("strings", required=True),
            "OldValues": Rule("object"),
            "NewValues": Rule("object", required=True),
        }
    ),
    # The link the flow email sends the shopper to: absolute, http(s), nothing else.
    RESET_PASSWORD: MetricSchema({"PasswordResetLink": Rule("url", required=True)}),
    # klaviyo.js's own Active on Site carries the page's URL as "page".
    ACTIVE_ON_SITE: MetricSchema({"page": Rule("url")}),
}
BUILT_IN_METRICS = tuple(METRIC_SCHEMAS)
REQUIRED_PROPERTIES: Mapping[str, tuple[str, ...]] = {
    metric: tuple(name for name, rule in schema.properties.items() if rule.required)
    + (("Items",) if schema.items_required else ())
    for metric, schema in METRIC_SCHEMAS.items()
}
