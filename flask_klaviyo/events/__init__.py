"""Klaviyo's built-in ecommerce metrics, built from the storefront's models, and checked before
anything is queued.

The property names are Klaviyo's own, exactly as its integration guide spells them (seed 001;
Viewed Product also seed 003). Every event carries a deterministic ``unique_id`` so retries,
replays and the in-page bridge never count twice (DESIGN.md, "Stable event IDs").

Builders never validate; :func:`validate_event` does, once, and raises
:class:`~flask_klaviyo.exceptions.KlaviyoSchemaError` naming the metric and the exact field.
An event it accepts also fits Klaviyo's OpenAPI request schema.

The package, one concern per module, data walking down the list (nothing imports upward)::

    ids            canonical JSON, stable_id (the deterministic unique_id), encoded_size
    model          Event, as_utc, metric names, Klaviyo's limits, the profile resource object
    values         storefront values into JSON (money, ids, dates), shared by the builders
    browse         Viewed Product, Added to Cart, Started Checkout
    orders         Placed Order, Ordered Product, Fulfilled / Canceled / Refunded Order
                   (partial ones too: the unique_id rule)
    transactional  Failed Payment, Shipping Update
    account        Created Account, Updated Account, Reset Password
    onsite         Active on Site from the server (once per visit)
    custom         custom_event: any other metric
    schema         Rule, MetricSchema: the properties each built-in metric needs
    validate       the reference validator (every value walked, the payload serialised)
    validate_fast  validate_event, the request path's validator, proved equal to the reference
    bulk           Bulk Create Events: bodies (from Events or raw outbox entries), batches,
                   error pointers
"""

from __future__ import annotations

# Besides __all__, importable from here as before (the "X as X" lines): events' own constants
# MAX_NESTING and ITEM_RULES.
from ..identity.identifiers import mask_email, mask_phone, mask_profile
from .account import created_account, reset_password, updated_account
from .browse import added_to_cart, started_checkout, viewed_product
from .bulk import (
    bulk_payload,
    events_at_pointer,
    locate_bulk_pointer,
    raw_bulk_payload,
    split_batches,
)
from .custom import custom_event
from .ids import canonical_json, encoded_size, stable_id
from .model import (
    ACTIVE_ON_SITE,
    ADDED_TO_CART,
    CANCELED_ORDER,
    CREATED_ACCOUNT,
    DEFAULT_CURRENCY,
    FAILED_PAYMENT,
    FULFILLED_ORDER,
    MAX_BULK_BYTES,
    MAX_BULK_EVENTS,
    MAX_METRIC_NAME,
    MAX_PAYLOAD_BYTES,
    MAX_PROPERTIES,
    MAX_STRING_BYTES,
    ORDERED_PRODUCT,
    PLACED_ORDER,
    REFUNDED_ORDER,
    RESET_PASSWORD,
    SHIPPING_UPDATE,
    STARTED_CHECKOUT,
    UPDATED_ACCOUNT,
    VIEWED_PRODUCT,
    Event,
    as_utc,
)
from .model import MAX_NESTING as MAX_NESTING
from .onsite import active_on_site
from .orders import (
    adjustment_unique_id,
    canceled_order,
    fulfilled_order,
    ordered_products,
    placed_order,
    refunded_order,
)
from .schema import BUILT_IN_METRICS, METRIC_SCHEMAS, REQUIRED_PROPERTIES, MetricSchema, Rule
from .schema import ITEM_RULES as ITEM_RULES
from .transactional import SHIPPING_STATUSES, failed_payment, shipping_update
from .validate_fast import validate_event

__all__ = [
    "ACTIVE_ON_SITE",
    "ADDED_TO_CART",
    "BUILT_IN_METRICS",
    "CANCELED_ORDER",
    "CREATED_ACCOUNT",
    "DEFAULT_CURRENCY",
    "FAILED_PAYMENT",
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
    "RESET_PASSWORD",
    "SHIPPING_STATUSES",
    "SHIPPING_UPDATE",
    "STARTED_CHECKOUT",
    "UPDATED_ACCOUNT",
    "VIEWED_PRODUCT",
    "Event",
    "MetricSchema",
    "Rule",
    "active_on_site",
    "added_to_cart",
    "adjustment_unique_id",
    "as_utc",
    "bulk_payload",
    "canceled_order",
    "canonical_json",
    "created_account",
    "custom_event",
    "encoded_size",
    "events_at_pointer",
    "failed_payment",
    "fulfilled_order",
    "locate_bulk_pointer",
    "mask_email",
    "mask_phone",
    "mask_profile",
    "ordered_products",
    "placed_order",
    "raw_bulk_payload",
    "refunded_order",
    "reset_password",
    "shipping_update",
    "split_batches",
    "stable_id",
    "started_checkout",
    "updated_account",
    "validate_event",
    "viewed_product",
]
