"""An in-process httpx transport: the stand-in without a socket.

``httpx.Client(base_url=..., transport=fake.transport())`` (or ``KlaviyoClient(...,
transport=...)``) sends each request straight into the dispatcher the socket server uses, so
a unit test gets the same checks, records, faults and rate windows with no port, no thread and
no network. Misbehaviour maps to what httpx would raise over a socket: a held-then-dropped
connection is a ``ReadTimeout`` (when the client gives up first) or a ``RemoteProtocolError``,
a reset is a ``ReadError``.
"""

from __future__ import annotations

import logging
from email.utils import formatdate
from typing import TYPE_CHECKING

import httpx

from ._config import MAX_BODY_BYTES
from .dispatch import answer
from .jsonapi import Request

if TYPE_CHECKING:
    from .fake import FakeKlaviyo

log = logging.getLogger(__name__)

SERVER_HEADER = "FakeKlaviyo/1.0"


class FakeTransport(httpx.BaseTransport):
    """Answers httpx requests through ``fake``'s dispatcher (started or not)."""

    def __init__(self, fake: FakeKlaviyo) -> None:
        self.fake = fake

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        body = request.read()
        too_large = len(body) > MAX_BODY_BYTES
        query = {key: values[-1] for key, values in _query(request.url).items()}
        headers = {
            key.decode("latin-1"): value.decode("latin-1") for key, value in request.headers.raw
        }
        incoming = Request(
            request.method, request.url.path, query, headers, b"" if too_large else body, too_large
        )
        reply = answer(self.fake, incoming)
        read_timeout = (request.extensions.get("timeout") or {}).get("read")
        if reply.drop:
            hold = reply.delay
            if read_timeout is not None and hold > read_timeout:
                self.fake.stopping.wait(read_timeout)
                raise httpx.ReadTimeout("timed out", request=request)
            self.fake.stopping.wait(hold)
            if reply.reset:
                raise httpx.ReadError("[Errno 104] Connection reset by peer", request=request)
            raise httpx.RemoteProtocolError(
                "Server disconnected without sending a response.", request=request
            )
        if reply.delay:
            if read_timeout is not None and reply.delay > read_timeout:
                self.fake.stopping.wait(read_timeout)
                raise httpx.ReadTimeout("timed out", request=request)
            self.fake.stopping.wait(reply.delay)
        out = [("Server", SERVER_HEADER), ("Date", formatdate(usegmt=True)), *reply.headers]
        out.append(("Content-Length", str(len(reply.body))))
        if reply.close or too_large:
            out.append(("Connection", "close"))
        # A stream, not content=: httpx then reads it like a socket's and sets .elapsed.
        return httpx.Response(
            reply.status, headers=out, stream=httpx.ByteStream(reply.body), request=request
        )


def _query(url: httpx.URL) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for key, value in url.params.multi_items():
        found.setdefault(key, []).append(value)
    return found
