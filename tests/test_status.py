"""``flask klaviyo status`` on real states: a real embedded Redis, real RQ workers (a SimpleWorker
in this process, a plain ``rq worker`` process), the stand-in with faults to make dead letters
and errors. ``--check`` exits 1 for each condition that needs a human, 0 otherwise; ``rq info``
sees the queue through the URL status prints."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
from click.testing import Result
from conftest import API_KEY, VENV_BIN, Workers
from flask import Flask
from rq import Queue, SimpleWorker
from rq.worker import WorkerStatus

from flask_klaviyo.client import KlaviyoClient
from flask_klaviyo.delivery import keys
from flask_klaviyo.delivery.deadletters import DeadLetters
from flask_klaviyo.delivery.operations import Operation
from flask_klaviyo.delivery.sender import Sender
from flask_klaviyo.delivery.workers import InProcessWorker
from flask_klaviyo.events import custom_event
from flask_klaviyo.status import masked_url

EMAIL = "ann@shop-test.com"


@pytest.fixture
def app(make_app: Callable[..., Flask], fake: Any) -> Flask:
    return make_app(fake=fake)


@pytest.fixture
def worker_seen(app: Flask, redis_client: redis.Redis) -> Iterator[SimpleWorker]:
    """A real RQ worker registered on the queue with a fresh heartbeat (not working jobs)."""
    queue = Queue(app.config["KLAVIYO_QUEUE"], connection=redis_client)
    worker = SimpleWorker([queue], connection=redis_client)
    worker.register_birth()
    worker.set_state(WorkerStatus.IDLE)
    worker.heartbeat()
    yield worker
    worker.register_death()


def drain(app: Flask) -> None:
    """Work the app's queued jobs in this process (a real RQ worker, in burst mode)."""
    redis_client = app.extensions["klaviyo"].redis
    with app.app_context():
        queue = Queue(app.config["KLAVIYO_QUEUE"], connection=redis_client)
        InProcessWorker([queue], connection=redis_client).work(burst=True)


def status(app: Flask, *args: str) -> Result:
    return app.test_cli_runner().invoke(args=["klaviyo", "status", *args])


def as_json(app: Flask, *args: str) -> dict[str, Any]:
    done = status(app, "--json", *args)
    return json.loads(done.output)  # type: ignore[no-any-return]


def track(app: Flask, count: int = 1) -> None:
    with app.app_context():
        for n in range(count):
            app.extensions["klaviyo"].extension.track("M", {"n": n}, profile={"email": EMAIL})


def seed_rejected(fake: Any, redis_client: redis.Redis) -> None:
    """Two events Klaviyo refused (401: a wrong key)."""
    events = [custom_event("Left Review", {"Stars": n}, profile={"email": EMAIL}) for n in (4, 5)]
    with KlaviyoClient("pk_wrong_key", base_url=fake.url) as wrong:
        Sender(wrong, DeadLetters(redis_client)).send(events)


def old_dead_letter(redis_client: redis.Redis, days: float) -> None:
    record_id = DeadLetters(redis_client).add({"metric": "Old", "profile": {}}, reason="invalid")
    record = json.loads(redis_client.hget(keys.DEAD_LETTERS, record_id))  # type: ignore[arg-type]
    record["dead_at"] = time.time() - days * 86400
    redis_client.hset(keys.DEAD_LETTERS, record_id, json.dumps(record))


# -- what it shows -----------------------------------------------------------------------------


def test_a_readable_summary_and_the_same_facts_as_json(
    app: Flask, fake: Any, redis_client: redis.Redis, worker_seen: SimpleWorker
) -> None:
    seed_rejected(fake, redis_client)
    old_dead_letter(redis_client, days=3)
    track(app, 2)
    with app.app_context():
        app.extensions["klaviyo"].extension.update_profile(email=EMAIL, first_name="Ann")
    done = status(app)
    assert done.exit_code == 0, done.output
    text = done.output
    assert "queue 'klaviyo' on unix://" in text  # the URL rq info / rq-dashboard need
    assert "waiting      3 (0 being delivered), oldest" in text
    assert "  event " in text and "  profile" in text
    assert "dead letters 3 (2 recent); invalid 1; rejected 2" in text
    assert f"worker       {worker_seen.name} idle, heartbeat" in text
    assert "last error   none recorded" in text and "rate limits  nothing blocked" in text

    data = as_json(app)
    assert data["waiting"] == 3 and data["oldest_waiting_seconds"] is not None
    assert data["waiting_by_kind"]["event"]["count"] == 2
    assert sum(w["count"] for w in data["waiting_by_kind"].values()) == 3
    assert data["dead_letters"] == 3
    assert data["dead_letters_by_reason"] == {"rejected": 2, "invalid": 1}
    assert data["dead_letters_recent"] == 2
    assert data["queued_jobs"] == 1 and data["failed_jobs"] == 0
    assert data["spool_bytes"] == 0 and data["parked"]["waiting"] == 0
    assert [w["name"] for w in data["workers"]] == [worker_seen.name]
    assert data["workers"][0]["heartbeat_seconds"] < 60
    assert data["redis_url"].startswith("unix://")


def test_delivery_rate_throttling_and_the_last_klaviyo_error(
    app: Flask, fake: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The drain records them in the round trip that acknowledges a batch (no other)."""
    monkeypatch.setattr("flask_klaviyo.delivery.sender.BACKOFF_BASE", 0.001)
    track(app, 3)
    fake.fail_next(503, count=8)  # more than a drain's attempts (each paced by the limiter)
    drain(app)
    failing = as_json(app)
    assert "503" in failing["last_error"] and failing["last_error_at"] > time.time() - 300
    assert failing["handled"] == 0 and failing["waiting"] == 3
    fake.reset()
    fake.fail_next(429, retry_after=0)
    monkeypatch.setattr("flask_klaviyo.delivery.settings.RECLAIM_IDLE_MS", 0)
    app.extensions["klaviyo"].outbox.enqueue_drain()
    drain(app)
    done = as_json(app)
    assert done["handled"] == 3 and done["waiting"] == 0 and len(fake.events) == 3
    assert sum(done["handled_per_minute"]) == 3  # by minute (this one, or the last)
    assert done["throttled"] == 1 and "429" in done["last_error"]
    text = status(app).output
    assert "3 handled in all; 1 throttled (429)" in text
    assert "s ago: Klaviyo answered 429" in text


def test_the_rate_counts_full_minutes(redis_client: redis.Redis) -> None:
    from flask_klaviyo.delivery.stats import read_counters

    now = 1_800_000_030.0
    minute = int(now // 60)
    for back, count in ((0, 99), (1, 10), (2, 20), (5, 30), (6, 1000)):
        redis_client.set(keys.handled_minute(minute - back), count)
    counters = read_counters(redis_client, now=now)
    assert counters.per_minute[-1] == 99
    assert counters.rate(5) == (10 + 20 + 30) / 5  # the running minute and older ones left out


def test_a_blocked_endpoint_and_parked_visitors_are_shown(
    app: Flask, redis_client: redis.Redis
) -> None:
    from flask_klaviyo.delivery.parking import Parking
    from flask_klaviyo.ratelimit import RateLimiter

    RateLimiter(redis_client).block("bulk_create_events", 30)
    Parking(redis_client).park("anon-1", [{"metric": "Viewed Product"}] * 2)
    data = as_json(app)
    assert 25 < data["rate_limited"]["bulk_create_events"] <= 30
    assert data["parked"]["waiting"] == 2 and data["parked"]["visitors"] == 1
    text = status(app).output
    assert "rate limits  blocked: bulk_create_events for 30s" in text
    assert "parked       2 event(s) of 1 anonymous visitor(s)" in text


def test_the_password_of_a_redis_url_is_never_printed() -> None:
    assert masked_url("redis://:s3cret@cache:6379/2") == "redis://:***@cache:6379/2"
    assert masked_url("redis://user:s3cret@cache/0") == "redis://user:***@cache/0"
    assert masked_url("unix:///tmp/r.sock") == "unix:///tmp/r.sock"


# -- --check: one condition at a time ------------------------------------------------------------


def test_check_passes_when_nothing_needs_a_human(app: Flask, worker_seen: SimpleWorker) -> None:
    done = status(app, "--check")
    assert done.exit_code == 0, done.output
    assert "OK: nothing needs a human" in done.output
    assert as_json(app, "--check")["problems"] == []


def test_check_fails_with_no_worker_seen(app: Flask, redis_client: redis.Redis) -> None:
    done = status(app, "--check")
    assert done.exit_code == 1
    assert "PROBLEM: no worker on queue 'klaviyo' has been seen" in done.output
    stale = SimpleWorker([Queue("klaviyo", connection=redis_client)], connection=redis_client)
    stale.register_birth()
    stale.heartbeat()
    try:
        assert status(app, "--check").exit_code == 0
        time.sleep(1.1)
        done = status(app, "--check", "--max-heartbeat-age", "1")  # its heartbeat is too old
        assert done.exit_code == 1 and "no worker" in done.output
    finally:
        stale.register_death()


def test_check_fails_when_the_oldest_waiting_operation_is_too_old(
    app: Flask, redis_client: redis.Redis, worker_seen: SimpleWorker
) -> None:
    ten_minutes_ago = int((time.time() - 600) * 1000)
    event = custom_event("M", {}, profile={"email": EMAIL}).to_dict()
    redis_client.xadd(keys.outbox_stream("klaviyo"), {"e": json.dumps(event)}, id=ten_minutes_ago)
    done = status(app, "--check")
    assert done.exit_code == 1
    assert "PROBLEM: the oldest waiting operation is 10m old (over 5m)" in done.output
    assert as_json(app)["waiting_by_kind"]["event"]["oldest_seconds"] >= 600
    assert status(app, "--check", "--max-waiting-age", "900").exit_code == 0


def test_check_fails_when_dead_letters_grow(
    app: Flask, fake: Any, redis_client: redis.Redis, worker_seen: SimpleWorker
) -> None:
    old_dead_letter(redis_client, days=2)  # an old one, outside the window: not growing
    assert status(app, "--check").exit_code == 0
    seed_rejected(fake, redis_client)
    done = status(app, "--check")
    assert done.exit_code == 1
    assert "PROBLEM: 2 dead letter(s) in the last 15m (over 0)" in done.output
    assert status(app, "--check", "--max-new-dead-letters", "2").exit_code == 0
    assert status(app, "--check", "--window", "0.001").exit_code == 0


def test_check_fails_when_the_spool_holds_operations_for_long(
    app: Flask, worker_seen: SimpleWorker
) -> None:
    spool = app.extensions["klaviyo"].spool
    spool.append([Operation("profile", {"email": EMAIL}, EMAIL, time.time() - 900)])
    done = status(app, "--check")
    assert done.exit_code == 1
    assert "PROBLEM: the spool has held operations for 15m" in done.output
    assert status(app, "--check", "--max-spool-age", "3600").exit_code == 0


def test_check_fails_when_redis_cannot_be_reached(
    make_app: Callable[..., Flask], fake: Any
) -> None:
    app = make_app("redis://127.0.0.1:9/0", fake=fake)  # nothing listens on port 9
    app.extensions["klaviyo"].spool.append([Operation("profile", {"email": EMAIL}, EMAIL)])
    done = status(app, "--check")
    assert done.exit_code == 1
    assert "Redis unreachable: ConnectionError" in done.output
    assert "PROBLEM: Redis cannot be reached" in done.output
    assert "spool        " in done.output and "0 bytes" not in done.output  # still read


# -- RQ's own tools see it -----------------------------------------------------------------------


def test_rq_info_and_status_see_the_queue_and_a_real_rq_worker(
    app: Flask,
    fake: Any,
    redis_url: str,
    redis_client: redis.Redis,
    workers: Workers,
    wait_until: Callable[[Callable[[], Any], float, str], None],
) -> None:
    track(app, 2)  # a drain job waits in the klaviyo queue
    url = as_json(app)["redis_url"]
    assert url == redis_url
    info = subprocess.run(
        [str(VENV_BIN / "rq"), "info", "--url", url, "--only-queues"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert "klaviyo" in info.stdout and "1 queues, 1 jobs total" in info.stdout

    # A plain `rq worker` (settings from the environment) drains the queue and stays.
    env = {
        "PATH": str(VENV_BIN),
        "KLAVIYO_REDIS_URL": url,
        "KLAVIYO_API_URL": fake.url,
        "KLAVIYO_PRIVATE_API_KEY": API_KEY,
    }
    listening = workers.rq(env, "--url", url, "--name", "rq-on-klaviyo", "klaviyo")
    wait_until(lambda: as_json(app)["handled"] == 2, 30, "the rq worker to deliver")
    assert len(fake.events) == 2
    seen = as_json(app, "--check")
    assert [w["name"] for w in seen["workers"]] == ["rq-on-klaviyo"], listening.output()
    assert seen["problems"] == []
    info = subprocess.run(
        [str(VENV_BIN / "rq"), "info", "--url", url, "--only-workers"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert "rq-on-klaviyo" in info.stdout and "klaviyo" in info.stdout
    # The machine dies: RQ keeps the worker registered until its key expires (minutes), and
    # its heartbeat stops: the heartbeat threshold is what notices.
    listening.kill()
    time.sleep(1.1)
    assert [w["name"] for w in as_json(app)["workers"]] == ["rq-on-klaviyo"]
    gone = status(app, "--check", "--max-heartbeat-age", "1")
    assert gone.exit_code == 1 and "PROBLEM: no worker on queue 'klaviyo'" in gone.output


def test_the_counters_ride_on_the_drains_own_pipeline(redis_client: redis.Redis) -> None:
    """A batch's counters are commands queued on the pipeline that acknowledges it: no round
    trip of their own; a tally already recorded is not recorded twice."""
    from flask_klaviyo.delivery.stats import SenderMarks, read_counters, record_batch

    class Tallies:  # what a Sender exposes
        throttled = 2
        last_error = "Klaviyo answered 429: throttled"
        last_error_at = 1_800_000_000.0

    marks = SenderMarks()
    pipe = redis_client.pipeline(transaction=False)
    record_batch(pipe, 5, Tallies(), marks)
    assert len(pipe.command_stack) == 5  # incrby + expire, handled, throttled, last error
    pipe.execute()
    again = redis_client.pipeline(transaction=False)
    record_batch(again, 1, Tallies(), marks)
    assert len(again.command_stack) == 3  # only the new count: the tallies were recorded
    again.execute()
    counters = read_counters(redis_client)
    assert (counters.handled, counters.throttled) == (6, 2)
    assert counters.last_error == Tallies.last_error and sum(counters.per_minute) == 6
