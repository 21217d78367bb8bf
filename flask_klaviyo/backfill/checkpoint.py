"""A backfill's checkpoint in Redis: how many records are done, what was sent and rejected.

Each chunk reaches the outbox together with the checkpoint's new position in one Lua script
(:data:`~flask_klaviyo.delivery.scripts.BACKFILL_PUSH`): one round trip, atomic. A run stopped
anywhere (Ctrl-C, a lost machine) resumes right after the last chunk that reached the outbox,
so nothing is queued twice and nothing is skipped; a rerun after completion queues nothing.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..delivery import keys, scripts
from ..delivery.outbox import DRAIN_FLAG_TTL, Outbox

__all__ = ["KEEP_REJECTED", "Checkpoint", "Saved"]

log = logging.getLogger(__name__)

KEEP_REJECTED = 1000  # rejected records kept with their reasons (the count is exact)
POSITION = "position"
STARTED = "started_at"
FINISHED = "finished_at"
SENT_PREFIX = "sent:"  # + metric or operation kind
REJECTED = "rejected"


@dataclass
class Saved:
    """What a checkpoint holds: records done, sent per metric or kind, rejected records."""

    position: int = 0
    sent: dict[str, int] = field(default_factory=dict)
    rejected: int = 0
    rejected_lines: list[dict[str, Any]] = field(default_factory=list)
    started_at: float | None = None
    finished_at: float | None = None


class Checkpoint:
    """One backfill's checkpoint (``name``: the file's fingerprint, or the caller's)."""

    def __init__(self, outbox: Outbox, name: str) -> None:
        self.outbox = outbox
        self.connection = outbox.connection
        self.name = name
        self.key = keys.backfill_checkpoint(name)
        self.rejected_key = keys.backfill_rejected(name)
        self._push = self.connection.register_script(scripts.BACKFILL_PUSH)

    def load(self) -> Saved:
        raw = {
            (k.decode() if isinstance(k, bytes) else k): v
            for k, v in self.connection.hgetall(self.key).items()
        }
        saved = Saved(position=int(raw.get(POSITION, 0)), rejected=int(raw.get(REJECTED, 0)))
        saved.sent = {
            name.removeprefix(SENT_PREFIX): int(value)
            for name, value in raw.items()
            if name.startswith(SENT_PREFIX)
        }
        saved.started_at = float(raw[STARTED]) if STARTED in raw else None
        saved.finished_at = float(raw[FINISHED]) if FINISHED in raw else None
        saved.rejected_lines = [
            json.loads(r) for r in self.connection.lrange(self.rejected_key, 0, -1)
        ]
        return saved

    def start(self, *, expire: int | None = None) -> None:
        """A run begins (or resumes): the first start is kept, a finish is forgotten."""
        pipe = self.connection.pipeline(transaction=True)
        pipe.hsetnx(self.key, STARTED, time.time())
        pipe.hdel(self.key, FINISHED)
        if expire is not None:
            pipe.expire(self.key, expire)
        pipe.execute()

    def finish(self) -> None:
        self.connection.hset(self.key, FINISHED, time.time())

    def reset(self) -> None:
        """Forget the checkpoint (``--restart``): the next run reads from the first record."""
        self.connection.delete(self.key, self.rejected_key)

    def push(
        self,
        position: int,
        entries: Sequence[str],
        sent: Mapping[str, int],
        rejected: Sequence[Mapping[str, Any]],
    ) -> str | None:
        """Entries (stored JSON) into the outbox, and the checkpoint moved to ``position``, at
        once; a drain is scheduled when none is. Returns the first entry's stream id."""
        counters: list[Any] = []
        for name, count in sent.items():
            counters += [SENT_PREFIX + name, count]
        if rejected:
            counters += [REJECTED, len(rejected)]
        reasons = [json.dumps(dict(r), separators=(",", ":")) for r in rejected]
        args = [DRAIN_FLAG_TTL, position, KEEP_REJECTED, len(counters) // 2, len(reasons)]
        ours, first = self._push(
            keys=[self.outbox.stream, self.outbox.flag, self.key, self.rejected_key],
            args=[*args, *counters, *reasons, *entries],
        )
        if int(ours):
            self.outbox.enqueue_drain()
        if isinstance(first, bytes):
            first = first.decode()
        return str(first) or None
