"""HTTP framing over a real socket: a threading server, keep-alive, Content-Length and chunked
bodies (an oversized one drained so its 413 arrives), held and reset connections."""

from __future__ import annotations

import contextlib
import logging
import socket
import struct
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

from ._config import CONNECTION_IDLE_TIMEOUT, DRAIN_LIMIT_BYTES, MAX_BODY_BYTES
from .dispatch import answer
from .jsonapi import Answer, Request, one_error

if TYPE_CHECKING:
    from .fake import FakeKlaviyo

log = logging.getLogger(__name__)


class Server(ThreadingHTTPServer):
    """One thread per connection; stopping cuts keep-alive connections too."""

    daemon_threads = True
    block_on_close = False

    def __init__(self, address: tuple[str, int], fake: FakeKlaviyo) -> None:
        self.fake = fake
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, Handler)

    def track(self, connection: socket.socket, *, open_: bool) -> None:
        with self._connections_lock:
            if open_:
                self._connections.add(connection)
            else:
                self._connections.discard(connection)

    def close_connections(self) -> None:
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)


class BadFraming(Exception):
    """The request body could not be delimited (bad chunked encoding or Content-Length)."""


class Handler(BaseHTTPRequestHandler):
    """Reads a request off the socket, writes the answer; keep-alive, like Klaviyo."""

    protocol_version = "HTTP/1.1"
    server_version = "FakeKlaviyo/1.0"
    sys_version = ""
    timeout = CONNECTION_IDLE_TIMEOUT
    server: Server

    def setup(self) -> None:
        super().setup()
        # An answer is written as headers, then body: with Nagle on, the body waited for the
        # client's delayed ACK of the headers (~40 ms an answer on loopback). Servers set this.
        with contextlib.suppress(OSError):
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.server.track(self.connection, open_=True)

    def finish(self) -> None:
        self.server.track(self.connection, open_=False)
        with contextlib.suppress(OSError):
            super().finish()

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the inspector and ``requests`` are the log."""

    def do_GET(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def do_PUT(self) -> None:
        self._serve()

    def do_PATCH(self) -> None:
        self._serve()

    def do_DELETE(self) -> None:
        self._serve()

    def do_OPTIONS(self) -> None:
        self._serve()

    def _serve(self) -> None:
        fake = self.server.fake
        split = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(split.query, keep_blank_values=True).items()}
        try:
            raw, too_large = self._read_body()
        except (BadFraming, ValueError):
            self.close_connection = True
            self._write(one_error(400, detail="Malformed request body framing."))
            return
        request = Request(
            self.command, split.path, query, dict(self.headers.items()), raw, too_large
        )
        reply = answer(fake, request)
        if reply.delay:
            fake.stopping.wait(reply.delay)
        if reply.drop:
            self.close_connection = True
            if reply.reset:  # SO_LINGER 0: closing sends a RST instead of a FIN
                with contextlib.suppress(OSError):
                    self.connection.setsockopt(
                        socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                    )
                    self.connection.close()
            return
        if too_large:
            reply.close = True
        self._write(reply)

    def _read_body(self) -> tuple[bytes, bool]:
        """Read the whole body (draining an oversized one so the 413 can be delivered)."""
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            return self._read_chunked()
        length_text = self.headers.get("Content-Length")
        length = int(length_text) if length_text else 0
        if length < 0:
            raise BadFraming("negative Content-Length")
        if length > DRAIN_LIMIT_BYTES:
            self.close_connection = True
            return b"", True
        if length > MAX_BODY_BYTES:
            remaining = length
            while remaining > 0:
                chunk = self.rfile.read(min(remaining, 1 << 16))
                if not chunk:
                    break
                remaining -= len(chunk)
            return b"", True
        return self.rfile.read(length), False

    def _read_chunked(self) -> tuple[bytes, bool]:
        parts: list[bytes] = []
        total = 0
        while True:
            line = self.rfile.readline(1024)
            try:
                size = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError as exc:
                raise BadFraming("bad chunk size") from exc
            if size == 0:
                while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                    pass
                break
            total += size
            if total > DRAIN_LIMIT_BYTES:
                self.close_connection = True
                return b"", True
            chunk = self.rfile.read(size)
            self.rfile.readline(1024)
            if total <= MAX_BODY_BYTES:
                parts.append(chunk)
        if total > MAX_BODY_BYTES:
            return b"", True
        return b"".join(parts), False

    def _write(self, reply: Answer) -> None:
        try:
            self.send_response(reply.status)
            for name, value in reply.headers:
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(reply.body)))
            if reply.close:
                self.send_header("Connection", "close")
                self.close_connection = True
            # Headers and body in one write: two woke the client twice for one answer.
            if not hasattr(self, "_headers_buffer"):  # http.server's own list (HTTP/0.9: none)
                self._headers_buffer: list[bytes] = []
            self._headers_buffer.append(b"\r\n")
            if self.command != "HEAD":
                self._headers_buffer.append(reply.body)
            self.flush_headers()
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
