"""The in-process transport: the stand-in with no socket, answering exactly like the server."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from flask_klaviyo.client import KlaviyoClient
from flask_klaviyo.exceptions import KlaviyoBadRequest, KlaviyoRateLimited, KlaviyoTransportError
from flask_klaviyo.testing import FakeKlaviyo, FakeTransport

API_KEY = "pk_test_private_key"
HEADERS = {
    "Authorization": f"Klaviyo-API-Key {API_KEY}",
    "revision": "2026-07-15",
    "Content-Type": "application/vnd.api+json",
    "Accept": "application/vnd.api+json",
}


def event(unique_id: str, email: str = "sarah.mason@klaviyo-demo.com", **attrs: Any) -> dict:
    attributes = {
        "properties": {"ProductName": "Winnie the Pooh"},
        "metric": {"data": {"type": "metric", "attributes": {"name": "Viewed Product"}}},
        "profile": {"data": {"type": "profile", "attributes": {"email": email}}},
        "unique_id": unique_id,
        **attrs,
    }
    return {"data": {"type": "event", "attributes": attributes}}


def comparable(response: httpx.Response) -> tuple[int, Any]:
    """Status and body, error ids (fresh uuids) aside."""
    if not response.content:
        return response.status_code, None
    body = response.json()
    for error in body.get("errors", []):
        error.pop("id")
    return response.status_code, body


@pytest.fixture
def pair() -> Iterator[tuple[FakeKlaviyo, httpx.Client, httpx.Client]]:
    """A started stand-in, one client over its socket, one through its transport."""
    with FakeKlaviyo(api_key=API_KEY) as fake:
        with (
            httpx.Client(base_url=fake.url, headers=HEADERS, timeout=5) as socket_client,
            httpx.Client(
                base_url=fake.url, headers=HEADERS, timeout=5, transport=fake.transport()
            ) as in_process,
        ):
            yield fake, socket_client, in_process


BODIES = [
    ("/api/events", event("same")),
    ("/api/events", event("bad", time="yesterday")),
    ("/api/events", {"data": {"type": "event"}}),
    ("/api/nope", event("x")),
]


@pytest.mark.parametrize(("path", "body"), BODIES)
def test_socket_and_transport_answer_and_record_the_same(
    pair: tuple[FakeKlaviyo, httpx.Client, httpx.Client], path: str, body: dict
) -> None:
    fake, over_socket, in_process = pair
    first = over_socket.post(path, content=json.dumps(body))
    recorded_by_socket = [(e["metric"], e["unique_id"], e["properties"]) for e in fake.events]
    requests_by_socket = [(r["path"], r["status"], r["body"]) for r in fake.requests]
    fake.reset()
    second = in_process.post(path, content=json.dumps(body))
    assert comparable(second) == comparable(first)
    assert second.headers.get("content-type") == first.headers.get("content-type")
    assert second.headers.get("RateLimit-Limit") == first.headers.get("RateLimit-Limit")
    assert [(e["metric"], e["unique_id"], e["properties"]) for e in fake.events] == (
        recorded_by_socket
    )
    assert [(r["path"], r["status"], r["body"]) for r in fake.requests] == requests_by_socket


def test_a_job_document_is_the_same_both_ways(
    pair: tuple[FakeKlaviyo, httpx.Client, httpx.Client],
) -> None:
    fake, over_socket, in_process = pair
    assert over_socket.post("/api/events", content=json.dumps(event("a"))).status_code == 202
    # one stand-in, two ways in: the repeat through the transport is a duplicate
    assert in_process.post("/api/events", content=json.dumps(event("a"))).status_code == 202
    assert fake.stats()["accepted"] == 1 and fake.duplicates == 1


def test_klaviyo_client_takes_the_transport_and_needs_no_socket() -> None:
    fake = FakeKlaviyo(api_key=API_KEY)  # never started: no port, no thread
    with KlaviyoClient(
        API_KEY, base_url="http://klaviyo.fake", transport=fake.transport()
    ) as client:
        result = client.create_event(event("no-socket"))
        assert result.status_code == 202 and result.rate_limit_limit == 3500
        with pytest.raises(KlaviyoBadRequest):
            client.create_event(event("bad", time="yesterday"))
        fake.fail_next(429, retry_after=2)
        with pytest.raises(KlaviyoRateLimited):
            client.create_event(event("throttled"))
        fake.reset_next()
        with pytest.raises(KlaviyoTransportError):
            client.create_event(event("reset"))
        fake.timeout_next(hold=0.05)
        with pytest.raises(KlaviyoTransportError):
            client.create_event(event("held"))
    assert [e["unique_id"] for e in fake.events] == ["no-socket"]
    assert [r["status"] for r in fake.requests] == [202, 400, 429, None, None]


def test_faults_map_to_what_httpx_raises_over_a_socket() -> None:
    fake = FakeKlaviyo(api_key=API_KEY)
    transport = FakeTransport(fake)
    with httpx.Client(base_url="http://klaviyo.fake", headers=HEADERS, transport=transport) as c:
        fake.timeout_next(hold=5.0)
        with pytest.raises(httpx.ReadTimeout):
            c.post("/api/events", content=json.dumps(event("t")), timeout=0.05)
        fake.timeout_next(hold=0.01)
        with pytest.raises(httpx.RemoteProtocolError):
            c.post("/api/events", content=json.dumps(event("t")))
        fake.reset_next()
        with pytest.raises(httpx.ReadError):
            c.post("/api/events", content=json.dumps(event("r")))
        fake.latency = 0.01
        assert c.post("/api/events", content=json.dumps(event("slow"))).status_code == 202
    assert fake.stats()["accepted"] == 1


def test_control_routes_and_inspector_work_through_the_transport() -> None:
    fake = FakeKlaviyo(api_key=API_KEY)
    with httpx.Client(base_url="http://klaviyo.fake", transport=fake.transport()) as c:
        c.post("/api/events", content=json.dumps(event("i")), headers=HEADERS)
        assert c.get("/_fake/stats").json()["accepted"] == 1
        assert "Klaviyo stand-in" in c.get("/").text
