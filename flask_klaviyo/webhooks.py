"""Signed webhooks: prove a callback (a payment provider's "order paid") came from the sender.

Placed Order is best fired from the provider's webhook, not the confirmation page (the shopper may
close the tab first), and a webhook endpoint is public: anyone can POST to it. So the sender signs
each delivery and the store checks the signature before it believes a word of the body.

Header format (the scheme Stripe popularised)::

    X-Store-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<raw body>")>

The timestamp is signed with the body, so an intercepted delivery cannot be replayed later than
``tolerance`` seconds; several ``v1=`` entries may appear (a sender rotating its secret signs with
the old and the new one) and any match passes. Signatures are compared in constant time.

Verification needs the *raw* body bytes, exactly as received: parse the JSON afterwards.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time
from typing import Any

from .exceptions import KlaviyoError

__all__ = [
    "DEFAULT_TOLERANCE",
    "SIGNATURE_HEADER",
    "InvalidSignature",
    "MalformedSignature",
    "MissingSignature",
    "TimestampOutOfTolerance",
    "WebhookSignatureError",
    "sign",
    "verify_signature",
]

SIGNATURE_HEADER = "X-Store-Signature"
DEFAULT_TOLERANCE = 300  # seconds either side of now
SCHEME = "v1"
MAX_HEADER_CHARS = 4096  # a header this long is not a signature; don't parse it
MAX_SIGNATURES = 16  # v1 entries considered; rotation needs two or three

_HEX_SIGNATURE = re.compile(r"^[0-9a-fA-F]{64}$")
_TIMESTAMP = re.compile(r"^\d{1,12}$")


class WebhookSignatureError(KlaviyoError, ValueError):
    """A delivery whose signature does not prove it came from the sender: answer 400.

    ``code`` is a stable machine-readable reason, ``message`` says what to fix, and
    :meth:`to_dict` is a JSON error body.
    """

    code = "invalid_signature"
    status = 400

    def __init__(self, message: str) -> None:
        self.message = message
        super().__init__(f"{self.code}: {message}")

    def to_dict(self) -> dict[str, Any]:
        return {"error": self.code, "message": self.message}


class MissingSignature(WebhookSignatureError):
    """No signature header at all (or an empty one)."""

    code = "missing_signature"


class MalformedSignature(WebhookSignatureError):
    """A header that is not ``t=<unix>,v1=<64 hex digits>[,v1=...]``."""

    code = "malformed_signature"


class InvalidSignature(WebhookSignatureError):
    """Well formed, but no ``v1`` matches this secret and body (wrong secret, altered body)."""

    code = "invalid_signature"


class TimestampOutOfTolerance(WebhookSignatureError):
    """An authentic signature from too long ago (a replay) or too far ahead (a skewed clock)."""

    code = "timestamp_out_of_tolerance"

    def __init__(self, message: str, *, timestamp: int, now: float, tolerance: int) -> None:
        self.timestamp = timestamp
        self.now = now
        self.tolerance = tolerance
        super().__init__(message)


def _key(secret: str | bytes) -> bytes:
    key = secret.encode() if isinstance(secret, str) else bytes(secret)
    if not key:
        raise ValueError("the webhook secret must not be empty")
    return key


def _digest(key: bytes, timestamp: int, body: bytes) -> str:
    return hmac.new(key, b"%d." % timestamp + body, hashlib.sha256).hexdigest()


def sign(secret: str | bytes, body: bytes, *, timestamp: int | None = None) -> str:
    """The ``X-Store-Signature`` value for ``body`` (what a sender, or a test, puts on a delivery).

    ``timestamp`` defaults to now; pass one to produce an old (replayed) or future delivery.
    """
    when = int(time.time()) if timestamp is None else int(timestamp)
    return f"t={when},{SCHEME}={_digest(_key(secret), when, bytes(body))}"


def _parse(header: str) -> tuple[int, list[str]]:
    """(timestamp, v1 signatures) from the header, or MalformedSignature saying what is wrong."""
    if len(header) > MAX_HEADER_CHARS:
        raise MalformedSignature(f"the signature header is over {MAX_HEADER_CHARS} characters")
    timestamps: list[str] = []
    signatures: list[str] = []
    for part in header.split(","):
        name, sep, value = part.strip().partition("=")
        if not sep:
            raise MalformedSignature(
                f"expected 't=<unix time>,v1=<hex>' entries separated by commas, got {part[:40]!r}"
            )
        name, value = name.strip(), value.strip()
        if name == "t":
            timestamps.append(value)
        elif name == SCHEME:
            signatures.append(value)
        # other schemes (v0, a future v2) are ignored, as senders expect
    if len(timestamps) != 1:
        raise MalformedSignature(
            "the header needs exactly one t=<unix time> entry"
            + (f", it has {len(timestamps)}" if timestamps else "")
        )
    if not _TIMESTAMP.match(timestamps[0]):
        raise MalformedSignature(f"t must be a unix time in seconds, got {timestamps[0][:20]!r}")
    if not signatures:
        raise MalformedSignature("the header has no v1=<hex HMAC-SHA256> signature")
    if len(signatures) > MAX_SIGNATURES:
        raise MalformedSignature(f"more than {MAX_SIGNATURES} v1 signatures")
    for signature in signatures:
        if not _HEX_SIGNATURE.match(signature):
            raise MalformedSignature(
                "each v1 signature must be 64 hex digits (HMAC-SHA256), "
                f"got {len(signature)} characters"
            )
    return int(timestamps[0]), [s.lower() for s in signatures]


def verify_signature(
    secret: str | bytes,
    body: bytes,
    header: str | None,
    *,
    tolerance: int = DEFAULT_TOLERANCE,
    now: float | None = None,
) -> int:
    """Check a delivery's ``X-Store-Signature`` against its raw ``body``; return its timestamp.

    Raises :class:`MissingSignature`, :class:`MalformedSignature`, :class:`InvalidSignature` or
    :class:`TimestampOutOfTolerance` (all :class:`WebhookSignatureError`, all "answer 400").
    The signature is checked before the time, so a tolerance error only ever speaks of an
    authentic (replayed or skewed) delivery. ``now`` is for tests; it defaults to the clock.
    """
    if isinstance(tolerance, bool) or not isinstance(tolerance, int) or tolerance < 0:
        raise ValueError(f"tolerance must be a whole number of seconds >= 0, got {tolerance!r}")
    if not isinstance(body, bytes | bytearray | memoryview):
        raise TypeError(
            f"body must be the raw request bytes, got {type(body).__name__}; "
            "verify before parsing (request.get_data())"
        )
    key = _key(secret)
    if header is None or not header.strip():
        raise MissingSignature(f"the request has no {SIGNATURE_HEADER} header")
    timestamp, signatures = _parse(header)
    expected = _digest(key, timestamp, bytes(body))
    # Compare with every candidate (no early exit): timing says nothing about which one matched.
    matches = [hmac.compare_digest(expected, candidate) for candidate in signatures]
    if not any(matches):
        raise InvalidSignature(
            "no v1 signature matches this body and secret (a wrong secret, or the body was "
            "changed after signing: sign the exact bytes sent)"
        )
    clock = time.time() if now is None else now
    if abs(clock - timestamp) > tolerance:
        age = int(clock - timestamp)
        where = f"{age} s old" if age > 0 else f"{-age} s in the future"
        raise TimestampOutOfTolerance(
            f"the signature timestamp is {where}; at most {tolerance} s either way is accepted "
            "(a replayed delivery, or a clock that is off)",
            timestamp=timestamp,
            now=clock,
            tolerance=tolerance,
        )
    return timestamp
