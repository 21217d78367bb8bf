"""Push answers a page does not wait for: read by the confirmer thread, the same thread's next
push or the process's exit; a failed one spooled whoever reads it; replicas still waited for."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis
from conftest import waiting_events
from flask import Flask
from rq import Queue

from flask_klaviyo import Klaviyo
from flask_klaviyo.delivery import confirmer
from flask_klaviyo.delivery.outbox import Outbox
from flask_klaviyo.delivery.spool import SPOOL_FILENAME
from flask_klaviyo.events import custom_event

PAUSE_MS = 400  # Redis holds writes (scripts too) this long: the push's answer comes after


def views(app: Flask, klaviyo: Klaviyo) -> None:
    @app.get("/seen/<int:n>")
    def seen(n: int) -> str:
        klaviyo.track("Seen", {"n": n}, profile={"email": "sarah.mason@klaviyo-demo.com"})
        return "ok"


@pytest.fixture
def app(make_app: Callable[..., Flask]) -> Flask:
    return make_app(views=views)


def pause_writes(client: redis.Redis) -> None:
    client.execute_command("CLIENT", "PAUSE", PAUSE_MS, "WRITE")


def drains_queued(app: Flask, client: redis.Redis) -> int:
    return Queue(app.config["KLAVIYO_QUEUE"], connection=client).count


def until(check: Callable[[], bool], timeout: float = 3.0) -> bool:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def spooled(app: Flask) -> list[dict[str, Any]]:
    path = Path(app.instance_path) / SPOOL_FILENAME
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_a_page_does_not_wait_for_redis_and_the_thread_reads_the_answer(
    app: Flask, redis_client: redis.Redis
) -> None:
    client = app.test_client()
    assert client.get("/seen/1").status_code == 200  # connection and script in place
    confirmer.flush()
    redis_client.delete(Outbox(redis_client).flag)  # the next push schedules the drain
    queued = drains_queued(app, redis_client)

    pause_writes(redis_client)
    started = time.monotonic()
    assert client.get("/seen/2").status_code == 200
    assert time.monotonic() - started < PAUSE_MS / 1000 / 2  # the page did not wait
    assert drains_queued(app, redis_client) == queued  # nobody has read the answer yet

    # No other request: the confirmer's thread reads it once Redis answers, and its answer
    # ("no drain was scheduled") queues the drain job.
    assert until(lambda: drains_queued(app, redis_client) == queued + 1)
    assert [e["properties"]["n"] for e in waiting_events(app)] == [1, 2]
    assert until(lambda: confirmer.flush() == 0)


def test_a_failed_answer_read_later_spools_the_events(
    app: Flask, redis_client: redis.Redis
) -> None:
    client = app.test_client()
    assert client.get("/seen/1").status_code == 200
    confirmer.flush()
    stream = Outbox(redis_client).stream
    redis_client.rename(stream, "kept-aside")
    redis_client.set(stream, "not a stream")  # the push's script fails: WRONGTYPE

    pause_writes(redis_client)
    assert client.get("/seen/2").status_code == 200
    assert spooled(app) == []  # the answer is not in yet
    assert until(lambda: [e["properties"]["n"] for e in spooled(app)] == [2])
    assert app.extensions["klaviyo"].breaker.allows() is False  # Redis failed: spool a while


def test_the_next_push_of_the_thread_reads_a_waiting_answer_and_routes_its_failure(
    redis_client: redis.Redis,
) -> None:
    outbox = Outbox(redis_client)
    failures: list[Exception] = []
    redis_client.set(outbox.stream, "not a stream")
    seen = [custom_event("Seen", {"n": n}, profile={"email": "a@b.co"}) for n in (1, 2)]
    first = outbox.send(seen[:1], failures.append)
    assert until(first.answered)
    redis_client.delete(outbox.stream)
    second = outbox.send(seen[1:])
    assert first.confirmed  # read before the second was written: answers stay in order
    assert len(failures) == 1 and "WRONGTYPE" in str(failures[0])
    assert second.confirm() == 1
    assert outbox.depth() == 1


def test_replicas_are_waited_for_in_the_request(
    make_app: Callable[..., Flask], redis_client: redis.Redis
) -> None:
    """KLAVIYO_REDIS_MIN_REPLICAS: WAIT's verdict is read in the request, never deferred (this
    Redis has no replica, so every push is spooled at once)."""
    app = make_app(views=views, KLAVIYO_REDIS_MIN_REPLICAS=1, KLAVIYO_REDIS_WAIT_TIMEOUT_MS=50)
    assert app.test_client().get("/seen/1").status_code == 200
    assert [e["properties"]["n"] for e in spooled(app)] == [1]


def test_the_process_exit_reads_the_answers_still_waiting(
    redis_url: str, redis_client: redis.Redis, tmp_path: Path
) -> None:
    """A web process stopped right after a page (gunicorn's graceful exit) still reads the
    answer, here the one that schedules the drain job."""
    script = textwrap.dedent(
        f"""
        import redis, time
        from flask import Flask
        from flask_klaviyo import Klaviyo
        app = Flask("shop", instance_path={str(tmp_path / "instance")!r})
        app.config.update(SECRET_KEY="s", KLAVIYO_REDIS_URL={redis_url!r},
                          KLAVIYO_PRIVATE_API_KEY="pk_test", KLAVIYO_ACTIVE_ON_SITE=False)
        klaviyo = Klaviyo(app)

        @app.get("/")
        def page():
            klaviyo.track("Seen", {{"n": 1}}, profile={{"email": "a@b.co"}})
            return "ok"

        redis.Redis.from_url({redis_url!r}).execute_command("CLIENT", "PAUSE", {PAUSE_MS}, "WRITE")
        started = time.monotonic()
        assert app.test_client().get("/").status_code == 200
        print(round(time.monotonic() - started, 3))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert float(done.stdout.strip()) < PAUSE_MS / 1000 / 2  # the page itself did not wait
    assert redis_client.xlen(Outbox(redis_client).stream) == 1
    assert drains_queued_for(redis_client) == 1  # the answer was read at exit


def drains_queued_for(client: redis.Redis) -> int:
    return Queue("klaviyo", connection=client).count
