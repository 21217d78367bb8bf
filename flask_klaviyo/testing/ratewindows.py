"""The one rate-window engine: Klaviyo's burst and steady limits as fixed windows per endpoint.

Klaviyo counts requests per account in fixed windows (a burst window per second, a steady one
per minute) and answers 429 with ``Retry-After`` past either. The same engine serves both uses
the stand-in has: enforcing configured limits (``rate_limits=...``), and, when nothing is
enforced, only counting so the ``RateLimit-*`` headers still tell the truth about the steady
window.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

Windows = tuple[tuple[int, float], ...]  # ((limit, Klaviyo seconds), ...)


@dataclass(frozen=True)
class Slot:
    """The verdict on one request: admitted (with the longest window's figures) or blocked."""

    blocked_for: float  # Klaviyo seconds until every full window reopens; 0 when admitted
    limit: int = 0
    remaining: int = 0
    reset: float = 0.0  # Klaviyo seconds until the longest window restarts

    @property
    def admitted(self) -> bool:
        return self.blocked_for <= 0


class RateWindows:
    """Fixed windows, like Klaviyo's: ``take`` counts a request or says how long to wait.

    ``scale`` runs the windows that many times faster; every figure in a :class:`Slot` stays in
    Klaviyo's seconds so answers can say what Klaviyo would say, then divide.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._state: dict[tuple[str, int], tuple[float, int]] = {}

    def clear(self) -> None:
        with self._lock:
            self._state = {}

    def take(
        self, endpoint: str, windows: Windows, *, scale: float = 1.0, enforce: bool = True
    ) -> Slot:
        """Count one request against every window of ``endpoint``.

        With ``enforce`` False the request is always counted (nothing is ever blocked): that is
        how the headers of an unlimited stand-in are computed.
        """
        now = time.monotonic()
        with self._lock:
            states = []
            blocked_for = 0.0
            for index, (limit, period) in enumerate(windows):
                length = period / scale
                start, used = self._state.get((endpoint, index), (now, 0))
                if now - start >= length:
                    start, used = now, 0
                states.append((index, limit, length, start, used))
                if enforce and used >= limit:
                    blocked_for = max(blocked_for, (start + length - now) * scale)
            if blocked_for > 0:
                for index, _, _, start, used in states:
                    self._state[(endpoint, index)] = (start, used)
                return Slot(blocked_for)
            for index, _, _, start, used in states:
                self._state[(endpoint, index)] = (start, used + 1)
        _, limit, length, start, used = max(states, key=lambda state: state[2])
        return Slot(
            0.0,
            limit=limit,
            remaining=max(0, limit - used - 1),
            reset=(start + length - now) * scale,
        )


def scaled_seconds(klaviyo_seconds: float, scale: float) -> str:
    """Whole Klaviyo seconds (as Klaviyo answers), divided by the time scale."""
    whole = max(1, math.ceil(klaviyo_seconds - 1e-9))
    if scale == 1.0:
        return str(whole)
    return f"{whole / scale:.6g}"


def parse_limits(
    limits: Any, *, published: dict[str, Windows], known: Collection[str]
) -> dict[str, Windows]:
    """``{endpoint: [[limit, seconds], ...]}`` (or ``"klaviyo"`` for ``published``, or None)
    checked and frozen."""
    if limits is None:
        return {}
    if limits == "klaviyo":
        return dict(published)
    if not isinstance(limits, dict):
        raise ValueError("rate limits must map endpoints to [[limit, seconds], ...]")
    parsed: dict[str, Windows] = {}
    for endpoint, windows in limits.items():
        if endpoint not in known:
            raise ValueError(f"no endpoint {endpoint!r}; one of {sorted(known)}")
        frozen = []
        for window in windows:
            limit, period = window
            if (
                isinstance(limit, bool)
                or not isinstance(limit, int)
                or limit < 1
                or isinstance(period, bool)
                or not isinstance(period, int | float)
                or not period > 0
            ):
                raise ValueError(f"{endpoint}: a window is [limit >= 1, seconds > 0], not {window}")
            frozen.append((limit, float(period)))
        parsed[endpoint] = tuple(frozen)
    return parsed
