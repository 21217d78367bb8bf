"""The same funnel over real HTTP: the store served by gunicorn (WSGI, two worker processes) and by
uvicorn through asgiref's ``WsgiToAsgi`` (ASGI), each a real process on a loopback port.

Under gunicorn the simulated payment provider calls the store back by itself (a background thread
in the web process, as in ``make run``); the test then replays that exact delivery twice, as a
provider retrying would. Under uvicorn the callback is off and the test delivers the webhook
twice. Either way a real worker process delivers, and the stand-in must hold exactly the funnel.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import time
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from test_funnel import (
    ADMIN_PASSWORD,
    EMAIL,
    ROOT,
    VENV_BIN,
    WEBHOOK_SECRET,
    Answer,
    Journey,
    assert_funnel_in_klaviyo,
    deliver_twice,
    order_status,
    run_journey,
    run_worker,
    store_env,
)

from example_store.payments import PAYMENT_SUCCEEDED, Delivery, signed_delivery
from flask_klaviyo.webhooks import SIGNATURE_HEADER, sign

pytestmark = pytest.mark.slow

START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0


class HttpBrowser:
    """httpx with a cookie jar, never following redirects (the journey checks each 303)."""

    def __init__(self, base_url: str) -> None:
        self.client = httpx.Client(base_url=base_url, timeout=15.0, follow_redirects=False)

    def request(
        self,
        method: str,
        path: str,
        *,
        form: Mapping[str, str] | None = None,
        json: Any = None,
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Answer:
        response = self.client.request(
            method, path, data=form, json=json, content=body, headers=dict(headers or {})
        )
        return Answer(response.status_code, response.headers, response.text)

    def close(self) -> None:
        self.client.close()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    url: str
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]


def stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM the server (its process group: gunicorn's workers too), then SIGKILL."""
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        process.wait(timeout=STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=STOP_TIMEOUT)


def start(command: list[str], env: Mapping[str, str], port: int, log: Path) -> Server:
    """Start a server in its own process group and wait (bounded) until it answers."""
    with log.open("wb") as out:
        process = subprocess.Popen(
            command,
            env=dict(env),
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server = Server(process, f"http://127.0.0.1:{port}", log)
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        if process.poll() is not None:
            raise AssertionError(f"{command[0]} exited {process.returncode}:\n{server.output()}")
        try:
            if httpx.get(server.url + "/", timeout=2.0).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            stop(process)
            raise AssertionError(
                f"{command[0]} did not answer in {START_TIMEOUT}s:\n{server.output()}"
            )
        time.sleep(0.2)


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Any]:
    """``serve(kind, env)`` starts gunicorn or uvicorn; every server is stopped afterwards."""
    started: list[Server] = []

    def launch(kind: str, env: Mapping[str, str]) -> Server:
        port = free_port()
        if kind == "gunicorn":
            command = [
                str(VENV_BIN / "gunicorn"),
                "-b",
                f"127.0.0.1:{port}",
                "-w",
                "2",
                "--graceful-timeout",
                "5",
                "example_store:create_app()",
            ]
        else:
            command = [
                str(VENV_BIN / "uvicorn"),
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--timeout-graceful-shutdown",
                "5",
                "example_store.asgi:app",
            ]
        server = start(command, env, port, tmp_path / f"{kind}.log")
        started.append(server)
        return server

    yield launch
    for server in started:
        stop(server.process)


def replay_the_providers_delivery(database: Path) -> Any:
    """``pay`` for the journey: wait for the provider's own callback, then deliver it twice more."""

    def pay(browser: HttpBrowser, journey: Journey) -> None:
        deadline = time.monotonic() + 20
        while order_status(browser, journey.order_id)["status"] != "paid":
            assert time.monotonic() < deadline, "the provider never called back"
            time.sleep(0.1)
        conn = sqlite3.connect(database)
        try:
            rows = conn.execute(
                "SELECT id, payload FROM webhook_deliveries WHERE order_id = ?",
                (journey.order_id,),
            ).fetchall()
        finally:
            conn.close()
        [(delivery_id, payload)] = rows
        assert json.loads(payload)["data"]["order_id"] == journey.order_id
        body = payload.encode()
        for _ in range(2):
            headers = {
                "Content-Type": "application/json",
                SIGNATURE_HEADER: sign(WEBHOOK_SECRET, body),
            }
            answer = browser.request("POST", "/webhooks/payments", body=body, headers=headers)
            assert answer.status == 200, answer.text
            assert answer.json() == {"status": "duplicate", "id": delivery_id}

    return pay


@pytest.mark.parametrize("kind", ["gunicorn", "uvicorn"])
def test_the_funnel_over_real_http(
    kind: str, serve: Any, redis_url: str, fake: Any, openapi: Any, tmp_path: Path
) -> None:
    started = time.monotonic()
    database = tmp_path / "store.sqlite3"
    auto = kind == "gunicorn"
    env = store_env(
        redis_url,
        fake,
        database,
        STORE_PAYMENTS_AUTO_CALLBACK="true" if auto else "false",
        STORE_PAYMENTS_DELAY="0.2",
    )
    server = serve(kind, env)
    browser = HttpBrowser(server.url)
    try:
        # A signed delivery with a bad signature is refused over the wire too.
        probe = Delivery(type=PAYMENT_SUCCEEDED, order_id="SP-NONE", amount=1, currency="USD")
        body, headers = signed_delivery(WEBHOOK_SECRET, probe)
        forged = browser.request(
            "POST",
            "/webhooks/payments",
            body=body,
            headers={**headers, SIGNATURE_HEADER: "t=1,v1=" + "0" * 64},
        )
        assert forged.status == 400 and forged.json()["error"] == "invalid_signature"

        pay = (
            replay_the_providers_delivery(database)
            if auto
            else (lambda b, j: deliver_twice(b, j, WEBHOOK_SECRET))
        )
        try:
            journey = run_journey(
                browser,
                email=EMAIL,
                kx=fake.exchange_id_for(EMAIL),
                admin_password=ADMIN_PASSWORD,
                pay=pay,
            )
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n--- {kind} log ---\n{server.output()}") from exc
        # Many requests on one kept-alive connection: each must be served (see asgi.py).
        statuses = Counter(
            browser.request("GET", path).status for path in ["/", "/cart", "/api/cart"] * 20
        )
        assert statuses == {200: 60}, server.output()
    finally:
        browser.close()
    assert fake.events == []  # the web process never talks to Klaviyo itself
    run_worker(env)
    assert_funnel_in_klaviyo(fake, openapi, journey)
    assert server.process.poll() is None, server.output()  # still serving: nothing crashed
    assert "Traceback" not in server.output()
    assert time.monotonic() - started < 60
