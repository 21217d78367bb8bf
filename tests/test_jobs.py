"""Delivery: the Sender against the stand-in, RQ jobs in a real worker, faults and dead letters."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
import redis
from flask import Flask
from rq import Queue

from flask_klaviyo.client import KlaviyoClient
from flask_klaviyo.delivery import drain as delivery_drain
from flask_klaviyo.delivery import sender as delivery_sender
from flask_klaviyo.delivery import settings as delivery_settings
from flask_klaviyo.delivery.deadletters import DeadLetters
from flask_klaviyo.delivery.outbox import Outbox
from flask_klaviyo.delivery.sender import Sender
from flask_klaviyo.events import Event
from flask_klaviyo.exceptions import KlaviyoServerError

API_KEY = "pk_test_private_key"

pytestmark = pytest.mark.usefixtures("fast_backoff")


def event(n: int, *, email: str = "sarah.mason@klaviyo-demo.com", **overrides: Any) -> Event:
    fields: dict[str, Any] = {
        "metric": "Placed Order",
        "properties": {"OrderId": f"order-{n}", "ItemNames": ["Winnie the Pooh"]},
        "profile": {"email": email},
        "time": datetime(2026, 11, 1, 10, 0, n, tzinfo=UTC),
        "value": 9.99,
        "value_currency": "USD",
        "unique_id": f"order-{n}",
    }
    fields.update(overrides)
    return Event(**fields)


@pytest.fixture
def client(fake: Any) -> KlaviyoClient:
    with KlaviyoClient(API_KEY, base_url=fake.url, timeout=2.0) as c:
        yield c


@pytest.fixture
def dead(redis_client: redis.Redis) -> DeadLetters:
    return DeadLetters(redis_client)


def test_a_lone_event_goes_to_create_event(
    fake: Any, client: KlaviyoClient, dead: DeadLetters, openapi: Any
) -> None:
    result = Sender(client, dead).send([event(1)])
    assert result == {"sent": 1, "dead": 0, "requests": 1}
    assert [r["path"] for r in fake.requests] == ["/api/events"]
    openapi.validate("create_event", fake.requests[0]["body"])


def test_several_events_go_in_one_bulk_request(
    fake: Any, client: KlaviyoClient, dead: DeadLetters, openapi: Any
) -> None:
    events = [event(1), event(2), event(3, email="other@shop.test")]
    result = Sender(client, dead).send(events)
    assert result == {"sent": 3, "dead": 0, "requests": 1}
    assert [r["path"] for r in fake.requests] == ["/api/event-bulk-create-jobs"]
    openapi.validate("bulk_create_events", fake.requests[0]["body"])
    assert sorted(e["unique_id"] for e in fake.events) == ["order-1", "order-2", "order-3"]


def test_a_bad_event_in_a_bulk_is_split_out_and_the_rest_still_goes(
    fake: Any, client: KlaviyoClient, dead: DeadLetters
) -> None:
    bad = event(2, value="29.98")  # bypasses validation on purpose: Klaviyo must catch it
    result = Sender(client, dead).send([event(1), bad, event(3)])
    assert result["sent"] == 2 and result["dead"] == 1
    assert sorted(e["unique_id"] for e in fake.events) == ["order-1", "order-3"]
    [record] = dead.all()
    assert record["event"]["unique_id"] == "order-2"
    assert record["status"] == 400
    assert record["errors"][0]["pointer"].endswith("/attributes/value")
    assert record["errors"][0]["detail"]


def test_429_waits_retry_after_then_delivers(
    fake: Any, client: KlaviyoClient, dead: DeadLetters
) -> None:
    slept: list[float] = []
    fake.fail_next(429, retry_after=2)
    result = Sender(client, dead, sleep=slept.append).send([event(1)])
    assert slept == [2.0]
    assert result == {"sent": 1, "dead": 0, "requests": 2}
    assert len(fake.events) == 1


def test_5xx_backs_off_then_gives_up_to_rq(
    fake: Any, client: KlaviyoClient, dead: DeadLetters
) -> None:
    slept: list[float] = []
    fake.fail_next(503, count=4)
    with pytest.raises(KlaviyoServerError):
        Sender(client, dead, attempts=4, sleep=slept.append).send([event(1)])
    assert len(slept) == 3
    assert all(0 < s <= delivery_sender.BACKOFF_CAP for s in slept)
    assert fake.events == [] and dead.count() == 0


def test_timeout_is_retried(fake: Any, dead: DeadLetters) -> None:
    fake.timeout_next(hold=1.0)
    with KlaviyoClient(API_KEY, base_url=fake.url, timeout=0.3) as c:
        result = Sender(c, dead, sleep=lambda s: None).send([event(1)])
    assert result["sent"] == 1
    assert len(fake.events) == 1


def test_401_dead_letters_every_event_with_klaviyos_error(fake: Any, dead: DeadLetters) -> None:
    with KlaviyoClient("pk_wrong", base_url=fake.url) as c:
        result = Sender(c, dead).send([event(1), event(2)])
    assert result == {"sent": 0, "dead": 2, "requests": 1}
    records = dead.all()
    assert {r["status"] for r in records} == {401}
    assert all("pk_wrong" not in str(r) for r in records)


def test_retrying_a_half_sent_job_creates_no_duplicate(
    fake: Any, client: KlaviyoClient, dead: DeadLetters
) -> None:
    events = [event(1), event(2)]
    Sender(client, dead).send(events)
    Sender(client, dead).send(events)
    assert len(fake.events) == 2
    assert fake.duplicates == 2


# -- through RQ ---------------------------------------------------------------------------------
@pytest.fixture
def app(make_app: Callable[..., Flask], fake: Any) -> Flask:
    return make_app(fake=fake, KLAVIYO_RETRY_MAX=2)


def test_drain_rides_out_a_run_of_server_errors(
    app: Flask, fake: Any, redis_client: redis.Redis, drain: Callable[[Flask], None]
) -> None:
    klaviyo = app.extensions["klaviyo"].extension
    with app.app_context():
        klaviyo.track("Left Review", {"Stars": 5}, profile={"email": "a@shop.test"})
    fake.fail_next(503, count=delivery_sender.IN_JOB_ATTEMPTS)  # four failures in a row
    drain(app)
    [accepted] = fake.events
    assert accepted["metric"] == "Left Review"
    assert (
        len([r for r in fake.requests if r["path"] == "/api/events"])
        == delivery_sender.IN_JOB_ATTEMPTS + 1
    )
    queue = Queue("klaviyo", connection=redis_client)
    assert queue.count == 0 and queue.failed_job_registry.count == 0


def test_a_drain_that_keeps_failing_leaves_its_events_waiting_then_reclaims_them(
    app: Flask,
    fake: Any,
    redis_client: redis.Redis,
    monkeypatch: pytest.MonkeyPatch,
    drain: Callable[[Flask], None],
) -> None:
    klaviyo = app.extensions["klaviyo"].extension
    with app.app_context():
        klaviyo.track("Left Review", {"Stars": 5}, profile={"email": "a@shop.test"})
    fake.fail_next(503, count=delivery_drain.DRAIN_ATTEMPTS)  # the whole first drain fails
    drain(app)
    assert fake.events == []
    outbox = Outbox(redis_client)
    assert outbox.depth() == 1 and outbox.pending() == 1  # kept, taken by the failed drain
    [waiting] = outbox.waiting()
    assert waiting["metric"] == "Left Review"
    assert API_KEY not in str(waiting)
    queue = Queue("klaviyo", connection=redis_client)
    assert queue.scheduled_job_registry.count == 1  # a reclaiming drain is on its way

    monkeypatch.setattr(
        delivery_settings, "RECLAIM_IDLE_MS", 0
    )  # as if the reclaim delay had passed
    outbox.enqueue_drain()
    drain(app)
    [accepted] = fake.events
    assert accepted["metric"] == "Left Review"
    assert outbox.depth() == 0


def test_one_drain_job_serves_many_requests_and_sends_one_bulk_request(
    app: Flask, fake: Any, redis_client: redis.Redis, openapi: Any, drain: Callable[[Flask], None]
) -> None:
    klaviyo = app.extensions["klaviyo"].extension
    with app.app_context():
        for n in range(25):
            klaviyo.track("Left Review", {"n": n}, profile={"email": f"s{n % 3}@shop.test"})
    queue = Queue("klaviyo", connection=redis_client)
    assert queue.count == 1  # 25 events, one drain job
    assert Outbox(redis_client).depth() == 25
    drain(app)
    assert len(fake.events) == 25
    [request] = [r for r in fake.requests if r["path"].startswith("/api/")]
    assert request["path"] == "/api/event-bulk-create-jobs"
    openapi.validate("bulk_create_events", request["body"])
    assert Outbox(redis_client).depth() == 0
    assert not redis_client.exists(Outbox(redis_client).flag)  # the next push schedules anew


def test_a_lone_event_drains_through_create_event(
    app: Flask, fake: Any, redis_client: redis.Redis, drain: Callable[[Flask], None]
) -> None:
    klaviyo = app.extensions["klaviyo"].extension
    with app.app_context():
        klaviyo.track("Left Review", {"Stars": 5}, profile={"email": "a@shop.test"})
    drain(app)
    assert [r["path"] for r in fake.requests] == ["/api/events"]


def test_drain_respects_the_shared_rate_limit(
    app: Flask, fake: Any, redis_client: redis.Redis, drain: Callable[[Flask], None]
) -> None:
    """Two events per bulk request, 3 requests per second: 12 events need >= 1.5 s."""
    app.config["KLAVIYO_RATE_LIMITS"] = {"bulk_create_events": [[3, 1.0]]}
    klaviyo = app.extensions["klaviyo"].extension
    with app.app_context():
        for n in range(12):
            klaviyo.track("Left Review", {"n": n}, profile={"email": "a@shop.test"})
    import flask_klaviyo.delivery.drain as drain_module

    started = time.monotonic()
    original = drain_module.DRAIN_BATCH
    drain_module.DRAIN_BATCH = 2
    try:
        drain(app)
    finally:
        drain_module.DRAIN_BATCH = original
    elapsed = time.monotonic() - started
    assert len(fake.events) == 12
    assert len([r for r in fake.requests if r["path"].startswith("/api/")]) == 6
    assert elapsed >= 0.9  # 3 at once, then one every 1/3 s
