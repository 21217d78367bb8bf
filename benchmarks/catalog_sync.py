"""Benchmark 6, a catalog sync at Klaviyo's catalog limits: ``flask klaviyo catalog sync`` of
N products x 3 variants from empty, timed until Klaviyo (the stand-in) holds it all, against
the time the limits allow; then a second sync with nothing changed, which must write nothing.

The stand-in runs in its own process and enforces Klaviyo's published limits (fixed windows,
429 + Retry-After), time-scaled by ``--scale`` (periods divided, counts kept); its jobs take
``--job-delay`` seconds. The workers and the sync get the same scaled ``KLAVIYO_RATE_LIMITS``.
Catalog write endpoints: 75 per second, 750 per minute each; a job holds at most 100 resources.

"Allowed" has two parts. The limits: the busiest write endpoint's span under its fixed windows
(N x 3 variants = 3N/100 variant jobs; 10,000 products: 300 jobs, 75 a second, so the last one
3.00 s after the first). The dependencies, which no pacing can avoid: a variant names its item
and an item its categories, so the first variant job cannot be sent before the categories' job
and then the first item job are complete, and the sync is done when the last variant job is:
three jobs' time (3 x ``--job-delay``) on the critical path. The table shows both, and the
ratio against their sum. Each process's CPU seconds during the first sync are shown apart
(the machine has 2 cores; the stand-in's share is not the library's).

``--burst-only`` is a diagnosis, not the figure: the workers' limiter is given only the
per-second windows, so it does not spread each minute's budget over the minute (the stand-in
still enforces Klaviyo's limits: a 429 would show); it shows what the pipeline itself does.

``--scale 0.1`` runs Klaviyo's windows ten times slower, where this machine's CPU is not the
bound and the pipeline's pacing shows; ``--requests-log FILE`` appends each round's requests
(time, endpoint, path, status) as JSON lines, to see where a slow round's time went.

    .venv/bin/python benchmarks/catalog_sync.py [--products 10000] [--workers 2] [--scale 1]
        [--job-delay 0.2] [--rounds 3] [--burst-only] [--requests-log FILE] [--smoke]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import statistics
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


def scaled_limits(scale: float, *, burst_only: bool = False) -> dict[str, list[list[float]]]:
    """Klaviyo's catalog windows, time-scaled; ``burst_only``: the per-second ones alone."""
    return {
        endpoint: [[limit, period / scale] for limit, period in windows
                   if not burst_only or period <= 1.0]
        for endpoint, windows in KLAVIYO_RATE_LIMITS.items()
        if "catalog" in endpoint
    }  # fmt: skip


def allowed_seconds(requests: dict[str, int], scale: float) -> float:
    """The longest span any write endpoint needs for its requests under its fixed windows."""
    spans = [0.0]
    for endpoint, count in requests.items():
        for limit, period in KLAVIYO_RATE_LIMITS[endpoint]:
            spans.append(math.floor((count - 1) / limit) * period / scale if count else 0.0)
    return max(spans)


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process and its waited-for children (RQ's work horses), from
    /proc (Linux); 0.0 where there is none."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    ticks = os.sysconf("SC_CLK_TCK")
    return sum(int(fields[i]) for i in (11, 12, 13, 14)) / ticks


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
    limits = scaled_limits(args.scale, burst_only=args.burst_only)
    with redis_server() as redis_url:
        stand_in = CatalogStandIn(args.scale, args.job_delay)
        env = worker_env(redis_url, stand_in.url, rate_limits=limits)
        workers = [start_worker(redis_url, env, simple=args.simple) for _ in range(args.workers)]
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
                pids = {"stand-in": stand_in.process.pid, "sync": os.getpid(),
                        "workers": [w.pid for w in workers]}  # fmt: skip
                cpu_before = _cpu(pids)
                started, wall = time.monotonic(), time.time()
                first = klaviyo.catalog_sync()
                first_seconds = time.monotonic() - started
                cpu = {k: v - cpu_before[k] for k, v in _cpu(pids).items()}
                counts_before = stand_in.get("request-counts")
                requests = stand_in.get("requests")
                timeline = _timeline(requests, wall)
                if args.requests_log:
                    _write_requests(args.requests_log, requests, wall)
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
        "allowed": allowed_seconds(writes, args.scale), "cpu": cpu,
        "chain": 3 * args.job_delay, "timeline": timeline,
    }  # fmt: skip


def _timeline(requests: list[dict[str, Any]], started: float) -> dict[str, float]:
    """From the stand-in's request log: when the first write came, and how many write requests
    of each endpoint a second went while it was being written (first to last)."""
    times: dict[str, list[float]] = {}
    for request in requests:
        if request["endpoint"] in WRITES and request["received_at"] >= started:
            times.setdefault(request["endpoint"], []).append(request["received_at"] - started)
    found = {"first_write": min((min(t) for t in times.values()), default=0.0)}
    for endpoint, stamps in times.items():
        span = max(stamps) - min(stamps)
        found[endpoint] = (len(stamps) - 1) / span if span > 0 else 0.0
    return found


def _write_requests(path: str, requests: list[dict[str, Any]], started: float) -> None:
    """The stand-in's request log of the sync from empty, one JSON line per request (seconds
    since the start, endpoint, status): for reading where a slow round's time went."""
    with open(path, "a") as out:
        for request in requests:
            if request["received_at"] >= started:
                line = {"at": round(request["received_at"] - started, 4), "path": request["path"],
                        "endpoint": request["endpoint"], "status": request["status"]}  # fmt: skip
                out.write(json.dumps(line) + "\n")
        out.write(json.dumps({"round": "end"}) + "\n")


def _cpu(pids: dict[str, Any]) -> dict[str, float]:
    return {
        name: sum(cpu_seconds(pid) for pid in (pid if isinstance(pid, list) else [pid]))
        for name, pid in pids.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--products", type=int, default=10_000, help="products (x 3 variants)")
    parser.add_argument("--workers", type=int, default=2, help="worker processes beside the sync")
    parser.add_argument(
        "--simple",
        action="store_true",
        help="workers run jobs in their own process (`worker --simple`)",
    )
    parser.add_argument("--scale", type=float, default=1.0, help="time-scale factor")
    parser.add_argument("--job-delay", type=float, default=0.2, help="the stand-in's job time")
    parser.add_argument("--rounds", type=int, default=3, help="fresh runs; the median is shown")
    parser.add_argument(
        "--burst-only",
        action="store_true",
        help="a diagnosis: our limiter gets only the per-second windows (the stand-in still "
        "enforces Klaviyo's all), so it does not spread each minute's budget over the minute",
    )
    parser.add_argument(
        "--requests-log",
        metavar="FILE",
        help="append each round's requests (time, endpoint, status) as JSON lines",
    )
    args = parse_args(parser, smoke={"products": 60, "workers": 1, "rounds": 1})
    results = []
    for _ in range(args.rounds):
        result = run(args)
        results.append(result)
        if result["items"] != args.products or result["variants"] != 3 * args.products:
            raise SystemExit("Klaviyo (the stand-in) does not hold the whole catalog")
        if result["second_writes"]:
            raise SystemExit("the second sync wrote")
    writes = results[0]["writes"]
    allowed, chain = results[0]["allowed"], results[0]["chain"]
    print(
        f"catalog sync: {args.products:,} products x 3 variants, Klaviyo's catalog limits "
        f"time-scaled 1/{args.scale:g}, {args.workers} worker(s) + the sync's own, stand-in "
        f"jobs take {args.job_delay:g} s"
        + ("; our limiter: per-second windows only" if args.burst_only else "")
        + "; write requests: "
        + ", ".join(f"{n.removeprefix('bulk_create_catalog_')} {c}" for n, c in writes.items())
        + f"; allowed: limits {allowed:.2f} s + dependency chain {chain:.2f} s"
    )
    rows = []
    for number, result in enumerate(results, 1):
        first, second, cpu = result["first"], result["second"], result["cpu"]
        line = result["timeline"]
        rows.append(
            [
                number,
                f"{result['first_seconds']:.2f}",
                f"{line['first_write']:.2f}",
                f"{line.get(WRITES[1], 0):.0f} / {line.get(WRITES[2], 0):.0f}",
                f"{result['first_seconds'] / max(allowed + chain, 1e-9):.2f}x",
                f"{result['first_seconds'] / allowed:.2f}x" if allowed else "-",
                sum(result["writes"].values()),
                len(first.failed),
                result["throttled"],
                f"{cpu['sync']:.1f} / {cpu['workers']:.1f} / {cpu['stand-in']:.1f}",
                f"{result['second_seconds']:.2f}",
                result["second_writes"],
                f"{second.plan.items.unchanged:,} / {second.plan.variants.unchanged:,}",
            ]
        )
    if len(results) > 1:
        median = statistics.median(r["first_seconds"] for r in results)
        again = statistics.median(r["second_seconds"] for r in results)
        blank = [""] * 4
        rows.append(
            ["median", f"{median:.2f}", "", "", f"{median / max(allowed + chain, 1e-9):.2f}x",
             f"{median / allowed:.2f}x" if allowed else "-", *blank, f"{again:.2f}", "", ""]
        )  # fmt: skip
    headers = ["round", "from empty s", "first write s", "item / variant POSTs a s",
               "x allowed", "x limits only", "writes", "failed",
               "429s", "CPU s sync / workers / stand-in", "re-sync s", "re-sync writes",
               "unchanged items / variants"]  # fmt: skip
    print(table(headers, rows))


if __name__ == "__main__":
    main()
