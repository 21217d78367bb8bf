"""Operations that must not or could not be sent, kept with why, never dropped.

The reason is ours (``invalid``: our validation; ``retry_horizon``: retryable errors for too
long; ``job_failed``: an item of an asynchronous job) or Klaviyo's answer (``rejected``, with its
``errors``: ``detail`` and ``source.pointer``). ``flask klaviyo replay`` takes them back out.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Iterable, Sequence
from typing import Any

import redis

from ..exceptions import KlaviyoAPIError, KlaviyoDeliveryError
from ..identity.identifiers import mask_email, mask_profile
from . import keys
from .keys import CONSUMER_GROUP

__all__ = ["DeadLetters", "dead_letter_past_horizon"]

log = logging.getLogger(__name__)


class DeadLetters:
    """Events and operations that were not sent, with why; ``replay`` takes them back out."""

    def __init__(self, connection: redis.Redis, *, key: str = keys.DEAD_LETTERS) -> None:
        self.connection = connection
        self.key = key

    def add(
        self,
        event: dict[str, Any],
        *,
        reason: str,
        errors: Iterable[dict[str, Any]] = (),
        status: int | None = None,
    ) -> str:
        """Keep one stored entry (an event's dict, or an operation's with ``op``); logged with
        the profile masked. An operation is kept under ``operation``, an event under ``event``."""
        kind = event.get("op")
        record = {
            "id": uuid.uuid4().hex,
            "reason": reason,
            "status": status,
            "errors": list(errors),
            "operation" if kind is not None else "event": event,
            "dead_at": time.time(),
        }
        self.connection.hset(self.key, record["id"], json.dumps(record, default=str))
        if kind is not None:
            log.warning(
                "klaviyo: %s operation kept as dead letter (%s), key %s",
                kind,
                reason,
                _masked_key(event.get("key")),
            )
        else:
            log.warning(
                "klaviyo: %s event kept as dead letter (%s) for %s",
                event.get("metric"),
                reason,
                mask_profile(event.get("profile") or {}),
            )
        return record["id"]

    def all(self) -> list[dict[str, Any]]:
        records = [json.loads(raw) for raw in self.connection.hvals(self.key)]
        return sorted(records, key=lambda r: r["dead_at"])

    def remove(self, record_id: str) -> None:
        self.connection.hdel(self.key, record_id)

    def count(self) -> int:
        return int(self.connection.hlen(self.key))


def _masked_key(key: Any) -> str:
    """An operation key for a log line: an email in it is masked."""
    if not isinstance(key, str):
        return str(key)
    return " ".join(mask_email(part) if "@" in part else part for part in key.split(" "))


def dead_letter_past_horizon(
    connection: Any, stream: str, ids: Sequence[bytes], exc: KlaviyoDeliveryError, horizon: float
) -> list[dict[str, Any]]:
    """After a drain gave up on ``ids`` (retryable errors outlasted its retries): remember when
    each first failed, and move those failing for ``horizon`` seconds or more to the dead-letter
    registry with the last error, acknowledged and deleted, instead of retrying them forever.
    The rest stay pending for the next drain. Returns the entries that became dead letters."""
    if not ids:
        return []
    failing = keys.failing(stream)
    now = time.time()
    pipe = connection.pipeline(transaction=False)
    for entry_id in ids:
        pipe.hsetnx(failing, entry_id, now)
    pipe.expire(failing, int(max(2 * horizon, 86400)))
    pipe.hmget(failing, list(ids))
    since = pipe.execute()[-1]
    expired = [
        entry_id
        for entry_id, first in zip(ids, since, strict=True)
        if first is not None and now - float(first) >= horizon
    ]
    if not expired:
        return []
    if isinstance(exc, KlaviyoAPIError):
        status: int | None = exc.status_code
        errors = [error.to_dict() for error in exc.errors]
    else:
        status, errors = None, []
    if not errors:
        errors = [{"code": type(exc).__name__, "detail": str(exc)}]
    pipe = connection.pipeline(transaction=False)
    for entry_id in expired:
        pipe.xrange(stream, entry_id, entry_id)
    dead_letters = DeadLetters(connection)
    entries = [json.loads(fields[b"e"]) for rows in pipe.execute() for _, fields in rows]
    for entry in entries:
        dead_letters.add(entry, reason="retry_horizon", errors=errors, status=status)
    pipe = connection.pipeline(transaction=False)
    pipe.xack(stream, CONSUMER_GROUP, *expired)
    pipe.xdel(stream, *expired)
    pipe.hdel(failing, *expired)
    pipe.execute()
    log.error(
        "klaviyo: %d event(s) failed for longer than the retry horizon (%.0fs) and are kept as "
        "dead letters (replay them after the fix); last error: %s",
        len(expired),
        horizon,
        exc,
    )
    return entries
