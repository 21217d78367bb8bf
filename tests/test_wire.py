"""Reading a push's answer straight off the socket (:mod:`flask_klaviyo.delivery.wire`).

The push connection carries only pushes (and WAIT after them), so its reader knows integer,
null and error answers; these tests hold it to what redis-py's reader would have said, on a
real Redis and on a socket fed byte by byte.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from redis._parsers import BaseParser

from flask_klaviyo.delivery.wire import pack, read_answer


@pytest.fixture
def connection(redis_client: redis.Redis) -> Iterator[Any]:
    """A connection of its own, as the outbox keeps one per thread for pushes."""
    pool = redis_client.connection_pool
    own = pool.connection_class(**pool.connection_kwargs)
    own.connect()
    yield own
    own.disconnect()


class SocketOnly:
    """What ``read_answer`` uses of a redis-py connection: its socket and its error parser."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock: socket.socket | None = sock
        self._parser = BaseParser
        self.disconnected = False

    def disconnect(self) -> None:
        self.disconnected = True


@pytest.fixture
def fed() -> Iterator[tuple[SocketOnly, socket.socket]]:
    ours, theirs = socket.socketpair()
    ours.settimeout(5)
    yield SocketOnly(ours), theirs
    ours.close()
    theirs.close()


def test_two_answers_sent_together_are_read_one_at_a_time(connection: Any) -> None:
    # A push and its WAIT go out in one write, and Redis's two answers usually arrive in one read.
    connection.send_packed_command([pack(("INCR", "wire-n")) + pack(("INCR", "wire-n"))], False)
    assert read_answer(connection) == 1
    assert read_answer(connection) == 2


def test_an_error_is_returned_as_redis_py_would_raise_it(connection: Any) -> None:
    connection.send_packed_command([pack(("EVALSHA", "0" * 40, 0)) + pack(("INCR", "x"))], False)
    answer = read_answer(connection)
    assert isinstance(answer, redis.exceptions.NoScriptError)
    assert read_answer(connection) == 1  # the next answer is still in step


def test_a_null_answer_is_none(connection: Any) -> None:
    connection.send_packed_command([pack(("EVAL", "return nil", 0))], False)
    assert read_answer(connection) is None


def test_an_answer_split_over_reads_is_put_together(fed: tuple[SocketOnly, socket.socket]) -> None:
    conn, redis_side = fed
    redis_side.sendall(b":12")
    later = threading.Timer(0.05, lambda: redis_side.sendall(b"34\r\n:5\r"))
    later.start()
    assert read_answer(conn) == 1234
    redis_side.sendall(b"\n")
    assert read_answer(conn) == 5
    later.join()


def test_bytes_left_from_an_old_socket_are_not_read_on_a_new_one(
    fed: tuple[SocketOnly, socket.socket],
) -> None:
    conn, redis_side = fed
    redis_side.sendall(b":1\r\n:2\r\n")
    assert read_answer(conn) == 1  # ":2" is now held for this socket
    fresh, fresh_redis = socket.socketpair()
    try:
        conn._sock = fresh  # reconnected (a restart, a failover): the old bytes mean nothing
        fresh_redis.sendall(b":7\r\n")
        assert read_answer(conn) == 7
    finally:
        fresh.close()
        fresh_redis.close()


def test_a_closed_connection_is_a_connection_error(fed: tuple[SocketOnly, socket.socket]) -> None:
    conn, redis_side = fed
    redis_side.sendall(b":1")
    redis_side.close()
    with pytest.raises(redis.exceptions.ConnectionError):
        read_answer(conn)


def test_no_socket_is_a_connection_error(fed: tuple[SocketOnly, socket.socket]) -> None:
    conn, _ = fed
    conn._sock = None
    with pytest.raises(redis.exceptions.ConnectionError):
        read_answer(conn)


def test_a_silent_redis_is_a_timeout(fed: tuple[SocketOnly, socket.socket]) -> None:
    conn, _ = fed
    assert conn._sock is not None
    conn._sock.settimeout(0.05)
    with pytest.raises(redis.exceptions.TimeoutError):
        read_answer(conn)


def test_an_answer_no_push_gives_drops_the_connection(
    fed: tuple[SocketOnly, socket.socket],
) -> None:
    conn, redis_side = fed
    redis_side.sendall(b"+OK\r\n")
    with pytest.raises(redis.exceptions.InvalidResponse):
        read_answer(conn)
    assert conn.disconnected  # out of step: the next push starts on a new connection
