"""What tracking adds to a product page, side by side in one run.

Three variants of the same page, interleaved so machine noise hits them alike:
  untracked   the page alone
  tracked     @tracks("Viewed Product"): build, validate, bridge; after the response the push is
              written to Redis (one script call) and its answer read at the request's teardown
  tracked-metrics  the same page of a second app with KLAVIYO_METRICS on (same Redis): the push
              also counts what it queued for Prometheus (PUSH_COUNTED, still one script call)
  sdk-inline  the official klaviyo-api SDK called inside the view against the local stand-in
              (what a merchant replacing the pixel naively would do)

    .venv/bin/python benchmarks/request_overhead.py [--requests 1000] [--rounds 5] [--smoke]
                                                    [--inspector]

The inspector is off, as in production (``KLAVIYO_INSPECTOR=False``; ``auto`` would turn it on
for the loopback stand-in used here); ``--inspector`` measures the page with it on instead.

Prints p50/p99 per variant (all rounds pooled), the added p50 over the untracked page, and the
added p50 of each round (median, min-max) to show how much the machine moved between rounds.
Checks at the end that every tracked page queued its event.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from _support import SIDE_BY_SIDE, parse_args, side_by_side, table
from flask import Flask, render_template_string

from flask_klaviyo import Klaviyo, tracks
from flask_klaviyo.delivery import keys
from flask_klaviyo.embedded import embedded_redis_url, stop_embedded_redis
from flask_klaviyo.testing import FakeKlaviyo

API_KEY = "pk_bench_key"
PAGE = "<h1>{{ product.name }}</h1><p>{{ product.price }}</p>{{ klaviyo_bridge() }}"
PRODUCT = {
    "id": "1111",
    "name": "Winnie the Pooh",
    "sku": "WINNIEPOOH",
    "price": 9.99,
    "url": "http://shop.test/p/1111",
    "image_url": "http://shop.test/i/1111.png",
    "categories": ["Fiction", "Children"],
    "brand": "Kids Books",
}


def make_app(
    redis_url: str, fake_url: str, *, inspector: bool = False, metrics: bool = False
) -> Flask:
    app = Flask(__name__)
    app.config.update(
        SECRET_KEY="bench",
        KLAVIYO_REDIS_URL=redis_url,
        KLAVIYO_API_URL=fake_url,
        KLAVIYO_PRIVATE_API_KEY=API_KEY,
        KLAVIYO_STRICT=False,
        KLAVIYO_INSPECTOR=inspector,
        KLAVIYO_METRICS=metrics,
    )
    klaviyo = Klaviyo(app)
    klaviyo.identity_loader(lambda: {"email": "sarah.mason@klaviyo-demo.com"})

    from klaviyo_api import KlaviyoAPI

    sdk = KlaviyoAPI(API_KEY, max_delay=1, max_retries=0, test_host=fake_url)

    @app.get("/untracked")
    def untracked() -> str:
        return render_template_string(PAGE, product=PRODUCT)

    @app.get("/tracked")
    @tracks("Viewed Product")
    def tracked() -> str:
        return render_template_string(PAGE, product=PRODUCT)

    @app.get("/sdk-inline")
    def sdk_inline() -> str:
        sdk.Events.create_event(
            {
                "data": {
                    "type": "event",
                    "attributes": {
                        "properties": {"ProductID": PRODUCT["id"], "ProductName": PRODUCT["name"]},
                        "metric": {
                            "data": {"type": "metric", "attributes": {"name": "Viewed Product"}}
                        },
                        "profile": {
                            "data": {
                                "type": "profile",
                                "attributes": {"email": "sarah.mason@klaviyo-demo.com"},
                            }
                        },
                        "unique_id": str(time.perf_counter_ns()),
                    },
                }
            }
        )
        return render_template_string(PAGE, product=PRODUCT)

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1000, help="per variant and round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=50, help="requests per variant, unmeasured")
    parser.add_argument("--inspector", action="store_true", help="with KLAVIYO_INSPECTOR on")
    args = parse_args(parser, smoke={"requests": 20, "rounds": 2, "warmup": 5})

    folder = Path(tempfile.mkdtemp(prefix="klaviyo-bench-"))
    redis_url = embedded_redis_url(folder)
    try:
        with FakeKlaviyo(api_key=API_KEY) as fake:
            app = make_app(redis_url, fake.url, inspector=args.inspector)
            client = app.test_client()
            counted = make_app(redis_url, fake.url, inspector=args.inspector, metrics=True)
            pages = {v: (client, f"/{v}") for v in ("untracked", "tracked", "sdk-inline")}
            pages["tracked-metrics"] = (counted.test_client(), "/tracked")
            variants = ["untracked", "tracked", "tracked-metrics", "sdk-inline"]
            rounds: list[dict[str, list[float]]] = []
            for _ in range(args.warmup):
                for v in variants:
                    pages[v][0].get(pages[v][1])
            for _ in range(args.rounds):
                samples: dict[str, list[float]] = {v: [] for v in variants}
                for _ in range(args.requests):
                    for v in variants:
                        page_client, path = pages[v]
                        start = time.perf_counter()
                        response = page_client.get(path)
                        samples[v].append((time.perf_counter() - start) * 1000)
                        assert response.status_code == 200
                rounds.append(samples)
            # The tracked pages really queued their event every time (not spooled, not dropped):
            # both apps push to the one outbox; the counted one's pushes were all counted.
            state = app.extensions["klaviyo"]
            viewed = [e for e in state.outbox.waiting() if e.get("metric") == "Viewed Product"]
            each = args.warmup + args.rounds * args.requests
            assert len(viewed) == 2 * each, len(viewed)
            assert state.spool.size() == 0
            field = "queued|event|Viewed Product"
            assert int(state.outbox.connection.hget(keys.METRICS, field) or 0) == each
            report(rounds, args.requests, inspector=args.inspector)
    finally:
        stop_embedded_redis(folder)


def report(rounds: list[dict[str, list[float]]], n: int, *, inspector: bool = False) -> None:
    print(
        f"request overhead, {len(rounds)} rounds x {n} requests per variant "
        f"(ms; Flask test client, embedded Redis; inspector {'on' if inspector else 'off'})"
    )
    print(table(SIDE_BY_SIDE, side_by_side(rounds)))


if __name__ == "__main__":
    main()
