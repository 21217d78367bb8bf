"""Small HTTP helpers shared by the store's blueprints: JSON errors, content negotiation."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit, urlunsplit

from flask import jsonify, request, url_for
from werkzeug.wrappers import Response

__all__ = ["JSON_PATH_PREFIXES", "back", "json_error", "local_path", "request_data", "wants_json"]

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
