"""Operator commands on a seeded state: replay of dead letters after a fix, verify (status:
tests/test_status.py)."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis
from flask import Flask

from flask_klaviyo.delivery.deadletters import DeadLetters
from flask_klaviyo.delivery.outbox import Outbox
from flask_klaviyo.delivery.sender import Sender
from flask_klaviyo.events import custom_event

API_KEY = "pk_test_private_key"


@pytest.fixture
def app(make_app: Callable[..., Flask], fake: Any) -> Flask:
    return make_app(fake=fake, KLAVIYO_CLIENT_URL=fake.url, KLAVIYO_PUBLIC_API_KEY="PUBKEY")


def seed_rejected(fake: Any, redis_client: redis.Redis) -> None:
    """Three events Klaviyo refused with 401 (a wrong key), one of them two days old."""
    from flask_klaviyo.client import KlaviyoClient

    old = datetime.now(UTC) - timedelta(days=2)
    events = [
        custom_event(
            "Renewed Subscription",
            {"Plan": "A1"},
            profile={"email": "a@shop.test"},
            value=10.0,
            unique_id="A1",
            time=old,
        ),
        custom_event("Left Review", {"Stars": 5}, profile={"email": "a@shop.test"}),
        custom_event("Left Review", {"Stars": 4}, profile={"email": "b@shop.test"}),
    ]
    with KlaviyoClient("pk_wrong_key", base_url=fake.url) as wrong:
        Sender(wrong, DeadLetters(redis_client)).send(events)
    assert DeadLetters(redis_client).count() == 3


def test_replay_after_a_fix_delivers_once_and_backfills_old_events(
    app: Flask, fake: Any, redis_client: redis.Redis, drain: Callable[[Flask], None]
) -> None:
    seed_rejected(fake, redis_client)
    runner = app.test_cli_runner()
    dry = runner.invoke(args=["klaviyo", "replay", "--dry-run"])
    assert "would requeue 3 event(s) (1 as backfill)" in dry.output
    assert DeadLetters(redis_client).count() == 3

    done = runner.invoke(args=["klaviyo", "replay"])
    assert done.exit_code == 0, done.output
    assert "requeued 3 event(s) (1 as backfill)" in done.output
    assert "replay: 3 of 3 dead letters" in done.output  # progress: a plain line, not a TTY
    assert DeadLetters(redis_client).count() == 0
    drain(app)
    by_id = {e["unique_id"]: e for e in fake.events}
    assert len(by_id) == 3
    assert by_id["A1"]["backfill"] is True
    assert [e["backfill"] for e in fake.events if e["unique_id"] != "A1"] == [False, False]

    again = runner.invoke(args=["klaviyo", "replay"])
    assert "requeued 0 event(s)" in again.output
    assert API_KEY not in done.output + again.output


def test_replay_by_metric_and_replaying_twice_is_harmless(
    app: Flask, fake: Any, redis_client: redis.Redis, drain: Callable[[Flask], None]
) -> None:
    seed_rejected(fake, redis_client)
    records = DeadLetters(redis_client).all()
    runner = app.test_cli_runner()
    done = runner.invoke(args=["klaviyo", "replay", "--metric", "Left Review"])
    assert "requeued 2 event(s)" in done.output and "skipped 1" in done.output
    # the same dead letters once more (as if two operators replayed at once)
    dead = DeadLetters(redis_client)
    for record in records:
        if record["event"]["metric"] == "Left Review":
            dead.add(record["event"], reason="rejected")
    runner.invoke(args=["klaviyo", "replay", "--metric", "Left Review"])
    drain(app)
    assert len(fake.events_for("Left Review")) == 2
    assert fake.duplicates == 2
    assert [r["event"]["metric"] for r in DeadLetters(redis_client).all()] == [
        "Renewed Subscription"
    ]


def test_an_event_that_is_still_invalid_stays_a_dead_letter(
    app: Flask, redis_client: redis.Redis
) -> None:
    app.config["KLAVIYO_STRICT"] = False
    with app.app_context():
        app.extensions["klaviyo"].extension.track(
            "Custom", {"a": 1}, value="12.00", profile={"email": "a@shop.test"}
        )
    done = app.test_cli_runner().invoke(args=["klaviyo", "replay"])
    assert "still invalid 1" in done.output and "value" in done.output
    assert DeadLetters(redis_client).count() == 1
    assert Outbox(redis_client).depth() == 0


def test_verify_reports_exactly_one_kept(app: Flask, fake: Any, openapi: Any) -> None:
    done = app.test_cli_runner().invoke(args=["klaviyo", "verify"])
    assert done.exit_code == 0, done.output
    report = json.loads(done.output.splitlines()[0])
    assert report["kept"] == 1 and report["ok"] is True
    assert report["server_status"] == 202 and report["browser_status"] == 202
    assert fake.duplicates == 1
    [client_request] = [r for r in fake.requests if r["path"] == "/client/events"]
    openapi.validate("create_client_event", client_request["body"])


def test_verify_needs_the_company_id(app: Flask) -> None:
    app.config["KLAVIYO_PUBLIC_API_KEY"] = None
    done = app.test_cli_runner().invoke(args=["klaviyo", "verify"])
    assert done.exit_code != 0
    assert "KLAVIYO_PUBLIC_API_KEY" in done.output
