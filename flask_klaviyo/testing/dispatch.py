"""The one request pipeline, shared by the socket server and the in-process transport.

Route (control, inspector, registry), then for an API endpoint: the next queued fault, the
rate windows, the key (or company id for a browser endpoint), the revision header, the media
type, the size, the Content-Encoding, the JSON, and finally the endpoint's own handler. Each
API request is recorded with the status it got.
"""

from __future__ import annotations

import hmac
import json
import logging
import math
import re
import zlib
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any

from . import control, inspector, registry
from ._config import ACCEPTED_MEDIA_TYPES, AUTH_SCHEME, JSON_API, MAX_BODY_BYTES
from .jsonapi import (
    Answer,
    Request,
    error_answer,
    error_object,
    json_answer,
    one_error,
    reject_constant,
    seconds_text,
)
from .ratewindows import scaled_seconds
from .state import Call, Fault

if TYPE_CHECKING:
    from .fake import FakeKlaviyo

log = logging.getLogger(__name__)

REVISION_PATTERN = re.compile(r"^(\d{4})-(\d{2})-(\d{2})(\.[A-Za-z0-9_-]+)?$")


def dispatch(fake: FakeKlaviyo, request: Request) -> Answer:
    """Answer one request (called from handler threads and from the transport)."""
    path = request.path.rstrip("/") or "/"
    if path.startswith("/_fake"):
        return control.handle(fake, request, path)
    if path in ("/", "/index.html"):
        if request.method != "GET":
            return json_answer(405, {"error": "GET only"})
        return inspector.render(fake)
    if path == "/favicon.ico":
        return Answer(204)
    endpoint, at_path, params = registry.match(request.method, path)
    client = at_path is not None and at_path.client
    if client and request.method == "OPTIONS":
        return Answer(204, headers=_cors_headers(preflight=True))
    if at_path is None:
        answer = one_error(404, detail=f"No such endpoint: {request.path}")
    elif endpoint is None:
        answer = one_error(405, detail=f"Method {request.method} is not allowed here.")
    else:
        answer = _api(fake, endpoint, request, params)
    if client:
        answer.headers.extend(_cors_headers(preflight=False))
    status = None if answer.drop else answer.status
    name = (endpoint or at_path).name if at_path is not None else None
    fake.state.record(request, name, status, answer.errors)
    return answer


def _api(
    fake: FakeKlaviyo, endpoint: registry.Endpoint, request: Request, params: dict[str, str]
) -> Answer:
    state = fake.state
    with state.lock:
        fault = state.faults.popleft() if state.faults else None
        latency = state.latency
    if fault is not None and fault.status is None:
        return Answer(0, delay=latency + fault.hold, drop=True, reset=fault.reset)
    limit_headers = None
    if fault is not None:
        answer = _fault_answer(fault)
    else:
        throttled, limit_headers = _take_rate_slot(fake, endpoint)
        answer = throttled or _gates_then_handle(fake, endpoint, request, params)
    answer.delay = latency
    if answer.status != 429:
        answer.headers.extend(limit_headers or _observed_headers(fake, endpoint))
    return answer


def _take_rate_slot(
    fake: FakeKlaviyo, endpoint: registry.Endpoint
) -> tuple[Answer | None, list[tuple[str, str]] | None]:
    """Enforced windows: count this request, or answer 429 with Retry-After.

    Returns (the 429 or None, the RateLimit-* headers, None when nothing is enforced here).
    """
    state = fake.state
    with state.lock:
        windows = state.limits.get(endpoint.name)
        scale = state.time_scale
    if not windows:
        return None, None
    slot = state.enforced.take(endpoint.name, windows, scale=scale)
    if not slot.admitted:
        with state.lock:
            state.throttled += 1
        answer = one_error(
            429,
            detail="Request was throttled. Expected available in "
            f"{seconds_text(math.ceil(slot.blocked_for - 1e-9))}.",
        )
        answer.headers.append(("Retry-After", scaled_seconds(slot.blocked_for, scale)))
        return answer, None
    return None, _limit_headers(slot.limit, slot.remaining, scaled_seconds(slot.reset, scale))


def _observed_headers(fake: FakeKlaviyo, endpoint: registry.Endpoint) -> list[tuple[str, str]]:
    """Nothing enforced: the same engine only counts Klaviyo's steady window, for the headers."""
    slot = fake.state.observed.take(endpoint.name, (endpoint.steady,), enforce=False)
    return _limit_headers(slot.limit, slot.remaining, scaled_seconds(slot.reset, 1.0))


def _limit_headers(limit: int, remaining: int, reset: str) -> list[tuple[str, str]]:
    return [
        ("RateLimit-Limit", str(limit)),
        ("RateLimit-Remaining", str(remaining)),
        ("RateLimit-Reset", reset),
    ]


def _fault_answer(fault: Fault) -> Answer:
    assert fault.status is not None
    headers: list[tuple[str, str]] = []
    detail = fault.detail
    if fault.retry_after is not None:
        seconds = math.ceil(fault.retry_after)
        headers.append(("Retry-After", str(seconds)))
        if fault.status == 429 and detail is None:
            detail = f"Request was throttled. Expected available in {seconds_text(seconds)}."
    error = error_object(fault.status, code=fault.code, detail=detail, pointer=fault.pointer)
    answer = error_answer(fault.status, [error])
    answer.headers.extend(headers)
    return answer


def _gates_then_handle(
    fake: FakeKlaviyo, endpoint: registry.Endpoint, request: Request, params: dict[str, str]
) -> Answer:
    """What Klaviyo checks before it looks at a body, in Klaviyo's order, then the handler."""
    if endpoint.client:
        company = request.query.get("company_id")
        if company != fake.company_id:
            detail = (
                "'company_id' is a required query parameter."
                if not company
                else f"Invalid company_id '{company[:64]}'."
            )
            return one_error(400, detail=detail, parameter="company_id")
    else:
        refused = _check_auth(request.header("Authorization"), fake.api_key)
        if refused is not None:
            return refused
    revision = request.header("revision")
    if not _valid_revision(revision):
        detail = (
            "The 'revision' header is required (format YYYY-MM-DD[.suffix])."
            if not revision
            else f"Invalid revision '{revision[:40]}': expected a released YYYY-MM-DD[.suffix]."
        )
        return one_error(400, detail=detail, parameter="revision")
    body: Any = None
    raw = b""
    if endpoint.method != "GET":
        parsed = _read_json(request, endpoint.max_body)
        if isinstance(parsed, Answer):
            return parsed
        body, raw = parsed
    call = Call(endpoint.name, request, body, raw, params, fake.state, fake.link_base)
    return endpoint.handler(call)


def _read_json(request: Request, max_body: int) -> Answer | tuple[Any, bytes]:
    """Media type, size, Content-Encoding and JSON: the parsed body and its text, or the 4xx."""
    media = (request.header("Content-Type") or "").split(";", 1)[0].strip().lower()
    if media not in ACCEPTED_MEDIA_TYPES:
        return one_error(415, detail=f"Unsupported media type '{media[:64]}': use {JSON_API}.")
    if request.too_large:
        return one_error(
            413, detail=f"The request body must not exceed 5 MB ({MAX_BODY_BYTES} bytes)."
        )
    encoding = (request.header("Content-Encoding") or "identity").strip().lower()
    try:
        raw = _decompress(request.raw, encoding)
    except LookupError:
        return one_error(415, detail=f"Unsupported Content-Encoding '{encoding[:32]}'.")
    except ValueError as exc:
        return one_error(400, code="parse_error", title="Malformed request.", detail=str(exc))
    if raw is None:
        return one_error(
            413, detail=f"The decompressed body must not exceed 5 MB ({MAX_BODY_BYTES} bytes)."
        )
    if len(raw) > max_body:
        return one_error(
            413, detail=f"The request body must not exceed {max_body // 1024} KB for this endpoint."
        )
    try:
        body = json.loads(raw.decode("utf-8"), parse_constant=reject_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        return one_error(
            400,
            code="parse_error",
            title="Malformed request.",
            detail=f"JSON parse error - {str(exc)[:200]}",
        )
    request.parsed = body
    return body, raw


def _check_auth(header: str | None, api_key: str) -> Answer | None:
    scheme, _, key = (header or "").strip().partition(" ")
    if scheme != AUTH_SCHEME or not key.strip():
        return one_error(
            401,
            detail="Missing or invalid authorization scheme. Please use Klaviyo-API-Key.",
        )
    if not hmac.compare_digest(key.strip().encode(), api_key.encode()):
        return one_error(
            401,
            code="authentication_failed",
            title="Incorrect authentication credentials.",
            detail="Incorrect authentication credentials.",
        )
    return None


def _valid_revision(revision: str | None) -> bool:
    """``YYYY-MM-DD[.suffix]`` naming a real day that has already come (no revision from the
    future exists); the stand-in accepts every released date, Klaviyo accepts most of them."""
    found = REVISION_PATTERN.match(revision or "")
    if found is None:
        return False
    try:
        day = date(int(found[1]), int(found[2]), int(found[3]))
    except ValueError:
        return False
    return day <= datetime.now(UTC).date() + timedelta(days=1)


def _decompress(raw: bytes, encoding: str) -> bytes | None:
    """Undo Content-Encoding; None when the result would exceed the 5 MB limit."""
    if encoding in ("", "identity"):
        return raw
    if encoding not in ("gzip", "deflate"):
        raise LookupError(encoding)
    wbits = 16 + zlib.MAX_WBITS if encoding == "gzip" else zlib.MAX_WBITS
    decoder = zlib.decompressobj(wbits)
    try:
        out = decoder.decompress(raw, MAX_BODY_BYTES + 1)
    except zlib.error as exc:
        raise ValueError(f"Could not decode the {encoding} body: {exc}") from exc
    if len(out) > MAX_BODY_BYTES:
        return None
    if not decoder.eof:
        raise ValueError(f"Truncated {encoding} body.")
    return out


def _cors_headers(*, preflight: bool) -> list[tuple[str, str]]:
    """klaviyo.js calls the client endpoints cross-origin; so may a browser test."""
    headers = [("Access-Control-Allow-Origin", "*")]
    if preflight:
        headers += [
            ("Access-Control-Allow-Methods", "POST, OPTIONS"),
            ("Access-Control-Allow-Headers", "Content-Type, Accept, revision"),
            ("Access-Control-Max-Age", "600"),
        ]
    return headers


def answer(fake: FakeKlaviyo, request: Request) -> Answer:
    """:func:`dispatch`, except that a bug in the stand-in shows as a 500 instead of a hang."""
    try:
        return dispatch(fake, request)
    except Exception as exc:
        log.exception("FakeKlaviyo internal error")
        return one_error(500, detail=f"FakeKlaviyo internal error: {exc!r}")
