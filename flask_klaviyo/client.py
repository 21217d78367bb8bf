"""An httpx client for Klaviyo's API: Create Event, Bulk Create Events and any other endpoint an
operation kind names (:meth:`KlaviyoClient.send`).

One pooled connection per process and settings (``get_client``), the exact headers Klaviyo
requires, timeouts that are never ``None``, and every non-202 answer turned into a typed
exception from :mod:`flask_klaviyo.exceptions` (``Retry-After`` exposed on 429).
"""

from __future__ import annotations

import functools
import json
import os
import ssl
import threading
from dataclasses import dataclass
from typing import Any

import httpx

from ._settings import DEFAULT_API_URL, DEFAULT_REVISION
from .exceptions import (
    ErrorDetail,
    KlaviyoAPIError,
    KlaviyoAuthError,
    KlaviyoBadRequest,
    KlaviyoClientError,
    KlaviyoConfigError,
    KlaviyoRateLimited,
    KlaviyoServerError,
    KlaviyoTransportError,
)

__all__ = [
    "BULK_EVENTS_PATH",
    "DEFAULT_API_URL",
    "DEFAULT_REVISION",
    "DEFAULT_TIMEOUT",
    "EVENTS_PATH",
    "KlaviyoClient",
    "SendResult",
    "encode_body",
    "get_client",
    "ready_to_fork",
    "tls_context",
]

# Connect fast, allow Klaviyo a few seconds to answer; never wait forever.
DEFAULT_TIMEOUT = httpx.Timeout(10.0, connect=3.0)
EVENTS_PATH = "/api/events"
BULK_EVENTS_PATH = "/api/event-bulk-create-jobs"
JSON_API = "application/vnd.api+json"
USER_AGENT = "flask-klaviyo/0.1"
_SUCCESS = frozenset((200, 201, 202, 204))
# Built once (json.dumps builds one per call); bodies come from decoded JSON: no cycle check.
_body_json = json.JSONEncoder(
    separators=(",", ":"), ensure_ascii=False, check_circular=False
).encode


@dataclass(frozen=True)
class SendResult:
    """A success from Klaviyo, with the rate-limit headers the limiter needs and the answer's
    JSON (``data``: a created resource or an asynchronous job's id and status), if any."""

    status_code: int
    rate_limit_remaining: int | None
    rate_limit_limit: int | None
    rate_limit_reset: float | None
    elapsed: float
    data: Any = None


def _number(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def _int(value: str | None) -> int | None:
    number = _number(value)
    return int(number) if number is not None else None


class KlaviyoClient:
    """Sends JSON:API event bodies to Klaviyo; raises a typed error for anything but 202."""

    def __init__(
        self,
        api_key: str,
        *,
        base_url: str = DEFAULT_API_URL,
        revision: str = DEFAULT_REVISION,
        timeout: httpx.Timeout | float = DEFAULT_TIMEOUT,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        if not api_key:
            raise KlaviyoConfigError(
                "KLAVIYO_PRIVATE_API_KEY", "a private API key is needed to send events"
            )
        if timeout is None:
            raise KlaviyoConfigError("KLAVIYO_TIMEOUT", "a timeout is required (never None)")
        self.base_url = base_url.rstrip("/")
        self.revision = revision
        self._http = httpx.Client(
            base_url=self.base_url,
            timeout=timeout,
            transport=transport,
            headers={
                "Authorization": f"Klaviyo-API-Key {api_key}",
                "revision": revision,
                "Content-Type": JSON_API,
                "Accept": JSON_API,
                "User-Agent": USER_AGENT,
            },
            limits=httpx.Limits(max_connections=4, max_keepalive_connections=2),
            verify=tls_context(),
        )

    def __repr__(self) -> str:  # never show the key
        return f"<KlaviyoClient {self.base_url} revision={self.revision}>"

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> KlaviyoClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def create_event(self, payload: dict[str, Any]) -> SendResult:
        """POST one event (``{"data": {"type": "event", ...}}``) to Create Event."""
        return self.send("POST", EVENTS_PATH, payload)

    def bulk_create_events(self, payload: dict[str, Any] | bytes) -> SendResult:
        """POST a Bulk Create Events job (up to 1,000 events, 5 MB)."""
        return self.send("POST", BULK_EVENTS_PATH, payload)

    def send(
        self, method: str, path: str, payload: dict[str, Any] | bytes | None = None
    ) -> SendResult:
        """Any Klaviyo endpoint: a JSON:API body, or one :func:`encode_body` made (None for a
        GET); a typed error unless 2xx."""
        body = payload if payload is None or isinstance(payload, bytes) else encode_body(payload)
        try:
            response = self._http.request(method, path, content=body)
        except httpx.TimeoutException as exc:
            raise KlaviyoTransportError(
                f"timed out talking to Klaviyo: {type(exc).__name__}"
            ) from exc
        except httpx.TransportError as exc:
            raise KlaviyoTransportError(f"could not reach Klaviyo: {exc}") from exc
        if response.status_code in _SUCCESS:
            return SendResult(
                status_code=response.status_code,
                rate_limit_remaining=_int(response.headers.get("RateLimit-Remaining")),
                rate_limit_limit=_int(response.headers.get("RateLimit-Limit")),
                rate_limit_reset=_number(response.headers.get("RateLimit-Reset")),
                elapsed=response.elapsed.total_seconds(),
                data=_json_or_none(response),
            )
        raise error_from_response(response)


def encode_body(payload: dict[str, Any]) -> bytes:
    """A request body as sent. Senders encode it before they take a rate-limit slot: a large
    body (100 catalog resources, 1,000 events) encoded after it put milliseconds between the
    slot and the request's arrival, and Klaviyo counts arrivals in its fixed windows."""
    return _body_json(payload).encode()


def _json_or_none(response: httpx.Response) -> Any:
    if not response.content:
        return None
    try:
        return response.json()
    except ValueError:
        return None


def parse_errors(response: httpx.Response) -> list[ErrorDetail]:
    """Klaviyo's ``errors`` array; a body that is not JSON:API becomes one generic entry."""
    try:
        data = response.json()
    except ValueError:
        text = response.text.strip()[:300]
        return [ErrorDetail(code="unparseable_response", detail=text or response.reason_phrase)]
    raw = data.get("errors") if isinstance(data, dict) else None
    if not isinstance(raw, list) or not raw:
        return [ErrorDetail(code="unexpected_response", detail=str(data)[:300])]
    return [ErrorDetail.from_json(item) for item in raw]


def error_from_response(response: httpx.Response) -> KlaviyoAPIError:
    """Map a non-202 answer onto the exception tree."""
    status = response.status_code
    errors = parse_errors(response)
    headers = {
        k: v for k, v in response.headers.items() if k.lower().startswith(("ratelimit", "retry"))
    }
    if status == 429:
        return KlaviyoRateLimited(
            status,
            errors,
            headers=headers,
            retry_after=_number(response.headers.get("Retry-After")),
        )
    if status >= 500 or status == 408:
        return KlaviyoServerError(status, errors, headers=headers)
    if status in (401, 403):
        return KlaviyoAuthError(status, errors, headers=headers)
    if status in (400, 413, 422):
        return KlaviyoBadRequest(status, errors, headers=headers)
    return KlaviyoClientError(status, errors, headers=headers)


_clients: dict[tuple[Any, ...], KlaviyoClient] = {}
_clients_lock = threading.Lock()


@functools.cache
def tls_context() -> ssl.SSLContext:
    """The process's TLS settings (httpx's defaults), built once. Loading the CA bundle costs
    milliseconds, which a forking worker's every job paid again (over half a catalog job's
    CPU); built in the worker before it forks, its work horses inherit it."""
    return httpx.create_ssl_context()


def ready_to_fork() -> None:
    """Build in this process what every forked child's client would build again: the TLS
    context, and the transport module httpx imports on a client's first use."""
    import httpcore  # noqa: F401  (httpx imports it lazily, in each child otherwise)

    tls_context()


def get_client(
    api_key: str,
    *,
    base_url: str = DEFAULT_API_URL,
    revision: str = DEFAULT_REVISION,
    timeout: float | httpx.Timeout = DEFAULT_TIMEOUT,
) -> KlaviyoClient:
    """The process's pooled client for these settings (a forked child gets its own)."""
    key = (os.getpid(), api_key, base_url, revision, str(timeout))
    with _clients_lock:
        client = _clients.get(key)
        if client is None:
            client = _clients[key] = KlaviyoClient(
                api_key, base_url=base_url, revision=revision, timeout=timeout
            )
        return client
