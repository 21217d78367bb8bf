"""The push connection's wire: commands packed as RESP and a push's answer read back, without
redis-py's general machinery (on a tracked page it costs as much as the push's own work)."""

from __future__ import annotations

import json
import select
from collections.abc import Sequence
from typing import Any

import redis

__all__ = ["answer_waiting", "compact_json", "connected", "pack", "read_answer"]

# json.dumps builds an encoder per call when given options; this one is built once. No check
# for cycles (a fifth of the encoding of a 100-resource chunk): what is queued was built, or
# checked, as JSON first (a cyclic property is refused when its event is built).
compact_json = json.JSONEncoder(separators=(",", ":"), check_circular=False).encode
# On a push connection: (its socket, bytes read past the last answer) for the next read.
_UNREAD = "_klaviyo_unread"


def pack(command: Sequence[Any]) -> bytes:
    """RESP for one command of str/int/bytes arguments (a quarter of redis-py's cost)."""
    parts = [b"*%d\r\n" % len(command)]
    for argument in command:
        if isinstance(argument, str):
            argument = argument.encode()
        elif isinstance(argument, int):
            argument = b"%d" % argument
        parts.append(b"$%d\r\n%s\r\n" % (len(argument), argument))
    return b"".join(parts)


def read_answer(connection: Any) -> Any:
    """One integer, null or error answer, read straight off the push connection's socket.

    Pushes are the only commands on that connection and answer with an integer (the script's
    flag, WAIT's replica count) or an error, so redis-py's general reader (about as costly as
    the rest of a tracked page's push) is not needed; an error is returned as redis-py's
    exception, for the caller to raise. Bytes after the answer (WAIT's, sent together) are
    kept with the socket they came from.
    """
    sock = connection._sock
    if sock is None:
        raise redis.exceptions.ConnectionError("the push connection closed before its answer")
    held = getattr(connection, _UNREAD, None)
    buffer = held[1] if held is not None and held[0] is sock else b""
    while (end := buffer.find(b"\r\n")) < 0:
        try:
            chunk = sock.recv(4096)
        except TimeoutError as exc:
            raise redis.exceptions.TimeoutError("Timeout reading from socket") from exc
        except OSError as exc:
            raise redis.exceptions.ConnectionError(f"Error reading from socket: {exc}") from exc
        if not chunk:
            raise redis.exceptions.ConnectionError("Connection closed by server.")
        buffer += chunk
    line = buffer[:end]
    setattr(connection, _UNREAD, (sock, buffer[end + 2 :]))
    kind = line[:1]
    if kind == b":":
        return int(line[1:])
    if kind == b"-":
        return connection._parser.parse_error(line[1:].decode("utf-8", "replace"))
    if line in (b"_", b"$-1"):  # null (RESP3, RESP2)
        return None
    connection.disconnect()  # not a push's answer: the connection is out of step
    raise redis.exceptions.InvalidResponse(f"unexpected answer to a push: {line[:60]!r}")


def answer_waiting(connection: Any) -> bool:
    """Whether :func:`read_answer` would find something without waiting: bytes already read
    past the last answer, or the socket readable (an answer, or the connection's end)."""
    sock = connection._sock
    if sock is None:
        return True  # closed: reading fails at once
    held = getattr(connection, _UNREAD, None)
    if held is not None and held[0] is sock and b"\r\n" in held[1]:
        return True
    return bool(select.select((sock,), (), (), 0)[0])


def connected(connection: Any) -> Any:
    """Connect through ``connect()``: a Sentinel connection asks there for the primary (writing
    on an unconnected one would connect to redis-py's default address instead)."""
    if getattr(connection, "_sock", None) is None:
        connection.connect()
    return connection
