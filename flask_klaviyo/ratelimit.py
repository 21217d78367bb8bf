"""A rate limiter shared through Redis by every worker on every machine.

Klaviyo limits each endpoint with two windows at once — a burst per second and a steady rate per
minute (Bulk Create Events: 10/s and 150/min; Create Event: 350/s and 3,500/min). Each window is
a GCRA (generic cell rate algorithm) cell kept in Redis; one Lua script checks and takes a slot
in every window atomically, on Redis's own clock, so workers on machines with skewed clocks
still share one budget. Klaviyo's own word wins over our model of it: a 429's ``Retry-After``
or ``RateLimit-Remaining: 0`` blocks the endpoint for everyone until the given time.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import redis

from .delivery import keys, scripts

__all__ = ["DEFAULT_LIMITS", "RateLimiter", "Window"]


@dataclass(frozen=True)
class Window:
    """``limit`` requests per ``period`` seconds."""

    limit: int
    period: float

    def __post_init__(self) -> None:
        if self.limit < 1 or self.period <= 0:
            raise ValueError(f"a rate window needs limit >= 1 and period > 0, got {self}")


# Klaviyo's published limits, burst per second and steady per minute, by endpoint (named after
# its OpenAPI document). Operation kinds name their endpoint; KLAVIYO_RATE_LIMITS overrides.
_PUBLISHED: dict[str, tuple[int, int]] = {
    "create_event": (350, 3500),
    "bulk_create_events": (10, 150),
    "create_or_update_profile": (75, 750),
    "update_profile": (75, 750),
    "bulk_import_profiles": (10, 150),
    "get_bulk_import_profiles_job": (10, 150),
    "bulk_subscribe_profiles": (75, 750),
    "bulk_unsubscribe_profiles": (75, 750),
    "request_profile_deletion": (3, 60),
    "create_back_in_stock_subscription": (350, 3500),
    "bulk_create_catalog_items": (75, 750),
    "bulk_update_catalog_items": (75, 750),
    "bulk_delete_catalog_items": (75, 750),
    "bulk_create_catalog_variants": (75, 750),
    "bulk_update_catalog_variants": (75, 750),
    "bulk_delete_catalog_variants": (75, 750),
    "bulk_create_catalog_categories": (75, 750),
    "bulk_update_catalog_categories": (75, 750),
    "bulk_delete_catalog_categories": (75, 750),
    "get_bulk_create_catalog_items_job": (75, 750),
    "get_bulk_update_catalog_items_job": (75, 750),
    "get_bulk_delete_catalog_items_job": (350, 3500),
    "get_catalog_items": (350, 3500),
    "get_mapped_metrics": (3, 60),
    "update_mapped_metric": (1, 15),
    "get_metrics": (10, 150),
}
DEFAULT_LIMITS: dict[str, tuple[Window, ...]] = {
    endpoint: (Window(burst, 1.0), Window(steady, 60.0))
    for endpoint, (burst, steady) in _PUBLISHED.items()
}
# Update Mapped Metric also has a daily window: 30 a day.
DEFAULT_LIMITS["update_mapped_metric"] += (Window(30, 86400.0),)


class RateLimiter:
    """``acquire(endpoint)`` waits until every window of that endpoint has room, then takes it."""

    def __init__(
        self,
        connection: redis.Redis,
        *,
        limits: Mapping[str, tuple[Window, ...]] | None = None,
        prefix: str = keys.RATE_PREFIX,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.connection = connection
        self.limits = dict(limits or DEFAULT_LIMITS)
        self.prefix = prefix
        self.sleep = sleep
        self._acquire = connection.register_script(scripts.RATE_ACQUIRE)
        self._block = connection.register_script(scripts.RATE_BLOCK)
        self.waited = 0.0  # seconds this limiter has slept, for status and benchmarks

    def _keys(self, endpoint: str) -> list[str]:
        windows = self.limits[endpoint]
        return [keys.rate_blocked(endpoint, self.prefix)] + [
            keys.rate_window(endpoint, w.limit, w.period, self.prefix) for w in windows
        ]

    def pace(self, endpoint: str) -> float:
        """The steady spacing of ``endpoint``: its slowest window's period / limit."""
        windows = self.limits.get(endpoint) or ()
        return max((w.period / w.limit for w in windows), default=0.0)

    def _call(self, endpoint: str, cost: int, *, pace: bool, dry: bool) -> float:
        if endpoint not in self.limits:
            return 0.0
        cells = self._keys(endpoint)
        cells.insert(1, keys.rate_last(endpoint, self.prefix))
        args: list[float] = [cost, self.pace(endpoint), int(pace), int(dry)]
        for window in self.limits[endpoint]:
            emission = window.period / window.limit
            args += [emission, window.period - emission]
        return float(self._acquire(keys=cells, args=args))

    def try_acquire(self, endpoint: str, cost: int = 1, *, pace: bool = False) -> float:
        """Take a slot now if there is one (returns 0.0); else the seconds to wait.

        ``pace=True`` also waits for the endpoint's steady spacing since the last request.
        """
        return self._call(endpoint, cost, pace=pace, dry=False)

    def wait_time(self, endpoint: str, cost: int = 1, *, pace: bool = False) -> float:
        """The seconds until ``try_acquire`` would succeed (nothing is taken)."""
        return self._call(endpoint, cost, pace=pace, dry=True)

    def acquire(self, endpoint: str, cost: int = 1, *, max_wait: float = 120.0) -> float:
        """Block until a slot is taken; returns the seconds waited. Raises TimeoutError."""
        waited = 0.0
        while True:
            wait = self.try_acquire(endpoint, cost)
            if wait <= 0:
                self.waited += waited
                return waited
            if waited + wait > max_wait:
                raise TimeoutError(f"{endpoint}: no rate-limit slot within {max_wait:.0f}s")
            self.sleep(wait)
            waited += wait

    def block(self, endpoint: str, seconds: float) -> None:
        """Klaviyo said wait (429 Retry-After, or RateLimit-Remaining 0): everyone waits."""
        if endpoint in self.limits and seconds > 0:
            self._block(keys=self._keys(endpoint)[:1], args=[seconds])

    def state(self) -> dict[str, dict[str, float]]:
        """Blocked-until and the backlog of each window, for ``flask klaviyo status``."""
        now = time.time()
        out: dict[str, dict[str, float]] = {}
        for endpoint in self.limits:
            cells = self._keys(endpoint)
            values = self.connection.mget(cells)
            blocked = float(values[0] or 0)
            out[endpoint] = {"blocked_for": max(0.0, blocked - now)}
            for key, value in zip(cells[1:], values[1:], strict=True):
                out[endpoint][key.rsplit(":", 1)[1]] = max(0.0, float(value or 0) - now)
        return out
