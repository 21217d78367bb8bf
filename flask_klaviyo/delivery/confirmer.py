"""Push answers the request did not wait for, read by a thread of the web process.

A request writes its push once the response exists; Redis has the events once it has the
bytes. Waiting in the request for Redis's answer ("taken", or an error) cost a busy server more
than the rest of tracking: the worker sleeps until Redis has run, and on a loaded machine that
is a scheduler round trip per page (``benchmarks/store_server.py``, "round trip only"). So the
request reads the answer only if it is already there; otherwise the push waits here, and the
first of these reads it: the same thread's next push (answers come back in order), this
module's thread within :data:`CHECK_EVERY` seconds, or the process's exit. A failed answer
goes to the push's ``on_failure`` (the spool) whoever reads it.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time

from .pending import PendingPush

__all__ = ["CHECK_EVERY", "defer", "flush"]

log = logging.getLogger(__name__)

CHECK_EVERY = 0.1  # seconds: the longest an unread answer waits for this thread

_lock = threading.Lock()
_waiting: list[PendingPush] = []
_wake = threading.Event()
_started_in: int | None = None  # this process's thread runs (a forked child starts its own)


def defer(pending: PendingPush) -> None:
    """Leave ``pending``'s answer to be read later (module docstring)."""
    global _started_in
    with _lock:
        if _started_in is None:
            _started_in = os.getpid()
            thread = threading.Thread(target=_run, name="klaviyo-confirm", daemon=True)
            thread.start()
            atexit.register(flush)
        _waiting.append(pending)
    _wake.set()


def flush(*, older_than: float = 0.0) -> int:
    """Read every waiting answer sent at least ``older_than`` seconds ago; how many remain.

    A push whose connection another reader holds is left for the next call."""
    now = time.monotonic()
    with _lock:
        due = [p for p in _waiting if not p.confirmed and now - p.sent_at >= older_than]
    for pending in due:
        lock = pending.lock
        if lock is not None and lock.acquire(blocking=False):
            try:
                pending.finish()
            finally:
                lock.release()
    with _lock:
        _waiting[:] = [p for p in _waiting if not p.confirmed]
        return len(_waiting)


def _forget_the_parents() -> None:
    """In a forked child: the parent's pushes, thread and locks are not this process's."""
    global _lock, _wake, _started_in
    _lock, _wake, _started_in = threading.Lock(), threading.Event(), None
    _waiting.clear()


os.register_at_fork(after_in_child=_forget_the_parents)


def _run() -> None:
    while True:
        _wake.wait()
        _wake.clear()
        time.sleep(CHECK_EVERY)
        try:
            if flush(older_than=CHECK_EVERY / 2):
                _wake.set()  # some were too young or busy: look again
        except Exception:  # never let the thread die: the next push still reads its answer
            log.exception("klaviyo: reading a push's answer failed")
