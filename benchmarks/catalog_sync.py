"""Benchmark 6, a catalog sync at Klaviyo's catalog limits: ``flask klaviyo catalog sync`` of
N products x 3 variants from empty, timed until Klaviyo (the stand-in) holds it all, against
the time the limits allow; then a second sync with nothing changed, which must write nothing.

The stand-in enforces Klaviyo's published limits (fixed windows, 429 + Retry-After), time-scaled
by ``--scale`` (periods divided, counts kept); the workers and the sync get the same scaled
``KLAVIYO_RATE_LIMITS``. Catalog write endpoints: 75 per second, 750 per minute each; a job holds
at most 100 resources. "Allowed" is the busiest write endpoint's span under those windows (the
variants' jobs, which cannot start before their items exist: a lower bound).

    .venv/bin/python benchmarks/catalog_sync.py [--products 10000] [--workers 2] [--scale 1]
        [--smoke]
"""

from __future__ import annotations

import argparse
import json
import math
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import httpx
import redis
from _support import (
    API_KEY,
    parse_args,
    redis_server,
    start_worker,
    stop,
    table,
    wait_for,
    worker_env,
)
from flask import Flask
from rq import Worker

from flask_klaviyo import Klaviyo
from flask_klaviyo.testing import KLAVIYO_RATE_LIMITS

WRITES = ("bulk_create_catalog_categories", "bulk_create_catalog_items",
          "bulk_create_catalog_variants")  # fmt: skip


def products(count: int) -> Iterator[dict[str, Any]]:
    for n in range(count):
        yield {
            "id": f"P{n}",
            "name": f"Product {n}",
            "description": "A product of the benchmark.",
            "price": 10 + n % 50,
            "url": f"https://shop.test/p/{n}",
            "image_url": f"https://shop.test/i/{n}.jpg",
            "categories": [f"Category {n % 20}"],
            "variants": [
                {"id": f"P{n}-{size}", "sku": f"P{n}-{size}", "title": size,
                 "inventory_quantity": (n + i) % 7}
                for i, size in enumerate(("S", "M", "L"))
            ],
        }  # fmt: skip


def scaled_limits(scale: float) -> dict[str, list[list[float]]]:
    return {
        endpoint: [[limit, period / scale] for limit, period in windows]
        for endpoint, windows in KLAVIYO_RATE_LIMITS.items()
        if "catalog" in endpoint
    }


def allowed_seconds(requests: dict[str, int], scale: float) -> float:
    """The longest span any write endpoint needs for its requests under its fixed windows."""
    spans = [0.0]
    for endpoint, count in requests.items():
        for limit, period in KLAVIYO_RATE_LIMITS[endpoint]:
            spans.append(math.floor((count - 1) / limit) * period / scale if count else 0.0)
    return max(spans)


class CatalogStandIn:
    """The stand-in in its own process, with Klaviyo's limits and a job delay."""

    def __init__(self, scale: float, job_delay: float) -> None:
        command = [sys.executable, "-m", "flask_klaviyo.testing", "--port", "0",
                   "--api-key", API_KEY, "--rate-limits", "klaviyo", "--time-scale", str(scale),
                   "--job-delay", str(job_delay), "--no-keep-events"]  # fmt: skip
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
        line = self.process.stdout.readline() if self.process.stdout else ""
        found = re.search(r"http://127\.0\.0\.1:\d+", line)
        if not found:
            self.process.kill()
            raise RuntimeError(f"the stand-in did not start: {line!r}")
        self.url = found.group(0)
        self.http = httpx.Client(base_url=self.url + "/_fake", timeout=60.0)

    def get(self, name: str) -> Any:
        return self.http.get(f"/{name}").json()

    def close(self) -> None:
        self.http.close()
        stop(self.process)


def run(args: argparse.Namespace) -> dict[str, Any]:
    count = args.products
    limits = scaled_limits(args.scale)
    with redis_server() as redis_url:
        stand_in = CatalogStandIn(args.scale, args.job_delay)
        env = worker_env(redis_url, stand_in.url, rate_limits=limits)
        workers = [start_worker(redis_url, env) for _ in range(args.workers)]
        try:
            connection = redis.Redis.from_url(redis_url)
            if not wait_for(lambda: len(Worker.all(connection=connection)) >= args.workers,
                            timeout=60):  # fmt: skip
                raise SystemExit("the workers did not start")
            app = Flask(__name__)
            app.config.update(
                SECRET_KEY="bench", KLAVIYO_REDIS_URL=redis_url, KLAVIYO_API_URL=stand_in.url,
                KLAVIYO_PRIVATE_API_KEY=API_KEY, KLAVIYO_RATE_LIMITS=json.dumps(limits),
                KLAVIYO_INSPECTOR=False,  # as in production
            )  # fmt: skip
            klaviyo = Klaviyo(app)
            klaviyo.catalog_source(lambda: products(count))
            with app.app_context():
                started = time.monotonic()
                first = klaviyo.catalog_sync()
                first_seconds = time.monotonic() - started
                counts_before = stand_in.get("request-counts")
                started = time.monotonic()
                second = klaviyo.catalog_sync()
                second_seconds = time.monotonic() - started
            counts_after = stand_in.get("request-counts")
            items = len(stand_in.get("catalog-items"))
            variants = len(stand_in.get("catalog-variants"))
            throttled = int(stand_in.http.get("/rate-limits").json()["throttled"])
        finally:
            for worker in workers:
                stop(worker)
            stand_in.close()
    writes = {name: counts_before.get(name, 0) for name in WRITES}
    second_writes = sum(
        counts_after.get(n, 0) - counts_before.get(n, 0) for n in counts_after if "bulk_" in n
    )
    return {
        "first": first, "first_seconds": first_seconds, "second": second,
        "second_seconds": second_seconds, "items": items, "variants": variants,
        "writes": writes, "second_writes": second_writes, "throttled": throttled,
        "allowed": allowed_seconds(writes, args.scale),
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--products", type=int, default=10_000, help="products (x 3 variants)")
    parser.add_argument("--workers", type=int, default=2, help="worker processes beside the sync")
    parser.add_argument("--scale", type=float, default=1.0, help="time-scale factor")
    parser.add_argument("--job-delay", type=float, default=0.2, help="the stand-in's job time")
    args = parse_args(parser, smoke={"products": 60, "workers": 1})
    result = run(args)
    first, writes = result["first"], result["writes"]
    print(
        f"catalog sync: {args.products:,} products x 3 variants, Klaviyo's catalog limits "
        f"time-scaled 1/{args.scale:g}, {args.workers} worker(s) + the sync's own, stand-in "
        f"jobs take {args.job_delay:g} s; write requests: "
        + ", ".join(f"{n.removeprefix('bulk_create_catalog_')} {c}" for n, c in writes.items())
    )
    rows = [
        [
            "from empty",
            f"{result['first_seconds']:.2f}",
            f"{result['allowed']:.2f}",
            f"{result['first_seconds'] / max(result['allowed'], 1e-9):.2f}x",
            sum(writes.values()),
            f"{result['items']:,} / {result['variants']:,}",
            len(first.failed),
            result["throttled"],
        ],
        [
            "nothing changed",
            f"{result['second_seconds']:.2f}",
            "0.00",
            "-",
            result["second_writes"],
            f"{result['second'].plan.items.unchanged:,} / "
            f"{result['second'].plan.variants.unchanged:,} unchanged",
            len(result["second"].failed),
            "-",
        ],
    ]
    print(
        table(
            [
                "sync",
                "wall s",
                "allowed s",
                "x allowed",
                "write requests",
                "items / variants held",
                "failed",
                "429s",
            ],
            rows,
        )
    )
    if result["items"] != args.products or result["variants"] != 3 * args.products:
        raise SystemExit("Klaviyo (the stand-in) does not hold the whole catalog")
    if result["second_writes"]:
        raise SystemExit("the second sync wrote")


if __name__ == "__main__":
    main()
