"""A batch of stored entries sent by kind: events through the events path, every other kind
grouped, coalesced where the kind merges, and sent in its endpoint's form, a request at a time
of the kind whose endpoint has a rate slot soonest. What :class:`.drain.Drain` hands to its
sending thread."""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Mapping, Sequence
from typing import Any

from . import kinds
from .forgetting import forgotten_entries
from .operations import EVENT_KIND, Operation, kind_of
from .sender import Sender

__all__ = ["coalesce", "dispatch", "soonest"]

log = logging.getLogger(__name__)


def coalesce(kind: kinds.Kind, operations: Sequence[Operation]) -> list[Operation]:
    """Operations with the same key merged into one, in arrival order (later wins)."""
    if kind.merge is None:
        return list(operations)
    merged: dict[Any, Operation] = {}
    alone: list[Operation] = []
    for operation in operations:
        if operation.key is None:
            alone.append(operation)
            continue
        first = merged.get(operation.key)
        merged[operation.key] = (
            operation
            if first is None
            else Operation(
                kind.name,
                kind.merge(first.payload, operation.payload),
                operation.key,
                first.queued_at,
            )
        )
    return [*merged.values(), *alone]


def soonest(sender: Sender, names: Sequence[str]) -> str:
    """Of the kinds a batch still has to send, the one whose endpoint has a rate slot soonest
    (the first of them on a tie: kinds keep their arrival order otherwise). A drain holding
    operations for an endpoint that must wait does not keep the others behind them (a sync's
    item chunks behind its variants', whose window was spent). Klaviyo orders nothing across
    endpoints (their jobs are asynchronous); what must come after something waits for its job
    to complete (``then``)."""
    limiter = sender.limiter
    if limiter is None or len(names) < 2:
        return names[0]

    def wait(name: str) -> float:
        return limiter.wait_time(kinds.get(name).endpoint)

    return min(names, key=wait)


def _units(kind: kinds.Kind, operations: list[Operation]) -> deque[list[Operation]]:
    """What a kind sends one at a time: a request's worth each where operations are not
    grouped (a catalog chunk is one), all of them where the kind groups them itself."""
    if kind.group is not None:
        return deque([operations])
    size = kind.batch_limit
    return deque(operations[start : start + size] for start in range(0, len(operations), size))


def dispatch(
    sender: Sender,
    items: Sequence[Mapping[str, Any]],
    stored: Sequence[bytes],
) -> dict[str, int]:
    """Send a batch of stored entries: events through the events path, every other kind
    grouped, coalesced and sent in its endpoint's form."""
    forgotten = forgotten_entries(sender.connection, items)
    if forgotten:  # a person forgotten while these waited: never sent (privacy)
        log.info("klaviyo: %d waiting item(s) of forgotten people dropped", len(forgotten))
        if sender.dropped is not None:  # for the metrics
            sender.dropped.extend(items[index] for index in forgotten)
        items = [item for index, item in enumerate(items) if index not in forgotten]
        stored = [raw for index, raw in enumerate(stored) if index not in forgotten]
    if not items:
        return sender.result()
    if not any("op" in item for item in items):  # the common case: only events
        return sender.send_raw(items, [len(raw) for raw in stored])
    events: list[Mapping[str, Any]] = []
    event_sizes: list[int] = []
    by_kind: dict[str, list[Operation]] = {}
    for item, raw in zip(items, stored, strict=True):
        kind = kind_of(item)
        if kind == EVENT_KIND:
            events.append(item)
            event_sizes.append(len(raw))
        else:
            by_kind.setdefault(kind, []).append(Operation.from_dict(item, raw))
    if events:
        sender.send_raw(events, event_sizes)
    waiting: dict[str, tuple[kinds.Kind, deque[list[Operation]]]] = {}
    for name, operations in by_kind.items():
        try:
            known = kinds.get(name)
        except LookupError as exc:  # kept, replayable once the worker knows the kind
            for operation in operations:
                sender.keep_dead(operation.to_dict(), "unknown_kind", [{"detail": str(exc)}], None)
            continue
        waiting[name] = (known, _units(known, coalesce(known, operations)))
    while waiting:  # a request at a time, of the kind whose endpoint can take one soonest
        name = soonest(sender, list(waiting))
        known, units = waiting[name]
        sender.send_operations(known, units.popleft())
        if not units:
            del waiting[name]
    return sender.result()
