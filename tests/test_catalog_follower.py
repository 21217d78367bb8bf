"""Following Klaviyo's catalog jobs: one scheduled look per drain send (operations kept in
Redis), the waiting sync's follower looking sooner, and each outcome applied once."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest
from flask import Flask
from rq import Queue
from rq.job import Job

from flask_klaviyo.delivery import keys
from flask_klaviyo.delivery.deadletters import DeadLetters
from flask_klaviyo.delivery.follower import Follower
from flask_klaviyo.delivery.followup import FOLLOW_UP_BATCH_JOB, follow_up_batch
from flask_klaviyo.delivery.settings import DeliverySettings
from flask_klaviyo.delivery.workers import InProcessWorker

PREFIX = "$custom:::$default:::"


def product(n: int) -> dict[str, Any]:
    return {
        "id": f"F{n}",
        "name": f"Product {n}",
        "price": 10 + n,
        "url": f"https://shop.test/p/{n}",
        "categories": ["Mugs"],
        "variants": [
            {"id": f"F{n}-{size}", "sku": f"F{n}-{size}", "title": size, "inventory_quantity": 3}
            for size in ("S", "L")
        ],
    }


@pytest.fixture
def app(make_app: Callable[..., Flask], fake: Any) -> Iterator[Flask]:
    def views(app: Flask, klaviyo: Any) -> None:
        @klaviyo.catalog_source
        def products() -> Iterator[dict[str, Any]]:
            yield from (product(n) for n in range(3))

    fake.job_delay = 0.05  # Klaviyo's jobs take time; the scheduled looks come after 1 s
    yield make_app(fake=fake, views=views)
    fake.job_delay = 0.0


def follow_ups(queue: Queue) -> list[Job]:
    """Every follow-up RQ job that ran (RQ keeps finished jobs for a while)."""
    ids = queue.finished_job_registry.get_job_ids() + queue.failed_job_registry.get_job_ids()
    return [j for j in Job.fetch_many(ids, connection=queue.connection) if j is not None
            and "follow_up" in (j.func_name or "")]  # fmt: skip


def test_a_waiting_sync_looks_at_its_jobs_itself_before_the_scheduler(
    app: Flask, fake: Any
) -> None:
    with app.app_context():
        report = app.extensions["klaviyo"].extension.catalog_sync()
        queue = Queue(app.config["KLAVIYO_QUEUE"], connection=app.extensions["klaviyo"].redis)
        ran = follow_ups(queue)
        left = queue.scheduled_job_registry.count
    assert report.failed == [] and report.waited
    assert sorted(fake.catalog_items) == [f"{PREFIX}F0", f"{PREFIX}F1", f"{PREFIX}F2"]
    assert len(fake.catalog_variants) == 6
    assert ran == []  # no scheduled look was needed: the follower applied every outcome
    assert left == 0  # and took the scheduled looks it made unnecessary off the schedule
    looks = [r for r in fake.requests if r["method"] == "GET" and "-bulk-" in r["path"]]
    assert len({r["path"] for r in looks}) == 3  # categories, items, variants: one job each


def waiting_resources(app: Flask) -> list[str]:
    """The keys of the catalog resources waiting in the outbox (queued as chunks)."""
    waiting = app.extensions["klaviyo"].outbox.waiting()
    assert all(entry["op"].endswith("_chunk") for entry in waiting)  # one entry per job
    return [r["key"] for entry in waiting for r in entry["payload"]["resources"]]


def send_items(app: Flask, fake: Any, skus: list[str]) -> Queue:
    """Items queued and sent by a drain (no scheduler: the follow-up stays scheduled)."""
    state = app.extensions["klaviyo"]
    klaviyo = state.extension
    with app.app_context():
        for sku in skus:
            payload = {
                "attributes": {
                    "external_id": sku, "title": sku, "description": "", "price": 1.0,
                    "url": f"https://shop.test/p/{sku}",
                },
                "then": [{"op": "catalog_variant_create", "key": f"{sku}-v", "payload": {
                    "attributes": {"external_id": f"{sku}-v", "title": "v", "description": "",
                                   "sku": f"{sku}-v", "price": 1.0, "inventory_quantity": 1,
                                   "url": f"https://shop.test/p/{sku}"},
                    "relationships": {"item": {"data": {"type": "catalog-item",
                                                        "id": f"{PREFIX}{sku}"}}}}}],
            }  # fmt: skip
            klaviyo.enqueue("catalog_item_create", payload, key=sku)
        queue = Queue(app.config["KLAVIYO_QUEUE"], connection=state.redis)
        InProcessWorker([queue], connection=state.redis).work(burst=True)
    return queue


def test_one_scheduled_look_per_send_with_the_operations_kept_in_redis(
    app: Flask, fake: Any
) -> None:
    queue = send_items(app, fake, ["A", "B"])
    [rq_id] = queue.scheduled_job_registry.get_job_ids()
    job = Job.fetch(rq_id, connection=queue.connection)
    assert job.func_name == FOLLOW_UP_BATCH_JOB
    [[kind, job_id, carries]] = job.args[1]
    assert (kind, carries) == ("catalog_item_create", 1)
    assert queue.connection.exists(keys.follow_up_operations(job_id))  # not in the RQ job
    time.sleep(0.1)
    with app.app_context():
        result = follow_up_batch(queue.connection, DeliverySettings.load(), queue.name,
                                 job.args[1], 1)  # fmt: skip
    assert result["finished"] == 1 and result["dead"] == 0
    assert not queue.connection.exists(keys.follow_up_operations(job_id))  # applied: gone
    waiting = app.extensions["klaviyo"].outbox.waiting()
    assert [entry["op"] for entry in waiting] == ["catalog_variant_create_chunk"]  # one job's
    assert sorted(waiting_resources(app)) == ["A-v", "B-v"]  # the variants, queued


def test_the_follower_applies_an_outcome_once_and_the_scheduled_look_then_does_nothing(
    app: Flask, fake: Any
) -> None:
    fake.fail_catalog_items({"B"}, detail="Image could not be fetched.")
    queue = send_items(app, fake, ["A", "B"])
    [rq_id] = queue.scheduled_job_registry.get_job_ids()
    pending = Job.fetch(rq_id, connection=queue.connection).args[1]
    with app.app_context():
        follower = Follower(queue.connection, DeliverySettings.load(), queue.name)
        deadline = time.monotonic() + 20
        try:
            while follower.applied == 0 and time.monotonic() < deadline:
                time.sleep(max(follower.step(), 0.01))
        finally:
            follower.close()
        gets = len([r for r in fake.requests if r["method"] == "GET"])
        again = follow_up_batch(queue.connection, DeliverySettings.load(), queue.name,
                                pending, 1)  # fmt: skip
    assert follower.applied == 1
    assert queue.scheduled_job_registry.count == 0  # its scheduled look is not needed
    assert again["followed"] == 1 and again["finished"] == 0  # the marker: not applied twice
    assert len([r for r in fake.requests if r["method"] == "GET"]) == gets  # nor looked at
    [dead] = DeadLetters(queue.connection).all()
    assert dead["operation"]["key"] == "B" and dead["reason"] == "job_failed"
    assert dead["operation"]["payload"]["then"][0]["key"] == "B-v"  # kept for a replay
    assert waiting_resources(app) == ["A-v"]  # only the created item's variant


def test_a_look_that_fails_is_tried_again_later_without_holding_up_the_batch(
    app: Flask, fake: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("flask_klaviyo.delivery.sender.BACKOFF_BASE", 0.001)
    monkeypatch.setattr("flask_klaviyo.delivery.sender.IN_JOB_ATTEMPTS", 4)
    queue = send_items(app, fake, ["A"])
    queue = send_items(app, fake, ["B"])
    pending = []
    for rq_id in queue.scheduled_job_registry.get_job_ids():
        pending += Job.fetch(rq_id, connection=queue.connection).args[1]
        queue.scheduled_job_registry.remove(rq_id, delete_job=True)
    assert len(pending) == 2  # two sends, two Klaviyo jobs
    time.sleep(0.1)
    fake.fail_next(503, count=4, detail="Klaviyo is busy.")  # every attempt of the first look
    with app.app_context():
        settings = DeliverySettings.load()
        first = follow_up_batch(queue.connection, settings, queue.name, pending[:1], 1)
        assert first["unfinished"] == 1  # looked at again later, nothing lost
        both = follow_up_batch(queue.connection, settings, queue.name, pending, 2)
    assert both["finished"] == 2
    assert sorted(waiting_resources(app)) == ["A-v", "B-v"]


def test_a_job_two_scheduled_looks_would_see_leaves_neither_held(app: Flask, fake: Any) -> None:
    """A scheduled look that found the job being looked at here schedules another look at it:
    once the follower has applied the outcome, neither follow-up is held back (a sync waiting
    for the queue to be idle waited for ever on the second)."""
    queue = send_items(app, fake, ["A"])
    [rq_id] = queue.scheduled_job_registry.get_job_ids()
    pending = Job.fetch(rq_id, connection=queue.connection).args[1]
    with app.app_context():
        follow_up = [queue.name, pending, 2]
        queue.enqueue_in(timedelta(seconds=1), FOLLOW_UP_BATCH_JOB, *follow_up)
        follower = Follower(queue.connection, DeliverySettings.load(), queue.name)
        deadline = time.monotonic() + 20
        try:
            while queue.scheduled_job_registry.count and time.monotonic() < deadline:
                time.sleep(max(follower.step(), 0.01))
        finally:
            follower.close()
    assert follower.applied == 1
    assert queue.scheduled_job_registry.count == 0


def test_before_a_kinds_first_time_one_job_probes_and_the_others_wait_for_it(
    app: Flask, fake: Any
) -> None:
    """Every early look spends a GET of the job endpoint's budget: while no job of a kind has
    finished, one probes (looked at early, then less and less often) and the others are
    looked at once they are as old as it was when it finished."""
    fake.job_delay = 0.4
    queue = send_items(app, fake, ["A"])
    queue = send_items(app, fake, ["B"])
    queue = send_items(app, fake, ["C"])
    with app.app_context():
        follower = Follower(queue.connection, DeliverySettings.load(), queue.name)
        deadline = time.monotonic() + 20
        try:
            while follower.applied < 3 and time.monotonic() < deadline:
                time.sleep(max(follower.step(), 0.01))
        finally:
            follower.close()
    assert follower.applied == 3
    looks: dict[str, list[float]] = {}
    for r in fake.requests:
        if r["method"] == "GET" and "catalog-item-bulk-create-jobs/" in r["path"]:
            looks.setdefault(r["path"], []).append(r["received_at"])
    [probe] = [path for path, times in looks.items() if len(times) > 1]  # it looked early
    others = [times for path, times in looks.items() if path != probe]
    assert len(others) == 2
    assert all(times[0] > looks[probe][-1] for times in others)  # after the probe's time
    assert sum(len(times) for times in others) <= 4  # once each, or twice if just too early
