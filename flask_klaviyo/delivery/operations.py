"""An operation: one thing to tell Klaviyo, of a registered kind, waiting in the outbox.

Events are operations of the kind ``event`` and keep their own stored form (``Event.to_dict()``,
which has a ``metric``); every other operation is stored as ``{"op": kind, "key": ...,
"payload": ..., "queued_at": ...}``. Both travel in the same stream field and the same spool
file, so what was queued before operations existed is still read as events.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..events import Event

__all__ = ["EVENT_KIND", "Operation", "decode", "describe", "is_operation_text", "kind_of"]

EVENT_KIND = "event"


@dataclass(frozen=True, slots=True)
class Operation:
    """``payload`` is the kind's own JSON-able data; ``key`` names what it is about (a profile,
    a catalog item): operations of a coalescing kind with the same key that wait together are
    merged into one."""

    kind: str
    payload: Mapping[str, Any]
    key: str | None = None
    queued_at: float = field(default_factory=time.time)
    # The stored JSON this was read from, when it was: a catalog chunk's follow-up keeps it as
    # it is instead of encoding its hundred resources again.
    stored: bytes | None = field(default=None, compare=False, repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {
            "op": self.kind,
            "key": self.key,
            "payload": dict(self.payload),
            "queued_at": self.queued_at,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], stored: bytes | None = None) -> Operation:
        return cls(
            kind=str(data["op"]),
            payload=dict(data.get("payload") or {}),
            key=data.get("key"),
            queued_at=float(data.get("queued_at") or time.time()),
            stored=stored,
        )


def is_operation_text(raw: bytes) -> bool:
    """Whether a stored entry's JSON is an operation's, without decoding it: ``to_dict`` puts
    ``op`` first (compact or not), and an event's dict has none."""
    return raw.lstrip()[:5] == b'{"op"'


def kind_of(entry: Mapping[str, Any]) -> str:
    """The kind of a stored entry (an event's dict has no ``op``)."""
    kind = entry.get("op")
    return EVENT_KIND if kind is None else str(kind)


def decode(entry: Mapping[str, Any]) -> Event | Operation:
    """A stored entry back as an Event or an Operation."""
    return Event.from_dict(entry) if entry.get("op") is None else Operation.from_dict(entry)


def describe(item: Event | Operation) -> str:
    """For a log line: an event's metric and unique_id, an operation's kind and key."""
    if isinstance(item, Operation):
        return f"{item.kind} operation {item.key or ''}".rstrip()
    return f"{item.metric} event {item.unique_id}"
