"""The floor of a tracked page: the untracked store plus one bare Redis round trip per page.

DESIGN.md's data flow has every tracked request make one Redis round trip after its response
exists. This app makes exactly that and nothing else: the library's push script with one
prebuilt entry the size of the page's Viewed Product, written on a connection of its own once
the response exists, its answer read at teardown if it is there and otherwise before the next
push, as the library does (without its confirmer thread). No identity, bridge,
event building, validation or encoding: what the round trip alone costs on this machine, the
part of the tracked page's cost that no trimming of the library's Python can remove.

``benchmarks/store_page.py`` installs it on an app; ``benchmarks/store_server.py`` runs
``gunicorn '_round_trip:create_app()'`` with ``BENCH_ROUND_TRIP_REDIS`` set.
"""

from __future__ import annotations

import os
from typing import Any

import redis
from flask import Flask

from example_store import create_app as create_store
from flask_klaviyo.delivery import scripts
from flask_klaviyo.delivery.outbox import DRAIN_FLAG_TTL
from flask_klaviyo.delivery.wire import (
    answer_waiting,
    compact_json,
    connected,
    pack,
    read_answer,
)

__all__ = ["STREAM", "create_app", "install"]

STREAM = "bench:round-trip"  # its own stream (no worker reads it), so counts stay apart
FLAG = "bench:round-trip:flag"
REDIS_ENV = "BENCH_ROUND_TRIP_REDIS"
# The page's Viewed Product as the outbox holds it (522 bytes of JSON), built once.
ENTRY = compact_json(
    {
        "metric": "Viewed Product",
        "properties": {
            "ProductName": "Ridgeline Gooseneck Kettle, 0.9 L",
            "ProductID": "gooseneck-kettle",
            "SKU": "RS-KTL-090",
            "Categories": ["Coffee", "Kitchen", "Camp Kitchen"],
            "ImageURL": "http://localhost/static/products/gooseneck-kettle.svg",
            "URL": "http://localhost/products/gooseneck-kettle",
            "Brand": "Ridgeline Supply Co.",
            "Price": 54.0,
            "CompareAtPrice": 64.0,
        },
        "profile": {"email": "sarah.mason@klaviyo-demo.com"},
        "time": "2026-12-08T02:30:17.858025+00:00",
        "value": 54.0,
        "value_currency": "USD",
        "unique_id": "637ae1e65be37f841fc7c4f6",
        "backfill": False,
    }
)


def install(app: Flask, redis_url: str) -> None:
    """Add the bare round trip to ``app``'s requests (one connection per process)."""
    client = redis.Redis.from_url(redis_url)
    sha = client.script_load(scripts.PUSH)
    packed = pack(("EVALSHA", sha, 2, STREAM, FLAG, DRAIN_FLAG_TTL, ENTRY))
    pool = client.connection_pool
    held: dict[int, Any] = {}  # pid -> connection (gunicorn forks after the app is built)

    def connection() -> Any:
        found = held.get(os.getpid())
        if found is None:
            held.clear()
            found = held[os.getpid()] = pool.connection_class(**pool.connection_kwargs)
        return connected(found)

    unread = [0]  # answers not read yet on this process's connection (they come in order)

    def read_one() -> None:
        unread[0] -= 1
        answer = read_answer(connection())
        if isinstance(answer, Exception):
            raise answer

    @app.after_request
    def send(response: Any) -> Any:
        while unread[0]:  # as the library: the last answer first, long there by now
            read_one()
        connection()._sock.sendall(packed)
        unread[0] += 1
        return response

    @app.teardown_request
    def confirm(error: BaseException | None) -> None:
        if unread[0] and answer_waiting(connection()):  # read only if it is there
            read_one()


def create_app() -> Flask:
    """For gunicorn: the store from the environment (``KLAVIYO_ENABLED=false``) plus the bare
    round trip to the Redis named by ``BENCH_ROUND_TRIP_REDIS``."""
    app = create_store()
    install(app, os.environ[REDIS_ENV])
    return app
