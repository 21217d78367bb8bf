"""The Events API client against the local stand-in: every answer ends as documented."""

from __future__ import annotations

import socket
from typing import Any

import pytest

from flask_klaviyo.client import KlaviyoClient, get_client
from flask_klaviyo.exceptions import (
    KlaviyoAuthError,
    KlaviyoBadRequest,
    KlaviyoConfigError,
    KlaviyoRateLimited,
    KlaviyoServerError,
    KlaviyoTransportError,
)

API_KEY = "pk_test_private_key"


def event_body(unique_id: str = "1234", **attributes: Any) -> dict[str, Any]:
    attrs: dict[str, Any] = {
        "properties": {"OrderId": unique_id, "ItemNames": ["Winnie the Pooh"]},
        "time": "2026-11-01T10:00:00+00:00",
        "value": 9.99,
        "value_currency": "USD",
        "unique_id": unique_id,
        "metric": {"data": {"type": "metric", "attributes": {"name": "Placed Order"}}},
        "profile": {
            "data": {"type": "profile", "attributes": {"email": "sarah.mason@klaviyo-demo.com"}}
        },
    }
    attrs.update(attributes)
    return {"data": {"type": "event", "attributes": attrs}}


def bulk_body(*unique_ids: str) -> dict[str, Any]:
    events = []
    for uid in unique_ids:
        attrs = event_body(uid)["data"]["attributes"]
        attrs.pop("profile")
        events.append({"type": "event", "attributes": attrs})
    return {
        "data": {
            "type": "event-bulk-create-job",
            "attributes": {
                "events-bulk-create": {
                    "data": [
                        {
                            "type": "event-bulk-create",
                            "attributes": {
                                "profile": {
                                    "data": {
                                        "type": "profile",
                                        "attributes": {"email": "sarah.mason@klaviyo-demo.com"},
                                    }
                                },
                                "events": {"data": events},
                            },
                        }
                    ]
                }
            },
        }
    }


@pytest.fixture
def client(fake: Any) -> KlaviyoClient:
    with KlaviyoClient(API_KEY, base_url=fake.url, timeout=2.0) as c:
        yield c


def test_202_is_success_and_sends_exactly_klaviyos_headers(
    fake: Any, client: KlaviyoClient, openapi: Any
) -> None:
    body = event_body()
    openapi.validate("create_event", body)
    result = client.create_event(body)
    assert result.status_code == 202
    assert [e["unique_id"] for e in fake.events] == ["1234"]
    request = fake.requests[-1]
    headers = {k.lower(): v for k, v in request["headers"].items()}
    assert request["path"] == "/api/events"
    assert headers["authorization"] == f"Klaviyo-API-Key {API_KEY}"
    assert headers["revision"] == "2026-07-15"
    assert headers["content-type"] == "application/vnd.api+json"
    assert headers["accept"] == "application/vnd.api+json"


def test_bulk_202(fake: Any, client: KlaviyoClient, openapi: Any) -> None:
    body = bulk_body("a", "b", "c")
    openapi.validate("bulk_create_events", body)
    assert client.bulk_create_events(body).status_code == 202
    assert sorted(e["unique_id"] for e in fake.events) == ["a", "b", "c"]
    assert fake.requests[-1]["path"] == "/api/event-bulk-create-jobs"


def test_400_carries_klaviyos_pointer_and_detail(fake: Any, client: KlaviyoClient) -> None:
    body = event_body(value="29.98")  # a string where Klaviyo wants a number
    with pytest.raises(KlaviyoBadRequest) as info:
        client.create_event(body)
    error = info.value
    assert error.status_code == 400
    assert not error.retryable
    assert error.pointers == ["/data/attributes/value"]
    assert error.errors[0].code and error.errors[0].detail
    assert fake.events == []


def test_injected_400_pointer_is_parsed(fake: Any, client: KlaviyoClient) -> None:
    fake.fail_next(400, pointer="/data/attributes/properties/Items", detail="Items is broken")
    with pytest.raises(KlaviyoBadRequest) as info:
        client.create_event(event_body())
    assert info.value.pointers == ["/data/attributes/properties/Items"]
    assert info.value.errors[0].detail == "Items is broken"


def test_401_wrong_key_is_an_auth_error(fake: Any) -> None:
    with KlaviyoClient("pk_wrong", base_url=fake.url) as c, pytest.raises(KlaviyoAuthError) as info:
        c.create_event(event_body())
    assert info.value.status_code == 401
    assert not info.value.retryable
    assert "pk_wrong" not in str(info.value)
    assert fake.events == []


def test_429_exposes_retry_after(fake: Any, client: KlaviyoClient) -> None:
    fake.fail_next(429, retry_after=7)
    with pytest.raises(KlaviyoRateLimited) as info:
        client.create_event(event_body())
    assert info.value.retry_after == 7.0
    assert info.value.retryable
    assert info.value.errors[0].code == "throttled"
    # the fault is spent: the next request goes through
    assert client.create_event(event_body()).status_code == 202


def test_503_is_retryable_server_error(fake: Any, client: KlaviyoClient) -> None:
    fake.fail_next(503)
    with pytest.raises(KlaviyoServerError) as info:
        client.create_event(event_body())
    assert info.value.status_code == 503
    assert info.value.retryable


def test_timeout_is_retryable_transport_error(fake: Any) -> None:
    fake.timeout_next(hold=2.0)
    with KlaviyoClient(API_KEY, base_url=fake.url, timeout=0.3) as c:
        with pytest.raises(KlaviyoTransportError) as info:
            c.create_event(event_body())
        assert info.value.retryable
        assert "timed out" in str(info.value)


def test_connection_refused_is_transport_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    with KlaviyoClient(API_KEY, base_url=url, timeout=1.0) as c:
        with pytest.raises(KlaviyoTransportError):
            c.create_event(event_body())


def test_timeout_is_never_none_and_key_is_required() -> None:
    with pytest.raises(KlaviyoConfigError) as info:
        KlaviyoClient(API_KEY, timeout=None)  # type: ignore[arg-type]
    assert info.value.key == "KLAVIYO_TIMEOUT"
    with pytest.raises(KlaviyoConfigError) as info:
        KlaviyoClient("")
    assert info.value.key == "KLAVIYO_PRIVATE_API_KEY"


def test_default_timeouts_are_set() -> None:
    with KlaviyoClient(API_KEY) as c:
        timeout = c._http.timeout
        assert timeout.read and timeout.connect and timeout.write and timeout.pool


def test_one_pooled_client_per_process_and_settings(fake: Any) -> None:
    a = get_client(API_KEY, base_url=fake.url)
    assert get_client(API_KEY, base_url=fake.url) is a
    assert get_client(API_KEY, base_url=fake.url, revision="2025-01-15") is not a
    a.create_event(event_body("x1"))
    a.create_event(event_body("x2"))
    assert len(fake.events) == 2


def test_repr_never_shows_the_key(fake: Any, client: KlaviyoClient) -> None:
    assert API_KEY not in repr(client)
