"""Misbehaviour and limits on demand: the half of FakeKlaviyo's Python API that drives it.

Latency, queued faults (a status, a hold-then-hang-up, a reset), enforced rate windows and
another integration spending them, the bulk-job delay, and items or profiles a bulk job must
fail. A mixin so ``FakeKlaviyo`` stays one object for the tests while lifecycle and inspection
live in fake.py.
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Iterable
from typing import Any

from . import registry
from ._config import DEFAULT_RETRY_AFTER, DEFAULT_TIMEOUT_HOLD
from .ratewindows import parse_limits
from .state import Fault, ForcedFailure, State

log = logging.getLogger(__name__)


def _seconds(value: Any, name: str) -> float:
    if not isinstance(value, int | float) or isinstance(value, bool) or not value >= 0:
        raise ValueError(f"{name} must be a number of seconds >= 0, got {value!r}")
    return float(value)


class Driving:
    """Methods that change how the stand-in answers from now on (thread-safe)."""

    state: State

    @property
    def latency(self) -> float:
        """Seconds added before every API answer."""
        with self.state.lock:
            return self.state.latency

    @latency.setter
    def latency(self, seconds: float) -> None:
        if not isinstance(seconds, int | float) or isinstance(seconds, bool) or seconds < 0:
            raise ValueError(f"latency must be a number of seconds >= 0, got {seconds!r}")
        with self.state.lock:
            self.state.latency = float(seconds)

    @property
    def job_delay(self) -> float:
        """Seconds before a new bulk job completes (0: at once, on the first GET of it)."""
        with self.state.lock:
            return self.state.job_delay

    @job_delay.setter
    def job_delay(self, seconds: float) -> None:
        value = _seconds(seconds, "job_delay")
        with self.state.lock:
            self.state.job_delay = value

    @property
    def throttled(self) -> int:
        """429s answered because an enforced rate limit was exceeded (not ``fail_next`` ones)."""
        with self.state.lock:
            return self.state.throttled

    @property
    def rate_limits(self) -> dict[str, list[list[float]]]:
        """The enforced limits, ``{endpoint: [[limit, seconds], ...]}`` in Klaviyo's seconds."""
        with self.state.lock:
            return {name: [list(w) for w in windows] for name, windows in self.state.limits.items()}

    @property
    def time_scale(self) -> float:
        with self.state.lock:
            return self.state.time_scale

    def set_rate_limits(self, limits: Any, *, time_scale: float | None = None) -> None:
        """Enforce ``limits`` from now on (None: none); fresh windows, the 429 count kept."""
        parsed = parse_limits(
            limits, published=registry.KLAVIYO_RATE_LIMITS, known=registry.BY_NAME
        )
        if time_scale is not None and (
            isinstance(time_scale, bool)
            or not isinstance(time_scale, int | float)
            or not math.isfinite(time_scale)
            or time_scale <= 0
        ):
            raise ValueError(f"time_scale must be a number > 0, got {time_scale!r}")
        with self.state.lock:
            self.state.limits = parsed
            if time_scale is not None:
                self.state.time_scale = float(time_scale)
            self.state.enforced.clear()

    def spend(self, endpoint: str, count: int = 1) -> int:
        """Another integration on the account (Klaviyo's limits are per account): ``count``
        requests to ``endpoint`` counted in its rate windows, as if they had come in now.

        Returns how many were admitted (the rest would have been answered 429; they are counted
        neither as ours nor in :attr:`throttled`). The RateLimit-* headers of our next answers
        show what they spent.
        """
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise ValueError(f"count must be an integer >= 1, got {count!r}")
        target = registry.BY_NAME.get(endpoint)
        if target is None:
            raise ValueError(f"no endpoint {endpoint!r}; one of {sorted(registry.BY_NAME)}")
        with self.state.lock:
            windows = self.state.limits.get(endpoint)
            scale = self.state.time_scale
        admitted = 0
        for _ in range(count):
            if windows:
                admitted += self.state.enforced.take(endpoint, windows, scale=scale).admitted
            else:
                self.state.observed.take(endpoint, (target.steady,), enforce=False)
                admitted += 1
        return admitted

    def fail_next(
        self,
        status: int,
        *,
        count: int = 1,
        retry_after: float | None = None,
        code: str | None = None,
        detail: str | None = None,
        pointer: str | None = None,
    ) -> None:
        """Answer the next ``count`` API requests with ``status`` (queued after earlier faults)."""
        if not isinstance(status, int) or not 400 <= status <= 599:
            raise ValueError(f"status must be a 4xx or 5xx code, got {status!r}")
        if count < 1:
            raise ValueError("count must be at least 1")
        if retry_after is not None and retry_after < 0:
            raise ValueError("retry_after must be >= 0")
        if status == 429 and retry_after is None:
            retry_after = DEFAULT_RETRY_AFTER
        fault = Fault(status, retry_after, code, detail, pointer)
        with self.state.lock:
            self.state.faults.extend(copy.copy(fault) for _ in range(count))

    def timeout_next(self, *, count: int = 1, hold: float = DEFAULT_TIMEOUT_HOLD) -> None:
        """Read the next ``count`` API requests, say nothing for ``hold`` s, then hang up."""
        if count < 1:
            raise ValueError("count must be at least 1")
        if hold < 0:
            raise ValueError("hold must be >= 0")
        with self.state.lock:
            self.state.faults.extend(Fault(None, hold=hold) for _ in range(count))

    def reset_next(self, *, count: int = 1) -> None:
        """Read the next ``count`` API requests, then reset the connection (a TCP RST, no answer).

        Nothing is recorded as accepted: the events of a reset request are not kept.
        """
        if count < 1:
            raise ValueError("count must be at least 1")
        with self.state.lock:
            self.state.faults.extend(Fault(None, reset=True) for _ in range(count))

    def fail_catalog_items(
        self,
        ids: Iterable[str],
        *,
        detail: str = "The catalog item could not be created.",
        code: str = "invalid",
        title: str = "Invalid input.",
    ) -> None:
        """Make bulk jobs fail these items (by item id or external id) until :meth:`reset`.

        Each becomes an error of its job pointing at the item, with this detail.
        """
        failure = ForcedFailure(detail, code, title)
        with self.state.lock:
            self.state.catalog_failures.update(dict.fromkeys(_names(ids), failure))

    def fail_import_profiles(
        self,
        identifiers: Iterable[str],
        *,
        detail: str = "The profile could not be imported.",
        code: str = "invalid",
        title: str = "Invalid input.",
    ) -> None:
        """Make bulk profile imports fail the profiles naming one of these emails, phone numbers,
        external ids or ids (an import error with this detail) until :meth:`reset`."""
        failure = ForcedFailure(detail, code, title)
        names = [name.strip().lower() if "@" in name else name for name in _names(identifiers)]
        with self.state.lock:
            self.state.import_failures.update(dict.fromkeys(names, failure))


def _names(values: Iterable[str]) -> list[str]:
    if isinstance(values, str):
        raise TypeError("give a collection of ids, not one string")
    names = list(values)
    if not all(isinstance(name, str) and name for name in names):
        raise ValueError("ids must be non-empty strings")
    return names
