"""flask-klaviyo: server-side Klaviyo tracking for Flask storefronts.

The shopper's funnel reaches Klaviyo from the server, under the right profile, exactly once.
"""

from __future__ import annotations

from .capture import tracks
from .exceptions import (
    KlaviyoAPIError,
    KlaviyoAuthError,
    KlaviyoBadRequest,
    KlaviyoClientError,
    KlaviyoConfigError,
    KlaviyoDeliveryError,
    KlaviyoError,
    KlaviyoRateLimited,
    KlaviyoSchemaError,
    KlaviyoServerError,
    KlaviyoTransportError,
)
from .extension import Klaviyo

__all__ = [
    "Klaviyo",
    "KlaviyoAPIError",
    "KlaviyoAuthError",
    "KlaviyoBadRequest",
    "KlaviyoClientError",
    "KlaviyoConfigError",
    "KlaviyoDeliveryError",
    "KlaviyoError",
    "KlaviyoRateLimited",
    "KlaviyoSchemaError",
    "KlaviyoServerError",
    "KlaviyoTransportError",
    "tracks",
]
