"""The operations pipeline: kinds registered once, carried by the same outbox, drain, limiter,
retries and dead letters as events, through a real RQ worker to the stand-in."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import pytest
import redis
from flask import Flask
from rq import Queue

from flask_klaviyo import Klaviyo
from flask_klaviyo.delivery import kinds
from flask_klaviyo.delivery.deadletters import DeadLetters
from flask_klaviyo.delivery.dispatch import coalesce
from flask_klaviyo.delivery.kinds import Kind, pointer_index
from flask_klaviyo.delivery.operations import Operation, decode
from flask_klaviyo.delivery.outbox import Outbox
from flask_klaviyo.delivery.workers import InProcessWorker

API_KEY = "pk_test_private_key"
WHEN = datetime(2026, 11, 1, 10, 0, tzinfo=UTC).isoformat()


def review_event(payload: Mapping[str, Any]) -> dict[str, Any]:
    """A toy kind's payload as Create Event's ``data``: the toy speaks a real endpoint."""
    return {
        "type": "event",
        "attributes": {
            "properties": dict(payload.get("properties") or {}),
            "time": WHEN,
            "unique_id": payload["id"],
            "metric": {"data": {"type": "metric", "attributes": {"name": "Toy Review"}}},
            "profile": {"data": {"type": "profile", "attributes": {"email": payload["email"]}}},
        },
    }


def review_bulk(batch: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    entries = []
    for payload in batch:
        event = review_event(payload)["attributes"]
        profile = event.pop("profile")
        entries.append(
            {
                "type": "event-bulk-create",
                "attributes": {
                    "profile": profile,
                    "events": {"data": [{"type": "event", "attributes": event}]},
                },
            }
        )
    return {
        "data": {
            "type": "event-bulk-create-job",
            "attributes": {"events-bulk-create": {"data": entries}},
        }
    }


def merge_properties(first: Mapping[str, Any], second: Mapping[str, Any]) -> dict[str, Any]:
    return {
        **first,
        **second,
        "properties": {**first.get("properties", {}), **second.get("properties", {})},
    }


TOY_KINDS = (
    Kind(
        "toy_review",
        "create_event",
        "/api/events",
        1,
        body=lambda batch: {"data": review_event(batch[0])},
    ),
    Kind(
        "toy_profile",
        "create_event",
        "/api/events",
        1,
        body=lambda batch: {"data": review_event(batch[0])},
        merge=merge_properties,
    ),
    Kind(
        "toy_bulk",
        "bulk_create_events",
        "/api/event-bulk-create-jobs",
        3,
        body=review_bulk,
        locate=pointer_index("/data/attributes/events-bulk-create/data"),
    ),
)


@pytest.fixture(autouse=True)
def toy_kinds() -> Iterator[None]:
    for kind in TOY_KINDS:
        kinds.register(kind)
    yield
    for kind in TOY_KINDS:
        kinds.unregister(kind.name)


@pytest.fixture
def app(redis_url: str, fake: Any, tmp_path: Any) -> Flask:
    app = Flask(__name__, instance_path=str(tmp_path))
    app.config.update(
        SECRET_KEY="s",
        KLAVIYO_REDIS_URL=redis_url,
        KLAVIYO_API_URL=fake.url,
        KLAVIYO_PRIVATE_API_KEY=API_KEY,
        KLAVIYO_RETRY_MAX=2,
    )
    klaviyo = Klaviyo(app)

    @app.post("/review/<rid>")
    def review(rid: str) -> dict[str, str]:
        klaviyo.enqueue("toy_review", {"id": rid, "email": "ann@shop.test"}, key=rid)
        return {"ok": rid}

    return app


def run_worker(app: Flask) -> None:
    state = app.extensions["klaviyo"]
    with app.app_context():
        queue = Queue("klaviyo", connection=state.redis)
        InProcessWorker([queue], connection=state.redis).work(burst=True)


def test_a_toy_kind_goes_from_a_request_through_a_real_worker_to_the_stand_in(
    app: Flask, fake: Any, redis_client: redis.Redis, openapi: Any
) -> None:
    assert app.test_client().post("/review/r-1").status_code == 200
    outbox = Outbox(redis_client)
    [waiting] = outbox.waiting()
    assert waiting["op"] == "toy_review" and waiting["key"] == "r-1"
    run_worker(app)
    [event] = fake.events
    assert (event["metric"], event["unique_id"]) == ("Toy Review", "r-1")
    openapi.validate("create_event", fake.requests[0]["body"])
    assert outbox.depth() == 0 and DeadLetters(redis_client).count() == 0


def test_a_failed_request_queues_no_operation(app: Flask, redis_client: redis.Redis) -> None:
    @app.post("/broken")
    def broken() -> tuple[str, int]:
        app.extensions["klaviyo"].extension.enqueue("toy_review", {"id": "x", "email": "a@b.co"})
        return "no", 500

    assert app.test_client().post("/broken").status_code == 500
    assert Outbox(redis_client).depth() == 0


def test_operations_with_one_key_waiting_together_are_one_request(
    app: Flask, fake: Any, redis_client: redis.Redis
) -> None:
    klaviyo = app.extensions["klaviyo"].extension
    with app.app_context():
        for n in range(5):
            payload = {"id": "ann", "email": "ann@shop.test", "properties": {f"p{n}": n, "n": n}}
            klaviyo.enqueue("toy_profile", payload, key="ann@shop.test")
        klaviyo.enqueue("toy_profile", {"id": "bob", "email": "bob@shop.test"}, key="bob")
    run_worker(app)
    assert len([r for r in fake.requests if r["path"] == "/api/events"]) == 2
    ann = next(e for e in fake.events if e["unique_id"] == "ann")
    assert ann["properties"] == {"p0": 0, "p1": 1, "p2": 2, "p3": 3, "p4": 4, "n": 4}
    assert Outbox(redis_client).depth() == 0


def test_coalesce_keeps_order_the_first_time_and_operations_without_a_key() -> None:
    kind = kinds.get("toy_profile")
    ops = [
        Operation("toy_profile", {"properties": {"a": 1}}, "k", queued_at=1.0),
        Operation("toy_profile", {"properties": {"b": 2}}, None, queued_at=2.0),
        Operation("toy_profile", {"properties": {"a": 3}}, "k", queued_at=3.0),
    ]
    merged = coalesce(kind, ops)
    assert [(op.key, dict(op.payload), op.queued_at) for op in merged] == [
        ("k", {"properties": {"a": 3}}, 1.0),
        (None, {"properties": {"b": 2}}, 2.0),
    ]
    assert coalesce(kinds.get("toy_review"), ops) == ops  # no merge rule: untouched


def test_a_bad_operation_in_a_batch_is_split_out_by_its_pointer_and_the_rest_still_goes(
    app: Flask, fake: Any, redis_client: redis.Redis
) -> None:
    klaviyo = app.extensions["klaviyo"].extension
    with app.app_context():
        for rid, email in (("a", "a@shop.test"), ("b", "not-an-email"), ("c", "c@shop.test")):
            klaviyo.enqueue("toy_bulk", {"id": rid, "email": email})
    run_worker(app)
    assert sorted(e["unique_id"] for e in fake.events) == ["a", "c"]
    [dead] = DeadLetters(redis_client).all()
    assert dead["reason"] == "rejected" and dead["status"] == 400
    assert dead["operation"]["payload"]["id"] == "b"
    assert dead["errors"][0]["pointer"].startswith("/data/attributes/events-bulk-create/data/1/")


def test_an_operation_of_a_kind_the_worker_does_not_know_is_kept_not_lost(
    app: Flask, fake: Any, redis_client: redis.Redis
) -> None:
    klaviyo = app.extensions["klaviyo"].extension
    with app.app_context():
        klaviyo.enqueue("toy_review", {"id": "r", "email": "r@shop.test"})
    kinds.unregister("toy_review")  # a worker deployed without the module that registers it
    run_worker(app)
    assert fake.events == []
    [dead] = DeadLetters(redis_client).all()
    assert dead["reason"] == "unknown_kind" and "toy_review" in dead["errors"][0]["detail"]
    assert decode(dead["operation"]) == Operation(
        "toy_review", {"id": "r", "email": "r@shop.test"}, None, dead["operation"]["queued_at"]
    )


def test_enqueue_refuses_an_unknown_kind_or_a_payload_that_is_not_json(
    app: Flask, redis_client: redis.Redis
) -> None:
    klaviyo = app.extensions["klaviyo"].extension
    app.config["KLAVIYO_STRICT"] = True
    with app.app_context():
        with pytest.raises(LookupError, match="no operation kind 'nope'"):
            klaviyo.enqueue("nope", {})
        with pytest.raises(TypeError):
            klaviyo.enqueue("toy_review", {"when": datetime.now(UTC)})
    app.config["KLAVIYO_STRICT"] = False
    with app.app_context():
        assert klaviyo.enqueue("nope", {}) is None
        assert klaviyo.enqueue("toy_review", {"n": float("nan")}) is None
    assert Outbox(redis_client).depth() == 0


def test_a_kind_is_registered_once() -> None:
    with pytest.raises(ValueError, match="already registered"):
        kinds.register(Kind("toy_review", "x", "/x", 1, body=lambda batch: {}))
    with pytest.raises(ValueError, match="batch_limit 1"):
        Kind("toy_path", "x", "/api/x/{id}", 2, body=lambda batch: {})


def test_kinds_rate_windows_come_from_klaviyos_table_and_the_override() -> None:
    from flask_klaviyo.ratelimit import Window

    limits = kinds.rate_limits({"create_or_update_profile": (Window(1, 1.0),)})
    assert limits["bulk_create_events"] == (Window(10, 1.0), Window(150, 60.0))
    assert limits["request_profile_deletion"] == (Window(3, 1.0), Window(60, 60.0))
    assert limits["create_or_update_profile"] == (Window(1, 1.0),)
    for name in kinds.names():
        assert kinds.get(name).endpoint in limits, name


PROFILE = {"email": "sarah.mason@klaviyo-demo.com", "phone_number": "+15005550006"}
SAMPLES: dict[str, dict[str, Any]] = {
    "profile_import": {"attributes": {**PROFILE, "first_name": "Sarah", "properties": {"a": 1}}},
    "profile_update": {"id": "01ABC", "path": {"id": "01ABC"}, "attributes": {"email": "n@e.co"}},
    "bulk_import_profiles": {"attributes": PROFILE, "list_id": "Y6nRLr"},
    "subscribe": {
        "list_id": "Y6nRLr",
        "custom_source": "Checkout",
        "historical_import": True,
        "profile": {
            "email": PROFILE["email"],
            "subscriptions": {
                "email": {
                    "marketing": {
                        "consent": "SUBSCRIBED",
                        "consented_at": "2024-05-01T00:00:00+00:00",
                    }
                }
            },
        },
    },
    "unsubscribe": {
        "list_id": "Y6nRLr",
        "profile": {
            "email": PROFILE["email"],
            "subscriptions": {"email": {"marketing": {"consent": "UNSUBSCRIBED"}}},
        },
    },
    "profile_deletion": {"profile": {"email": PROFILE["email"]}},
    "back_in_stock": {
        "channels": ["EMAIL"],
        "profile": {"email": PROFILE["email"]},
        "variant_id": "$custom:::$default:::SKU-1",
    },
}
CATALOG_ATTRIBUTES = {
    "catalog-item": {
        "external_id": "SKU-1",
        "title": "Mug",
        "description": "A mug",
        "url": "https://shop.test/p/1",
        "price": 9.5,
    },
    "catalog-variant": {
        "external_id": "SKU-1-L",
        "title": "Mug, large",
        "description": "A mug",
        "sku": "SKU-1-L",
        "inventory_quantity": 3,
        "price": 9.5,
        "url": "https://shop.test/p/1",
    },
    "catalog-category": {"external_id": "mugs", "name": "Mugs"},
}


@pytest.mark.parametrize(
    "name", [n for n in kinds.names() if n != "event" and kinds.get(n).send is None]
)
def test_every_builtin_kind_builds_a_body_klaviyos_schema_accepts(name: str, openapi: Any) -> None:
    kind = kinds.get(name)
    if name in SAMPLES:
        sample = SAMPLES[name]
    else:
        resource = "catalog-" + name.split("_")[1]
        action = name.rsplit("_", 1)[1]
        sample = {"id": f"$custom:::$default:::{resource}-1"} if action != "create" else {}
        if action != "delete":
            attributes = dict(CATALOG_ATTRIBUTES[resource])
            if action == "update":
                attributes.pop("external_id")
                if resource == "catalog-variant":
                    attributes.pop("sku")
            sample["attributes"] = attributes
        if resource == "catalog-variant" and action == "create":
            sample["relationships"] = {
                "item": {"data": {"type": "catalog-item", "id": "$custom:::$default:::SKU-1"}}
            }
    batch = [sample] * min(kind.batch_limit, 2)
    openapi.validate(kind.endpoint, kind.body(batch))
    assert kind.url(batch).startswith("/api/")


def test_a_dead_operation_is_replayed_after_the_fix(
    app: Flask, fake: Any, redis_client: redis.Redis
) -> None:
    from flask_klaviyo.ops import replay_dead_letters

    klaviyo = app.extensions["klaviyo"].extension
    with app.app_context():
        klaviyo.enqueue("toy_review", {"id": "late", "email": "late@shop.test"})
    kinds.unregister("toy_review")
    run_worker(app)
    dead_letters = DeadLetters(redis_client)
    assert dead_letters.count() == 1 and fake.events == []
    kinds.register(TOY_KINDS[0])  # the fix: the worker knows the kind again
    report = replay_dead_letters(dead_letters, Outbox(redis_client))
    assert (report.requeued, report.skipped, dead_letters.count()) == (1, 0, 0)
    Outbox(redis_client).enqueue_drain()
    run_worker(app)
    assert [e["unique_id"] for e in fake.events] == ["late"]


def test_the_spool_carries_operations_beside_events(tmp_path: Any) -> None:
    from flask_klaviyo.delivery.spool import Spool
    from flask_klaviyo.events import custom_event

    spool = Spool(tmp_path)
    event = custom_event("Left Review", {"Stars": 5}, profile={"email": "a@shop.test"})
    operation = Operation("toy_review", {"id": "s", "email": "s@shop.test"}, "s", queued_at=5.0)
    assert spool.append([event, operation]) == 2
    pushed: list[Any] = []
    assert spool.replay(pushed.extend) == 2
    assert pushed == [event, operation]


def catalog_item(sku: str) -> dict[str, Any]:
    return {
        "attributes": {
            "external_id": sku,
            "title": f"Mug {sku}",
            "description": "A mug",
            "url": f"https://shop.test/p/{sku}",
            "price": 9.5,
        }
    }


@pytest.fixture
def look_at_once() -> Iterator[kinds.Kind]:
    """The catalog kind with its follow-up due at once (Klaviyo's jobs take seconds)."""
    from dataclasses import replace

    original = kinds.get("catalog_item_create")
    assert original.job is not None
    kind = replace(original, job=replace(original.job, delay=0.0))
    kinds.register(kind, replace=True)
    yield kind
    kinds.register(original, replace=True)


def run_worker_and_scheduler(app: Flask) -> None:
    state = app.extensions["klaviyo"]
    with app.app_context():
        queue = Queue("klaviyo", connection=state.redis)
        InProcessWorker([queue], connection=state.redis).work(burst=True, with_scheduler=True)


def test_a_failing_item_inside_an_asynchronous_job_becomes_a_dead_letter(
    app: Flask, fake: Any, redis_client: redis.Redis, look_at_once: Kind, openapi: Any
) -> None:
    fake.fail_catalog_items({"SKU-2"}, detail="Image could not be fetched.")
    klaviyo = app.extensions["klaviyo"].extension
    with app.app_context():
        for sku in ("SKU-1", "SKU-2", "SKU-3"):
            klaviyo.enqueue("catalog_item_create", catalog_item(sku), key=sku)
    run_worker(app)  # the drain: one job of three items, its follow-up scheduled
    [post] = [r for r in fake.requests if r["method"] == "POST"]
    assert post["path"] == "/api/catalog-item-bulk-create-jobs"
    openapi.validate("bulk_create_catalog_items", post["body"])
    assert DeadLetters(redis_client).count() == 0  # Klaviyo accepted the job
    run_worker_and_scheduler(app)  # the follow-up looks at the job
    [get] = [r for r in fake.requests if r["method"] == "GET"]
    assert get["path"].startswith("/api/catalog-item-bulk-create-jobs/")
    [dead] = DeadLetters(redis_client).all()
    assert dead["reason"] == "job_failed"
    assert dead["operation"]["key"] == "SKU-2"
    assert dead["operation"]["payload"]["attributes"]["external_id"] == "SKU-2"
    assert dead["errors"][0]["detail"] == "Image could not be fetched."
    assert dead["errors"][0]["pointer"].startswith("/data/attributes/items/data/1")
    assert sorted(a["external_id"] for a in fake.catalog_items.values()) == ["SKU-1", "SKU-3"]


def test_a_job_that_never_finishes_leaves_its_items_as_dead_letters(
    app: Flask, fake: Any, redis_client: redis.Redis, look_at_once: Kind
) -> None:
    from dataclasses import replace

    assert look_at_once.job is not None
    kinds.register(replace(look_at_once, job=replace(look_at_once.job, max_looks=2)), replace=True)
    fake.job_delay = 3600.0
    klaviyo = app.extensions["klaviyo"].extension
    with app.app_context():
        klaviyo.enqueue("catalog_item_create", catalog_item("SKU-9"), key="SKU-9")
    run_worker(app)
    run_worker_and_scheduler(app)  # look 1: still queued, looked at again
    assert DeadLetters(redis_client).count() == 0
    run_worker_and_scheduler(app)  # look 2, the last
    [dead] = DeadLetters(redis_client).all()
    assert dead["reason"] == "job_unfinished" and dead["operation"]["key"] == "SKU-9"
    assert len([r for r in fake.requests if r["method"] == "GET"]) == 2


def test_the_drain_batch_cap_is_klaviyos_bulk_limit() -> None:
    from flask_klaviyo._settings import MAX_DRAIN_BATCH
    from flask_klaviyo.events import MAX_BULK_EVENTS

    assert MAX_DRAIN_BATCH == MAX_BULK_EVENTS == kinds.get("event").batch_limit == 1000


def test_an_operation_failing_past_the_retry_horizon_becomes_a_dead_letter_then_replays(
    app: Flask, fake: Any, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    import time

    from flask_klaviyo.ops import replay_dead_letters

    monkeypatch.setattr("flask_klaviyo.delivery.drain.DRAIN_ATTEMPTS", 2)
    monkeypatch.setattr("flask_klaviyo.delivery.sender.BACKOFF_BASE", 0.001)
    app.config.update(KLAVIYO_RETRY_HORIZON=1.0, KLAVIYO_RECLAIM_AFTER=0, KLAVIYO_RETRY_MAX=0)
    klaviyo = app.extensions["klaviyo"].extension
    with app.app_context():
        klaviyo.enqueue("toy_review", {"id": "h", "email": "h@shop.test"}, key="h")
    fake.fail_next(503, count=1000, detail="Klaviyo is down for maintenance.")
    outbox = Outbox(redis_client)
    dead_letters = DeadLetters(redis_client)
    run_worker(app)  # within the horizon: it waits, taken and not acknowledged
    assert outbox.depth() == 1 and dead_letters.count() == 0
    time.sleep(1.1)
    outbox.enqueue_drain()
    run_worker(app)  # past the horizon: a dead letter with Klaviyo's last error
    assert outbox.depth() == 0
    [record] = dead_letters.all()
    assert (record["reason"], record["status"]) == ("retry_horizon", 503)
    assert record["operation"]["op"] == "toy_review"
    assert record["errors"][0]["detail"] == "Klaviyo is down for maintenance."
    fake.reset()
    assert replay_dead_letters(dead_letters, outbox).requeued == 1
    run_worker(app)
    assert [e["unique_id"] for e in fake.events] == ["h"]
