"""A drain does not sleep on a spent rate window while other work waits: what has no slot is
carried (still held) and what arrives meanwhile goes; and one look per Klaviyo job, whoever
looks (the scheduled follow-up or a waiting sync's follower). Real Redis, the stand-in over
HTTP."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
import redis
from flask import Flask
from rq import Queue

from flask_klaviyo.delivery import kinds
from flask_klaviyo.delivery.dispatch import dispatch
from flask_klaviyo.delivery.drain import Drain
from flask_klaviyo.delivery.followup import (
    FOLLOW_UP_BATCH_JOB,
    follow_up_batch,
    follow_up_job,
    schedule_follow_ups,
)
from flask_klaviyo.delivery.keys import CONSUMER_GROUP
from flask_klaviyo.delivery.looks import claim, done_looking, may_look
from flask_klaviyo.delivery.outbox import FOLLOW_UP_JOB
from flask_klaviyo.delivery.settings import DeliverySettings

ITEMS = "bulk_create_catalog_items"


def product(n: int) -> dict[str, Any]:
    return {
        "id": f"W{n}", "name": f"Waiting {n}", "price": 10, "url": f"https://shop.test/w/{n}",
        "categories": ["Waiting"],
        "variants": [{"id": f"W{n}-0", "sku": f"W{n}-0", "inventory_quantity": 0}],
    }  # fmt: skip


def store(make_app: Callable[..., Flask], fake: Any, **config: Any) -> Flask:
    """Three item jobs' worth of products; one item job per 1.5 s (the second and third wait
    for their slot)."""
    fake.job_delay = 0.0
    return make_app(
        fake=fake,
        views=lambda app, klaviyo: klaviyo.catalog_source(lambda: map(product, range(300))),
        KLAVIYO_STRICT=True,
        KLAVIYO_RATE_LIMITS={ITEMS: [[1, 1.5], [100, 60.0]]},
        **config,
    )


@pytest.fixture
def app(make_app: Callable[..., Flask], fake: Any) -> Flask:
    return store(make_app, fake)


def _drain(app: Flask, name: str) -> Drain:
    state = app.extensions["klaviyo"]
    return Drain(state.redis, app.config["KLAVIYO_QUEUE"], name, DeliverySettings.load())


def test_what_arrives_goes_while_the_drain_holds_what_waits_for_its_window(
    app: Flask, fake: Any
) -> None:
    """The drain takes the categories' chunk and three item chunks; the items' window lets one
    go every 1.5 s. A back-in-stock subscription queued meanwhile is sent at once, not after
    the items (a drain that slept on the window held it 3 s); every entry is delivered once."""
    with app.app_context():
        state = app.extensions["klaviyo"]
        state.extension.catalog_sync(wait=False)
        drain = _drain(app, "patience-test")

        def subscribe_later() -> None:
            time.sleep(0.4)
            with app.app_context():
                state.extension.notify_back_in_stock(email="wait@example.com", variant="W1-0")

        later = threading.Thread(target=subscribe_later)
        started = time.monotonic()
        later.start()
        drain.run()
        later.join()
        took = time.monotonic() - started
        assert state.outbox.depth() == 0  # all delivered and acknowledged
    order = [r["endpoint"] for r in fake.requests if r["method"] == "POST"]
    assert order.count(ITEMS) == 3
    subscribed = order.index("create_back_in_stock_subscription")
    assert subscribed < [i for i, e in enumerate(order) if e == ITEMS][1], order
    assert took >= 3.0  # the items' window was kept: 1.5 s between item jobs


def test_carried_entries_stay_the_drains_past_the_reclaim_time(
    make_app: Callable[..., Flask], fake: Any
) -> None:
    """Entries reclaimed after 1 s; the drain carries two item chunks for 3 s: it keeps
    claiming them, so another drain polling meanwhile never takes one (which would send it a
    second time), and each item job goes once."""
    app = store(make_app, fake, KLAVIYO_RECLAIM_AFTER=1.0)
    with app.app_context():
        app.extensions["klaviyo"].extension.catalog_sync(wait=False)
        carrier, other = _drain(app, "carrier"), _drain(app, "other")
        done = threading.Event()
        stolen: list[bytes] = []

        def poll() -> None:  # what another drain reclaims (entries idle past the time)
            while not done.is_set():
                _, found, *_ = other.connection.xautoclaim(
                    other.stream, CONSUMER_GROUP, other.consumer, min_idle_time=1000, count=10
                )
                stolen.extend(entry_id for entry_id, fields in found if fields)
                time.sleep(0.2)

        poller = threading.Thread(target=poll)
        carrier.outbox.ensure_group()
        poller.start()
        try:
            carrier.run()
        finally:
            done.set()
            poller.join()
    assert stolen == []
    assert [r["endpoint"] for r in fake.requests if r["method"] == "POST"].count(ITEMS) == 3


def test_a_carrying_drain_reads_no_longer_than_a_clients_timeout(
    app: Flask, redis_url: str
) -> None:
    """The web side's client (which a sync's own drains use) times a read out after 2 s, and
    RQ raises the figure its pool shows without changing the connections it holds: while
    carrying entries whose slot is far off, a drain's blocking read stays short, and a client
    timing out sooner still is a read that found nothing, not a failed drain."""
    with app.app_context():
        for timeout in (2.0, 0.1):
            client = redis.Redis.from_url(redis_url, socket_timeout=timeout)
            drain = Drain(client, app.config["KLAVIYO_QUEUE"], "block", DeliverySettings.load())
            drain.outbox.ensure_group()
            drain.carry = [((b"0-1", {b"e": b"{}"}), {})]
            drain.carry_at = time.monotonic() + 30
            started = time.monotonic()
            assert drain.take_more() == []  # no redis.TimeoutError
            assert time.monotonic() - started < drain.block_cap + 0.5


def test_one_looker_at_a_time_and_none_after_the_outcome(redis_client: Any) -> None:
    assert may_look(redis_client, "J1") is True
    assert may_look(redis_client, "J1") is False  # someone is looking
    done_looking(redis_client, "J1")
    assert may_look(redis_client, "J1") is True
    assert claim(redis_client, "J1")
    assert may_look(redis_client, "J1") is None  # applied: nothing to look at


def sent_first_chunks(app: Flask, name: str) -> tuple[Any, Queue, Drain]:
    """A sync queued (not waited for), and its first two chunks (the categories' and the first
    items') sent by the drain ``name``: their Klaviyo jobs are in ``drain.sender.jobs``."""
    state = app.extensions["klaviyo"]
    state.extension.catalog_sync(wait=False)
    queue = Queue(app.config["KLAVIYO_QUEUE"], connection=state.redis)
    drain = _drain(app, name)
    drain.outbox.ensure_group()
    entries = drain.take(2, block=None)
    raw = [fields[b"e"] for _, fields in entries]
    dispatch(drain.sender, [json.loads(r) for r in raw], raw)
    return state, queue, drain


def test_a_scheduled_look_leaves_a_job_another_is_looking_at(app: Flask, fake: Any) -> None:
    """The follower holds the job (a look in flight): the scheduled follow-up does not spend a
    second GET of the job endpoint's window on it, and looks again later."""
    with app.app_context():
        state, queue, drain = sent_first_chunks(app, "look-test")
        jobs = list(drain.sender.jobs)
        schedule_follow_ups(state.redis, queue, jobs)
        [(_, held_job, _), *_] = [j for j in jobs if j[0] == "catalog_item_create"]
        assert may_look(state.redis, held_job) is True  # "the follower" looks at this one
        pending = [[kind, job_id, 1] for kind, job_id, _ in jobs]
        scheduled = queue.scheduled_job_registry.get_job_ids()
        before = len(fake.requests)
        result = follow_up_batch(state.redis, DeliverySettings.load(), queue.name, pending, look=1)
        looked = [r["path"] for r in fake.requests[before:] if r["method"] == "GET"]
    assert not any(held_job in path for path in looked)
    assert len(looked) == len(jobs) - 1
    assert result["put_off"] == 1  # looked at again after the delay, its look not counted
    assert put_off_looks(queue, held_job, scheduled) == [1]


def put_off_looks(queue: Queue, job_id: str, besides: list[str]) -> list[int]:
    """The look numbers of the scheduled batches that will look at ``job_id`` (but those
    scheduled before: ``besides``)."""
    ids = [i for i in queue.scheduled_job_registry.get_job_ids() if i not in besides]
    scheduled = [queue.fetch_job(i) for i in ids]
    return [
        job.args[2]
        for job in scheduled
        if job is not None
        and job.func_name == FOLLOW_UP_BATCH_JOB
        and any(entry[1] == job_id for entry in job.args[1])
    ]


def test_a_scheduled_look_without_a_rate_slot_comes_back_unheld(app: Flask, fake: Any) -> None:
    """No slot on the job endpoint: no GET, no lease held while waiting (the follower may take
    the job), the same look again once the endpoint has a slot."""
    with app.app_context():
        state, queue, drain = sent_first_chunks(app, "slot-test")
        jobs = [j for j in drain.sender.jobs if j[0] == "catalog_item_create"]
        [(kind, job_id, _)] = jobs
        endpoint = kinds.get(kind).job.endpoint
        drain.sender.limiter.block(endpoint, 3.0)  # as a 429's Retry-After would
        scheduled = queue.scheduled_job_registry.get_job_ids()
        before = len(fake.requests)
        result = follow_up_batch(
            state.redis, DeliverySettings.load(), queue.name, [[kind, job_id, 1]], look=3
        )
        assert not [r for r in fake.requests[before:] if job_id in r["path"]]
        assert result["put_off"] == 1 and result["unfinished"] == 0
        assert may_look(state.redis, job_id) is True  # nobody holds it meanwhile
        assert put_off_looks(queue, job_id, scheduled) == [3]
        registry = queue.scheduled_job_registry
        [back] = [i for i in registry.get_job_ids() if i not in scheduled]
        due = registry.get_scheduled_time(back).timestamp() - time.time()
        assert 2.0 < due <= 3.5  # when the endpoint has a slot again, not a look's delay


def test_a_single_jobs_follow_up_leaves_a_job_another_is_looking_at(app: Flask, fake: Any) -> None:
    """``follow_up_job`` (one Klaviyo job's RQ job) takes the same one-look lease: held by
    another, no GET, the same look again after the delay; free, it looks and applies."""
    with app.app_context():
        state, queue, drain = sent_first_chunks(app, "single-look-test")
        [(kind, job_id, _)] = [j for j in drain.sender.jobs if j[0] == "catalog_item_create"]
        settings = DeliverySettings.load()
        assert may_look(state.redis, job_id) is True  # another looker holds it
        before = len(fake.requests)
        held = follow_up_job(state.redis, settings, queue.name, kind, job_id, [], 2)
        assert held == {"status": "looking elsewhere", "look": 2, "dead": 0}
        assert not [r for r in fake.requests[before:] if job_id in r["path"]]
        scheduled = [queue.fetch_job(i) for i in queue.scheduled_job_registry.get_job_ids()]
        [again] = [job for job in scheduled if job and job.func_name == FOLLOW_UP_JOB]
        assert again.args[2] == job_id and again.args[-1] == 2  # the same look, not one more

        done_looking(state.redis, job_id)
        looked = follow_up_job(state.redis, settings, queue.name, kind, job_id, [], 2)
        assert looked["status"] == "complete"
        assert [r for r in fake.requests[before:] if job_id in r["path"]]
        assert may_look(state.redis, job_id) is None  # applied: nobody looks again
