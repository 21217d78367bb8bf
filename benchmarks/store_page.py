"""What tracking adds to the demo store's real product page, side by side in one run.

A logged-in shopper (the store's session plus flask-klaviyo's signed identity cookie, as
``POST /login`` leaves them) opens ``/products/gooseneck-kettle`` with ``KLAVIYO_PUBLIC_API_KEY``
set, so the bridge identifies the shopper and loads klaviyo.js. Variants, interleaved so machine
noise hits them alike (one app per variant, built by ``example_store.create_app``):

  untracked         ``KLAVIYO_ENABLED=False`` (the same page, cookies and template)
  tracked           tracking on: Viewed Product built, validated, pushed; bridge; identity
then the breakdown, one part switched off at a time (tracking still on):
  - identity cookie the shopper sends no signed identity cookie (nothing to verify)
  - bridge          ``klaviyo_bridge()`` renders the inert blob (no data, no scripts)
  - event           the view without ``@tracks`` (no event: no build, validation or push)
  hooks only        all three off: what the request hooks cost with nothing to do
  round trip only   the untracked store plus one bare Redis round trip per page
                    (``_round_trip.py``): the floor DESIGN.md's one round trip per request sets

    .venv/bin/python benchmarks/store_page.py [--requests 1000] [--rounds 5] [--smoke]

Prints p50/p99 per variant (rounds pooled), the added p50 over untracked, and each round's added
p50 (median; min-max); then the pieces timed alone (µs per call). Checks that every tracked page
queued its Viewed Product and that the page names the shopper in the bridge.
"""

from __future__ import annotations

import argparse
import shutil
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import _round_trip
import redis
from _support import SIDE_BY_SIDE, parse_args, side_by_side, table
from flask import Flask
from flask.testing import FlaskClient
from markupsafe import Markup

from example_store import catalog, create_app
from flask_klaviyo import bridge, capture, queueing
from flask_klaviyo.embedded import embedded_redis_url, stop_embedded_redis
from flask_klaviyo.identity import cookies

PUBLIC_KEY = "AbC123"
SHOPPER = "sarah.mason@klaviyo-demo.com"
PAGE = "/products/gooseneck-kettle"
SECRET = "bench-secret-key"
IDLE_MS = 4  # about an untracked page's time: how long Redis idles between two pages' pushes

# name -> (tracking on, identity cookie sent, bridge on, @tracks on)
VARIANTS: dict[str, tuple[bool, bool, bool, bool]] = {
    "untracked": (False, True, True, True),
    "tracked": (True, True, True, True),
    "- identity cookie": (True, False, True, True),
    "- bridge": (True, True, False, True),
    "- event": (True, True, True, False),
    "hooks only": (True, False, False, False),
    "round trip only": (False, True, True, True),
}
ROUND_TRIP = "round trip only"


def make_app(folder: Path, redis_url: str, variant: str) -> Flask:
    """The demo store as ``make run`` builds it, with tracking on or off and parts switched off."""
    enabled, _, bridge_on, event = VARIANTS[variant]
    settings = {
        "instance_path": str(folder),
        "SECRET_KEY": SECRET,
        "KLAVIYO_ENABLED": enabled,
        "KLAVIYO_STRICT": False,
        "KLAVIYO_REDIS_URL": redis_url,
        "KLAVIYO_PRIVATE_API_KEY": "pk_bench_key",
        "KLAVIYO_PUBLIC_API_KEY": PUBLIC_KEY,
        "KLAVIYO_API_URL": "http://127.0.0.1:9",  # no worker runs: nothing is sent
        # As in production: the inspector (on by default against a loopback stand-in) journals
        # every push for the developer's page, a cost no production page pays.
        "KLAVIYO_INSPECTOR": False,
    }
    if not bridge_on:
        # Without klaviyo.js on the page the server sends Active on Site itself, once per visit,
        # remembered in the identity cookie; these clients send fixed cookies, so it would be
        # every page: not what is measured here.
        settings["KLAVIYO_ACTIVE_ON_SITE"] = False
    app = create_app(settings)
    if not bridge_on:
        inert = Markup(bridge._blob(bridge.INERT))
        app.jinja_env.globals["klaviyo_bridge"] = lambda: inert
    if not event:
        view = app.view_functions["store.product"]
        app.view_functions["store.product"] = view.__wrapped__  # the view without @tracks
    if variant == ROUND_TRIP:
        _round_trip.install(app, redis_url)
    return app


def shopper_cookies(app: Flask) -> dict[str, str]:
    """What a browser holds after signing in: the session and the signed identity cookie."""
    client = app.test_client()
    response = client.post("/login", data={"email": SHOPPER}, headers={"Referer": PAGE})
    assert response.status_code == 303, response.status
    client.get(PAGE)  # the flashed "Signed in" message is shown (and the session re-set) once
    held = {cookie.key: cookie.value for cookie in client._cookies.values()}
    assert app.config["KLAVIYO_COOKIE_NAME"] in held, held
    return held


def client_for(app: Flask, held: dict[str, str], variant: str) -> FlaskClient:
    """A browser sending the cookies in ``held`` (without the identity cookie in the variants
    that leave it out). Every client sends fixed cookies, so no variant pays for a cookie jar;
    ``check_page`` makes sure the store sets none in the steady state, as a browser would keep
    them."""
    name = app.config["KLAVIYO_COOKIE_NAME"]
    keep = VARIANTS[variant][1]
    client = app.test_client(use_cookies=False)
    header = "; ".join(f"{k}={v}" for k, v in held.items() if keep or k != name)
    client.environ_base["HTTP_COOKIE"] = header
    return client


def check_page(client: FlaskClient, tracked: bool) -> None:
    response = client.get(PAGE)
    body = response.get_data(as_text=True)
    assert "Gooseneck Kettle" in body
    identified = f'"identify": {{"email": "{SHOPPER}"}}' in body
    assert identified is tracked, "the bridge identifies the shopper only when tracked"
    assert "Set-Cookie" not in response.headers, response.headers.getlist("Set-Cookie")


def per_call_us(func: Callable[[], Any], n: int) -> float:
    """Median of 5 batches of ``n`` calls, µs per call."""
    batches = []
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(n):
            func()
        batches.append((time.perf_counter() - start) / n * 1e6)
    return statistics.median(batches)


def after_idle_us(func: Callable[[], Any], n: int) -> float:
    """Median µs of ``func`` when the process it talks to has been idle for ``IDLE_MS`` (this
    process busy meanwhile, as it is rendering a page): on a virtual machine, waking an idle
    Redis costs more than the round trip to a busy one."""
    samples = []
    for _ in range(n):
        until = time.perf_counter() + IDLE_MS / 1000
        while time.perf_counter() < until:
            pass
        start = time.perf_counter()
        func()
        samples.append((time.perf_counter() - start) * 1e6)
    return statistics.median(samples)


def pieces(app: Flask, held: dict[str, str], n: int) -> list[list[str]]:
    """What the tracked page does, each part timed alone in the page's request context."""
    name = app.config["KLAVIYO_COOKIE_NAME"]
    token = held[name]
    cookie_header = "; ".join(f"{key}={value}" for key, value in held.items())
    extension = app.extensions["klaviyo"].extension
    rows: list[tuple[str, float]] = []
    with app.test_request_context(PAGE, headers={"Cookie": cookie_header}):
        app.preprocess_request()  # the store's before-request hooks (its database)
        state = cookies.read_token(token)
        assert state is not None
        remembered = getattr(cookies, "_verified", None)  # absent before the cache existed
        if remembered is not None:

            def first_time() -> Any:
                remembered.cache_clear()
                return cookies.read_token(token)

            rows.append(("verify the signed cookie, first time", per_call_us(first_time, n)))
        rows.append(("verify the signed cookie", per_call_us(lambda: cookies.read_token(token), n)))
        rows.append(("sign the cookie", per_call_us(lambda: cookies.sign(state[0]), n)))
        rows.append(("render the bridge", per_call_us(extension.bridge, n)))
        product = catalog.get_product(PAGE.rsplit("/", 1)[1])
        mark = capture._Tracked("Viewed Product", dict(capture.CONTEXT_NAMES["Viewed Product"]))
        context = {"product": product}
        rows.append(
            (
                "build Viewed Product (the store's product, the visitor)",
                per_call_us(lambda: capture._build(extension, mark, context), n),
            )
        )
        event = capture._build(extension, mark, context)
        rows.append(("validate it", per_call_us(lambda: queueing.valid(event), n)))
        outbox = app.extensions["klaviyo"].outbox
        rows.append(("push it (one round trip)", per_call_us(lambda: outbox.push([event]), n)))
        rows.append(
            (
                f"push it {IDLE_MS} ms after the last (Redis idle, as between pages)",
                after_idle_us(lambda: outbox.push([event]), n // 4),
            )
        )
    return [[label, f"{us:.1f}"] for label, us in rows]


def main() -> None:
    # SIGTERM (a timeout) still stops the embedded Redis: the finally below runs.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(143))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1000, help="per variant and round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=50, help="requests per variant, unmeasured")
    args = parse_args(parser, smoke={"requests": 20, "rounds": 2, "warmup": 5})

    folder = Path(tempfile.mkdtemp(prefix="klaviyo-bench-store-"))
    redis_url = embedded_redis_url(folder)
    try:
        apps: dict[str, Flask] = {}
        clients: dict[str, FlaskClient] = {}
        for n, name in enumerate(VARIANTS):
            apps[name] = make_app(folder / str(n), redis_url, name)
        held = shopper_cookies(apps["tracked"])
        for name in VARIANTS:
            clients[name] = client_for(apps[name], held, name)
        check_page(clients["tracked"], True)
        check_page(clients["untracked"], False)
        check_page(clients[ROUND_TRIP], False)
        state = apps["tracked"].extensions["klaviyo"]
        with apps["tracked"].app_context():
            queued_before = len(state.outbox.waiting())

        names = list(VARIANTS)
        for _ in range(args.warmup):
            for name in names:
                clients[name].get(PAGE)
        rounds: list[dict[str, list[float]]] = []
        cpu_rounds: list[dict[str, list[float]]] = []
        for _ in range(args.rounds):
            samples: dict[str, list[float]] = {name: [] for name in names}
            cpu: dict[str, list[float]] = {name: [] for name in names}
            for _ in range(args.requests):
                for name in names:
                    start, start_cpu = time.perf_counter(), time.thread_time()
                    response = clients[name].get(PAGE)
                    samples[name].append((time.perf_counter() - start) * 1000)
                    cpu[name].append((time.thread_time() - start_cpu) * 1000)
                    assert response.status_code == 200, (name, response.status)
            rounds.append(samples)
            cpu_rounds.append(cpu)
        with apps["tracked"].app_context():
            viewed = [e for e in state.outbox.waiting() if e.get("metric") == "Viewed Product"]
        # every tracked page (and the cookie-less and bridge-less ones, same store) queued its event
        expected = 3 * (args.warmup + args.rounds * args.requests)
        assert len(viewed) - queued_before >= expected, (len(viewed), queued_before, expected)
        bare = redis.Redis.from_url(redis_url).xlen(_round_trip.STREAM)
        assert bare == 1 + args.warmup + args.rounds * args.requests, bare  # one per page
        report(rounds, cpu_rounds, args.requests)
        print()
        print("the tracked page's parts alone (µs per call, in its request context)")
        # plain lines: one Markdown table per script (tests/test_benchmarks.py reads it)
        for label, us in pieces(apps["tracked"], held, 200 if args.smoke else 2000):
            print(f"  {label}: {us}")
    finally:
        stop_embedded_redis(folder)
        shutil.rmtree(folder, ignore_errors=True)


def report(
    rounds: list[dict[str, list[float]]], cpu_rounds: list[dict[str, list[float]]], n: int
) -> None:
    pooled_cpu = {name: [x for r in cpu_rounds for x in r[name]] for name in rounds[0]}
    base_cpu = statistics.median(pooled_cpu["untracked"])
    print(
        f"demo store product page, logged-in shopper, {len(rounds)} rounds x {n} requests per "
        "variant (ms; Flask test client, embedded Redis; CPU: this thread's CPU time, which a "
        "busy machine inflates less than the wall clock)"
    )
    rows = [
        [*row, f"{statistics.median(pooled_cpu[row[0]]) - base_cpu:.3f}"]
        for row in side_by_side(rounds)
    ]
    print(table([*SIDE_BY_SIDE, "added CPU p50"], rows))


if __name__ == "__main__":
    main()
