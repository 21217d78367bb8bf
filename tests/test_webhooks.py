"""Signed webhooks: ``flask_klaviyo.webhooks`` and the demo store's ``POST /webhooks/payments``.

The signature checks are pure functions, tested against an independent HMAC computation. The
endpoint is driven through the Flask test client with real Redis: every refused delivery must
answer its own 4xx with a JSON error and queue nothing; a delivery repeated (providers retry)
must answer 200 and queue Placed Order once.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import sqlite3
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from flask import Flask
from flask.testing import FlaskClient

from example_store import create_app
from example_store.payments import (
    PAYMENT_FAILED,
    PAYMENT_SUCCEEDED,
    Delivery,
    deliver,
    signed_delivery,
)
from flask_klaviyo.exceptions import KlaviyoError
from flask_klaviyo.webhooks import (
    DEFAULT_TOLERANCE,
    SIGNATURE_HEADER,
    InvalidSignature,
    MalformedSignature,
    MissingSignature,
    TimestampOutOfTolerance,
    WebhookSignatureError,
    sign,
    verify_signature,
)

SECRET = "whsec_test_secret"
OLD_SECRET = "whsec_old_secret"
BODY = b'{"id":"evt_1","type":"payment.succeeded","data":{"order_id":"SP-1"}}'
NOW = 1_767_225_600  # 2026-01-01T00:00:00Z


def reference_signature(secret: str, timestamp: int, body: bytes) -> str:
    """Written out from the spec, independently of the module under test."""
    message = str(timestamp).encode() + b"." + body
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


# -- verify_signature -------------------------------------------------------------------------


def test_a_valid_signature_returns_its_timestamp() -> None:
    header = f"t={NOW},v1={reference_signature(SECRET, NOW, BODY)}"
    assert verify_signature(SECRET, BODY, header, now=NOW) == NOW
    assert verify_signature(SECRET.encode(), BODY, header, now=NOW + 10) == NOW


def test_sign_produces_the_documented_header() -> None:
    assert sign(SECRET, BODY, timestamp=NOW) == (
        f"t={NOW},v1={reference_signature(SECRET, NOW, BODY)}"
    )
    fresh = sign(SECRET, BODY)
    assert abs(int(fresh.split(",")[0][2:]) - time.time()) < 5
    assert verify_signature(SECRET, BODY, fresh) > 0


@pytest.mark.parametrize("header", [None, "", "   "])
def test_a_missing_signature(header: str | None) -> None:
    with pytest.raises(MissingSignature) as raised:
        verify_signature(SECRET, BODY, header, now=NOW)
    assert raised.value.code == "missing_signature"
    assert SIGNATURE_HEADER in raised.value.message


@pytest.mark.parametrize(
    "header",
    [
        "garbage",
        "v1=" + "a" * 64,  # no timestamp
        f"t={NOW}",  # no signature
        f"t=yesterday,v1={'a' * 64}",
        f"t=-5,v1={'a' * 64}",
        f"t={NOW},t={NOW},v1={'a' * 64}",
        f"t={NOW},v1=not-hex",
        f"t={NOW},v1={'a' * 63}",
        f"t={NOW},v1={'g' * 64}",
        f"t={NOW}," + ",".join(["v1=" + "a" * 64] * 17),
        "t=1," + "x" * 5000,
    ],
)
def test_a_malformed_signature(header: str) -> None:
    with pytest.raises(MalformedSignature) as raised:
        verify_signature(SECRET, BODY, header, now=NOW)
    assert raised.value.code == "malformed_signature"


def test_the_wrong_secret_is_an_invalid_signature() -> None:
    header = sign("whsec_someone_else", BODY, timestamp=NOW)
    with pytest.raises(InvalidSignature) as raised:
        verify_signature(SECRET, BODY, header, now=NOW)
    assert raised.value.code == "invalid_signature"


def test_a_tampered_body_is_an_invalid_signature() -> None:
    header = sign(SECRET, BODY, timestamp=NOW)
    tampered = BODY.replace(b"SP-1", b"SP-2")
    with pytest.raises(InvalidSignature):
        verify_signature(SECRET, tampered, header, now=NOW)
    with pytest.raises(InvalidSignature):
        verify_signature(SECRET, BODY + b" ", header, now=NOW)  # even whitespace counts


def test_the_timestamp_is_signed_too() -> None:
    signature = reference_signature(SECRET, NOW, BODY)
    with pytest.raises(InvalidSignature):
        verify_signature(SECRET, BODY, f"t={NOW + 1},v1={signature}", now=NOW)


def test_an_old_timestamp_is_a_replay() -> None:
    old = NOW - DEFAULT_TOLERANCE - 1
    with pytest.raises(TimestampOutOfTolerance) as raised:
        verify_signature(SECRET, BODY, sign(SECRET, BODY, timestamp=old), now=NOW)
    assert raised.value.code == "timestamp_out_of_tolerance"
    assert raised.value.timestamp == old
    assert "301 s old" in raised.value.message
    # exactly at the edge is still fine; a custom tolerance moves the edge
    edge = NOW - DEFAULT_TOLERANCE
    assert verify_signature(SECRET, BODY, sign(SECRET, BODY, timestamp=edge), now=NOW) == edge
    with pytest.raises(TimestampOutOfTolerance):
        verify_signature(
            SECRET, BODY, sign(SECRET, BODY, timestamp=NOW - 61), now=NOW, tolerance=60
        )


def test_a_timestamp_too_far_in_the_future() -> None:
    future = NOW + DEFAULT_TOLERANCE + 1
    with pytest.raises(TimestampOutOfTolerance) as raised:
        verify_signature(SECRET, BODY, sign(SECRET, BODY, timestamp=future), now=NOW)
    assert "in the future" in raised.value.message
    near = NOW + 30  # a little clock skew is fine
    assert verify_signature(SECRET, BODY, sign(SECRET, BODY, timestamp=near), now=NOW) == near


def test_a_forged_old_signature_is_invalid_not_a_replay() -> None:
    """The signature is checked first: the tolerance error only speaks of authentic ones."""
    with pytest.raises(InvalidSignature):
        verify_signature(SECRET, BODY, f"t={NOW - 9999},v1={'0' * 64}", now=NOW)


def test_several_v1_signatures_any_match_passes() -> None:
    """A sender rotating its secret signs with both; a receiver with either accepts."""
    old = reference_signature(OLD_SECRET, NOW, BODY)
    new = reference_signature(SECRET, NOW, BODY)
    header = f"t={NOW},v1={old},v1={new}"
    assert verify_signature(SECRET, BODY, header, now=NOW) == NOW
    assert verify_signature(OLD_SECRET, BODY, header, now=NOW) == NOW
    with pytest.raises(InvalidSignature):
        verify_signature("whsec_third", BODY, header, now=NOW)
    # spacing, upper-case hex and other schemes (v0) are tolerated
    loose = f" t={NOW} , v0=abc, v1={new.upper()} "
    assert verify_signature(SECRET, BODY, loose, now=NOW) == NOW


def test_errors_are_typed_and_serialisable() -> None:
    for kind in (MissingSignature, MalformedSignature, InvalidSignature, TimestampOutOfTolerance):
        assert issubclass(kind, WebhookSignatureError)
    assert issubclass(WebhookSignatureError, KlaviyoError)
    with pytest.raises(WebhookSignatureError) as raised:
        verify_signature(SECRET, BODY, "t=1", now=NOW)
    assert raised.value.status == 400
    assert raised.value.to_dict() == {
        "error": "malformed_signature",
        "message": raised.value.message,
    }


def test_misuse_is_a_programming_error_not_a_bad_request() -> None:
    header = sign(SECRET, BODY, timestamp=NOW)
    with pytest.raises(TypeError, match="raw request bytes"):
        verify_signature(SECRET, BODY.decode(), header, now=NOW)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="must not be empty"):
        verify_signature("", BODY, header, now=NOW)
    with pytest.raises(ValueError, match="tolerance"):
        verify_signature(SECRET, BODY, header, now=NOW, tolerance=-1)


# -- the store's endpoint ---------------------------------------------------------------------

EMAIL = "webhook.buyer@klaviyo-demo.com"


@pytest.fixture
def app(redis_url: str, fake: Any, tmp_path: Path) -> Flask:
    return create_app(
        {
            "instance_path": str(tmp_path / "instance"),
            "TESTING": True,
            "SECRET_KEY": "webhook-tests",
            "KLAVIYO_REDIS_URL": redis_url,
            "KLAVIYO_API_URL": fake.url,
            "KLAVIYO_PRIVATE_API_KEY": "pk_test_private_key",
            "KLAVIYO_WEBHOOK_SECRET": SECRET,
            "STORE_PAYMENTS_AUTO_CALLBACK": False,
            "STORE_WEBHOOK_MAX_BYTES": 4096,
        }
    )


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


def place_order(client: FlaskClient) -> dict[str, Any]:
    client.post("/api/cart", json={"product_id": "house-blend", "quantity": 2})
    client.post("/api/cart", json={"product_id": "summit-bottle", "quantity": 1})
    client.post("/checkout/email", data={"email": EMAIL})
    placed = client.post("/checkout", json={})
    assert placed.status_code == 201, placed.get_data(as_text=True)
    assert placed.headers["Location"] == f"/orders/{placed.json['order_id']}"
    order = client.get(placed.headers["Location"], headers={"Accept": "application/json"}).json
    assert order["status"] == "pending_payment"
    return order  # type: ignore[no-any-return]


def delivery_for(order: dict[str, Any], **overrides: Any) -> Delivery:
    fields = {
        "type": PAYMENT_SUCCEEDED,
        "order_id": order["order_id"],
        "amount": order["total_cents"],
        "currency": "USD",
        **overrides,
    }
    return Delivery(**fields)


def deliveries(app: Flask) -> list[sqlite3.Row]:
    conn = sqlite3.connect(app.config["STORE_DATABASE"])
    try:
        return conn.execute("SELECT id, event_type, order_id FROM webhook_deliveries").fetchall()
    finally:
        conn.close()


def status_of(client: FlaskClient, order: dict[str, Any]) -> str:
    answer = client.get(f"/orders/{order['order_id']}", headers={"Accept": "application/json"})
    return answer.json["status"]  # type: ignore[no-any-return]


def signed(body: bytes, *, secret: str = SECRET, timestamp: int | None = None) -> dict[str, str]:
    return {
        "Content-Type": "application/json",
        SIGNATURE_HEADER: sign(secret, body, timestamp=timestamp),
    }


def bad_requests(order: dict[str, Any]) -> dict[str, tuple[dict[str, Any], int, str]]:
    """name -> (test-client keyword arguments, expected status, expected error code)."""
    body = delivery_for(order).body()
    now = int(time.time())
    garbage = b'{"id": "evt_x", "type": '
    no_order = json.dumps({"id": "evt_y", "type": PAYMENT_SUCCEEDED, "data": {}}).encode()
    listed = b'["payment.succeeded"]'
    bad_amount = json.dumps(
        {
            "id": "evt_z",
            "type": PAYMENT_SUCCEEDED,
            "data": {"order_id": order["order_id"], "amount": "lots"},
        }
    ).encode()
    unknown = delivery_for(order, order_id="SP-NOPE0000").body()
    big = delivery_for(order, payment_id="x" * 5000).body()
    return {
        "missing signature": (
            {"data": body, "headers": {"Content-Type": "application/json"}},
            400,
            "missing_signature",
        ),
        "malformed signature": (
            {
                "data": body,
                "headers": {"Content-Type": "application/json", SIGNATURE_HEADER: "t=now"},
            },
            400,
            "malformed_signature",
        ),
        "wrong secret": (
            {"data": body, "headers": signed(body, secret="whsec_attacker")},
            400,
            "invalid_signature",
        ),
        "tampered body": (
            {"data": body.replace(b'"amount":', b'"amount":1'), "headers": signed(body)},
            400,
            "invalid_signature",
        ),
        "replayed (old timestamp)": (
            {"data": body, "headers": signed(body, timestamp=now - 3600)},
            400,
            "timestamp_out_of_tolerance",
        ),
        "future timestamp": (
            {"data": body, "headers": signed(body, timestamp=now + 3600)},
            400,
            "timestamp_out_of_tolerance",
        ),
        "malformed JSON": ({"data": garbage, "headers": signed(garbage)}, 400, "malformed_json"),
        "not an object": ({"data": listed, "headers": signed(listed)}, 400, "invalid_payload"),
        "no order id": ({"data": no_order, "headers": signed(no_order)}, 400, "invalid_payload"),
        "amount not a number": (
            {"data": bad_amount, "headers": signed(bad_amount)},
            400,
            "invalid_payload",
        ),
        "wrong content type": (
            {"data": body, "headers": {**signed(body), "Content-Type": "text/plain"}},
            415,
            "unsupported_media_type",
        ),
        "form encoded": (
            {"data": {"id": "evt_1"}, "headers": {SIGNATURE_HEADER: sign(SECRET, b"id=evt_1")}},
            415,
            "unsupported_media_type",
        ),
        "too large": ({"data": big, "headers": signed(big)}, 413, "payload_too_large"),
        "unknown order": ({"data": unknown, "headers": signed(unknown)}, 404, "unknown_order"),
    }


CASES = [
    "missing signature",
    "malformed signature",
    "wrong secret",
    "tampered body",
    "replayed (old timestamp)",
    "future timestamp",
    "malformed JSON",
    "not an object",
    "no order id",
    "amount not a number",
    "wrong content type",
    "form encoded",
    "too large",
    "unknown order",
]


@pytest.mark.parametrize("case", CASES)
def test_a_refused_delivery_answers_a_json_4xx_and_queues_nothing(
    app: Flask, client: FlaskClient, case: str, queued: Callable[[Flask], list[dict[str, Any]]]
) -> None:
    order = place_order(client)
    before = queued(app)
    kwargs, status, code = bad_requests(order)[case]
    answer = client.post("/webhooks/payments", **kwargs)
    assert answer.status_code == status, answer.get_data(as_text=True)
    assert answer.is_json
    assert answer.json["error"] == code
    assert isinstance(answer.json["message"], str) and len(answer.json["message"]) > 10
    assert queued(app) == before
    assert deliveries(app) == []
    assert status_of(client, order) == "pending_payment"


def test_every_refusal_case_is_exercised() -> None:
    assert set(CASES) == set(bad_requests({"order_id": "SP-1", "total_cents": 1}))


def test_the_default_body_limit_is_64_kb(tmp_path: Path) -> None:
    app = create_app(
        {
            "instance_path": str(tmp_path),
            "TESTING": True,
            "SECRET_KEY": "s",
            "KLAVIYO_ENABLED": False,
        }
    )
    assert app.config["STORE_WEBHOOK_MAX_BYTES"] == 64 * 1024
    body = json.dumps({"id": "evt", "type": "x", "data": {"pad": "x" * 70_000}}).encode()
    answer = app.test_client().post("/webhooks/payments", data=body, headers=signed(body))
    assert answer.status_code == 413


def test_a_body_without_a_length_is_cut_at_the_limit(app: Flask) -> None:
    """Chunked uploads carry no Content-Length: the limit holds while reading."""
    body = b'{"pad": "' + b"x" * 10_000 + b'"}'
    answer = app.test_client().post(
        "/webhooks/payments",
        input_stream=io.BytesIO(body),
        headers=signed(body),
        environ_overrides={"wsgi.input_terminated": True},
    )
    assert answer.status_code == 413
    assert answer.json["error"] == "payload_too_large"


def test_a_get_is_a_json_405(client: FlaskClient) -> None:
    answer = client.get("/webhooks/payments")
    assert answer.status_code == 405
    assert answer.is_json and answer.json["error"] == "method_not_allowed"


def test_a_delivery_twice_answers_200_and_queues_placed_order_once(
    app: Flask, client: FlaskClient, queued: Callable[[Flask], list[dict[str, Any]]]
) -> None:
    order = place_order(client)
    before = len(queued(app))
    delivery = delivery_for(order)

    first_body, first_headers = signed_delivery(SECRET, delivery)
    first = client.post("/webhooks/payments", data=first_body, headers=first_headers)
    assert first.status_code == 200
    assert first.json == {"status": "processed", "id": delivery.id, "order_status": "paid"}
    # the provider's retry: the same delivery, signed again a little later
    again_body, again_headers = signed_delivery(SECRET, delivery, timestamp=int(time.time()) + 5)
    again = client.post("/webhooks/payments", data=again_body, headers=again_headers)
    assert again.status_code == 200
    assert again.json == {"status": "duplicate", "id": delivery.id}

    new = queued(app)[before:]
    assert Counter(e["metric"] for e in new) == {"Placed Order": 1, "Ordered Product": 2}
    [placed] = [e for e in new if e["metric"] == "Placed Order"]
    assert placed["unique_id"] == order["order_id"]
    assert placed["profile"] == {"email": EMAIL}  # the order's email, not the caller's cookies
    assert placed["value"] == order["total_cents"] / 100
    assert [(d[0], d[1], d[2]) for d in deliveries(app)] == [
        (delivery.id, PAYMENT_SUCCEEDED, order["order_id"])
    ]
    assert status_of(client, order) == "paid"

    # A different delivery for an order already paid changes nothing either.
    other_body, other_headers = signed_delivery(SECRET, delivery_for(order))
    other = client.post("/webhooks/payments", data=other_body, headers=other_headers)
    assert other.status_code == 200
    assert other.json["status"] == "ignored" and other.json["order_status"] == "paid"
    assert len(queued(app)) == before + 3


def test_a_failed_payment_marks_the_order_and_sends_failed_payment_only(
    app: Flask, client: FlaskClient, queued: Callable[[Flask], list[dict[str, Any]]]
) -> None:
    order = place_order(client)
    before = len(queued(app))
    body, headers = signed_delivery(SECRET, delivery_for(order, type=PAYMENT_FAILED))
    answer = client.post("/webhooks/payments", data=body, headers=headers)
    assert answer.status_code == 200
    assert answer.json["order_status"] == "payment_failed"
    # no Placed Order: one Failed Payment (tests/test_lifecycle.py follows it to Klaviyo)
    assert [e["metric"] for e in queued(app)[before:]] == ["Failed Payment"]
    assert status_of(client, order) == "payment_failed"


def test_an_event_type_the_store_does_not_handle_is_acknowledged(
    app: Flask, client: FlaskClient, queued: Callable[[Flask], list[dict[str, Any]]]
) -> None:
    """Answering 4xx to an event we don't care about would only make the provider retry it."""
    order = place_order(client)
    before = queued(app)
    body, headers = signed_delivery(SECRET, delivery_for(order, type="charge.dispute.created"))
    answer = client.post("/webhooks/payments", data=body, headers=headers)
    assert answer.status_code == 200 and answer.json["status"] == "ignored"
    assert queued(app) == before
    assert status_of(client, order) == "pending_payment"


def test_amounts_in_major_units_are_accepted_too(app: Flask, client: FlaskClient) -> None:
    order = place_order(client)
    body, headers = signed_delivery(
        SECRET,
        delivery_for(order, amount=order["total_cents"] / 100),  # type: ignore[arg-type]
    )
    answer = client.post("/webhooks/payments", data=body, headers=headers)
    assert answer.status_code == 200 and answer.json["order_status"] == "paid"


# -- the simulated provider's delivery loop ---------------------------------------------------


def test_the_provider_retries_the_same_delivery_until_the_store_accepts_it() -> None:
    """503, then a dropped connection, then 200: three attempts of one delivery id, each
    signed afresh (a retry minutes later must not look like a replay), with growing waits."""
    seen: list[str] = []
    outcomes = iter([503, "drop", 200])

    def flaky_store(request: httpx.Request) -> httpx.Response:
        verify_signature(SECRET, request.content, request.headers[SIGNATURE_HEADER])
        seen.append(json.loads(request.content)["id"])
        outcome = next(outcomes)
        if outcome == "drop":
            raise httpx.ConnectError("store restarting")
        return httpx.Response(outcome)

    sleeps: list[float] = []
    delivery = Delivery(type=PAYMENT_SUCCEEDED, order_id="SP-1", amount=100, currency="USD")
    client = httpx.Client(transport=httpx.MockTransport(flaky_store))
    status = deliver(
        "http://store.test/webhooks/payments", SECRET, delivery, sleep=sleeps.append, client=client
    )
    assert status == 200
    assert seen == [delivery.id] * 3
    assert len(sleeps) == 2 and sleeps[1] > sleeps[0]


def test_the_provider_stops_when_the_store_refuses_the_delivery() -> None:
    calls: list[int] = []

    def refusing(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        return httpx.Response(400, json={"error": "invalid_signature"})

    delivery = Delivery(type=PAYMENT_SUCCEEDED, order_id="SP-1", amount=100, currency="USD")
    client = httpx.Client(transport=httpx.MockTransport(refusing))
    assert (
        deliver("http://x/webhooks/payments", SECRET, delivery, sleep=lambda s: None, client=client)
        is None
    )
    assert calls == [1]

    def down(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        return httpx.Response(502)

    client = httpx.Client(transport=httpx.MockTransport(down))
    assert (
        deliver("http://x/w", SECRET, delivery, attempts=3, sleep=lambda s: None, client=client)
        is None
    )
    assert len(calls) == 1 + 3
