"""Stable spellings and digests: canonical JSON, the deterministic ``unique_id`` digest, and a
body's size on the wire.

Every event carries a deterministic ``unique_id`` so retries, replays and the in-page bridge
never count twice (DESIGN.md, "Stable event IDs"). A leaf: it imports nothing of the package.
"""

from __future__ import annotations

import hashlib
import json
from json.encoder import encode_basestring  # type: ignore[attr-defined]
from typing import Any

__all__ = ["STABLE_ID_HEX_CHARS", "canonical_json", "encoded_size", "stable_id"]

STABLE_ID_HEX_CHARS = 24  # 96 bits: no collision among a profile's events in practice


def canonical_json(value: Any) -> str:
    """One spelling per value, so digests and keys are stable across processes."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def encoded_size(body: Any) -> int:
    """Bytes on the wire, serialised the way the client sends it (compact UTF-8 JSON)."""
    return len(json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode())


def stable_id(*parts: Any) -> str:
    """A short deterministic digest: the same parts give the same unique_id on every retry."""
    if all(part.__class__ is str for part in parts):
        # canonical_json of a list of plain strings, without the encoder's setup
        text = "[" + ",".join(map(encode_basestring, parts)) + "]"
    else:
        text = canonical_json(list(parts))
    # surrogatepass: a lone surrogate in an id still digests (validation then names its field)
    digest = hashlib.sha256(text.encode("utf-8", "surrogatepass"))
    digest = digest.hexdigest()
    return digest[:STABLE_ID_HEX_CHARS]
