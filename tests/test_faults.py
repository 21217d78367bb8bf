"""Fault injection: the demo store's journey under every fault a storefront meets.

Each test runs the journey of ``test_funnel`` (a shopper from a Klaviyo email link views two
products, adds both to the cart, checks out, pays by signed webhook, is fulfilled and refunded:
ten events) through the Flask test client, so the outbox holds exactly those ten events; then
delivers them under one fault, and asserts what the Klaviyo stand-in finally holds: the exact
count per metric and exactly the (metric, unique_id) pairs that were queued, each once, on one
profile. At-least-once is allowed (a request Klaviyo accepted but whose answer was lost is sent
again); the stand-in dedups by unique_id like Klaviyo, and each test states how many repeats it
dropped.

- Klaviyo faults (in-process RQ worker): 429 bursts with Retry-After, 5xx runs (inside one drain
  and longer than a drain), timeouts, connection resets, slow answers, answers lost after
  acceptance; capped, jittered backoff (unit); the retry horizon (dead letters, then replay).
- Workers (real ``flask klaviyo worker`` processes): SIGKILL mid-request, then another worker;
  SIGTERM during a drain (RQ's warm shutdown finishes it); SIGTERM to the worker and its work
  horse (hands the events back).
- Web: SIGTERM to gunicorn while requests come in.

Every wait is bounded; the machine is small and shared, so latencies are modest.
"""

from __future__ import annotations

import itertools
import os
import random
import signal
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
import redis
from flask import Flask
from rq import Queue
from test_funnel import (
    ADMIN_PASSWORD,
    API_KEY,
    EMAIL,
    EXPECTED,
    VENV_BIN,
    WEBHOOK_SECRET,
    FlaskBrowser,
    bridge_events,
    deliver_twice,
    run_journey,
    run_worker,
    store_env,
)
from test_servers import free_port, start, stop

from example_store import create_app
from flask_klaviyo.client import KlaviyoClient
from flask_klaviyo.delivery import drain as delivery_drain
from flask_klaviyo.delivery import keys as delivery_keys
from flask_klaviyo.delivery import sender as delivery_sender
from flask_klaviyo.delivery import settings as delivery_settings
from flask_klaviyo.delivery.deadletters import DeadLetters
from flask_klaviyo.delivery.outbox import Outbox
from flask_klaviyo.delivery.sender import Sender, backoff_delay
from flask_klaviyo.events import custom_event
from flask_klaviyo.exceptions import KlaviyoConfigError
from flask_klaviyo.ops import replay_dead_letters

pytestmark = pytest.mark.slow

Key = tuple[str, str]  # (metric, unique_id)
API_ENDPOINTS = ("create_event", "bulk_create_events")


# -- the store, the journey, the worker --------------------------------------------------------


@pytest.fixture
def env(redis_url: str, fake: Any, tmp_path: Path) -> dict[str, str]:
    """What the web process and worker processes share (Redis, stand-in, SQLite, secrets)."""
    return store_env(redis_url, fake, tmp_path / "store.sqlite3")


@pytest.fixture
def make_store(env: dict[str, str], tmp_path: Path) -> Callable[..., Flask]:
    """``make_store(**config)``: the demo store on the shared settings, plus ``config``."""

    def make(**config: Any) -> Flask:
        shared = {
            k: v for k, v in env.items() if k.startswith(("KLAVIYO_", "STORE_", "SECRET_KEY"))
        }
        return create_app(
            {**shared, **config, "TESTING": True, "instance_path": str(tmp_path / "instance")}
        )

    return make


def shop(store: Flask, fake: Any) -> list[Key]:
    """Run the journey; return the (metric, unique_id) of every event it queued."""
    run_journey(
        FlaskBrowser(store.test_client()),
        email=EMAIL,
        kx=fake.exchange_id_for(EMAIL),
        admin_password=ADMIN_PASSWORD,
        pay=lambda b, j: deliver_twice(b, j, WEBHOOK_SECRET),
    )
    with store.app_context():
        waiting = store.extensions["klaviyo"].outbox.waiting()
    keys = [(event["metric"], event["unique_id"]) for event in waiting]
    assert Counter(metric for metric, _ in keys) == EXPECTED
    assert len(set(keys)) == len(keys)
    assert fake.events == []  # nothing reaches Klaviyo from a request
    return keys


def api_requests(fake: Any) -> list[dict[str, Any]]:
    return [r for r in fake.requests if r["endpoint"] in API_ENDPOINTS]


def assert_exactly(fake: Any, openapi: Any, expected: list[Key]) -> int:
    """The stand-in holds exactly ``expected``, each once, on one profile; returns the number of
    repeats it dropped (at-least-once delivery, exactly-once in Klaviyo)."""
    events = fake.events
    keys = [(event["metric"], event["unique_id"]) for event in events]
    assert Counter(metric for metric, _ in keys) == EXPECTED, keys
    assert sorted(keys) == sorted(expected)
    assert len({event["profile_id"] for event in events}) == 1
    assert fake.profile_of(events[0])["email"] == EMAIL
    for request in api_requests(fake):
        if request["status"] == 202:
            openapi.validate(request["endpoint"], request["body"])
    return int(fake.duplicates)


def outbox_of(store: Flask) -> Outbox:
    state = store.extensions["klaviyo"]
    return Outbox(state.redis, queue_name=store.config["KLAVIYO_QUEUE"])


@pytest.fixture
def quick(monkeypatch: pytest.MonkeyPatch) -> None:
    """Small batches (several requests per journey) and a short backoff for the in-process
    worker; the real delays are unit-tested below."""
    monkeypatch.setattr(delivery_drain, "DRAIN_BATCH", 4)
    monkeypatch.setattr("flask_klaviyo.delivery.sender.BACKOFF_BASE", 0.02)


# -- backoff: capped and jittered ---------------------------------------------------------------


def test_backoff_grows_is_capped_and_jittered() -> None:
    state = random.getstate()
    random.seed(7)
    try:
        for attempt in range(40):
            ceiling = min(delivery_sender.BACKOFF_CAP, delivery_sender.BACKOFF_BASE * 2**attempt)
            samples = [backoff_delay(attempt) for _ in range(200)]
            assert all(ceiling / 2 <= s <= ceiling for s in samples), attempt
            assert len(set(samples)) > 150  # jittered: workers do not retry in lockstep
            assert max(samples) - min(samples) > ceiling / 4
        assert backoff_delay(1000) <= delivery_sender.BACKOFF_CAP  # no overflow, still capped
        assert backoff_delay(3, base=1.0, cap=5.0) <= 5.0
    finally:
        random.setstate(state)


def test_the_sender_backs_off_within_bounds_and_caps_retry_after(
    fake: Any, redis_client: redis.Redis
) -> None:
    slept: list[float] = []
    dead = DeadLetters(redis_client)
    event = custom_event("Left Review", {"Stars": 5}, profile={"email": EMAIL})
    with KlaviyoClient(API_KEY, base_url=fake.url, timeout=2.0) as client:
        fake.fail_next(503, count=3)
        Sender(client, dead, attempts=4, sleep=slept.append).send([event])
        ceilings = [
            min(delivery_sender.BACKOFF_CAP, delivery_sender.BACKOFF_BASE * 2**n) for n in range(3)
        ]
        assert all(c / 2 <= s <= c for s, c in zip(slept, ceilings, strict=True)), slept

        slept.clear()
        fake.fail_next(429, retry_after=3600)  # an absurd Retry-After is capped
        Sender(client, dead, sleep=slept.append).send([event])
        assert slept == [delivery_sender.RETRY_AFTER_CAP]
    assert len(fake.events) == 1 and fake.duplicates == 1
    assert dead.count() == 0


# -- Klaviyo faults under the journey (in-process worker) -------------------------------------


def test_a_429_burst_waits_retry_after_each_time(
    make_store: Callable[..., Flask],
    fake: Any,
    openapi: Any,
    quick: None,
    drain: Callable[[Flask], None],
) -> None:
    store = make_store()
    expected = shop(store, fake)
    fake.fail_next(429, count=3, retry_after=1)
    started = time.monotonic()
    drain(store)
    duplicates = assert_exactly(fake, openapi, expected)
    assert duplicates == 0  # a 429 keeps nothing
    sent = api_requests(fake)
    assert [r["status"] for r in sent[:4]] == [429, 429, 429, 202]
    gaps = [b["received_at"] - a["received_at"] for a, b in itertools.pairwise(sent[:4])]
    assert all(gap >= 0.9 for gap in gaps), gaps  # every worker waited Retry-After
    assert time.monotonic() - started < 30
    assert outbox_of(store).depth() == 0


FIVE_XX = [500, 502, 503, 504, 503]


def test_a_run_of_5xx_is_ridden_out_inside_the_drain(
    make_store: Callable[..., Flask],
    fake: Any,
    openapi: Any,
    quick: None,
    drain: Callable[[Flask], None],
) -> None:
    store = make_store()
    expected = shop(store, fake)
    for status in FIVE_XX:
        fake.fail_next(status)
    drain(store)
    assert assert_exactly(fake, openapi, expected) == 0
    statuses = [r["status"] for r in api_requests(fake)]
    assert statuses[: len(FIVE_XX) + 1] == [*FIVE_XX, 202]
    assert set(statuses[len(FIVE_XX) :]) == {202}
    queue = Queue("klaviyo", connection=store.extensions["klaviyo"].redis)
    assert queue.failed_job_registry.count == 0
    assert outbox_of(store).depth() == 0


def test_5xx_longer_than_a_drain_leaves_the_events_waiting_for_the_next_one(
    make_store: Callable[..., Flask],
    fake: Any,
    openapi: Any,
    quick: None,
    monkeypatch: pytest.MonkeyPatch,
    drain: Callable[[Flask], None],
) -> None:
    """The first drain gives up (its entries stay pending), RQ's retry reclaims them."""
    monkeypatch.setattr(
        delivery_settings, "RECLAIM_IDLE_MS", 0
    )  # as if the reclaim delay had passed
    store = make_store(KLAVIYO_RETRY_MAX=2)
    expected = shop(store, fake)
    fake.fail_next(503, count=delivery_drain.DRAIN_ATTEMPTS + 2)
    drain(store)
    assert assert_exactly(fake, openapi, expected) == 0
    statuses = [r["status"] for r in api_requests(fake)]
    assert statuses.count(503) == delivery_drain.DRAIN_ATTEMPTS + 2
    queue = Queue("klaviyo", connection=store.extensions["klaviyo"].redis)
    assert queue.failed_job_registry.count == 0  # the retry succeeded
    assert outbox_of(store).depth() == 0 and outbox_of(store).pending() == 0


def test_timeouts_are_retried(
    make_store: Callable[..., Flask],
    fake: Any,
    openapi: Any,
    quick: None,
    drain: Callable[[Flask], None],
) -> None:
    store = make_store(KLAVIYO_TIMEOUT=0.3)
    expected = shop(store, fake)
    fake.timeout_next(count=3, hold=1.0)  # longer than the client's timeout: no answer
    drain(store)
    assert assert_exactly(fake, openapi, expected) == 0
    statuses = [r["status"] for r in api_requests(fake)]
    assert statuses[:4] == [None, None, None, 202]
    assert outbox_of(store).depth() == 0


def test_connection_resets_are_retried(
    make_store: Callable[..., Flask],
    fake: Any,
    openapi: Any,
    quick: None,
    drain: Callable[[Flask], None],
) -> None:
    store = make_store()
    expected = shop(store, fake)
    fake.reset_next(count=3)
    drain(store)
    assert assert_exactly(fake, openapi, expected) == 0
    statuses = [r["status"] for r in api_requests(fake)]
    assert statuses[:4] == [None, None, None, 202]
    assert outbox_of(store).depth() == 0


def test_slow_answers_within_the_timeout_cost_no_retry(
    make_store: Callable[..., Flask],
    fake: Any,
    openapi: Any,
    quick: None,
    drain: Callable[[Flask], None],
) -> None:
    store = make_store(KLAVIYO_TIMEOUT=3.0)
    expected = shop(store, fake)
    fake.latency = 0.4
    drain(store)
    assert assert_exactly(fake, openapi, expected) == 0
    assert {r["status"] for r in api_requests(fake)} == {202}  # nothing sent twice
    assert outbox_of(store).depth() == 0


def test_an_answer_lost_after_klaviyo_accepted_is_sent_again_and_kept_once(
    make_store: Callable[..., Flask],
    fake: Any,
    openapi: Any,
    quick: None,
    drain: Callable[[Flask], None],
) -> None:
    """Slower than the client's timeout: Klaviyo kept the events, the worker never heard so and
    sends them again. The repeats are dropped by unique_id: at-least-once, exactly-once."""
    store = make_store(KLAVIYO_TIMEOUT=0.4)
    expected = shop(store, fake)
    fake.latency = 1.2

    def heal() -> None:  # after the first request, Klaviyo answers promptly again
        deadline = time.monotonic() + 20
        while not fake.requests and time.monotonic() < deadline:
            time.sleep(0.01)
        fake.latency = 0

    healer = threading.Thread(target=heal, daemon=True)
    healer.start()
    drain(store)
    healer.join(timeout=5)
    first = api_requests(fake)[0]
    first_batch = (
        len(bulk_events(first["body"])) if first["endpoint"] == "bulk_create_events" else 1
    )
    duplicates = assert_exactly(fake, openapi, expected)
    assert duplicates == first_batch > 0
    assert outbox_of(store).depth() == 0


def test_every_fault_in_a_row(
    make_store: Callable[..., Flask],
    fake: Any,
    openapi: Any,
    quick: None,
    drain: Callable[[Flask], None],
) -> None:
    store = make_store(KLAVIYO_TIMEOUT=0.5)
    expected = shop(store, fake)
    fake.fail_next(503)
    fake.reset_next()
    fake.fail_next(429, retry_after=1)
    fake.timeout_next(hold=1.0)
    fake.fail_next(502)
    fake.latency = 0.1
    drain(store)
    assert assert_exactly(fake, openapi, expected) == 0
    statuses = [r["status"] for r in api_requests(fake)]
    assert statuses[:6] == [503, None, 429, None, 502, 202]
    assert outbox_of(store).depth() == 0


def test_an_event_failing_past_the_horizon_becomes_a_dead_letter_with_the_error(
    make_store: Callable[..., Flask],
    fake: Any,
    openapi: Any,
    quick: None,
    monkeypatch: pytest.MonkeyPatch,
    drain: Callable[[Flask], None],
) -> None:
    """Klaviyo keeps answering 503. Within the horizon the events wait (pending, retried by the
    next drain); past it they become dead letters with Klaviyo's last error, never vanishing.
    After the fix, ``replay`` sends each once."""
    monkeypatch.setattr(delivery_drain, "DRAIN_ATTEMPTS", 2)
    monkeypatch.setattr(delivery_drain, "DRAIN_BATCH", 1000)
    store = make_store(KLAVIYO_RETRY_HORIZON=1, KLAVIYO_RECLAIM_AFTER=0, KLAVIYO_RETRY_MAX=0)
    expected = shop(store, fake)
    fake.fail_next(503, count=1000, detail="Klaviyo is down for maintenance.")
    outbox = outbox_of(store)
    dead = DeadLetters(store.extensions["klaviyo"].redis)

    drain(store)  # the drain gives up: within the horizon, the events stay
    assert outbox.depth() == len(expected) and dead.count() == 0 and fake.events == []

    time.sleep(1.1)  # failing for longer than the horizon now
    outbox.enqueue_drain()
    drain(store)
    assert outbox.depth() == 0 and outbox.pending() == 0
    records = dead.all()
    assert sorted((r["event"]["metric"], r["event"]["unique_id"]) for r in records) == sorted(
        expected
    )
    for record in records:
        assert record["reason"] == "retry_horizon"
        assert record["status"] == 503
        assert record["errors"][0]["detail"] == "Klaviyo is down for maintenance."
        assert API_KEY not in str(record)
    assert fake.events == []

    fake.reset()  # Klaviyo is back
    with store.app_context():
        report = replay_dead_letters(dead, outbox)
    assert report.requeued == len(expected) and dead.count() == 0
    drain(store)
    assert assert_exactly(fake, openapi, expected) == 0


def test_a_failure_shorter_than_the_horizon_only_delays(
    make_store: Callable[..., Flask],
    fake: Any,
    openapi: Any,
    quick: None,
    monkeypatch: pytest.MonkeyPatch,
    drain: Callable[[Flask], None],
) -> None:
    monkeypatch.setattr(delivery_drain, "DRAIN_ATTEMPTS", 2)
    store = make_store(KLAVIYO_RETRY_HORIZON=3600, KLAVIYO_RECLAIM_AFTER=0, KLAVIYO_RETRY_MAX=3)
    expected = shop(store, fake)
    fake.fail_next(503, count=5)  # two drains give up, the third delivers
    drain(store)
    assert DeadLetters(store.extensions["klaviyo"].redis).count() == 0
    assert assert_exactly(fake, openapi, expected) == 0
    redis_client = store.extensions["klaviyo"].redis
    assert not redis_client.exists(delivery_keys.failing(outbox_of(store).stream))  # forgotten


def bulk_events(body: Mapping[str, Any]) -> list[Any]:
    groups = body["data"]["attributes"]["events-bulk-create"]["data"]
    return [event for group in groups for event in group["attributes"]["events"]["data"]]


# -- workers killed and stopped (real worker processes) -----------------------------------------


def in_flight(fake: Any) -> Callable[[], bool]:
    """True once the worker's first API request reached the stand-in (which then holds it)."""
    return lambda: bool(api_requests(fake))


@pytest.mark.parametrize("mode", ["fork", "simple"])
def test_a_worker_killed_mid_request_is_covered_by_the_next_worker(
    mode: str,
    make_store: Callable[..., Flask],
    env: dict[str, str],
    fake: Any,
    openapi: Any,
    workers: Callable[..., Any],
    wait_until: Callable[..., None],
) -> None:
    """SIGKILL to the worker and its work horse while the stand-in holds their request (it has
    accepted the events, the answer never arrives). Another worker, started afterwards, reclaims
    the entries the dead one had taken and delivers them: every event kept once."""
    env = {**env, "KLAVIYO_RECLAIM_AFTER": "1"}
    store = make_store(KLAVIYO_RECLAIM_AFTER=1)
    expected = shop(store, fake)
    fake.latency = 30  # the request hangs: the worker is inside it
    first = workers(env, *(["--simple"] if mode == "simple" else []))
    wait_until(in_flight(fake), 30, "the first worker's request")
    first.signal_all(signal.SIGKILL)
    first.wait(10)
    assert len(fake.events) == len(expected), [(r["status"], r["errors"]) for r in fake.requests]
    outbox = outbox_of(store)
    assert outbox.depth() == len(expected) and outbox.pending() == len(expected)

    fake.latency = 0
    time.sleep(1.1)  # the dead worker's entries are idle long enough to be reclaimed
    second = workers(env, "--burst")
    assert second.wait() == 0, second.output()
    duplicates = assert_exactly(fake, openapi, expected)
    assert duplicates == len(expected)  # all sent twice, kept once
    assert outbox.depth() == 0 and outbox.pending() == 0
    assert API_KEY not in first.output() + second.output()


@pytest.mark.parametrize("mode", ["fork", "simple"])
def test_sigterm_during_a_drain_lets_it_finish(
    mode: str,
    make_store: Callable[..., Flask],
    env: dict[str, str],
    fake: Any,
    openapi: Any,
    workers: Callable[..., Any],
    wait_until: Callable[..., None],
) -> None:
    """A deploy stops the worker (SIGTERM to its main process) while its drain waits on Klaviyo:
    RQ's warm shutdown lets the drain finish and acknowledge, then the worker exits. The new
    worker finds nothing to resend."""
    store = make_store()
    expected = shop(store, fake)
    fake.latency = 1.0
    first = workers(env, *(["--simple"] if mode == "simple" else []))
    wait_until(in_flight(fake), 30, "the first worker's request")
    os.kill(first.pid, signal.SIGTERM)
    assert first.wait(30) == 0, first.output()
    outbox = outbox_of(store)
    assert outbox.depth() == 0 and outbox.pending() == 0  # finished, not abandoned
    sent = len(api_requests(fake))

    fake.latency = 0
    second = workers(env, "--burst")
    assert second.wait() == 0, second.output()
    assert len(api_requests(fake)) == sent  # nothing to send twice
    assert assert_exactly(fake, openapi, expected) == 0


def test_sigterm_to_the_worker_and_its_horse_hands_the_events_back(
    make_store: Callable[..., Flask],
    env: dict[str, str],
    fake: Any,
    openapi: Any,
    workers: Callable[..., Any],
    wait_until: Callable[..., None],
) -> None:
    """SIGTERM to every process of the worker (a container or cgroup stop): the work horse dies
    inside its request, its entries stay pending (handed back); the next worker reclaims them."""
    env = {**env, "KLAVIYO_RECLAIM_AFTER": "1"}
    store = make_store(KLAVIYO_RECLAIM_AFTER=1)
    expected = shop(store, fake)
    fake.latency = 30
    first = workers(env)
    wait_until(in_flight(fake), 30, "the first worker's request")
    first.signal_all(signal.SIGTERM)
    first.wait(30)
    outbox = outbox_of(store)
    assert outbox.depth() == len(expected) and outbox.pending() == len(expected)

    fake.latency = 0
    time.sleep(1.1)
    second = workers(env, "--burst")
    assert second.wait() == 0, second.output()
    assert assert_exactly(fake, openapi, expected) == len(expected)  # sent twice, kept once
    assert outbox.depth() == 0 and outbox.pending() == 0


# -- a deploy of the web process ----------------------------------------------------------------


def viewed_ids(html: str) -> list[str]:
    return [e["unique_id"] for e in bridge_events(html) if e["metric"] == "Viewed Product"]


def test_sigterm_to_gunicorn_completes_responses_and_their_events_are_queued(
    env: dict[str, str], fake: Any, tmp_path: Path, wait_until: Callable[..., None]
) -> None:
    """Shoppers keep loading product pages while gunicorn is told to stop. A request already
    being read when the SIGTERM arrives still gets its page; every page a shopper received had
    its Viewed Product queued, and the worker delivers each once."""
    env = {**env, "KLAVIYO_ACTIVE_ON_SITE": "false"}  # cookie-less shoppers: page views only
    port = free_port()
    command = [
        str(VENV_BIN / "gunicorn"),
        "-b",
        f"127.0.0.1:{port}",
        "-w",
        "2",
        "--graceful-timeout",
        "10",
        "example_store:create_app()",
    ]
    server = start(command, env, port, tmp_path / "gunicorn.log")
    kx = quote(fake.exchange_id_for(EMAIL), safe="")
    path = f"/products/house-blend?_kx={kx}"
    completed: list[str] = []
    failed = 0
    lock = threading.Lock()
    stopping = threading.Event()

    def shopper() -> None:
        nonlocal failed
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                answer = httpx.get(server.url + path, timeout=10)
            except httpx.HTTPError:
                with lock:
                    failed += 1
                if stopping.is_set():
                    return
                continue
            assert answer.status_code == 200, answer.text[:300]
            with lock:
                completed.extend(viewed_ids(answer.text))

    try:
        # One request is half sent (its headers still arriving) when the SIGTERM comes.
        slow = socket.create_connection(("127.0.0.1", port), timeout=10)
        slow.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n".encode())
        threads = [threading.Thread(target=shopper, daemon=True) for _ in range(3)]
        for thread in threads:
            thread.start()
        wait_until(lambda: len(completed) >= 10, 20, "some pages served")
        stopping.set()
        os.kill(server.process.pid, signal.SIGTERM)
        time.sleep(0.3)
        slow.sendall(b"Connection: close\r\n\r\n")
        raw = b""
        while chunk := slow.recv(65536):
            raw += chunk
        slow.close()
        for thread in threads:
            thread.join(timeout=25)
        server.process.wait(timeout=15)
    finally:
        stop(server.process)
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), server.output()
    [slow_id] = viewed_ids(body.decode())
    completed.append(slow_id)
    assert "Traceback" not in server.output()

    waiting = Outbox(redis.Redis.from_url(env["KLAVIYO_REDIS_URL"])).waiting()
    queued = [event["unique_id"] for event in waiting]
    assert set(completed) <= set(queued)  # every page served had its event queued
    assert len(queued) <= len(completed) + failed  # and nothing that was not a page view
    run_worker(env)
    delivered = [event["unique_id"] for event in fake.events]
    assert sorted(delivered) == sorted(queued) and len(set(delivered)) == len(delivered)
    assert {event["metric"] for event in fake.events} == {"Viewed Product"}
    assert fake.duplicates == 0


# -- the settings ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("KLAVIYO_RETRY_HORIZON", 0),
        ("KLAVIYO_RETRY_HORIZON", None),
        ("KLAVIYO_RETRY_HORIZON", "soon"),
        ("KLAVIYO_RETRY_HORIZON", True),
        ("KLAVIYO_RECLAIM_AFTER", -1),
        ("KLAVIYO_RECLAIM_AFTER", float("nan")),
        ("KLAVIYO_RECLAIM_AFTER", "inf"),
    ],
)
def test_unusable_delivery_settings_fail_at_init_naming_the_key(
    make_store: Callable[..., Flask], key: str, value: Any
) -> None:
    with pytest.raises(KlaviyoConfigError) as caught:
        make_store(**{key: value})
    assert caught.value.key == key


def test_delivery_settings_come_from_config_or_the_environment(
    make_store: Callable[..., Flask], monkeypatch: pytest.MonkeyPatch
) -> None:
    store = make_store(KLAVIYO_RETRY_HORIZON="90", KLAVIYO_RECLAIM_AFTER=0.5)
    assert store.config["KLAVIYO_RETRY_HORIZON"] == 90.0  # a string from the environment
    with store.app_context():
        settings = delivery_settings.DeliverySettings.load()
    assert (settings.retry_horizon, settings.reclaim_idle_ms()) == (90.0, 500)
    defaults = make_store()
    assert (
        defaults.config["KLAVIYO_RETRY_HORIZON"]
        == delivery_settings.DEFAULT_RETRY_HORIZON
        == 6 * 3600
    )
    with defaults.app_context():
        assert (
            delivery_settings.DeliverySettings.load().reclaim_idle_ms()
            == delivery_settings.RECLAIM_IDLE_MS
            == 20_000
        )
    monkeypatch.setenv("KLAVIYO_RETRY_HORIZON", "30")  # a plain `rq worker`: no app
    monkeypatch.setenv("KLAVIYO_RECLAIM_AFTER", "2")
    plain = delivery_settings.DeliverySettings.load()
    assert (plain.retry_horizon, plain.reclaim_idle_ms()) == (30.0, 2000)
