"""Where and how workers send: from the Flask app's config when the worker runs in one
(``flask klaviyo worker``), else from ``KLAVIYO_*`` environment variables (a plain
``rq worker``), parsed and checked by the one settings table. Never part of a job's arguments,
so the API key stays out of Redis.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from flask import current_app, has_app_context

from .. import _settings
from .._settings import (
    DEFAULT_API_URL,
    DEFAULT_DRAIN_CONCURRENCY,
    DEFAULT_RECLAIM_AFTER,
    DEFAULT_RETRY_HORIZON,
    DEFAULT_REVISION,
    DEFAULT_TIMEOUT,
)
from ..client import KlaviyoClient, get_client
from ..inspect.journal import inspector_on
from ..ratelimit import DEFAULT_LIMITS, Window

__all__ = ["DEFAULT_RETRY_HORIZON", "RECLAIM_IDLE_MS", "DeliverySettings", "parse_rate_limits"]

RECLAIM_IDLE_MS = int(DEFAULT_RECLAIM_AFTER * 1000)  # a drain's entries untouched this long: dead


@dataclass(frozen=True)
class DeliverySettings:
    """Where and how to send; never part of a job's arguments (the key stays out of Redis)."""

    api_key: str | None
    api_url: str = DEFAULT_API_URL
    revision: str = DEFAULT_REVISION
    timeout: float = DEFAULT_TIMEOUT
    rate_limits: Mapping[str, tuple[Window, ...]] | None = None
    drain_concurrency: int = DEFAULT_DRAIN_CONCURRENCY
    drain_batch: int | None = None  # None: the drain's batch (1,000, Klaviyo's bulk maximum)
    retry_horizon: float = DEFAULT_RETRY_HORIZON  # seconds of failures before a dead letter
    reclaim_after: float | None = None  # None: RECLAIM_IDLE_MS
    inspector: bool = False  # KLAVIYO_INSPECTOR: drains journal what they sent (dev only)

    @classmethod
    def load(cls) -> DeliverySettings:
        """From the Flask app when the worker runs in one (checked at ``init_app``), else from
        the environment (checked here: a bad value raises KlaviyoConfigError naming the key)."""
        config: dict[str, Any] = (
            dict(current_app.config) if has_app_context() else _settings.from_environ()
        )
        _settings.apply_defaults(config)
        return cls(
            api_key=config["KLAVIYO_PRIVATE_API_KEY"],
            api_url=config["KLAVIYO_API_URL"],
            revision=config["KLAVIYO_REVISION"],
            timeout=float(config["KLAVIYO_TIMEOUT"]),
            rate_limits=parse_rate_limits(config["KLAVIYO_RATE_LIMITS"]),
            drain_concurrency=config["KLAVIYO_DRAIN_CONCURRENCY"],
            drain_batch=config["KLAVIYO_DRAIN_BATCH"],
            retry_horizon=config["KLAVIYO_RETRY_HORIZON"],
            reclaim_after=config["KLAVIYO_RECLAIM_AFTER"],
            inspector=inspector_on(config),
        )

    def reclaim_idle_ms(self) -> int:
        """How long an entry a drain took may stay unacknowledged before another reclaims it."""
        return RECLAIM_IDLE_MS if self.reclaim_after is None else int(self.reclaim_after * 1000)

    def client(self) -> KlaviyoClient:
        return get_client(
            self.api_key or "",
            base_url=self.api_url,
            revision=self.revision,
            timeout=self.timeout,
        )


def parse_rate_limits(raw: Any) -> dict[str, tuple[Window, ...]] | None:
    """``KLAVIYO_RATE_LIMITS`` (``{endpoint: [[limit, seconds], ...]}``, or its JSON) over
    Klaviyo's published limits, as windows; None when unset."""
    if raw in (None, ""):
        return None
    data = json.loads(raw) if isinstance(raw, str) else raw
    limits = dict(DEFAULT_LIMITS)
    for endpoint, windows in dict(data).items():
        limits[endpoint] = tuple(Window(int(limit), float(period)) for limit, period in windows)
    return limits
