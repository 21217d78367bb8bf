"""JSON:API framing shared by every endpoint: the request and answer types, Klaviyo's error
objects, JSON pointers, and the checker that collects (pointer, detail) problems.

Endpoints validate with :class:`Checker` so that every 400 names ``source.pointer`` the way
Klaviyo does; nothing here knows about a particular endpoint.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http import HTTPStatus
from typing import Any

from ._config import DEFAULT_ERROR_POINTER, JSON_API, MAX_ERRORS, MAX_STRING_BYTES

log = logging.getLogger(__name__)

STATUS_ERRORS: dict[int, tuple[str, str]] = {
    400: ("invalid", "Invalid input."),
    401: ("not_authenticated", "Authentication credentials were not provided."),
    403: ("permission_denied", "You do not have permission to perform this action."),
    404: ("not_found", "Not found."),
    405: ("method_not_allowed", "Method not allowed."),
    408: ("request_timeout", "Request timeout."),
    409: ("conflict", "Conflict."),
    413: ("payload_too_large", "Request entity too large."),
    415: ("unsupported_media_type", "Unsupported media type."),
    429: ("throttled", "Request was throttled."),
    500: ("error", "A server error occurred."),
    502: ("bad_gateway", "Bad gateway."),
    503: ("service_unavailable", "Service temporarily unavailable."),
    504: ("gateway_timeout", "Gateway timeout."),
}


# --------------------------------------------------------------------------- request / answer


@dataclass
class Request:
    """What arrived (off a socket or through the in-process transport), framing already undone."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    raw: bytes
    too_large: bool = False
    parsed: Any = None
    received_at: float = field(default_factory=time.time)

    def header(self, name: str) -> str | None:
        wanted = name.lower()
        for key, value in self.headers.items():
            if key.lower() == wanted:
                return value
        return None


@dataclass
class Answer:
    """What to write back (or, with ``drop``, to withhold)."""

    status: int
    body: bytes = b""
    headers: list[tuple[str, str]] = field(default_factory=list)
    delay: float = 0.0
    drop: bool = False
    close: bool = False
    errors: list[dict[str, Any]] = field(default_factory=list)
    reset: bool = False  # with drop: abort the connection (RST), not a clean close


# --------------------------------------------------------------------------- error objects


def error_object(
    status: int,
    *,
    code: str | None = None,
    title: str | None = None,
    detail: str | None = None,
    pointer: str | None = None,
    parameter: str | None = None,
) -> dict[str, Any]:
    """One JSON:API error the way Klaviyo writes it (``source`` names a pointer or parameter)."""
    default_code, default_title = STATUS_ERRORS.get(status, ("error", phrase(status)))
    source: dict[str, str] = (
        {"parameter": parameter} if parameter else {"pointer": pointer or DEFAULT_ERROR_POINTER}
    )
    return {
        "id": str(uuid.uuid4()),
        "status": status,
        "code": code or default_code,
        "title": title or default_title,
        "detail": detail or title or default_title,
        "source": source,
        "meta": {},
    }


def phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase + "."
    except ValueError:
        return "Error."


def error_answer(status: int, errors: list[dict[str, Any]], **extra: Any) -> Answer:
    body = json.dumps({"errors": errors}).encode()
    return Answer(status, body, [("Content-Type", JSON_API)], errors=errors, **extra)


def one_error(status: int, **kwargs: Any) -> Answer:
    return error_answer(status, [error_object(status, **kwargs)])


def problems_answer(problems: list[tuple[str, str]]) -> Answer:
    """A 400 listing every (pointer, detail) a :class:`Checker` found (at most MAX_ERRORS)."""
    errors = [
        error_object(400, detail=detail, pointer=pointer)
        for pointer, detail in problems[:MAX_ERRORS]
    ]
    return error_answer(400, errors)


def json_answer(status: int, payload: Any) -> Answer:
    """Plain JSON, for the control routes."""
    body = json.dumps(payload, ensure_ascii=False, default=str).encode()
    return Answer(status, body, [("Content-Type", "application/json")])


def document_answer(status: int, document: dict[str, Any]) -> Answer:
    """A JSON:API document (a resource Klaviyo answers with)."""
    body = json.dumps(document, ensure_ascii=False, default=str).encode()
    return Answer(status, body, [("Content-Type", JSON_API)])


def seconds_text(seconds: int) -> str:
    return f"{seconds} second" if seconds == 1 else f"{seconds} seconds"


def iso(moment: float | None) -> str | None:
    """A wall-clock timestamp as Klaviyo writes it: ISO 8601 with microseconds and +00:00."""
    if moment is None:
        return None
    return datetime.fromtimestamp(moment, UTC).isoformat(timespec="microseconds")


def reject_constant(name: str) -> Any:
    """``json.loads`` hook: NaN and Infinity are not JSON, whatever Python accepts."""
    raise ValueError(f"{name} is not valid JSON")


# --------------------------------------------------------------------------- checking


_ARTICLE = {
    "object": "an object",
    "array": "an array",
    "string": "a string",
    "number": "a number",
    "integer": "an integer",
    "boolean": "a boolean",
}


def has_type(value: Any, kind: str) -> bool:
    if kind == "object":
        return isinstance(value, dict)
    if kind == "array":
        return isinstance(value, list)
    if kind == "string":
        return isinstance(value, str)
    if kind == "number":
        return isinstance(value, int | float) and not isinstance(value, bool)
    if kind == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "boolean":
        return isinstance(value, bool)
    raise ValueError(kind)


def json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def escape_pointer(key: str) -> str:
    return key.replace("~", "~0").replace("/", "~1")


def pointer(path: Sequence[str | int]) -> str:
    return "".join(f"/{escape_pointer(str(part))}" for part in path)


class Checker:
    """Collects Klaviyo-style validation problems as (pointer, detail) pairs."""

    def __init__(self) -> None:
        self.problems: list[tuple[str, str]] = []

    def fail(self, pointer: str, detail: str) -> None:
        self.problems.append((pointer, detail))

    def member(
        self, parent: dict[str, Any] | None, key: str, base: str, kind: str, *, required: bool
    ) -> Any:
        """Return parent[key] when it has the wanted JSON type, else record why and give None.

        A null counts as absent (Klaviyo's nullable fields); a required one is then missing.
        """
        if parent is None:
            return None
        value = parent.get(key)
        if value is None:
            if required:
                self.fail(f"{base}/{escape_pointer(key)}", f"'{key}' is a required field.")
            return None
        if not has_type(value, kind):
            self.fail(
                f"{base}/{escape_pointer(key)}",
                f"'{key}' must be {_ARTICLE[kind]}, not {json_type(value)}.",
            )
            return None
        return value

    def resource_type(self, resource: dict[str, Any] | None, expected: str, base: str) -> None:
        value = self.member(resource, "type", base, "string", required=True)
        if value is not None and value != expected:
            self.fail(f"{base}/type", f"'type' must be '{expected}', not '{value}'.")

    def resource(self, body: Any, expected: str) -> dict[str, Any] | None:
        """The top of every request: ``{"data": {"type": expected, "attributes": {...}}}``.

        Returns the attributes (None after recording why not).
        """
        if not isinstance(body, dict):
            self.fail("/data", f"The body must be a JSON object, not {json_type(body)}.")
            return None
        data = self.member(body, "data", "", "object", required=True)
        self.resource_type(data, expected, "/data")
        return self.member(data, "attributes", "/data", "object", required=True)

    def listing(
        self, parent: dict[str, Any] | None, key: str, base: str, *, most: int, noun: str
    ) -> list[Any]:
        """``parent[key].data``: a JSON:API list of at most ``most`` entries."""
        holder = self.member(parent, key, base, "object", required=True)
        entries = self.member(holder, "data", f"{base}/{key}", "array", required=True) or []
        if len(entries) > most:
            self.fail(
                f"{base}/{key}/data",
                f"A job may contain at most {most} {noun}; this one has {len(entries)}.",
            )
        return entries


def check_string_sizes(checker: Checker, body: Any, raw: bytes | None = None) -> None:
    """No string (value or key) anywhere in the body may exceed 100 KB.

    ``raw`` (the JSON text) lets the common case skip the walk: see :func:`longest_string`.
    """
    if raw is not None and longest_string(raw) <= MAX_STRING_BYTES:
        return
    stack: list[tuple[Any, tuple[str | int, ...]]] = [(body, ())]
    while stack and len(checker.problems) < MAX_ERRORS:
        value, path = stack.pop()
        if isinstance(value, str):
            if len(value) * 4 > MAX_STRING_BYTES and len(value.encode()) > MAX_STRING_BYTES:
                checker.fail(pointer(path), "Strings must not be larger than 100 KB.")
        elif isinstance(value, dict):
            for key, item in value.items():
                if len(key) * 4 > MAX_STRING_BYTES and len(key.encode()) > MAX_STRING_BYTES:
                    checker.fail(pointer((*path, key)), "Keys must not be larger than 100 KB.")
                stack.append((item, (*path, key)))
        elif isinstance(value, list):
            stack.extend((item, (*path, index)) for index, item in enumerate(value))


def longest_string(raw: bytes) -> int:
    """An upper bound of the UTF-8 size of the longest string (or key) in a JSON text.

    Each two-byte escape that could hide a quote (``\\\\``, ``\\"``) becomes one byte, the
    size it decodes to; then every quote left delimits a string, and no string decodes to more
    bytes than its text between the quotes. C-speed, unlike a walk of the parsed body.
    """
    flat = raw.replace(b"\\\\", b"x").replace(b'\\"', b"x")
    return max(map(len, flat.split(b'"')))
