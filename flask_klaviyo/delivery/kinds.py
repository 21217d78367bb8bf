"""The registry of operation kinds: for each, Klaviyo's endpoint, its batch limit, how a batch
becomes a request body, how an error pointer maps back to the operation that caused it,
whether operations coalesce while they wait, and whether Klaviyo answers with a job to follow.

The outbox, the drain, the limiter, retries, dead letters, replay and the spool serve every kind
alike; adding a kind is one :func:`register` call (Klaviyo's own: :mod:`.klaviyo_kinds`,
imported by the drain and the extension). Rate windows come from Klaviyo's published
table (:data:`flask_klaviyo.ratelimit.DEFAULT_LIMITS`, by endpoint) unless a kind brings its own,
and ``KLAVIYO_RATE_LIMITS`` overrides both.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..ratelimit import DEFAULT_LIMITS, Window

__all__ = [
    "JobFollowUp",
    "Kind",
    "get",
    "names",
    "pointer_index",
    "rate_limits",
    "register",
    "unregister",
]

Payload = Mapping[str, Any]
Locator = Callable[[Sequence[Payload], str], "int | None"]


def pointer_index(prefix: str) -> Locator:
    """A locator for pointers such as ``{prefix}3/attributes/price``: the item at index 3."""
    pattern = re.compile("^" + re.escape(prefix.rstrip("/")) + r"/(\d+)(?:/|$)")

    def locate(batch: Sequence[Payload], pointer: str) -> int | None:
        match = pattern.match(pointer or "")
        if match is None:
            return None
        index = int(match.group(1))
        return index if index < len(batch) else None

    return locate


def _whole_batch(batch: Sequence[Payload], pointer: str) -> int | None:
    """A batch of one: whatever Klaviyo points at is that operation."""
    return 0 if len(batch) == 1 else None


@dataclass(frozen=True)
class JobFollowUp:
    """Klaviyo answers the kind with an asynchronous job: where to read its outcome, and how an
    error pointer of the job maps back to an item of the batch."""

    path: str  # with "{job_id}"
    endpoint: str  # the rate-limit endpoint of the GET
    locate: Locator
    delay: float = 2.0  # seconds before each look at an unfinished job
    # Where a finished job lists its failures when its own answer only counts them
    # (``failed_count``; Bulk Import Profiles' import-errors), with "{job_id}", and the
    # rate-limit endpoint of that GET; None: the errors are in the job's ``errors`` attribute.
    errors_path: str | None = None
    errors_endpoint: str | None = None
    max_looks: int = 150  # then the job's items become dead letters ("job_unfinished")


@dataclass(frozen=True)
class Kind:
    """One kind of operation (see the module docstring)."""

    name: str
    endpoint: str  # Klaviyo's endpoint name (its OpenAPI document), for the rate windows
    path: str  # "/api/..."; "{name}" fields are filled from a lone payload's "path" mapping
    batch_limit: int
    body: Callable[[Sequence[Payload]], dict[str, Any]]
    method: str = "POST"
    locate: Locator = _whole_batch
    merge: Callable[[Payload, Payload], dict[str, Any]] | None = None  # coalesce by key
    group: Callable[[Payload], Hashable] | None = None  # only equal groups share a request
    job: JobFollowUp | None = None
    windows: tuple[Window, ...] | None = None  # for an endpoint Klaviyo's table lacks
    # Klaviyo's answer to a lone payload, handed back (a profile's id, remembered for later).
    answered: Callable[[Payload, Any, Any], None] | None = None  # (payload, data, redis)
    # A 409 conflict: the payload to send once instead (the conflict stays a dead letter).
    conflict: Callable[[Payload], Payload | None] | None = None
    # A kind whose sending is more than one request (resolve an id, then PATCH): it sends its
    # batch itself through the sender (``sender.call``, ``sender.keep_dead``).
    send: Callable[[Any, Kind, Sequence[Any]], None] | None = None

    def __post_init__(self) -> None:
        if self.batch_limit < 1:
            raise ValueError(f"kind {self.name!r}: batch_limit must be >= 1")
        if "{" in self.path and self.batch_limit != 1:
            raise ValueError(f"kind {self.name!r}: a path with fields needs batch_limit 1")

    def url(self, batch: Sequence[Payload]) -> str:
        if "{" not in self.path:
            return self.path
        return self.path.format(**dict(batch[0].get("path") or {}))


_KINDS: dict[str, Kind] = {}


def register(kind: Kind, *, replace: bool = False) -> Kind:
    """Make ``kind`` known to every outbox and drain of this process (workers included: register
    it in a module the worker imports too)."""
    if kind.name in _KINDS and not replace and _KINDS[kind.name] != kind:
        raise ValueError(f"an operation kind named {kind.name!r} is already registered")
    _KINDS[kind.name] = kind
    return kind


def unregister(name: str) -> None:
    _KINDS.pop(name, None)


def get(name: str) -> Kind:
    try:
        return _KINDS[name]
    except KeyError:
        raise LookupError(
            f"no operation kind {name!r} is registered in this process (known: "
            f"{', '.join(sorted(_KINDS))}); register it where the worker imports it too"
        ) from None


def names() -> list[str]:
    return sorted(_KINDS)


def rate_limits(
    overrides: Mapping[str, tuple[Window, ...]] | None = None,
) -> dict[str, tuple[Window, ...]]:
    """Every endpoint's windows: Klaviyo's table, kinds' own, then ``KLAVIYO_RATE_LIMITS``."""
    limits = dict(DEFAULT_LIMITS)
    for kind in _KINDS.values():
        if kind.windows is not None:
            limits.setdefault(kind.endpoint, kind.windows)
    limits.update(overrides or {})
    return limits
