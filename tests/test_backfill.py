"""Historical backfill, end to end: a generated history file (``store history``), the command
and the Python API, the real pipeline (outbox, drain in this process), the stand-in."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from example_store.history import customers, orders, write_lines
from flask_klaviyo.backfill import runner
from flask_klaviyo.backfill.reader import numbered
from flask_klaviyo.backfill.runner import run_backfill
from flask_klaviyo.delivery import keys

pytestmark = pytest.mark.usefixtures("quick_import_jobs")

LIST_ID = "HISTORY1"
STATUS_TIMES = {
    "Placed Order": "placed_at",
    "Ordered Product": "placed_at",
    "Fulfilled Order": "fulfilled_at",
    "Canceled Order": "canceled_at",
    "Refunded Order": "refunded_at",
}


@pytest.fixture
def app(make_app: Callable[..., Flask], fake: Any) -> Flask:
    fake.job_delay = 0.0
    return make_app(fake=fake)


def history(path: Path, count: int, *, extra: dict[int, str] | None = None) -> list[dict[str, Any]]:
    """``count`` generated orders in ``path``; ``extra`` lines inserted at those line numbers."""
    records = list(orders(count, seed=3))
    lines = [json.dumps(r) for r in records]
    for number, text in sorted((extra or {}).items()):
        lines.insert(number - 1, text)
    path.write_text("\n".join(lines) + "\n")
    return records


def expected_events(records: list[dict[str, Any]]) -> int:
    status = ("fulfilled_at", "canceled_at", "refunded_at")
    return sum(1 + len(r["lines"]) + sum(1 for s in status if s in r) for r in records)


def invoke(app: Flask, *args: str) -> Any:
    return app.test_cli_runner().invoke(args=["klaviyo", "backfill", *args])


def bulk_bodies(fake: Any) -> list[dict[str, Any]]:
    return [r["body"] for r in fake.requests if r["path"] == "/api/event-bulk-create-jobs"]


def sent_count(fake: Any) -> int:
    """Events in every bulk request the stand-in received (a repeat counts twice)."""
    return sum(
        len(entry["attributes"]["events"]["data"])
        for body in bulk_bodies(fake)
        for entry in body["data"]["attributes"]["events-bulk-create"]["data"]
    )


def test_ten_thousand_orders_arrive_valid_backfilled_at_their_own_times(
    app: Flask, fake: Any, openapi: Any, tmp_path: Path
) -> None:
    path = tmp_path / "orders.jsonl"
    records = history(path, 10_000)
    result = invoke(app, "orders", str(path))
    assert result.exit_code == 0, result.output
    total = expected_events(records)
    events = fake.events  # a copy: taken once
    assert len(events) == total and fake.duplicates == 0
    assert f"sent: {total:,}" in result.output and "rejected: 0" in result.output
    assert "refused by Klaviyo: 0" in result.output
    for body in bulk_bodies(fake):  # every event, as Klaviyo's OpenAPI document says
        openapi.validate("bulk_create_events", body)
    by_id = {r["id"]: r for r in records}
    metrics = set()
    for event in events:
        assert event["backfill"] is True
        record = by_id[event["properties"]["OrderId"]]
        when = datetime.fromisoformat(record[STATUS_TIMES[event["metric"]]])
        assert datetime.fromisoformat(event["time"]) == when
        metrics.add(event["metric"])
    assert metrics == set(STATUS_TIMES)  # some fulfilled, canceled and refunded
    canceled = next(e for e in events if e["metric"] == "Canceled Order")
    assert canceled["properties"]["Reason"] == by_id[canceled["unique_id"]]["cancel_reason"]


def test_an_interrupted_run_resumes_without_duplicates_and_a_finished_one_sends_nothing(
    app: Flask, fake: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "orders.jsonl"
    records = history(path, 2000)
    from flask_klaviyo import backfill_api

    real = backfill_api.order_events
    calls = {"n": 0}

    def ctrl_c_at_line_1234(record: Any, **options: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 1234:
            raise KeyboardInterrupt
        return real(record, **options)

    monkeypatch.setattr(backfill_api, "order_events", ctrl_c_at_line_1234)
    first = invoke(app, "orders", str(path))
    assert first.exit_code == 130 and "run the same command again" in first.output
    monkeypatch.setattr(backfill_api, "order_events", real)
    second = invoke(app, "orders", str(path))
    assert second.exit_code == 0, second.output
    skipped = int(second.output.split("skipped: ")[1].split()[0].replace(",", ""))
    assert 0 < skipped < 1234  # resumed after the last chunk that reached the outbox
    total = expected_events(records)
    assert fake.stats()["accepted"] == total
    assert fake.duplicates == 0 and sent_count(fake) == total  # nothing queued twice
    requests = fake.stats()["requests"]
    third = invoke(app, "orders", str(path))
    assert third.exit_code == 0, third.output
    assert "sent: 0" in third.output and f"skipped: {len(records):,}" in third.output
    assert fake.stats()["requests"] == requests  # a finished backfill sends nothing new


def test_malformed_lines_are_reported_by_number_and_the_rest_goes(
    app: Flask, fake: Any, tmp_path: Path
) -> None:
    path = tmp_path / "orders.jsonl"
    good = orders(1, seed=99).__next__()
    extra = {
        3: "{not json",
        7: "[1, 2, 3]",
        9: json.dumps({**good, "id": "NOLINES", "lines": []}),
        12: json.dumps({**good, "id": "BADMAIL", "email": "nobody"}),
        15: json.dumps({**good, "id": "NAIVE", "placed_at": "2026-01-02T10:00:00"}),
        18: json.dumps({**good, "id": "NOWHEN", "placed_at": None}),
    }
    records = history(path, 40, extra=extra)
    result = invoke(app, "orders", str(path))
    assert result.exit_code == 0, result.output
    assert "rejected: 6" in result.output
    assert "line 3: not JSON" in result.output
    assert "line 7: not a JSON object but list" in result.output
    assert "line 9: Order: lines: an order needs at least one line" in result.output
    assert "line 12: " in result.output and "email" in result.output.split("line 12: ")[1]
    assert "line 15: Order: placed_at: needs its UTC offset" in result.output
    assert "line 18: Order: placed_at: is required" in result.output
    assert len(fake.events) == expected_events(records)


def test_a_dry_run_checks_everything_and_sends_nothing(
    app: Flask, fake: Any, tmp_path: Path, redis_client: Any
) -> None:
    path = tmp_path / "orders.jsonl"
    records = history(path, 50, extra={2: "nope"})
    result = invoke(app, "orders", str(path), "--dry-run")
    assert result.exit_code == 0, result.output
    assert "dry run: 51 orders checked, nothing was sent" in result.output
    assert f"would send: {expected_events(records):,}" in result.output
    assert (
        "line 1: SP-H0000000: Placed Order" in result.output and "line 2: not JSON" in result.output
    )
    assert fake.requests == [] and redis_client.xlen(keys.outbox_stream("klaviyo")) == 0
    assert not redis_client.keys(keys.BACKFILL_PREFIX + "*")  # no checkpoint either


def test_a_backfill_over_orders_tracked_live_adds_nothing(
    app: Flask, fake: Any, drain: Callable[[Flask], None]
) -> None:
    records = list(orders(5, seed=11))
    klaviyo = app.extensions["klaviyo"].extension
    with app.app_context():
        from flask_klaviyo.backfill.orders import _order_input

        for record in records:  # what the store sent when the orders were placed
            klaviyo.order_placed(_order_input(record))
    drain(app)
    live = {(e["metric"], e["unique_id"]) for e in fake.events}
    placed = [e for e in fake.events if e["metric"] in ("Placed Order", "Ordered Product")]
    with app.app_context():
        report = klaviyo.backfill_orders(records, wait=True)
    assert report.rejected == 0 and report.sent["Placed Order"] == 5
    backfilled = {(e["metric"], e["unique_id"]) for e in fake.events}
    assert {key for key in backfilled if key[0] in ("Placed Order", "Ordered Product")} == {
        (e["metric"], e["unique_id"]) for e in placed
    }  # the same unique_ids: Klaviyo kept the live ones
    assert fake.duplicates == len(placed)
    assert live <= backfilled


def test_the_python_api_takes_rows_and_resumes_under_a_checkpoint_name(
    app: Flask, fake: Any
) -> None:
    records = list(orders(30, seed=5))
    klaviyo = app.extensions["klaviyo"].extension

    def rows() -> Iterator[dict[str, Any]]:
        yield from records

    with app.app_context():
        first = klaviyo.backfill_orders(rows(), checkpoint="db-orders", wait=True)
        again = klaviyo.backfill_orders(rows(), checkpoint="db-orders", wait=True)
    assert first.records == 30 and first.sent_total == expected_events(records)
    assert again.records == 0 and again.skipped == 30 and again.sent_total == 0
    assert len(fake.events) == expected_events(records) and fake.duplicates == 0


def test_the_outbox_is_paced_to_the_drain(app: Flask, redis_client: Any) -> None:
    records = list(orders(1500, seed=8))
    stream = keys.outbox_stream("klaviyo")
    depths: list[int] = []
    real = runner.Checkpoint.push

    def watched(self: Any, *args: Any, **kwargs: Any) -> None:
        depths.append(redis_client.xlen(stream))
        real(self, *args, **kwargs)

    runner.Checkpoint.push = watched  # type: ignore[method-assign]
    try:
        with app.app_context():
            from flask_klaviyo.backfill.orders import order_events

            report = run_backfill(
                "orders", lambda after: numbered(records, after=after), order_events,
                checkpoint="paced", high_water=2000, low_water=500, ahead=3000,
            )  # fmt: skip
    finally:
        runner.Checkpoint.push = real  # type: ignore[method-assign]
    assert report.sent_total == expected_events(records) > 5000
    assert max(depths) < 3000 + runner.CHUNK  # never the whole history in Redis
    assert max(depths) >= 2000  # queued ahead, beyond the high water, for the next burst


def test_profiles_with_historical_consent(
    app: Flask, fake: Any, openapi: Any, tmp_path: Path
) -> None:
    path = tmp_path / "customers.jsonl"
    people = list(customers(40, seed=2))
    lines = [json.dumps(p) for p in people]
    lines.append(json.dumps({"email": "x@example.com", "email_consent_at": "2999-01-01T00:00:00Z"}))
    path.write_text("\n".join(lines) + "\n")
    result = invoke(app, "profiles", str(path), "--list-id", LIST_ID, "--source", "history")
    assert result.exit_code == 0, result.output
    assert "rejected: 1" in result.output and "line 41: subscription: consented_at" in result.output
    by_email = {p["email"]: p for p in fake.profiles()}
    for person in people:
        held = by_email[person["email"]]
        attributes = held["attributes"]
        assert attributes["first_name"] == person["first_name"]
        assert attributes["location"]["city"] == person["location"]["city"]
        assert attributes["properties"]["Customer Since"] == person["properties"]["Customer Since"]
    rows = fake.subscriptions(LIST_ID)
    consented = [p for p in people if "email_consent_at" in p]
    texting = [p for p in people if "sms_consent_at" in p]
    assert consented and texting
    email_rows = [r for r in rows if r["channel"] == "email"]
    assert sorted(r["email"] for r in email_rows) == sorted(p["email"] for p in consented)
    assert len([r for r in rows if r["channel"] == "sms"]) == len(texting)
    for row in rows:
        assert row["historical_import"] is True and row["consent"] == "SUBSCRIBED"
        assert row["custom_source"] == "history"
    when = {p["email"]: p["email_consent_at"] for p in consented}
    for row in email_rows:
        assert datetime.fromisoformat(row["consented_at"]) == datetime.fromisoformat(
            when[row["email"]]
        )
    for request in fake.requests:
        if request["path"] == "/api/profile-bulk-import-jobs":
            openapi.validate("bulk_import_profiles", request["body"])
        elif request["path"] == "/api/profile-subscription-bulk-create-jobs":
            openapi.validate("bulk_subscribe_profiles", request["body"])
            assert request["body"]["data"]["attributes"]["historical_import"] is True


def test_consent_without_a_list_is_rejected_with_the_reason(app: Flask, tmp_path: Path) -> None:
    path = tmp_path / "customers.jsonl"
    write_lines(iter([{"email": "a@example.com", "email_consent_at": "2025-01-01T00:00:00Z"}]),
                path.open("w"))  # fmt: skip
    result = invoke(app, "profiles", str(path), "--dry-run")
    assert "line 1: subscription: email_consent_at: a consent needs the list" in result.output


def test_the_store_writes_a_year_of_history_from_its_catalog(tmp_path: Path) -> None:
    from example_store import create_app
    from example_store.catalog import SEED_PRODUCTS
    from flask_klaviyo.backfill.orders import order_events
    from flask_klaviyo.backfill.profiles import profile_operations

    store = create_app(
        {"instance_path": str(tmp_path / "instance"), "SECRET_KEY": "s", "TESTING": True,
         "KLAVIYO_ENABLED": False}
    )  # fmt: skip
    out, people = tmp_path / "orders.jsonl", tmp_path / "customers.jsonl"
    args = ["store", "history", "--orders", "300", "-o", str(out), "--profiles", str(people)]
    result = store.test_cli_runner().invoke(args=args)
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(records) == 300 and len({r["id"] for r in records}) == 300
    skus = {p.sku for p in SEED_PRODUCTS}
    assert all(line["sku"] in skus for r in records for line in r["lines"])
    times = [datetime.fromisoformat(r["placed_at"]) for r in records]
    assert times == sorted(times) and (times[-1] - times[0]).days >= 360
    assert all(any(key in r for r in records) for key in STATUS_TIMES.values())
    for record in records:  # every one a valid backfill
        assert all(event.backfill for event in order_events(record))
    customers_written = [json.loads(line) for line in people.read_text().splitlines()]
    assert len(customers_written) == 100
    assert any("email_consent_at" in c for c in customers_written)
    for customer in customers_written:
        profile_operations(customer, list_id=LIST_ID)
    again = store.test_cli_runner().invoke(args=["store", "history", "--orders", "300"])
    first = json.loads(again.output.splitlines()[0])
    assert (first["email"], first["lines"]) == (records[0]["email"], records[0]["lines"])


def test_the_reader_numbers_lines_and_names_a_file_by_its_start(tmp_path: Path) -> None:
    from flask_klaviyo.backfill.reader import Malformed, count_lines, fingerprint, read_jsonl

    path = tmp_path / "h.jsonl"
    path.write_text('{"a": 1}\n\n"text"\n{"b": 2}')  # no newline at the end
    assert count_lines(path) == 4
    assert list(read_jsonl(path)) == [
        (1, {"a": 1}),
        (3, Malformed("not a JSON object but str")),
        (4, {"b": 2}),
    ]
    assert list(read_jsonl(path, after=3)) == [(4, {"b": 2})]
    name = fingerprint("orders", path)
    with path.open("a") as handle:
        handle.write('\n{"c": 3}\n')  # the file grew: the same backfill, resumed
    assert fingerprint("orders", path) == name != fingerprint("profiles", path)
    path.write_text('{"z": 0}\n')  # another file at the same path: another backfill
    assert fingerprint("orders", path) != name


def test_working_the_queue_here_gives_ctrl_c_back(app: Flask) -> None:
    """RQ's worker installs its own SIGINT handler; a later Ctrl-C must still stop the run."""
    import signal

    from rq import Queue

    before = signal.getsignal(signal.SIGINT)
    with app.app_context():
        queue = Queue("klaviyo", connection=app.extensions["klaviyo"].redis)
        runner._work_here(queue)
    assert signal.getsignal(signal.SIGINT) is before


@pytest.mark.slow
def test_a_real_ctrl_c_then_a_rerun_delivers_everything_once(
    app: Flask, fake: Any, tmp_path: Path, redis_client: Any, redis_url: str
) -> None:
    """The command as a process, interrupted by SIGINT mid-file, then run again."""
    import os
    import signal
    import subprocess
    import sys
    import time

    path = tmp_path / "orders.jsonl"
    records = history(path, 4000)
    app_file = tmp_path / "shop.py"
    app_file.write_text(
        "import os\nfrom flask import Flask\nfrom flask_klaviyo import Klaviyo\n"
        "app = Flask(__name__)\napp.config['SECRET_KEY'] = 's'\n"
        "app.config.update({k: v for k, v in os.environ.items() if k.startswith('KLAVIYO_')})\n"
        "Klaviyo(app)\n"
    )
    root = Path(__file__).resolve().parents[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("KLAVIYO_")}
    env.update(
        KLAVIYO_REDIS_URL=redis_url, KLAVIYO_API_URL=fake.url,
        KLAVIYO_PRIVATE_API_KEY=app.config["KLAVIYO_PRIVATE_API_KEY"],
        PYTHONPATH=os.pathsep.join(filter(None, [str(root), env.get("PYTHONPATH")])),
    )  # fmt: skip
    command = [sys.executable, "-m", "flask", "--app", str(app_file), "klaviyo", "backfill",
               "orders", str(path)]  # fmt: skip
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60

    def position() -> int:
        found = [
            key
            for key in redis_client.keys(keys.BACKFILL_PREFIX + "orders:*")
            if not key.endswith(b":rejected")
        ]
        return int(redis_client.hget(found[0], "position") or 0) if found else 0

    while position() == 0:  # until the first chunk is queued
        assert time.monotonic() < deadline and process.poll() is None
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    output, _ = process.communicate(timeout=60)
    assert process.returncode == 130, output
    result = invoke(app, "orders", str(path))
    assert result.exit_code == 0, result.output
    skipped = int(result.output.split("skipped: ")[1].split()[0].replace(",", ""))
    assert 0 < skipped < len(records)
    total = expected_events(records)
    assert fake.stats()["accepted"] == total
    assert fake.duplicates == 0 and sent_count(fake) == total


def test_a_drain_that_died_mid_run_does_not_stall_the_rerun(
    make_app: Callable[..., Flask], fake: Any, redis_client: Any
) -> None:
    """A Ctrl-C (or SIGKILL) during a drain leaves entries held by a dead consumer, its job in
    RQ's started registry and no drain scheduled: the wait reclaims and delivers them."""
    from rq import Queue

    app = make_app(fake=fake, KLAVIYO_RECLAIM_AFTER=0.5)
    records = list(orders(200, seed=4))
    klaviyo = app.extensions["klaviyo"].extension
    with app.app_context():
        klaviyo.backfill_orders(records, checkpoint="died")  # queued, not delivered
        outbox = app.extensions["klaviyo"].outbox
        queue = Queue("klaviyo", connection=redis_client)
        outbox.ensure_group()
        redis_client.xreadgroup(keys.CONSUMER_GROUP, "dead-drain", {outbox.stream: ">"}, count=500)
        job = queue.enqueue("flask_klaviyo.jobs.drain", "klaviyo")
        job.worker_name = "gone"
        job.save()
        queue.remove(job)
        registry = queue.started_job_registry  # as a worker that died leaves it:
        redis_client.zadd(registry.key, {f"{job.id}:lost-execution": time.time() + 600})
        assert registry.get_job_ids() == [job.id]
        redis_client.delete(outbox.flag)
        for pending in queue.get_job_ids():
            queue.remove(pending)
        started = time.monotonic()
        report = klaviyo.backfill_orders(records, checkpoint="died", wait=True)
    assert report.skipped == 200 and report.sent_total == 0
    assert time.monotonic() - started < 60  # not the dead job's 600 s timeout
    assert fake.stats()["accepted"] == expected_events(records) and fake.duplicates == 0


def test_profiles_travel_in_jobs_of_up_to_ten_thousand(app: Flask, fake: Any, openapi: Any) -> None:
    from flask_klaviyo.backfill.profiles import BULK_IMPORT
    from flask_klaviyo.delivery.operations import Operation
    from flask_klaviyo.delivery.profile_kinds import PROFILE_IMPORT_CHUNK

    emails = [f"customer{n}@example.com" for n in range(2500)]
    emails.insert(1234, "not-an-email")  # unchecked here; Klaviyo's job refuses it alone

    def convert(email: str) -> list[Any]:
        return [Operation(BULK_IMPORT, {"attributes": {"email": email}}, email)]

    with app.app_context():
        report = run_backfill(
            "profiles", lambda after: numbered(emails, after=after), convert, checkpoint=None,
            wait=True, bundle=(BULK_IMPORT, PROFILE_IMPORT_CHUNK),
        )  # fmt: skip
    assert report.sent == {BULK_IMPORT: 2501}
    posts = [r for r in fake.requests if r["path"] == "/api/profile-bulk-import-jobs"]
    assert len(posts) == 1  # one job, not three of a drain's 1,000
    body = posts[0]["body"]
    openapi.validate("bulk_import_profiles", body)
    assert len(body["data"]["attributes"]["profiles"]["data"]) == 2501
    # The refused profile is Klaviyo's job error for that profile alone (pointer index 1234),
    # read from the job's import-errors: that profile, alone, is a dead letter.
    [job] = fake.jobs()
    assert job["failed_count"] == 1 and job["errors"][0]["source"]["pointer"].endswith(
        "/1234/attributes/email"
    )
    assert len(fake.profiles()) == 2500
    [dead] = report.dead
    assert dead["operation"]["key"] == "not-an-email" and dead["reason"] == "job_failed"
    assert dead["errors"][0]["pointer"].endswith("/1234/attributes/email")
