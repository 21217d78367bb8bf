"""A push written to Redis whose answer is read later: by its sender, the next push on the
same connection, or (on the web side) the confirmer thread (:mod:`.confirmer`).

Redis has the events once it has the bytes; the answer says whether it took them (an error,
a closed connection, a script Redis no longer knows) and whether a drain must be scheduled.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .wire import answer_waiting

if TYPE_CHECKING:
    from .outbox import Outbox

__all__ = ["PendingPush"]

log = logging.getLogger(__name__)


class PendingPush:
    """A push sent to Redis; :meth:`confirm` reads its answer and schedules a drain if needed.

    Its answer may be read by another thread (the web side's confirmer, :mod:`.confirmer`):
    the sending thread's connection lock keeps one reader at a time. ``on_failure`` is told
    when a confirmation made by :meth:`finish` fails (the web side spools the items)."""

    __slots__ = (
        "_confirmed",
        "command",
        "connection",
        "count",
        "lock",
        "on_failure",
        "outbox",
        "sent_at",
        "waits",
    )

    def __init__(
        self,
        outbox: Outbox,
        connection: Any,
        command: tuple[Any, ...],
        count: int,
        lock: threading.RLock | None = None,
        on_failure: Callable[[Exception], None] | None = None,
    ):
        self.outbox = outbox
        self.connection = connection
        self.command = command
        self.count = count
        self.lock = lock
        self.on_failure = on_failure
        self.sent_at = time.monotonic()
        self.waits = outbox.min_replicas > 0  # a WAIT went with it: two answers to read
        self._confirmed = count == 0

    @property
    def confirmed(self) -> bool:
        return self._confirmed

    def answered(self) -> bool:
        """Whether :meth:`confirm` would not wait for Redis (confirmed, or its answer is in)."""
        return self._confirmed or answer_waiting(self.connection)

    def confirm(self) -> int:
        """Wait for Redis's answer (once); raises what Redis or the connection raised."""
        if self._confirmed:
            return self.count
        assert self.lock is not None  # a push of something always has its connection's lock
        with self.lock:
            if not self._confirmed:
                self._confirmed = True
                if self.outbox._answer(self):  # the flag was ours: no drain was scheduled
                    self.outbox.enqueue_drain()
        return self.count

    def finish(self) -> bool:
        """Confirm; a failure goes to ``on_failure`` (logged when there is none). True if the
        push is in Redis."""
        try:
            self.confirm()
        except Exception as exc:
            if self.on_failure is None:
                log.error("klaviyo: an unconfirmed push of %d event(s) failed: %s", self.count, exc)
            else:
                self.on_failure(exc)
            return False
        return True
