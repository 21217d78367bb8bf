"""The few counters ``flask klaviyo status`` reads, written by the drain in the round trip it
makes anyway (the acknowledgement of a batch): operations handled per minute (the delivery
rate), Klaviyo's 429s, and Klaviyo's last error with its time. Nothing here costs a request or
an event a round trip of its own.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from . import keys

__all__ = ["Counters", "SenderMarks", "read_counters", "record_batch"]

RATE_MINUTES = 15  # minutes of per-minute counts status reads


@dataclass
class SenderMarks:
    """What a drain has already recorded of its sender's tallies (they only grow)."""

    throttled: int = 0
    error_at: float | None = None


def record_batch(pipe: Any, handled: int, sender: Any, marks: SenderMarks) -> None:
    """Queue the counter updates of one acknowledged batch on ``pipe`` (the drain's ack
    pipeline): ``handled`` more this minute, new 429s, the sender's latest error if new."""
    if handled:
        minute = keys.handled_minute(int(time.time() // 60))
        pipe.incrby(minute, handled)
        pipe.expire(minute, keys.HANDLED_MINUTE_TTL)
        pipe.hincrby(keys.STATS, "handled", handled)
    throttled = sender.throttled - marks.throttled
    if throttled > 0:
        pipe.hincrby(keys.STATS, "throttled", throttled)
        marks.throttled = sender.throttled
    if sender.last_error is not None and sender.last_error_at != marks.error_at:
        record_error(pipe, sender.last_error, sender.last_error_at)
        marks.error_at = sender.last_error_at


def record_error(target: Any, error: str, at: float | None = None) -> None:
    """Klaviyo's last error (or the transport's), for status: on a pipeline or a connection."""
    mapping = {"last_error": error[:500], "last_error_at": at if at is not None else time.time()}
    target.hset(keys.STATS, mapping=mapping)


@dataclass
class Counters:
    handled: int
    throttled: int
    last_error: str | None
    last_error_at: float | None
    per_minute: list[int]  # handled in each of the last RATE_MINUTES minutes, oldest first

    def rate(self, minutes: int = 5) -> float:
        """Operations handled per minute over the last ``minutes`` full minutes."""
        recent = self.per_minute[-minutes - 1 : -1] if minutes else []
        return sum(recent) / len(recent) if recent else 0.0


def read_counters(connection: Any, *, now: float | None = None) -> Counters:
    """The counters, in one round trip."""
    minute = int((time.time() if now is None else now) // 60)
    minutes = [keys.handled_minute(m) for m in range(minute - RATE_MINUTES + 1, minute + 1)]
    pipe = connection.pipeline(transaction=False)
    pipe.hgetall(keys.STATS)
    pipe.mget(minutes)
    stats, counts = pipe.execute()
    error = stats.get(b"last_error")
    at = stats.get(b"last_error_at")
    return Counters(
        handled=int(stats.get(b"handled") or 0),
        throttled=int(stats.get(b"throttled") or 0),
        last_error=error.decode(errors="replace") if error else None,
        last_error_at=float(at) if at else None,
        per_minute=[int(count or 0) for count in counts],
    )
