"""A batch of stored entries sent by kind: events through the events path, every other kind
grouped, coalesced where the kind merges, and sent in its endpoint's form, a request at a time
of the kind whose endpoint has a rate slot soonest. What :class:`.drain.Drain` hands to its
sending thread."""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from . import kinds
from .forgetting import forgotten_entries
from .operations import EVENT_KIND, Operation, kind_of
from .sender import Sender

__all__ = ["Unsent", "coalesce", "dispatch", "soonest"]

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


@dataclass
class Unsent:
    """What a dispatch left for later: the positions (in the batch it was given) of entries
    whose endpoint had no rate slot within its patience, and the seconds until the soonest
    of those endpoints has one."""

    positions: list[int] = field(default_factory=list)
    wait: float = 0.0


def soonest(sender: Sender, names: Sequence[str]) -> tuple[str, float]:
    """Of the kinds a batch still has to send, the one whose endpoint has a rate slot soonest
    (the first of them on a tie: kinds keep their arrival order otherwise), and its wait. A
    drain holding operations for an endpoint that must wait does not keep the others behind
    them (a sync's item chunks behind its variants', whose window was spent). Klaviyo orders
    nothing across endpoints (their jobs are asynchronous); what must come after something
    waits for its job to complete (``then``)."""
    limiter = sender.limiter
    if limiter is None:
        return names[0], 0.0
    waits = {name: limiter.wait_time(kinds.get(name).endpoint) for name in names}
    name = min(names, key=waits.__getitem__)
    return name, waits[name]


@dataclass
class _Waiting:
    """A kind's operations still to send, a request's worth at a time (``units``, each with
    the batch positions of its entries); ``separable``: a unit is its own entries (nothing
    merged across entries or grouped by the kind), so what is not sent can be left for later."""

    kind: kinds.Kind
    units: deque[tuple[list[Operation], list[int]]]
    separable: bool


def _waiting(kind: kinds.Kind, operations: list[tuple[int, Operation]]) -> _Waiting:
    if kind.group is not None or kind.merge is not None:
        merged = coalesce(kind, [operation for _, operation in operations])
        return _Waiting(kind, deque([(merged, [p for p, _ in operations])]), False)
    size = kind.batch_limit
    units = deque(
        ([op for _, op in part], [p for p, _ in part])
        for part in (operations[start : start + size] for start in range(0, len(operations), size))
    )
    return _Waiting(kind, units, True)


def dispatch(
    sender: Sender,
    items: Sequence[Mapping[str, Any]],
    stored: Sequence[bytes],
    *,
    patience: float | None = None,
) -> Unsent:
    """Send a batch of stored entries: events through the events path, every other kind
    grouped, coalesced and sent in its endpoint's form. With ``patience``, operations whose
    endpoint has no rate slot within that many seconds are not waited for: returned unsent
    (a kind that merges or groups its operations is always sent)."""
    unsent = Unsent()
    forgotten = forgotten_entries(sender.connection, items)
    if forgotten:  # a person forgotten while these waited: never sent (privacy)
        log.info("klaviyo: %d waiting item(s) of forgotten people dropped", len(forgotten))
        if sender.dropped is not None:  # for the metrics
            sender.dropped.extend(items[index] for index in forgotten)
    if len(forgotten) == len(items):
        return unsent
    if not forgotten and not any("op" in item for item in items):  # the common case: events
        sender.send_raw(items, [len(raw) for raw in stored])
        return unsent
    events: list[Mapping[str, Any]] = []
    event_sizes: list[int] = []
    by_kind: dict[str, list[tuple[int, Operation]]] = {}
    for position, (item, raw) in enumerate(zip(items, stored, strict=True)):
        if position in forgotten:
            continue
        kind = kind_of(item)
        if kind == EVENT_KIND:
            events.append(item)
            event_sizes.append(len(raw))
        else:
            by_kind.setdefault(kind, []).append((position, Operation.from_dict(item, raw)))
    if events:
        sender.send_raw(events, event_sizes)
    waiting: dict[str, _Waiting] = {}
    for name, operations in by_kind.items():
        try:
            waiting[name] = _waiting(kinds.get(name), operations)
        except LookupError as exc:  # kept, replayable once the worker knows the kind
            for _, operation in operations:
                sender.keep_dead(operation.to_dict(), "unknown_kind", [{"detail": str(exc)}], None)
    while waiting:  # a request at a time, of the kind whose endpoint can take one soonest
        if patience is None and len(waiting) == 1:  # no choice to make
            name, wait = next(iter(waiting)), 0.0
        else:
            name, wait = soonest(sender, list(waiting))
        if patience is not None and wait > patience and waiting[name].separable:
            unsent.wait = wait if not unsent.positions else min(unsent.wait, wait)
            for _, positions in waiting.pop(name).units:
                unsent.positions.extend(positions)
            continue
        now = waiting[name]
        operations, _ = now.units.popleft()
        sender.send_operations(now.kind, operations)
        if not now.units:
            del waiting[name]
    unsent.positions.sort()
    return unsent
