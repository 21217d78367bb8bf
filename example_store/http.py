"""Small HTTP helpers shared by the store's blueprints: JSON errors, content negotiation."""

from __future__ import annotations

from typing import Any

from flask import jsonify, request
from werkzeug.wrappers import Response

__all__ = ["JSON_PATH_PREFIXES", "json_error", "request_data", "wants_json"]

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
