"""The exception tree of flask-klaviyo.

::

    KlaviyoError
    ├── KlaviyoConfigError        (also RuntimeError) unusable configuration, named by key
    ├── KlaviyoSchemaError        (also ValueError) an event that must not be sent, named by field
    └── KlaviyoDeliveryError      anything that stopped an event from reaching Klaviyo
        ├── KlaviyoTransportError     timeout, refused or reset connection      retryable
        └── KlaviyoAPIError           Klaviyo answered with an error status
            ├── KlaviyoRateLimited        429, carries ``retry_after``          retryable
            ├── KlaviyoServerError        5xx and 408                           retryable
            └── KlaviyoClientError        other 4xx: no retry can fix it
                ├── KlaviyoBadRequest         400 (and 413, 422)
                └── KlaviyoAuthError          401, 403

``retryable`` tells a worker whether to try again; a non-retryable error sends the event to the
dead-letter registry with Klaviyo's own words (``errors[].detail``, ``source.pointer``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "ErrorDetail",
    "KlaviyoAPIError",
    "KlaviyoAuthError",
    "KlaviyoBadRequest",
    "KlaviyoClientError",
    "KlaviyoConfigError",
    "KlaviyoDeliveryError",
    "KlaviyoError",
    "KlaviyoRateLimited",
    "KlaviyoSchemaError",
    "KlaviyoServerError",
    "KlaviyoTransportError",
]


class KlaviyoError(Exception):
    """Base of every error this package raises."""


class KlaviyoConfigError(KlaviyoError, RuntimeError, ValueError):
    """A configuration value the extension cannot work with; ``key`` names it."""

    def __init__(self, key: str, message: str) -> None:
        self.key = key
        super().__init__(f"{key}: {message}")


class KlaviyoSchemaError(KlaviyoError, ValueError):
    """An event that Klaviyo would reject or misread; raised before anything is queued."""

    def __init__(self, metric: str, field: str, message: str) -> None:
        self.metric = metric
        self.field = field
        self.message = message
        super().__init__(f"{metric}: {field}: {message}")


class KlaviyoDeliveryError(KlaviyoError):
    """An event could not be delivered (yet)."""

    retryable: bool = False


class KlaviyoTransportError(KlaviyoDeliveryError):
    """No HTTP answer: timeout, connection refused or reset. Safe to retry (unique_id dedups)."""

    retryable = True


@dataclass(frozen=True)
class ErrorDetail:
    """One entry of Klaviyo's JSON:API ``errors`` array."""

    code: str = ""
    title: str = ""
    detail: str = ""
    pointer: str | None = None
    parameter: str | None = None
    id: str | None = None
    status: int | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_json(cls, raw: Any) -> ErrorDetail:
        if not isinstance(raw, dict):
            return cls(detail=str(raw)[:500])
        source = raw.get("source") if isinstance(raw.get("source"), dict) else {}
        status = raw.get("status")
        return cls(
            code=str(raw.get("code") or ""),
            title=str(raw.get("title") or ""),
            detail=str(raw.get("detail") or ""),
            pointer=source.get("pointer"),
            parameter=source.get("parameter"),
            id=raw.get("id"),
            status=int(status) if isinstance(status, int | str) and str(status).isdigit() else None,
            meta=raw.get("meta") if isinstance(raw.get("meta"), dict) else {},
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "code": self.code,
            "title": self.title,
            "detail": self.detail,
            "pointer": self.pointer,
            "parameter": self.parameter,
            "id": self.id,
        }


class KlaviyoAPIError(KlaviyoDeliveryError):
    """Klaviyo answered with an error status; ``errors`` holds its parsed JSON:API errors."""

    def __init__(
        self,
        status_code: int,
        errors: list[ErrorDetail] | None = None,
        *,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.status_code = status_code
        self.errors = errors or []
        self.headers = headers or {}
        first = self.errors[0] if self.errors else None
        summary = f"{first.code}: {first.detail}" if first else "no error body"
        if first and first.pointer:
            summary += f" (at {first.pointer})"
        super().__init__(f"Klaviyo answered {status_code}: {summary}")

    @property
    def pointers(self) -> list[str]:
        return [e.pointer for e in self.errors if e.pointer]


class KlaviyoRateLimited(KlaviyoAPIError):
    """429. ``retry_after`` is Klaviyo's ``Retry-After`` in seconds (None if it sent none)."""

    retryable = True

    def __init__(
        self,
        status_code: int,
        errors: list[ErrorDetail] | None = None,
        *,
        headers: dict[str, str] | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(status_code, errors, headers=headers)
        self.retry_after = retry_after


class KlaviyoServerError(KlaviyoAPIError):
    """5xx or 408: Klaviyo could not take the request now."""

    retryable = True


class KlaviyoClientError(KlaviyoAPIError):
    """A 4xx that no retry will fix; the event goes to the dead-letter registry."""


class KlaviyoBadRequest(KlaviyoClientError):
    """400/413/422: the payload is wrong; ``pointers`` say where."""


class KlaviyoAuthError(KlaviyoClientError):
    """401/403: the private key is missing, wrong or lacks the ``events:write`` scope."""
