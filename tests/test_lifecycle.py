"""The rest of the order lifecycle: Failed Payment, Shipping Update, partial cancellations and
refunds. Builders against seed 001's property names; the demo store's payment and carrier
webhooks end to end through a real (in-process RQ) worker into the stand-in, every request body
valid against Klaviyo's OpenAPI documents; forged and replayed carrier webhooks refused.
"""

from __future__ import annotations

import json
import re
import sqlite3
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from example_store import create_app
from example_store.payments import PAYMENT_FAILED, PAYMENT_SUCCEEDED, Delivery, signed_delivery
from example_store.shipping import SHIPPING_PATH, shipping_body, signed_shipping
from flask_klaviyo.events import (
    SHIPPING_STATUSES,
    adjustment_unique_id,
    canceled_order,
    failed_payment,
    placed_order,
    refunded_order,
    shipping_update,
    validate_event,
)
from flask_klaviyo.exceptions import KlaviyoSchemaError

SECRET = "whsec_lifecycle"
ADMIN_PASSWORD = "lifecycle admin"
EMAIL = "lifecycle.buyer@klaviyo-demo.com"

ORDER = {
    "id": "1234",
    "email": EMAIL,
    "currency": "USD",
    "discount_code": "Free Shipping",
    "discount_value": 5,
    "shipping_address": {"first_name": "John", "address1": "123 Abc St", "city": "Boston"},
    "items": [
        {
            "line_id": "l1",
            "quantity": 1,
            "unit_price": 9.99,
            "product": {
                "id": "1111",
                "sku": "WINNIEPOOH",
                "name": "Winnie the Pooh",
                "price": 9.99,
                "categories": ["Fiction", "Children"],
            },
        },
        {
            "line_id": "l2",
            "quantity": 1,
            "unit_price": 19.99,
            "product": {
                "id": "1112",
                "sku": "TALEOFTWO",
                "name": "A Tale of Two Cities",
                "price": 19.99,
                "categories": ["Fiction", "Classics"],
            },
        },
    ],
}


def seed_example(shared_dir: Path, metric: str) -> dict[str, Any]:
    """The properties of seed 001's JSON example of ``metric`` (the first code block after its
    heading that names it)."""
    text = next(shared_dir.glob("seeds/001_*.txt")).read_text()
    for block in re.findall(r"```json\n(.*?)```", text, re.S):
        if f'"name": "{metric}"' in block:
            cleaned = re.sub(r",?\s*\.\.\.\s*", "", block)  # the guide elides with "..."
            start = cleaned.index('"properties"')
            depth, index = 0, cleaned.index("{", start)
            for end in range(index, len(cleaned)):
                depth += {"{": 1, "}": -1}.get(cleaned[end], 0)
                if depth == 0:
                    return json.loads(cleaned[index : end + 1])
    raise LookupError(metric)


# -- builders ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("metric", "build"),
    [
        (
            "Failed Payment",
            lambda: failed_payment(ORDER, failure="Not accepted", next_steps="Use another card"),
        ),
        ("Shipping Update", lambda: shipping_update(ORDER, status="out_for_delivery")),
    ],
)
def test_the_notifications_carry_seed_001s_property_names(
    metric: str, build: Callable[[], Any], shared_dir: Path, openapi: Any
) -> None:
    event = build()
    validate_event(event)
    openapi.validate("create_event", event.to_payload())
    expected = seed_example(shared_dir, metric)
    # every top-level property of the guide's example is there, spelled as the guide spells it
    assert set(expected) <= set(event.properties), set(expected) - set(event.properties)
    item_keys = set(expected["Items"][0]) - {"ProductURL", "ImageURL"}  # ours has no URLs
    assert item_keys <= set(event.properties["Items"][0])
    assert event.properties["OrderId"] == "1234"
    assert event.value == pytest.approx(24.98)  # the order's total, after its discount


def test_failed_payment_properties_and_one_unique_id_per_attempt() -> None:
    first = failed_payment(ORDER, failure="Declined", next_steps="Use another card", attempt="a1")
    again = failed_payment(ORDER, failure="Declined", attempt="a2")
    assert first.properties["PaymentFailure"] == "Declined"
    assert first.properties["PaymentNextSteps"] == "Use another card"
    assert "PaymentNextSteps" not in again.properties  # unknown: omitted, never null
    assert (first.unique_id, again.unique_id) == ("1234_failed_a1", "1234_failed_a2")
    assert failed_payment(ORDER, failure="x").unique_id == "1234_failed"
    with pytest.raises(KlaviyoSchemaError, match="PaymentFailure"):
        validate_event(failed_payment(ORDER, failure=""))


@pytest.mark.parametrize(("status", "update_type"), list(SHIPPING_STATUSES.items()))
def test_shipping_update_type_and_one_unique_id_per_order_and_status(
    status: str, update_type: str
) -> None:
    event = shipping_update(ORDER, status=status, tracking_number="1Z9", carrier="UPS")
    validate_event(event)
    assert event.properties["UpdateType"] == update_type
    assert event.properties["TrackingNumber"] == "1Z9"
    assert event.properties["Carrier"] == "UPS"
    assert event.unique_id == f"1234_{status}"
    assert event.unique_id != placed_order(ORDER).unique_id


def test_an_unknown_shipping_status_is_refused() -> None:
    with pytest.raises(KlaviyoSchemaError, match="status"):
        shipping_update(ORDER, status="lost")
    assert set(SHIPPING_STATUSES.values()) == {"Shipped", "Out for delivery", "Delivered"}


def test_a_full_refund_is_the_order_total_under_the_order_id() -> None:
    event = refunded_order(ORDER, reason="Damaged")
    assert event.unique_id == placed_order(ORDER).unique_id == "1234"
    assert event.value == pytest.approx(24.98)
    assert event.properties["ItemNames"] == ["Winnie the Pooh", "A Tale of Two Cities"]
    assert "NotRefundedItems" not in event.properties


def test_partial_refunds_first_under_the_order_id_later_ones_under_their_own(
    openapi: Any,
) -> None:
    first = refunded_order(ORDER, items=[ORDER["items"][1]], reason="Damaged")
    second = refunded_order(ORDER, amount=4.5, sequence=2, reason="Late")
    third = refunded_order(ORDER, items=[ORDER["items"][0]], sequence=3)
    for event in (first, second, third):
        validate_event(event)
        openapi.validate("create_event", event.to_payload())
    # the first pairs with Placed Order for CLV; Klaviyo would drop a repeat of that id
    assert first.unique_id == "1234"
    assert (second.unique_id, third.unique_id) == ("1234_refund_2", "1234_refund_3")
    # what was refunded, not the order total
    assert first.value == pytest.approx(19.99)
    assert second.value == pytest.approx(4.5)
    assert third.value == pytest.approx(9.99)
    assert first.properties["ItemNames"] == ["A Tale of Two Cities"]
    assert first.properties["Categories"] == ["Fiction", "Classics"]
    assert [i["ProductID"] for i in first.properties["NotRefundedItems"]] == ["1111"]
    assert first.properties["Reason"] == "Damaged"


def test_partial_cancellations_follow_the_same_rule() -> None:
    first = canceled_order(ORDER, items=[ORDER["items"][0]])
    second = canceled_order(ORDER, items=[ORDER["items"][1]], sequence=2)
    assert (first.unique_id, second.unique_id) == ("1234", "1234_cancel_2")
    assert first.value == pytest.approx(9.99)
    assert [i["ProductID"] for i in first.properties["NotCanceledItems"]] == ["1112"]
    assert "Discount Code" in first.properties  # seed 001's Canceled Order spelling


@pytest.mark.parametrize("sequence", [0, -1, True, 1.5, "2"])
def test_a_sequence_that_is_not_a_count_is_refused(sequence: Any) -> None:
    with pytest.raises(KlaviyoSchemaError, match="sequence"):
        adjustment_unique_id("1234", "refund", sequence)


# -- the facade -------------------------------------------------------------------------------


def test_the_facade_sends_them_under_the_orders_identity(
    make_app: Callable[..., Flask],
    fake: Any,
    drain: Callable[[Flask], None],
    openapi: Any,
) -> None:
    app = make_app(fake=fake, identity={"email": "someone.else@klaviyo-demo.com"})
    klaviyo = app.extensions["klaviyo"].extension
    with app.test_request_context("/"):
        klaviyo.order_placed(ORDER)
        klaviyo.payment_failed(ORDER, failure="Declined", attempt="a1")
        klaviyo.shipping_updated(ORDER, status="shipped", tracking_number="1Z1")
        klaviyo.order_refunded(ORDER, items=[ORDER["items"][1]], reason="Damaged")
        klaviyo.order_refunded(ORDER, amount=2, sequence=2)
        klaviyo.order_refunded(ORDER, amount=2, sequence=2)  # a retry: same id, kept once
        app.process_response(app.response_class("ok"))
    drain(app)
    for request in fake.requests:
        openapi.validate(request["endpoint"], request["body"])
    found = Counter(e["metric"] for e in fake.events)
    assert found["Failed Payment"] == found["Shipping Update"] == 1
    assert found["Refunded Order"] == 2
    placed = fake.events_for("Placed Order")[0]
    refunds = fake.events_for("Refunded Order")
    assert [e["unique_id"] for e in refunds] == [placed["unique_id"], "1234_refund_2"]
    assert [e["value"] for e in refunds] == [pytest.approx(19.99), pytest.approx(2)]
    assert {e["profile_id"] for e in fake.events} == {placed["profile_id"]}
    assert fake.profile_of(placed)["email"] == EMAIL


# -- the store's webhooks, end to end ---------------------------------------------------------


@pytest.fixture
def app(redis_url: str, fake: Any, tmp_path: Path) -> Flask:
    return create_app(
        {
            "instance_path": str(tmp_path / "instance"),
            "TESTING": True,
            "SECRET_KEY": "lifecycle-tests",
            "KLAVIYO_REDIS_URL": redis_url,
            "KLAVIYO_API_URL": fake.url,
            "KLAVIYO_PRIVATE_API_KEY": "pk_test_private_key",
            "KLAVIYO_WEBHOOK_SECRET": SECRET,
            "KLAVIYO_ACTIVE_ON_SITE": False,
            "STORE_PAYMENTS_AUTO_CALLBACK": False,
            "STORE_ADMIN_PASSWORD": ADMIN_PASSWORD,
        }
    )


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


def place_order(client: FlaskClient, email: str = EMAIL) -> dict[str, Any]:
    client.post("/api/cart", json={"product_id": "house-blend", "quantity": 2})
    client.post("/checkout/email", data={"email": email})
    placed = client.post("/checkout", json={})
    assert placed.status_code == 201, placed.get_data(as_text=True)
    answer = client.get(placed.headers["Location"], headers={"Accept": "application/json"})
    return answer.json  # type: ignore[no-any-return]


def pay(client: FlaskClient, order: dict[str, Any], kind: str = PAYMENT_SUCCEEDED) -> Any:
    delivery = Delivery(
        type=kind,
        order_id=order["order_id"],
        amount=order["total_cents"],
        currency="USD",
        payment_id="pay_lifecycle_1",
        failure_message="Credit card not accepted" if kind == PAYMENT_FAILED else None,
    )
    body, headers = signed_delivery(SECRET, delivery)
    return client.post("/webhooks/payments", data=body, headers=headers)


def ship(client: FlaskClient, order_id: str, status: str, **options: Any) -> Any:
    timestamp = options.pop("timestamp", None)
    secret = options.pop("secret", SECRET)
    body = shipping_body(order_id, status, **options)
    return client.post(
        SHIPPING_PATH, data=body, headers=signed_shipping(secret, body, timestamp=timestamp)
    )


def recorded(app: Flask, event_type: str) -> list[tuple[str, str]]:
    conn = sqlite3.connect(app.config["STORE_DATABASE"])
    try:
        rows = conn.execute(
            "SELECT id, order_id FROM webhook_deliveries WHERE event_type = ?", (event_type,)
        ).fetchall()
        return [(row[0], row[1]) for row in rows]
    finally:
        conn.close()


def test_a_failed_payment_reaches_klaviyo_through_a_worker(
    app: Flask, client: FlaskClient, fake: Any, drain: Callable[[Flask], None], openapi: Any
) -> None:
    order = place_order(client)
    answer = pay(client, order, PAYMENT_FAILED)
    assert answer.status_code == 200 and answer.json["order_status"] == "payment_failed"
    drain(app)
    [event] = fake.events_for("Failed Payment")
    assert fake.events_for("Placed Order") == []
    assert event["unique_id"] == f"{order['order_id']}_failed_pay_lifecycle_1"
    assert event["properties"]["OrderId"] == order["order_id"]
    assert event["properties"]["PaymentFailure"] == "Credit card not accepted"
    assert event["properties"]["PaymentNextSteps"]
    assert [i["ProductID"] for i in event["properties"]["Items"]] == ["house-blend"]
    assert event["value"] == pytest.approx(order["total_cents"] / 100)
    assert fake.profile_of(event)["email"] == EMAIL
    for request in fake.requests:
        openapi.validate(request["endpoint"], request["body"])


def test_shipping_updates_reach_klaviyo_once_per_status(
    app: Flask, client: FlaskClient, fake: Any, drain: Callable[[Flask], None], openapi: Any
) -> None:
    order = place_order(client)
    order_id = order["order_id"]
    assert pay(client, order).status_code == 200
    for status in SHIPPING_STATUSES:
        answer = ship(client, order_id, status, tracking_number="1Z999", carrier="UPS")
        assert answer.status_code == 200
        expected = {"status": "processed", "order_id": order_id, "shipping_status": status}
        assert answer.json == expected
    # the carrier's retry of a status already handled: acknowledged, nothing queued
    again = ship(client, order_id, "delivered", tracking_number="1Z999", carrier="UPS")
    assert again.status_code == 200 and again.json["status"] == "duplicate"
    drain(app)
    updates = fake.events_for("Shipping Update")
    assert [e["properties"]["UpdateType"] for e in updates] == [
        "Shipped",
        "Out for delivery",
        "Delivered",
    ]
    assert [e["unique_id"] for e in updates] == [f"{order_id}_{s}" for s in SHIPPING_STATUSES]
    assert all(e["properties"]["TrackingNumber"] == "1Z999" for e in updates)
    assert all(e["properties"]["Carrier"] == "UPS" for e in updates)
    assert {fake.profile_of(e)["email"] for e in updates} == {EMAIL}
    assert fake.duplicates == 0  # the repeat never left the store
    for request in fake.requests:
        openapi.validate(request["endpoint"], request["body"])


def test_a_shipping_update_for_an_unpaid_order_is_ignored(
    app: Flask, client: FlaskClient, queued: Callable[[Flask], list[dict[str, Any]]]
) -> None:
    order = place_order(client)
    before = queued(app)
    answer = ship(client, order["order_id"], "shipped")
    assert answer.status_code == 200
    assert answer.json["status"] == "ignored"
    assert answer.json["order_status"] == "pending_payment"
    assert queued(app) == before
    assert recorded(app, "shipping.update") == []


def test_a_shipping_update_for_an_unknown_order_is_a_404(client: FlaskClient) -> None:
    answer = ship(client, "SP-NOPE", "shipped")
    assert answer.status_code == 404 and answer.json["error"] == "unknown_order"


def _forged(order_id: str) -> dict[str, dict[str, Any]]:
    body = shipping_body(order_id, "delivered")
    good = signed_shipping(SECRET, body)
    return {
        "unsigned": {"data": body, "headers": {"Content-Type": "application/json"}},
        "wrong secret": {"data": body, "headers": signed_shipping("not-the-secret", body)},
        "replayed": {
            "data": body,
            "headers": signed_shipping(SECRET, body, timestamp=int(time.time()) - 3600),
        },
        "altered body": {"data": body.replace(b"delivered", b"shipped"), "headers": good},
        "malformed signature": {
            "data": body,
            "headers": {**good, "X-Store-Signature": "t=1,v1=zz"},
        },
    }


@pytest.mark.parametrize(
    ("case", "code"),
    [
        ("unsigned", "missing_signature"),
        ("wrong secret", "invalid_signature"),
        ("replayed", "timestamp_out_of_tolerance"),
        ("altered body", "invalid_signature"),
        ("malformed signature", "malformed_signature"),
    ],
)
def test_forged_or_replayed_shipping_webhooks_are_refused_with_no_event(
    case: str,
    code: str,
    app: Flask,
    client: FlaskClient,
    queued: Callable[[Flask], list[dict[str, Any]]],
) -> None:
    order = place_order(client)
    assert pay(client, order).status_code == 200
    before = queued(app)
    answer = client.post(SHIPPING_PATH, **_forged(order["order_id"])[case])
    assert answer.status_code == 400
    assert answer.json["error"] == code
    assert queued(app) == before
    assert recorded(app, "shipping.update") == []


@pytest.mark.parametrize(
    "payload",
    [
        {"status": "shipped"},
        {"order_id": "SP-1", "status": "lost"},
        {"order_id": "SP-1", "status": "shipped", "carrier": 7},
        ["not", "an", "object"],
    ],
)
def test_a_malformed_shipping_body_is_a_400(client: FlaskClient, payload: Any) -> None:
    body = json.dumps(payload).encode()
    answer = client.post(SHIPPING_PATH, data=body, headers=signed_shipping(SECRET, body))
    assert answer.status_code == 400 and answer.json["error"] == "invalid_payload"


def test_the_provider_page_sends_each_webhook(
    app: Flask, client: FlaskClient, fake: Any, drain: Callable[[Flask], None]
) -> None:
    auth = {"Authorization": "Basic " + _basic("admin", ADMIN_PASSWORD)}
    assert client.get("/admin/provider/").status_code == 401
    paid = place_order(client)
    declined = place_order(client, "declined.buyer@klaviyo-demo.com")
    page = client.get("/admin/provider/", headers=auth)
    assert page.status_code == 200
    text = page.get_data(as_text=True)
    # unpaid orders: only the provider's buttons; nothing to ship yet
    assert text.count("Payment failed") == 2 and "Out for delivery" not in text
    steps = [
        (declined["order_id"], PAYMENT_FAILED),
        (paid["order_id"], PAYMENT_SUCCEEDED),
        *((paid["order_id"], status) for status in SHIPPING_STATUSES),
    ]
    for order_id, what in steps:
        answer = client.post(f"/admin/provider/{order_id}/{what}", headers=auth)
        assert answer.status_code == 303, answer.get_data(as_text=True)
    text = client.get("/admin/provider/", headers=auth).get_data(as_text=True)
    assert "Out for delivery" in text  # the paid order can now be shipped
    drain(app)
    metrics = Counter(e["metric"] for e in fake.events)
    assert metrics["Failed Payment"] == 1
    assert metrics["Placed Order"] == 1
    assert metrics["Shipping Update"] == 3


def _basic(user: str, password: str) -> str:
    import base64

    return base64.b64encode(f"{user}:{password}".encode()).decode()


# -- the store's refunds: partial, then the rest ------------------------------------------------


def _admin() -> dict[str, str]:
    return {"Authorization": "Basic " + _basic("admin", ADMIN_PASSWORD)}


def test_partial_refunds_in_the_store_reach_klaviyo_numbered(
    app: Flask, client: FlaskClient, fake: Any, drain: Callable[[Flask], None], openapi: Any
) -> None:
    client.post("/api/cart", json={"product_id": "house-blend", "quantity": 2})
    client.post("/api/cart", json={"product_id": "summit-bottle", "quantity": 1})
    order = place_order(client)
    order_id, total = order["order_id"], order["total_cents"]
    assert pay(client, order).status_code == 200
    with app.app_context():
        from example_store.orders import get_order

        stored = get_order(order_id)
        assert stored is not None
        bottle = next(line for line in stored.lines if line.product_id == "summit-bottle")
    url = f"/admin/orders/{order_id}/partial-refund"
    first = client.post(url, json={"line_ids": [bottle.id], "reason": "Dented"}, headers=_admin())
    assert first.status_code == 200, first.get_data(as_text=True)
    assert first.json["sequence"] == 1 and first.json["amount_cents"] == bottle.row_total_cents
    assert first.json["status"] == "paid"  # partly refunded: still paid
    second = client.post(url, json={"amount_cents": 150, "reason": "Late"}, headers=_admin())
    assert second.json["sequence"] == 2 and second.json["status"] == "paid"
    too_much = client.post(url, json={"amount_cents": total}, headers=_admin())
    assert too_much.status_code == 400 and too_much.json["error"] == "invalid_amount"
    # the admin's "Refund" refunds what is left, as the third refund
    rest = client.post(f"/admin/orders/{order_id}/refund", json={}, headers=_admin())
    assert rest.status_code == 200 and rest.json["status"] == "refunded"
    after = client.post(url, json={"amount_cents": 1}, headers=_admin())
    assert after.status_code == 409
    drain(app)
    [placed] = fake.events_for("Placed Order")
    refunds = fake.events_for("Refunded Order")
    assert [e["unique_id"] for e in refunds] == [
        placed["unique_id"],
        f"{order_id}_refund_2",
        f"{order_id}_refund_3",
    ]
    left = total - bottle.row_total_cents - 150
    assert [round(e["value"] * 100) for e in refunds] == [bottle.row_total_cents, 150, left]
    assert sum(round(e["value"] * 100) for e in refunds) == total  # never more than was paid
    assert refunds[0]["properties"]["ItemNames"] == [bottle.name]
    assert [i["ProductID"] for i in refunds[0]["properties"]["NotRefundedItems"]] == ["house-blend"]
    assert refunds[0]["properties"]["Reason"] == "Dented"
    for request in fake.requests:
        openapi.validate(request["endpoint"], request["body"])


def test_a_full_refund_is_still_one_event_worth_the_total(
    app: Flask, client: FlaskClient, fake: Any, drain: Callable[[Flask], None]
) -> None:
    order = place_order(client)
    assert pay(client, order).status_code == 200
    answer = client.post(
        f"/admin/orders/{order['order_id']}/refund", json={"reason": "x"}, headers=_admin()
    )
    assert answer.status_code == 200
    again = client.post(f"/admin/orders/{order['order_id']}/refund", json={}, headers=_admin())
    assert again.json["changed"] is False
    drain(app)
    [refunded] = fake.events_for("Refunded Order")
    assert refunded["unique_id"] == order["order_id"]
    assert refunded["value"] == pytest.approx(order["total_cents"] / 100)


def test_the_carrier_cli_sends_a_signed_update(
    app: Flask, client: FlaskClient, queued: Callable[[Flask], list[dict[str, Any]]]
) -> None:
    order = place_order(client)
    assert pay(client, order).status_code == 200
    runner = app.test_cli_runner()
    args = ["carrier", "deliver", order["order_id"], "shipped", "--tracking-number", "1Z5"]
    first = runner.invoke(args=args)
    assert first.exit_code == 0, first.output
    assert '"processed"' in first.output
    assert '"duplicate"' in runner.invoke(args=args).output
    [update] = [e for e in queued(app) if e["metric"] == "Shipping Update"]
    assert update["properties"]["TrackingNumber"] == "1Z5"
    unknown = runner.invoke(args=["carrier", "deliver", "SP-NOPE", "delivered"])
    assert unknown.exit_code == 1 and "unknown_order" in unknown.output
