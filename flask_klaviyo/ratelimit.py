"""A rate limiter shared through Redis by every worker on every machine, on Klaviyo's model.

Klaviyo limits each endpoint per account with two fixed windows at once — a burst per second and
a steady rate per minute (Bulk Create Events: 10/s and 150/min; Create Event: 350/s and
3,500/min) — shared by every private-key integration on the account, and every non-429 answer
says, in ``RateLimit-Limit``/``-Remaining``/``-Reset``, where the steady window stands. So:

- the steady window is a fixed window whose end and spent count follow Klaviyo's headers (the
  phase of Klaviyo's window, and what other integrations spent of it, are Klaviyo's to say);
- the burst window, which no header describes, is kept as a log: no burst period (plus a
  margin) holds more than its limit, whatever phase Klaviyo's burst window has (so is any
  longer window, like Update Mapped Metric's 30 a day);
- inside the steady window the budget is spread over the window, half a burst ahead of the
  steady rate, so all of it is spent, before the end, without starving the other integrations;
- bulk work (a backfill, a drain with a window's worth queued: ``bulk``/``queued`` mark it, for
  every worker) has no reason to wait inside a window it will spend anyway: once Klaviyo's first
  answer has confirmed the window (its phase, what others spent), the budget goes at the burst
  rate but for a reserve left to the other integrations (twice what they spent of this window
  or the last, at least ``BULK_RESERVE`` of it; half the window while what they spent of the
  last is unknown, in the first window of bulk work), spread as above; while they spend, a tenth
  of each burst window is kept back for them too;
- a 429's ``Retry-After`` blocks the endpoint for every worker until then (Klaviyo's word wins).

One Lua script (``scripts.RATE_ACQUIRE``) applies what Klaviyo last said, then checks and takes
a slot in every window atomically, on Redis's own clock: one round trip per request, and workers
on machines with skewed clocks still share one budget.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, overload

import redis

from .delivery import keys, scripts

__all__ = [
    "BULK_HOLD",
    "BULK_RESERVE",
    "BURST_MARGIN",
    "DEFAULT_LIMITS",
    "JITTER",
    "RateLimiter",
    "Window",
]

log = logging.getLogger(__name__)

# A log's margin: no ``period + margin`` holds more than the window's limit, so the network's
# jitter between our clock and Klaviyo's arrival times cannot put one too many in a burst window
# of Klaviyo's. Jitter is a matter of milliseconds, not of the window's length: the margin is a
# tenth of the window up to JITTER (a 1-second burst: 0.1 s; a time-scaled 4-second one too).
BURST_MARGIN = 0.1
JITTER = 0.1
# Bulk work leaves at least this share of each steady window, paced, to the account's other
# integrations (their 429s are invisible to us: what they could not spend never shows in the
# headers, so a floor, and twice what they did spend, keep room for them to grow into).
BULK_RESERVE = 0.1
BULK_HOLD = 15.0  # a bulk-work mark lasts a steady period, at least this (its setters renew it)


def _span(window: Window) -> float:
    return window.period + min(window.period * BURST_MARGIN, JITTER)


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
    "get_bulk_import_profiles_job_import_errors": (10, 150),
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
    "get_bulk_create_catalog_variants_job": (75, 750),
    "get_bulk_update_catalog_variants_job": (75, 750),
    "get_bulk_delete_catalog_variants_job": (350, 3500),
    "get_bulk_create_catalog_categories_job": (350, 3500),
    "get_bulk_update_catalog_categories_job": (350, 3500),
    "get_bulk_delete_catalog_categories_job": (350, 3500),
    "get_catalog_items": (350, 3500),
    "get_catalog_variants": (350, 3500),
    "get_catalog_categories": (350, 3500),
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


class Answer(Protocol):
    """What the limiter reads of a success (``client.SendResult``): the steady window's headers."""

    @property
    def rate_limit_limit(self) -> int | None: ...

    @property
    def rate_limit_remaining(self) -> int | None: ...

    @property
    def rate_limit_reset(self) -> float | None: ...


@dataclass(frozen=True)
class _Word:
    """Klaviyo's last word on an endpoint's steady window, waiting for the next acquire."""

    window: str  # the id of the window the answered request took its slot in
    remaining: int
    reset: float
    at: float  # time.monotonic() when the answer arrived


class RateLimiter:
    """``acquire(endpoint)`` waits until every window of that endpoint has room, then takes it;
    ``observe(endpoint, answer)`` hands it Klaviyo's headers (sent along with the next acquire)."""

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
        self._lock = threading.Lock()
        self._windows: dict[str, str] = {}  # endpoint -> id of the window of our last slot
        self._words: dict[str, _Word] = {}  # endpoint -> Klaviyo's word not yet sent to Redis
        self._mismatch: set[str] = set()
        self.waited = 0.0  # seconds this limiter has slept, for status and benchmarks

    def steady(self, endpoint: str) -> Window:
        """The window Klaviyo's headers describe: in Klaviyo's model (a burst, the steady
        window, then for a few endpoints a longer one, like Update Mapped Metric's daily 30) the
        second shortest; the only one if there is one. By order, not by length, so time-scaled
        limits (a 4-second burst, a 4-minute steady window) keep their roles."""
        windows = sorted(self.limits[endpoint], key=lambda w: w.period)
        return windows[min(1, len(windows) - 1)]

    def _logs(self, endpoint: str) -> list[Window]:
        """Every other window (the burst, a daily one), kept as a log of its last slots."""
        steady = self.steady(endpoint)
        windows = list(self.limits[endpoint])
        windows.remove(steady)
        return windows

    def spread(self, endpoint: str) -> int:
        """Slots a fresh steady window lets go at once: half the smallest shorter window (the
        burst; the rest of the window is paced); with none, the whole limit (nothing paced)."""
        steady = self.steady(endpoint)
        bursts = [w for w in self._logs(endpoint) if w.period < steady.period]
        if not bursts:
            return steady.limit
        return max(1, min(w.limit for w in bursts) // 2)

    def reserve(self, endpoint: str) -> int:
        """The least of a steady window that bulk work leaves, paced, to other integrations."""
        return max(1, round(self.steady(endpoint).limit * BULK_RESERVE))

    @staticmethod
    def _kept_back(window: Window, steady: Window) -> int:
        """Slots of a burst window that bulk work leaves to other integrations spending too
        (none of a longer window, and never the last one)."""
        if window.period >= steady.period:
            return 0
        return min(max(1, int(window.limit * BULK_RESERVE)), window.limit - 1)

    def _keys(self, endpoint: str) -> list[str]:
        steady = self.steady(endpoint)
        return [
            keys.rate_blocked(endpoint, self.prefix),
            keys.rate_last(endpoint, self.prefix),
            keys.rate_window(endpoint, steady.limit, steady.period, self.prefix),
            keys.rate_bulk(endpoint, self.prefix),
        ] + [keys.rate_log(endpoint, w.limit, w.period, self.prefix) for w in self._logs(endpoint)]

    def pace(self, endpoint: str) -> float:
        """The steady spacing of ``endpoint``: its slowest window's period / limit."""
        windows = self.limits.get(endpoint) or ()
        return max((w.period / w.limit for w in windows), default=0.0)

    def _call(self, endpoint: str, cost: int, *, pace: bool, dry: bool) -> float:
        if endpoint not in self.limits:
            return 0.0
        if not 1 <= cost <= min(w.limit for w in self.limits[endpoint]):
            raise ValueError(f"{endpoint}: a cost of {cost} can never fit its windows")
        steady = self.steady(endpoint)
        word = None
        if not dry:
            with self._lock:
                word = self._words.pop(endpoint, None)
        args: list[Any] = [cost, self.pace(endpoint), int(pace), int(dry)]
        args += [steady.limit, steady.period, max(cost, self.spread(endpoint))]
        if word is None:
            args += [0, "", 0, 0, 0]
        else:
            age = max(0.0, time.monotonic() - word.at)
            args += [1, word.window, word.remaining, word.reset, age]
        args.append(self.reserve(endpoint))
        for window in self._logs(endpoint):
            args += [window.limit, _span(window), self._kept_back(window, steady)]
        wait, window_id = self._acquire(keys=self._keys(endpoint), args=args)
        wait = float(wait)
        if wait <= 0 and not dry:
            with self._lock:
                self._windows[endpoint] = (
                    window_id.decode() if isinstance(window_id, bytes) else window_id
                )
        return wait

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

    def observe(self, endpoint: str, answer: Answer) -> None:
        """Klaviyo's headers on the answer to our last request to ``endpoint``: its word on the
        steady window (what is left, when it resets), applied with the next acquire. Headers of
        another limit than ours (the account's limits are not the configured ones) are not used.
        """
        if endpoint not in self.limits:
            return
        remaining, reset = answer.rate_limit_remaining, answer.rate_limit_reset
        if remaining is None or reset is None or remaining < 0 or reset < 0:
            return
        steady = self.steady(endpoint)
        if answer.rate_limit_limit is not None and answer.rate_limit_limit != steady.limit:
            if endpoint not in self._mismatch:
                self._mismatch.add(endpoint)
                log.warning(
                    "klaviyo: %s answers RateLimit-Limit %s, configured %s per %gs; its headers "
                    "are not used (set KLAVIYO_RATE_LIMITS to the account's limits)",
                    endpoint,
                    answer.rate_limit_limit,
                    steady.limit,
                    steady.period,
                )
            return
        with self._lock:
            window = self._windows.get(endpoint)
            if window is not None:
                self._words[endpoint] = _Word(window, remaining, reset, time.monotonic())

    def bulk(self, endpoint: str, seconds: float | None = None) -> None:
        """Bulk work for ``endpoint`` is queued (a window's worth or more, e.g. a backfill):
        for ``seconds`` (default a steady period, at least BULK_HOLD; renew it while the work
        lasts) every worker takes each window's budget at the burst rate, less the reserve for
        other integrations. ``seconds`` <= 0 ends the mark."""
        if endpoint not in self.limits:
            return
        if seconds is None:
            seconds = max(self.steady(endpoint).period, BULK_HOLD)
        cell = keys.rate_bulk(endpoint, self.prefix)
        if seconds > 0:
            self.connection.set(cell, "1", px=max(1, math.ceil(seconds * 1000)))
        else:
            self.connection.delete(cell)

    def queued(self, endpoint: str, requests: float) -> bool:
        """``requests`` of ``endpoint`` wait: a steady window's worth or more marks bulk work
        (see :meth:`bulk`). Returns whether it did."""
        if endpoint not in self.limits or requests < self.steady(endpoint).limit:
            return False
        self.bulk(endpoint)
        return True

    def block(self, endpoint: str, seconds: float) -> None:
        """Klaviyo said wait (a 429's Retry-After): every worker waits."""
        if endpoint in self.limits and seconds > 0:
            self._block(keys=self._keys(endpoint)[:1], args=[seconds])

    @overload
    def state(self) -> dict[str, dict[str, Any]]: ...

    @overload
    def state(self, endpoint: str) -> dict[str, Any]: ...

    def state(self, endpoint: str | None = None) -> dict[str, Any]:
        """Where an endpoint stands (every endpoint's, without one), for ``flask klaviyo
        status``: ``blocked_for`` (s), and for the steady window ``limit``, ``used`` (ours plus
        ``others``, what Klaviyo says other integrations spent), ``remaining``, ``resets_in``
        (s) and ``synced`` (its end is Klaviyo's, from RateLimit-Reset); ``bulk_for``: seconds
        the bulk-work mark still holds; ``logs``: each other window's ``limit``, ``period`` and
        slots ``used`` in its last period."""
        if endpoint is None:
            return {name: self.state(name) for name in self.limits}
        return self._state(endpoint)

    def _state(self, endpoint: str) -> dict[str, Any]:
        now = self._now()
        cells = self._keys(endpoint)
        steady = self.steady(endpoint)
        pipe = self.connection.pipeline(transaction=False)
        pipe.get(cells[0])
        pipe.hgetall(cells[2])
        pipe.pttl(cells[3])
        for cell in cells[4:]:
            pipe.lrange(cell, 0, -1)
        blocked, window, bulk_ms, *stamps = pipe.execute()
        fields = {k.decode(): v.decode() for k, v in window.items()}
        current = float(fields.get("end", 0)) > now
        ours = int(fields.get("ours", 0)) if current else 0
        others = int(fields.get("others", 0)) if current else 0
        logs = zip(self._logs(endpoint), stamps, strict=True)
        return {
            "blocked_for": max(0.0, float(blocked or 0) - now),
            "limit": steady.limit,
            "period": steady.period,
            "used": ours + others,
            "others": others,
            "remaining": max(0, steady.limit - ours - others),
            "resets_in": max(0.0, float(fields["end"]) - now) if current else 0.0,
            "synced": current and fields.get("synced") == "1",
            "bulk_for": max(0, int(bulk_ms)) / 1000,
            "logs": [
                {
                    "limit": log_window.limit,
                    "period": log_window.period,
                    "used": sum(1 for stamp in taken if float(stamp) > now - log_window.period),
                }
                for log_window, taken in logs
            ],
        }

    def _now(self) -> float:
        seconds, micros = self.connection.time()
        return seconds + micros / 1_000_000
