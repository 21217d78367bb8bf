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

__all__ = ["DEFAULT_LIMITS", "RateLimiter", "Window"]


@dataclass(frozen=True)
class Window:
    """``limit`` requests per ``period`` seconds."""

    limit: int
    period: float

    def __post_init__(self) -> None:
        if self.limit < 1 or self.period <= 0:
            raise ValueError(f"a rate window needs limit >= 1 and period > 0, got {self}")


# endpoint -> its windows (Klaviyo's published limits for the Events API)
DEFAULT_LIMITS: dict[str, tuple[Window, ...]] = {
    "bulk_create_events": (Window(10, 1.0), Window(150, 60.0)),
    "create_event": (Window(350, 1.0), Window(3500, 60.0)),
}

# KEYS: [blocked-until, last-send, cell per window...]
# ARGV: [cost, pace, want-pace (0/1), dry-run (0/1), (emission, tolerance) per window...]
# Returns the seconds to wait as a string ("0": a slot was taken, or would be on a dry run).
# ``pace`` is the steady spacing of the endpoint (its slowest window's period / limit): a caller
# that can wait (a drain holding a partial batch) asks for it, so a trickle of events is sent at
# the steady rate in fuller batches instead of spending the minute's budget in a burst.
_ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local wait = 0
local blocked = tonumber(redis.call('GET', KEYS[1]) or '0')
if blocked > now then wait = blocked - now end
local cost = tonumber(ARGV[1])
local pace = tonumber(ARGV[2])
if ARGV[3] == '1' and pace > 0 then
  local last = tonumber(redis.call('GET', KEYS[2]) or '0')
  if last + pace - now > wait then wait = last + pace - now end
end
local new = {}
for i = 3, #KEYS do
  local emission = tonumber(ARGV[5 + 2 * (i - 3)])
  local tolerance = tonumber(ARGV[6 + 2 * (i - 3)])
  local tat = tonumber(redis.call('GET', KEYS[i]) or '0')
  if tat < now then tat = now end
  local next_tat = tat + emission * cost
  local allow_at = next_tat - emission - tolerance
  if allow_at - now > wait then wait = allow_at - now end
  new[i] = next_tat
end
if wait > 0 or ARGV[4] == '1' then return tostring(wait) end
for i = 3, #KEYS do
  redis.call('SET', KEYS[i], tostring(new[i]), 'PX', math.ceil((new[i] - now) * 1000) + 1000)
end
if pace > 0 then
  redis.call('SET', KEYS[2], tostring(now), 'PX', math.ceil(pace * 1000) + 1000)
end
return '0'
"""

_BLOCK = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local until_ = now + tonumber(ARGV[1])
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
if until_ > current then
  redis.call('SET', KEYS[1], tostring(until_), 'PX', math.ceil(tonumber(ARGV[1]) * 1000) + 1000)
end
return tostring(until_)
"""


class RateLimiter:
    """``acquire(endpoint)`` waits until every window of that endpoint has room, then takes it."""

    def __init__(
        self,
        connection: redis.Redis,
        *,
        limits: Mapping[str, tuple[Window, ...]] | None = None,
        prefix: str = "klaviyo:rate",
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.connection = connection
        self.limits = dict(limits or DEFAULT_LIMITS)
        self.prefix = prefix
        self.sleep = sleep
        self._acquire = connection.register_script(_ACQUIRE)
        self._block = connection.register_script(_BLOCK)
        self.waited = 0.0  # seconds this limiter has slept, for status and benchmarks

    def _keys(self, endpoint: str) -> list[str]:
        windows = self.limits[endpoint]
        return [f"{self.prefix}:{endpoint}:blocked"] + [
            f"{self.prefix}:{endpoint}:{w.limit}/{w.period:g}" for w in windows
        ]

    def pace(self, endpoint: str) -> float:
        """The steady spacing of ``endpoint``: its slowest window's period / limit."""
        windows = self.limits.get(endpoint) or ()
        return max((w.period / w.limit for w in windows), default=0.0)

    def _call(self, endpoint: str, cost: int, *, pace: bool, dry: bool) -> float:
        if endpoint not in self.limits:
            return 0.0
        keys = self._keys(endpoint)
        keys.insert(1, f"{self.prefix}:{endpoint}:last")
        args: list[float] = [cost, self.pace(endpoint), int(pace), int(dry)]
        for window in self.limits[endpoint]:
            emission = window.period / window.limit
            args += [emission, window.period - emission]
        return float(self._acquire(keys=keys, args=args))

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
            keys = self._keys(endpoint)
            values = self.connection.mget(keys)
            blocked = float(values[0] or 0)
            out[endpoint] = {"blocked_for": max(0.0, blocked - now)}
            for key, value in zip(keys[1:], values[1:], strict=True):
                out[endpoint][key.rsplit(":", 1)[1]] = max(0.0, float(value or 0) - now)
        return out
