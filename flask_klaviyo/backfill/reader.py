"""Records with their numbers: JSON Lines read one line at a time (never the whole file), or any
iterable the store hands over (rows straight from its database).

A line that is not a JSON object becomes a :class:`Malformed` record naming its number and why,
so the run reports it and goes on; blank lines are not records.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["Malformed", "Numbered", "count_lines", "fingerprint", "numbered", "read_jsonl"]

READ_CHUNK = 1 << 20  # bytes per read when counting lines
FINGERPRINT_BYTES = 1 << 16  # at most this much of the first line names a file


@dataclass(frozen=True, slots=True)
class Malformed:
    """A line that cannot be a record; ``reason`` says why (JSON's own message)."""

    reason: str


Numbered = tuple[int, Any]  # (line or position number, the record or a Malformed)


def read_jsonl(path: str | os.PathLike[str], *, after: int = 0) -> Iterator[Numbered]:
    """``(line number, object or Malformed)`` for each non-blank line after line ``after``."""
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, 1):
            if number <= after or not raw.strip():
                continue
            try:
                value = json.loads(raw)
            except ValueError as exc:  # UnicodeDecodeError and JSONDecodeError alike
                yield number, Malformed(f"not JSON: {exc}")
                continue
            if not isinstance(value, dict):
                yield number, Malformed(f"not a JSON object but {type(value).__name__}")
                continue
            yield number, value


def numbered(records: Iterable[Any], *, after: int = 0) -> Iterator[Numbered]:
    """An iterable's records numbered from 1, those after position ``after``."""
    for number, record in enumerate(records, 1):
        if number > after:
            yield number, record


def count_lines(path: str | os.PathLike[str]) -> int:
    """Lines in the file (the last one counts without its newline), read in chunks."""
    count, last = 0, b"\n"
    with open(path, "rb") as handle:
        while chunk := handle.read(READ_CHUNK):
            count += chunk.count(b"\n")
            last = chunk[-1:]
    return count + (0 if last == b"\n" else 1)


def fingerprint(kind: str, path: str | os.PathLike[str]) -> str:
    """A checkpoint name for a file: its kind, real path and first line. A rerun of the same
    file (grown or not) finds its checkpoint; another file at that path does not."""
    real = Path(path).resolve()
    digest = hashlib.sha256(str(real).encode())
    with open(real, "rb") as handle:
        digest.update(handle.readline(FINGERPRINT_BYTES))
    return f"{kind}:{digest.hexdigest()[:24]}"
