"""A local append-only spool for the minutes Redis is down.

When the outbox cannot reach Redis, the request's events are appended to a file in the instance
folder (one JSON line each, fsync'd, under an advisory lock so several web processes can share
it) and the page renders as usual. The next request that reaches Redis moves them into the
outbox. The file is bounded: when full, new events are refused with a clear log line naming
them, rather than filling the disk.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .._settings import DEFAULT_SPOOL_MAX_BYTES
from ..events import Event
from .operations import Operation, decode, describe

__all__ = ["DEFAULT_SPOOL_MAX_BYTES", "SPOOL_FILENAME", "Breaker", "Spool"]

log = logging.getLogger(__name__)

SPOOL_FILENAME = "klaviyo-spool.jsonl"
# How often a web process looks for a spool another process (or an earlier run) left behind:
# the look is a stat() on every push otherwise.
SPOOL_CHECK_INTERVAL = 1.0


class Spool:
    """Events waiting on disk for Redis to come back."""

    def __init__(self, folder: str | os.PathLike[str], *, max_bytes: int = DEFAULT_SPOOL_MAX_BYTES):
        self.path = Path(folder) / SPOOL_FILENAME
        self.lock_path = Path(folder) / (SPOOL_FILENAME + ".lock")
        self.max_bytes = max_bytes
        self.refused = 0
        self._next_check = 0.0
        self._seen_waiting = False

    def _locked(self) -> Any:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(self.lock_path, "a")  # noqa: SIM115 - released by the caller's with-block
        fcntl.flock(handle, fcntl.LOCK_EX)
        return handle

    def append(self, events: Sequence[Event | Operation]) -> int:
        """Write ``events`` durably; returns how many fit (the rest are refused and logged)."""
        lines = [json.dumps(e.to_dict(), separators=(",", ":")) + "\n" for e in events]
        with self._locked():
            size = self.path.stat().st_size if self.path.exists() else 0
            kept: list[str] = []
            for event, line in zip(events, lines, strict=True):
                if size + len(line) > self.max_bytes:
                    self.refused += 1
                    log.error(
                        "klaviyo: spool full (%d bytes at %s): %s refused",
                        self.max_bytes,
                        self.path,
                        describe(event),
                    )
                    continue
                kept.append(line)
                size += len(line)
            if kept:
                with open(self.path, "a", encoding="utf-8") as spool:
                    spool.writelines(kept)
                    spool.flush()
                    os.fsync(spool.fileno())
        self._next_check = 0.0  # look again at the next push that reaches Redis
        return len(kept)

    def may_hold_events(self) -> bool:
        """Whether events may wait here; looks at the file at most once a second (hot path)."""
        now = time.monotonic()
        if now >= self._next_check:
            self._next_check = now + SPOOL_CHECK_INTERVAL
            self._seen_waiting = self.size() > 0
        return self._seen_waiting

    def size(self) -> int:
        try:
            return self.path.stat().st_size
        except FileNotFoundError:
            return 0

    def replay(self, push: Callable[[list[Event | Operation]], Any], *, batch: int = 500) -> int:
        """Hand the spooled events to ``push`` (the outbox) in order; returns how many moved.

        A batch is removed from the file only after ``push`` returned, so a failure midway
        leaves the rest (and at worst repeats a batch, which ``unique_id`` makes harmless).
        """
        if not self.size():
            return 0
        moved = 0
        with self._locked():
            if not self.path.exists():
                return 0
            lines = self.path.read_text(encoding="utf-8").splitlines()
            events: list[Event | Operation] = []
            for number, line in enumerate(lines, 1):
                try:
                    events.append(decode(json.loads(line)))
                except (ValueError, KeyError, TypeError):
                    log.error("klaviyo: unreadable spool line %d skipped: %.200s", number, line)
            try:
                for start in range(0, len(events), batch):
                    push(events[start : start + batch])
                    moved = start + len(events[start : start + batch])
            finally:
                rest = events[moved:]
                if rest:
                    tmp = self.path.with_suffix(".tmp")
                    tmp.write_text(
                        "".join(json.dumps(e.to_dict()) + "\n" for e in rest), encoding="utf-8"
                    )
                    os.replace(tmp, self.path)
                else:
                    self.path.unlink(missing_ok=True)
                self._seen_waiting = bool(rest)
        if moved:
            log.warning("klaviyo: %d spooled event(s) moved to Redis", moved)
        return moved

    def discard(self, unwanted: Callable[[dict[str, Any]], bool]) -> int:
        """Remove the spooled entries ``unwanted`` picks (a forgotten person's); how many."""
        if not self.size():
            return 0
        with self._locked():
            if not self.path.exists():
                return 0
            lines = self.path.read_text(encoding="utf-8").splitlines(keepends=True)
            kept = []
            for line in lines:
                try:
                    drop = unwanted(json.loads(line))
                except ValueError:
                    drop = False  # unreadable lines are replay's to report
                if not drop:
                    kept.append(line)
            if len(kept) < len(lines):
                tmp = self.path.with_suffix(".tmp")
                tmp.write_text("".join(kept), encoding="utf-8")
                os.replace(tmp, self.path)
        return len(lines) - len(kept)


class Breaker:
    """After Redis failed, skip it for ``cooldown`` seconds: pages keep their latency class."""

    def __init__(self, cooldown: float = 5.0) -> None:
        self.cooldown = cooldown
        self.open_until = 0.0

    def allows(self) -> bool:
        return time.monotonic() >= self.open_until

    def trip(self) -> None:
        self.open_until = time.monotonic() + self.cooldown

    def reset(self) -> None:
        self.open_until = 0.0
