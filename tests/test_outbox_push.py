"""The request-side push: one script call per request on a per-thread connection.

What could go wrong with a connection kept outside redis-py's pool: two threads or a forked
child writing on one socket, a connection left stale by a Redis restart or a killed client, a
script cache flushed under us, and a reply left unread after a timeout (the next push would
then read the previous reply as its own).
"""

from __future__ import annotations

import json
import os
import threading
import time
from datetime import UTC, datetime
from typing import Any

import pytest
import redis

from flask_klaviyo.delivery.outbox import Outbox
from flask_klaviyo.delivery.wire import pack
from flask_klaviyo.events import Event


def event(n: int) -> Event:
    return Event(
        metric="Viewed Product",
        properties={"ProductID": str(n), "ProductName": f"Book {n}", "Note": "ünïcode ✓"},
        profile={"email": "sarah.mason@klaviyo-demo.com"},
        time=datetime(2026, 11, 1, 10, 0, 0, tzinfo=UTC),
        unique_id=f"view-{n}",
    )


def stored(client: redis.Redis, outbox: Outbox) -> list[str]:
    return [json.loads(fields[b"e"])["unique_id"] for _, fields in client.xrange(outbox.stream)]


@pytest.fixture
def outbox(redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch) -> Outbox:
    box = Outbox(redis_client, queue_name="push-test")
    enqueued: list[str] = []
    monkeypatch.setattr(box, "enqueue_drain", lambda **_: enqueued.append("drain") or "job")
    box.enqueued = enqueued  # type: ignore[attr-defined]
    return box


def test_pack_is_the_resp_redis_py_sends(redis_client: redis.Redis) -> None:
    command = ("EVALSHA", "abc", 2, "klaviyo:outbox:x", "flag", 30, '{"n":"ünï ✓"}', b"\x00raw")
    connection = redis_client.connection_pool.get_connection()
    try:
        assert pack(command) == b"".join(connection.pack_command(*command))
    finally:
        redis_client.connection_pool.release(connection)


def test_one_push_adds_every_event_in_order_and_schedules_one_drain(
    outbox: Outbox, redis_client: redis.Redis
) -> None:
    assert outbox.push([event(1), event(2), event(3)]) == 3
    assert outbox.push([event(4)]) == 1
    assert stored(redis_client, outbox) == ["view-1", "view-2", "view-3", "view-4"]
    assert outbox.enqueued == ["drain"]  # type: ignore[attr-defined]
    entry = json.loads(redis_client.xrange(outbox.stream)[0][1][b"e"])
    assert entry == event(1).to_dict() | {"time": "2026-11-01T10:00:00+00:00"}
    redis_client.delete(outbox.flag)  # a drain finished: the next push schedules another
    outbox.push([event(5)])
    assert outbox.enqueued == ["drain", "drain"]  # type: ignore[attr-defined]


def test_each_thread_pushes_on_its_own_connection(
    outbox: Outbox, redis_client: redis.Redis
) -> None:
    connections: list[Any] = []
    lock = threading.Lock()

    def work(base: int) -> None:
        for n in range(base, base + 200):
            outbox.push([event(n)])
        with lock:
            connections.append(outbox._push_connection())

    threads = [threading.Thread(target=work, args=(1000 * t,)) for t in range(1, 5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len({id(c) for c in connections}) == 4
    ids = stored(redis_client, outbox)
    assert len(ids) == 800 and len(set(ids)) == 800


def test_a_forked_child_never_writes_on_the_parents_socket(
    outbox: Outbox, redis_client: redis.Redis
) -> None:
    outbox.push([event(1)])
    parent_connection = outbox._push_connection()
    pid = os.fork()
    if pid == 0:  # the child: push, then leave without running pytest's teardown
        try:
            outbox.push([event(2)])
            same = outbox._push_connection() is parent_connection
            os._exit(3 if same else 0)
        except BaseException:
            os._exit(1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    outbox.push([event(3)])  # the parent's connection still works (the child did not close it)
    assert outbox._push_connection() is parent_connection
    assert stored(redis_client, outbox) == ["view-1", "view-2", "view-3"]


def test_a_killed_connection_is_replaced_without_losing_the_push(
    outbox: Outbox, redis_client: redis.Redis
) -> None:
    outbox.push([event(1)])
    connection = outbox._push_connection()
    connection.send_command("CLIENT", "ID")
    victim = connection.read_response()
    assert redis_client.client_kill_filter(_id=victim) == 1
    outbox.push([event(2)])
    assert stored(redis_client, outbox) == ["view-1", "view-2"]
    connection.send_command("CLIENT", "ID")
    assert connection.read_response() != victim  # a new connection carried the push


def test_a_flushed_script_cache_is_reloaded(outbox: Outbox, redis_client: redis.Redis) -> None:
    outbox.push([event(1)])
    redis_client.script_flush()
    outbox.push([event(2)])
    outbox.push([event(3)])  # EVAL loaded it again: EVALSHA works from here on
    assert stored(redis_client, outbox) == ["view-1", "view-2", "view-3"]
    assert redis_client.script_exists(outbox._push_script.sha) == [True]


def test_a_timeout_leaves_no_unread_reply_behind(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url, socket_timeout=0.2)
    admin = redis.Redis.from_url(redis_url)
    outbox = Outbox(client, queue_name="push-timeout")
    outbox.enqueue_drain = lambda **_: "job"  # type: ignore[method-assign]
    outbox.push([event(1)])
    admin.execute_command("CLIENT", "PAUSE", 600, "ALL")
    try:
        with pytest.raises(redis.exceptions.TimeoutError):
            outbox.push([event(2)])
    finally:
        time.sleep(0.7)
    # The timed-out push's connection was closed: Redis drops its command or has run it (the
    # caller spools the events either way: at least once). The next push must read its own
    # reply, not a stale one.
    admin.delete(outbox.flag)
    calls: list[str] = []
    outbox.enqueue_drain = lambda **_: calls.append("drain") or "job"  # type: ignore[method-assign]
    outbox.push([event(3)])
    assert calls == ["drain"]
    assert [i for i in stored(admin, outbox) if i != "view-2"] == ["view-1", "view-3"]
    assert stored(admin, outbox).count("view-2") <= 1


def test_an_error_reply_raises_and_the_connection_stays_usable(
    outbox: Outbox, redis_client: redis.Redis
) -> None:
    redis_client.set(outbox.stream, "not a stream")
    with pytest.raises(redis.exceptions.ResponseError, match="WRONGTYPE"):
        outbox.push([event(1)])
    redis_client.delete(outbox.stream)
    outbox.push([event(2)])
    assert stored(redis_client, outbox) == ["view-2"]


def test_a_sent_push_is_in_redis_before_its_answer_is_read(
    outbox: Outbox, redis_client: redis.Redis
) -> None:
    pending = outbox.send([event(1)])
    deadline = time.monotonic() + 2
    while outbox.depth() == 0 and time.monotonic() < deadline:
        time.sleep(0.001)
    assert stored(redis_client, outbox) == ["view-1"]
    assert outbox.enqueued == []  # type: ignore[attr-defined]
    assert pending.confirm() == 1
    assert outbox.enqueued == ["drain"]  # type: ignore[attr-defined]
    assert pending.confirm() == 1  # once: no second drain
    assert outbox.enqueued == ["drain"]  # type: ignore[attr-defined]


def test_an_unconfirmed_push_is_confirmed_before_the_next_one_is_sent(
    outbox: Outbox, redis_client: redis.Redis
) -> None:
    first = outbox.send([event(1)])
    second = outbox.send([event(2)])  # reads the first answer first: replies stay in order
    assert outbox.enqueued == ["drain"]  # type: ignore[attr-defined]
    first.confirm()
    assert second.confirm() == 1
    assert outbox.enqueued == ["drain"]  # type: ignore[attr-defined]
    assert stored(redis_client, outbox) == ["view-1", "view-2"]


def test_an_unconfirmed_push_that_failed_is_logged_by_the_next_send(
    outbox: Outbox, redis_client: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    redis_client.set(outbox.stream, "not a stream")
    outbox.send([event(1)])
    time.sleep(0.05)
    redis_client.delete(outbox.stream)
    with caplog.at_level("ERROR", logger="flask_klaviyo"):
        outbox.send([event(2)]).confirm()
    assert "unconfirmed push of 1 event(s) failed" in caplog.text
    assert "WRONGTYPE" in caplog.text
    assert stored(redis_client, outbox) == ["view-2"]


def test_a_connection_closed_before_the_answer_is_read_sends_the_push_again(
    outbox: Outbox, redis_client: redis.Redis
) -> None:
    outbox.push([event(1)])
    connection = outbox._push_connection()
    connection.send_command("CLIENT", "ID")
    victim = connection.read_response()
    # Writes (scripts included) wait; CLIENT KILL does not: the push is dropped unanswered.
    redis_client.execute_command("CLIENT", "PAUSE", 300, "WRITE")
    pending = outbox.send([event(2)])
    time.sleep(0.05)
    assert redis_client.client_kill_filter(_id=victim) == 1
    assert pending.confirm() == 1  # EOF instead of an answer: sent again on a new connection
    assert stored(redis_client, outbox) == ["view-1", "view-2"]
    connection = outbox._push_connection()
    connection.send_command("CLIENT", "ID")
    assert connection.read_response() != victim
    assert outbox.enqueued == ["drain"]  # type: ignore[attr-defined]
