"""Where and how workers send: from the Flask app's config when the worker runs in one
(``flask klaviyo worker``), else from ``KLAVIYO_*`` environment variables (a plain
``rq worker``). Never part of a job's arguments, so the API key stays out of Redis.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from flask import current_app, has_app_context

from ..client import DEFAULT_API_URL, DEFAULT_REVISION, KlaviyoClient, get_client
from ..events import MAX_BULK_EVENTS
from ..ratelimit import DEFAULT_LIMITS, Window

__all__ = ["DeliverySettings", "parse_rate_limits", "seconds_setting"]

RECLAIM_IDLE_MS = 20_000  # entries a worker took this long ago without acking: it died
DEFAULT_DRAIN_CONCURRENCY = 4  # drain jobs at once on a backlog (fanned out by the drains)
# An event that keeps failing (429/5xx/timeouts) this long becomes a dead letter with the last
# error instead of being retried forever (KLAVIYO_RETRY_HORIZON, seconds).
DEFAULT_RETRY_HORIZON = 6 * 3600.0


@dataclass(frozen=True)
class DeliverySettings:
    """Where and how to send; never part of a job's arguments (the key stays out of Redis)."""

    api_key: str | None
    api_url: str = DEFAULT_API_URL
    revision: str = DEFAULT_REVISION
    timeout: float = 10.0
    rate_limits: Mapping[str, tuple[Window, ...]] | None = None
    drain_concurrency: int = DEFAULT_DRAIN_CONCURRENCY
    drain_batch: int | None = None  # None: DRAIN_BATCH (1,000, Klaviyo's bulk maximum)
    retry_horizon: float = DEFAULT_RETRY_HORIZON  # seconds of failures before a dead letter
    reclaim_after: float | None = None  # None: RECLAIM_IDLE_MS

    @classmethod
    def load(cls) -> DeliverySettings:
        """From the Flask app when the worker runs in one, else from the environment."""
        source: Mapping[str, Any] = current_app.config if has_app_context() else os.environ
        return cls(
            api_key=source.get("KLAVIYO_PRIVATE_API_KEY"),
            api_url=source.get("KLAVIYO_API_URL") or DEFAULT_API_URL,
            revision=source.get("KLAVIYO_REVISION") or DEFAULT_REVISION,
            timeout=float(source.get("KLAVIYO_TIMEOUT") or 10.0),
            rate_limits=parse_rate_limits(source.get("KLAVIYO_RATE_LIMITS")),
            drain_concurrency=_whole(
                source.get("KLAVIYO_DRAIN_CONCURRENCY"),
                "KLAVIYO_DRAIN_CONCURRENCY",
                DEFAULT_DRAIN_CONCURRENCY,
                high=64,
            ),
            drain_batch=_whole(
                source.get("KLAVIYO_DRAIN_BATCH"), "KLAVIYO_DRAIN_BATCH", None, high=MAX_BULK_EVENTS
            ),
            retry_horizon=seconds_setting(
                source.get("KLAVIYO_RETRY_HORIZON"), "KLAVIYO_RETRY_HORIZON", DEFAULT_RETRY_HORIZON
            ),
            reclaim_after=seconds_setting(
                source.get("KLAVIYO_RECLAIM_AFTER"), "KLAVIYO_RECLAIM_AFTER", None, zero=True
            ),
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


def _whole(raw: Any, name: str, default: int | None, *, high: int) -> int | None:
    """A whole number from 1 to ``high`` in config or the environment (unset: ``default``)."""
    if raw in (None, ""):
        return default
    value = None
    if isinstance(raw, int) and not isinstance(raw, bool):
        value = raw
    elif isinstance(raw, str) and raw.strip().isdigit():
        value = int(raw)
    if value is None or not 1 <= value <= high:
        raise ValueError(f"{name} must be a whole number from 1 to {high}, got {raw!r}")
    return value


def seconds_setting(raw: Any, name: str, default: Any, *, zero: bool = False) -> Any:
    """A number of seconds (> 0, or >= 0 with ``zero``) from config or the environment, where
    it may be a numeric string; unset: ``default``."""
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        return default
    value = None
    if isinstance(raw, int | float) and not isinstance(raw, bool):
        value = float(raw)
    elif isinstance(raw, str):
        with contextlib.suppress(ValueError):
            value = float(raw)
    if value is None or not math.isfinite(value) or value < 0 or (value == 0 and not zero):
        least = ">= 0" if zero else "> 0"
        raise ValueError(f"{name} must be a number of seconds {least}, got {raw!r}")
    return value


def parse_rate_limits(raw: Any) -> dict[str, tuple[Window, ...]] | None:
    """``{"bulk_create_events": [[10, 1], [150, 60]], ...}`` (a mapping or its JSON) or None.

    Accounts with other limits set ``KLAVIYO_RATE_LIMITS``; endpoints not named keep Klaviyo's
    published defaults.
    """
    if raw in (None, ""):
        return None
    data = json.loads(raw) if isinstance(raw, str) else raw
    limits = dict(DEFAULT_LIMITS)
    for endpoint, windows in dict(data).items():
        limits[endpoint] = tuple(Window(int(limit), float(period)) for limit, period in windows)
    return limits
