"""A sync's resources travel as chunks (one outbox entry per Klaviyo job of up to 100), while
Klaviyo's errors, dead letters and follow-ups stay per resource; and the quick paths of the
sync's reading (plain dicts by shape, fingerprints as tuples) answer what the slow ones do."""

from __future__ import annotations

import gc
import json
from collections import deque
from collections.abc import Callable, Iterator
from types import SimpleNamespace
from typing import Any
from unittest.mock import patch

import pytest
from flask import Flask
from rq import Queue

from flask_klaviyo.catalog.applier import AHEAD, Applier
from flask_klaviyo.catalog.model import VARIANT_FIELDS, CatalogItem, fingerprint
from flask_klaviyo.catalog.shapes import Shapes
from flask_klaviyo.delivery import kinds
from flask_klaviyo.delivery.deadletters import DeadLetters
from flask_klaviyo.delivery.dispatch import dispatch, soonest
from flask_klaviyo.delivery.drain import Drain
from flask_klaviyo.delivery.followup import load_operations, schedule_follow_ups
from flask_klaviyo.delivery.keys import CONSUMER_GROUP
from flask_klaviyo.delivery.klaviyo_kinds import chunk_members, chunked
from flask_klaviyo.delivery.operations import Operation
from flask_klaviyo.delivery.sender import Sender
from flask_klaviyo.delivery.settings import DeliverySettings
from flask_klaviyo.delivery.wire import compact_json
from flask_klaviyo.models.coerce import _pick

pytestmark = pytest.mark.usefixtures("quick_catalog_jobs")

PREFIX = "$custom:::$default:::"
TITLE_0 = "/data/attributes/items/data/0/attributes/title"  # the first item of a job


def product(n: int, variants: int = 2) -> dict[str, Any]:
    return {
        "id": f"C{n}", "name": f"Chunked {n}", "price": 10 + n % 7,
        "url": f"https://shop.test/p/{n}", "categories": [f"Group {n % 3}"],
        "variants": [{"id": f"C{n}-{v}", "sku": f"C{n}-{v}", "inventory_quantity": v}
                     for v in range(variants)],
    }  # fmt: skip


@pytest.fixture
def app(make_app: Callable[..., Flask], fake: Any) -> Flask:
    def views(app: Flask, klaviyo: Any) -> None:
        @klaviyo.catalog_source
        def products() -> Iterator[dict[str, Any]]:
            yield from (product(n) for n in range(250))

    fake.job_delay = 0.0
    return make_app(fake=fake, views=views, KLAVIYO_STRICT=True)


def test_a_sync_queues_one_entry_per_klaviyo_job(app: Flask, fake: Any) -> None:
    with app.app_context():
        report = app.extensions["klaviyo"].extension.catalog_sync(wait=False)
        waiting = app.extensions["klaviyo"].outbox.waiting()
    assert report.plan.summary()["items"]["create"] == 250
    kinds_queued = [entry["op"] for entry in waiting]
    assert kinds_queued == ["catalog_category_create_chunk"] + ["catalog_item_create_chunk"] * 3
    sizes = [len(entry["payload"]["resources"]) for entry in waiting]
    assert sizes == [3, 100, 100, 50]
    first = waiting[1]["payload"]["resources"][0]
    assert first["key"] == "C0" and len(first["payload"]["then"]) == 2  # its variants, after it


def test_chunks_are_sent_as_jobs_and_a_failing_item_alone_is_a_dead_letter(
    app: Flask, fake: Any
) -> None:
    fake.fail_catalog_items({"C7"}, detail="Image could not be fetched.")
    with app.app_context():
        report = app.extensions["klaviyo"].extension.catalog_sync()
        dead = DeadLetters(app.extensions["klaviyo"].redis).all()
    posts = [r for r in fake.requests if r["method"] == "POST" and "-bulk-" in r["path"]]
    sizes = sorted(len(next(iter(r["body"]["data"]["attributes"].values()))["data"]) for r in posts)
    # categories; items 100 + 100 + 50; each item job's variants: 200, 198 (C7's are not
    # sent), 100, in jobs of 100
    assert sizes == [3, 50, 98] + [100] * 6
    assert len(fake.catalog_items) == 249 and len(fake.catalog_variants) == 498
    [record] = dead
    assert record["operation"]["op"] == "catalog_item_create"  # the resource, not its chunk
    assert record["operation"]["key"] == "C7" and record["reason"] == "job_failed"
    assert record["errors"][0]["detail"] == "Image could not be fetched."
    assert [v["key"] for v in record["operation"]["payload"]["then"]] == ["C7-0", "C7-1"]
    assert [r["id"] for r in report.failed] == [record["id"]]


def test_chunked_groups_by_kind_keeps_the_last_change_and_leaves_other_kinds() -> None:
    ops = [
        Operation("catalog_item_update", {"attributes": {"price": 1}}, "A"),
        Operation("subscribe", {"list_id": "L"}, "x"),
        Operation("catalog_variant_update", {"attributes": {}}, "A-1"),
        Operation("catalog_item_update", {"attributes": {"price": 2}}, "A"),
        *(Operation("catalog_item_delete", {"id": f"{PREFIX}{n}"}, str(n)) for n in range(150)),
    ]
    chunks = chunked(ops)
    assert [c.kind for c in chunks] == [
        "catalog_item_update_chunk", "catalog_variant_update_chunk",
        "catalog_item_delete_chunk", "catalog_item_delete_chunk", "subscribe"]  # fmt: skip
    assert chunks[0].payload["resources"] == [{"key": "A", "payload": {"attributes": {"price": 2}}}]
    assert [len(c.payload["resources"]) for c in chunks[2:4]] == [100, 50]


NAMES = (("id", "variant_id", "sku"), ("title", "name"), ("price",), ("url", "URL"))


@pytest.mark.parametrize(
    "row",
    [
        {"id": "1", "sku": "S", "name": "N", "price": 3},
        {"id": "", "sku": "S", "title": "", "name": "N", "price": None, "URL": "u"},
        {"variant_id": None, "sku": "S"},
        {},
    ],
)
def test_shapes_read_what_pick_reads(row: dict[str, Any]) -> None:
    shapes = Shapes(NAMES)
    for _ in range(2):  # the shape resolved, then reused
        assert shapes.values(row) == [_pick(row, names) for names in NAMES]
    assert shapes.values(SimpleNamespace(**row)) is None  # not a plain dict: _pick's


def test_a_plain_dict_and_an_object_coerce_to_the_same_item() -> None:
    row = product(3, variants=3) | {"title": "", "description": "Fine.", "published": False}
    row["variants"][1] |= {"price": 99, "inventory_policy": "continue", "title": "Large"}
    as_object = SimpleNamespace(**{k: v for k, v in row.items() if k != "variants"})
    as_object.variants = [SimpleNamespace(**v) for v in row["variants"]]
    assert CatalogItem.coerce(row) == CatalogItem.coerce(as_object)


def test_fingerprints_match_klaviyos_answer_and_tell_a_change() -> None:
    ours = {"title": "T", "description": "", "sku": "S", "price": 10, "url": "u",
            "image_full_url": None, "published": None, "inventory_quantity": 2,
            "inventory_policy": 0}  # fmt: skip
    klaviyos = {**ours, "price": 10.0, "description": None, "published": True,
                "inventory_quantity": 2.0, "images": []}  # fmt: skip
    assert fingerprint(ours, VARIANT_FIELDS) == fingerprint(klaviyos, VARIANT_FIELDS)
    assert fingerprint(ours, VARIANT_FIELDS) != fingerprint(
        {**klaviyos, "inventory_quantity": 3}, VARIANT_FIELDS
    )
    assert fingerprint(ours, VARIANT_FIELDS) != fingerprint(
        {**klaviyos, "published": False}, VARIANT_FIELDS
    )


def test_the_collector_runs_again_after_a_sync_however_it_ends(
    make_app: Callable[..., Flask], fake: Any
) -> None:
    def views(app: Flask, klaviyo: Any) -> None:
        @klaviyo.catalog_source
        def products() -> Iterator[dict[str, Any]]:
            yield product(1)
            if app.config.get("BROKEN_SOURCE"):
                raise RuntimeError("the store's database went away")

    app = make_app(fake=fake, views=views, KLAVIYO_STRICT=True)
    assert gc.isenabled()
    with app.app_context():
        app.extensions["klaviyo"].extension.catalog_sync()
        assert gc.isenabled()
        app.config["BROKEN_SOURCE"] = True
        with pytest.raises(RuntimeError):
            app.extensions["klaviyo"].extension.catalog_sync()
    assert gc.isenabled()


def test_a_sync_marks_the_endpoints_it_feeds_as_bulk_work(app: Flask, fake: Any) -> None:
    from flask_klaviyo.ratelimit import RateLimiter

    with app.app_context():
        limiter = RateLimiter(app.extensions["klaviyo"].redis, limits=kinds.rate_limits())
        assert limiter.state("bulk_create_catalog_items")["bulk_for"] == 0
        app.extensions["klaviyo"].extension.catalog_sync()
        marked = {
            endpoint: limiter.state(endpoint)["bulk_for"]
            for endpoint in (
                "bulk_create_catalog_categories",
                "bulk_create_catalog_items",
                "bulk_create_catalog_variants",
                "get_bulk_create_catalog_items_job",  # a look at each job: as many requests
                "bulk_delete_catalog_items",
            )
        }
    assert len(fake.catalog_items) == 250
    # what it fed (the variants through its items' follow-ups): marked for a window from its
    # last renewal; what it did not feed: not
    assert all(0 < marked[e] <= 60 for e in list(marked)[:4]), marked
    assert marked["bulk_delete_catalog_items"] == 0


def _send_first_item_chunk(
    app: Flask, before: Callable[[], None] = lambda: None
) -> tuple[Any, bytes, Sender]:
    """Queue the sync's chunks (not waiting) and send the first item chunk as a drain does."""
    state = app.extensions["klaviyo"]
    state.extension.catalog_sync(wait=False)
    before()
    entries = state.redis.xrange(state.outbox.stream)
    raw = entries[1][1][b"e"]  # after the categories' chunk
    sender = Sender(DeliverySettings.load().client(), DeadLetters(state.redis))
    dispatch(sender, [json.loads(raw)], [raw])
    return state, raw, sender


def test_a_whole_chunk_is_followed_up_as_it_was_stored(app: Flask, fake: Any) -> None:
    """Its hundred resources are not encoded again for the follow-up: the outbox entry is kept
    as it is, and read back as its resources' operations."""
    with app.app_context():
        state, raw, sender = _send_first_item_chunk(app)
        [(kind, job_id, kept)] = sender.jobs
        assert kind == "catalog_item_create" and kept is raw
        schedule_follow_ups(state.redis, Queue(app.config["KLAVIYO_QUEUE"], connection=state.redis),
                            sender.jobs)  # fmt: skip
        operations = load_operations(state.redis, job_id)
    chunk = Operation.from_dict(json.loads(raw))
    assert operations == [member.to_dict() for member in chunk_members(chunk)]
    assert [op["key"] for op in operations] == [f"C{n}" for n in range(100)]
    assert {op["op"] for op in operations} == {"catalog_item_create"}
    assert operations[0]["payload"]["then"][0]["key"] == "C0-0"


def test_part_of_a_chunk_is_followed_up_as_its_operations(app: Flask, fake: Any) -> None:
    """Klaviyo refused one resource of the chunk (a 400 pointing at it): the job holds the
    other 99, kept one by one."""
    with app.app_context():
        _, _, sender = _send_first_item_chunk(app, lambda: fake.fail_next(400, pointer=TITLE_0))
    [(_, _, kept)] = sender.jobs
    assert isinstance(kept, list) and [op["key"] for op in kept] == [f"C{n}" for n in range(1, 100)]


def test_a_drain_holding_a_chunk_does_not_wait_for_the_events_pace(app: Flask) -> None:
    """A partial batch of events lingers until Bulk Create Events' pace allows a request (more
    may come meanwhile); a catalog chunk's endpoint is not that one: it goes at once."""
    with app.app_context():
        state = app.extensions["klaviyo"]
        drain = Drain(
            state.redis, app.config["KLAVIYO_QUEUE"], "linger-test", DeliverySettings.load()
        )
        drain.outbox.ensure_group()
        slept: list[float] = []
        drain.sleep = slept.append  # type: ignore[method-assign]
        paces = iter([0.5, 0.0, 0.0])  # the events endpoint's pace: wait, then go
        drain.limiter.wait_time = lambda endpoint, pace=True: next(paces)  # type: ignore[method-assign]
        chunk = chunked([Operation("catalog_item_update", {"id": "x"}, "x")])[0]
        held = [(b"1-0", {b"e": compact_json(chunk.to_dict()).encode()})]
        assert drain.linger(held) == held and slept == []
        event = {"metric": "Viewed Product", "properties": {}, "profile": {"email": "a@b.co"}}
        assert drain.linger([(b"2-0", {b"e": compact_json(event).encode()})]) and slept == [0.5]


def test_a_sync_keeps_feeding_its_chunks_while_other_entries_wait(app: Flask) -> None:
    """Variant chunks that follow-ups queued may wait for their endpoint's window: the sync's
    own chunks are fed anyway, a few more each time the drains have taken all it fed."""
    with app.app_context():
        state = app.extensions["klaviyo"]
        outbox, connection = state.outbox, state.redis
        outbox.ensure_group()
        waiting = chunked(
            [Operation("catalog_variant_update", {"id": f"v{n}"}, f"v{n}") for n in range(900)]
        )
        outbox.push(waiting)  # 9 chunks nobody has taken: more than AHEAD // 2
        left = deque(chunked([Operation("catalog_item_update", {"id": f"i{n}"}, f"i{n}")
                              for n in range(1000)]))  # fmt: skip

        def take(count: int) -> None:
            connection.xreadgroup(CONSUMER_GROUP, "a-drain", {outbox.stream: ">"}, count=count)

        with Applier() as applier:
            applier._feed(left)
            assert len(left) == 10 - AHEAD // 2  # fed a few although 9 others wait
            applier._feed(left)
            assert len(left) == 10 - AHEAD // 2  # nothing more until those are taken
            take(9 + AHEAD // 2 - 1)  # all but the last it fed
            assert not outbox.taken_up_to(applier.fed_up_to)  # type: ignore[arg-type]
            take(1)
            assert outbox.taken_up_to(applier.fed_up_to)  # type: ignore[arg-type]
            outbox.push(waiting)  # meanwhile 9 more others wait, after its own
            applier._feed(left)
            assert len(left) == 10 - AHEAD  # its own were taken: a few more


def test_a_drain_sends_first_the_kind_whose_endpoint_has_a_slot_soonest() -> None:
    """A drain holding variant chunks whose window is spent and item chunks whose window is not
    sends the items first; otherwise kinds keep the order they came in."""
    waits = {"bulk_create_catalog_variants": 0.8, "bulk_create_catalog_categories": 0.3}

    class Limiter:
        def wait_time(self, endpoint: str, cost: int = 1, *, pace: bool = False) -> float:
            return waits.get(endpoint, 0.0)

    names = ["catalog_variant_create_chunk", "catalog_category_create_chunk",
             "catalog_item_create_chunk", "catalog_item_update_chunk"]  # fmt: skip
    sender = SimpleNamespace(limiter=Limiter())
    assert soonest(sender, names) == ("catalog_item_create_chunk", 0.0)  # type: ignore[arg-type]
    first_two = soonest(sender, names[:2])  # type: ignore[arg-type]
    assert first_two == ("catalog_category_create_chunk", 0.3)
    assert soonest(SimpleNamespace(limiter=None), names) == (names[0], 0.0)  # type: ignore[arg-type]


def test_a_drain_interleaves_kinds_a_request_at_a_time_as_their_windows_allow() -> None:
    """Chunks of two kinds in one batch: each request goes to the endpoint with a slot soonest,
    asked again after every request (the items' window filling up hands the turn to the
    variants, and back), not one kind's whole share after the other's."""
    sent: list[str] = []

    class Limiter:
        def wait_time(self, endpoint: str, cost: int = 1, *, pace: bool = False) -> float:
            mine = sum(1 for e in sent if e == endpoint)
            other = len(sent) - mine
            return 0.0 if mine <= other else 0.5  # whoever sent less has the slot

    class Recorder:
        limiter = Limiter()
        connection = None
        dropped = None

        def send_operations(self, kind: Any, operations: Any, **_: Any) -> None:
            assert len(operations) == 1  # one chunk, one request
            sent.append(kind.endpoint)

        def result(self) -> dict[str, int]:
            return {}

    variants = chunked([Operation("catalog_variant_create", {"id": f"v{n}"}, f"v{n}")
                        for n in range(300)])  # fmt: skip
    items = chunked(
        [Operation("catalog_item_create", {"id": f"i{n}"}, f"i{n}") for n in range(300)]
    )
    batch = [chunk.to_dict() for chunk in [*variants, *items]]
    stored = [compact_json(entry).encode() for entry in batch]
    with patch("flask_klaviyo.delivery.dispatch.forgotten_entries", lambda *_: set()):
        dispatch(Recorder(), batch, stored)  # type: ignore[arg-type]
    v, i = "bulk_create_catalog_variants", "bulk_create_catalog_items"
    assert sent == [v, i, v, i, v, i]
