"""Small HTTP helpers shared by the store's blueprints: JSON errors, content negotiation, and
the one rule every JSON body meets before any view reads it (``refuse_unreadable_json``)."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit, urlunsplit

from flask import abort, jsonify, request, url_for
from werkzeug.wrappers import Response

from .validation import unreadable_field

__all__ = [
    "JSON_PATH_PREFIXES",
    "back",
    "json_error",
    "local_path",
    "refuse_unreadable_json",
    "request_data",
    "wants_json",
]

# Machine clients live here: errors under these paths are always JSON.
JSON_PATH_PREFIXES = ("/api/", "/webhooks/")


def wants_json() -> bool:
    """A JSON request, a JSON-only path, or an Accept header that prefers JSON to HTML."""
    if request.is_json or request.path.startswith(JSON_PATH_PREFIXES):
        return True
    best = request.accept_mimetypes.best_match(["text/html", "application/json"])
    return best == "application/json"


def json_error(status: int, code: str, message: str, **extra: Any) -> Response:
    """``{"error": code, "message": message}`` with ``status``: what every JSON client gets."""
    response = jsonify({"error": code, "message": message, **extra})
    response.status_code = status
    return response


def refuse_unreadable_json() -> Response | None:
    """Before every request: a JSON body holding text that is not Unicode (JSON can escape a
    lone surrogate, ``"\\ud800"``, which no database or Klaviyo can store) is refused with a 400
    that says so, whatever the route; a view never sees it. The parsed body is cached, so the
    view's own ``get_json`` does not parse it again. Bodies that are not JSON at all are left
    to the views (each answers its own "send JSON" 400), and so is the webhook, which reads its
    raw bytes (bounded) to check their signature first."""
    if not request.is_json or request.path.startswith("/webhooks/"):
        return None
    fields: dict[str, str] = {}
    try:
        data = request.get_json(silent=True)
    except RecursionError:  # nested deeper than Python parses (silent=True catches ValueError)
        code, message = "invalid_json", "the JSON is nested too deeply to read"
    else:
        field = unreadable_field(data)
        if field is None:
            return None
        code = "invalid_text"
        where = repr(field) if field else "the body"
        message = f"{where} is not valid Unicode text (a lone surrogate such as \\ud800)"
        if field:
            fields[field] = "This has characters we can't read: please type it again."
    if wants_json():
        return json_error(400, code, message, fields=fields)
    abort(400, description=message)


def request_data() -> dict[str, Any]:
    """The form fields, or the JSON object of a JSON request ({} if it is not an object)."""
    if request.is_json:
        data = request.get_json(silent=True)
        return data if isinstance(data, dict) else {}
    return request.form.to_dict()


def back() -> str:
    """Where the form was posted from: ``next`` or the Referer, if it is on this site; else home."""
    for target in (request.form.get("next"), request.referrer):
        local = local_path(target)
        if local is not None:
            return local
    return url_for("store.index")


def local_path(target: str | None) -> str | None:
    """``target`` as a path on this site, or None (no open redirects)."""
    if not target or "\\" in target:
        return None
    parts = urlsplit(target)
    off_site = parts.scheme not in ("http", "https") or parts.netloc != request.host
    if (parts.scheme or parts.netloc) and off_site:
        return None
    path = urlunsplit(("", "", parts.path, parts.query, ""))
    if not path.startswith("/") or path.startswith("//"):
        return None
    return path
