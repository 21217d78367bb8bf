"""Benchmark 4, latency: from the response (the push to the outbox) to Klaviyo's 202.

A long-running worker process (``flask klaviyo worker``, RQ's forking Worker, Klaviyo's default
limits) and the stand-in enforcing Klaviyo's real limits, unscaled. Events are pushed one per
"request" at a steady rate for a while; the time of each push is recorded, and the stand-in
records when it accepted each event (``received_at``). Side by side: the rates in ``--rates``.

    .venv/bin/python benchmarks/latency.py [--rates 50,500] [--seconds 20] [--smoke]
"""

from __future__ import annotations

import argparse
import time

import redis
from _support import (
    StandIn,
    event,
    median,
    parse_args,
    percentile,
    redis_server,
    start_worker,
    stop,
    table,
    wait_for,
    worker_env,
)
from rq import Worker

from flask_klaviyo.delivery.outbox import Outbox


def run_rate(
    connection: redis.Redis, stand_in: StandIn, *, rate: float, seconds: float, first: int
) -> dict[str, float]:
    outbox = Outbox(connection)
    count = int(rate * seconds)
    events = [event(first + n) for n in range(count)]
    pushed: dict[str, float] = {}
    before = stand_in.stats()["accepted"]
    requests_before = stand_in.stats()["requests"]
    throttled_before = stand_in.throttled()
    start = time.time()
    for n, item in enumerate(events):
        due = start + n / rate
        while (now := time.time()) < due:
            time.sleep(min(0.002, due - now))
        outbox.push([item])
        pushed[item.unique_id or ""] = time.time()
    if not wait_for(lambda: stand_in.stats()["accepted"] - before >= count, timeout=120):
        raise SystemExit(f"not everything arrived at {rate} events/s")
    received = {e["unique_id"]: e["received_at"] for e in stand_in.events()}
    delays = [received[uid] - at for uid, at in pushed.items()]
    stats = stand_in.stats()
    return {
        "rate": rate,
        "events": count,
        "p50": median(delays) * 1000,
        "p99": percentile(delays, 0.99) * 1000,
        "max": max(delays) * 1000,
        "requests": stats["requests"] - requests_before,
        "throttled": stand_in.throttled() - throttled_before,
        "duplicates": stats["duplicates"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates", default="50,500", help="events per second, comma-separated")
    parser.add_argument("--seconds", type=float, default=20.0, help="per rate")
    args = parse_args(parser, smoke={"rates": "20,100", "seconds": 2.0})

    results = []
    with (
        redis_server() as redis_url,
        StandIn(rate_limits="klaviyo", keep_events=True) as stand_in,
    ):
        connection = redis.Redis.from_url(redis_url)
        worker = start_worker(redis_url, worker_env(redis_url, stand_in.url))
        try:
            if not wait_for(lambda: len(Worker.all(connection=connection)) >= 1, timeout=60):
                raise SystemExit("the worker did not start")
            first = 0
            for rate in (float(r) for r in args.rates.split(",")):
                results.append(
                    run_rate(connection, stand_in, rate=rate, seconds=args.seconds, first=first)
                )
                first += int(rate * args.seconds)
                time.sleep(1.0)
        finally:
            stop(worker)
    print(
        f"latency from push to 202 at the stand-in (Klaviyo's limits enforced, unscaled), "
        f"{args.seconds:g} s per rate, one long-running worker process"
    )
    base = results[0]
    rows = [
        [
            f"{r['rate']:g}",
            f"{r['events']:,}",
            f"{r['p50']:.0f}",
            f"{r['p99']:.0f}",
            f"{r['max']:.0f}",
            f"{r['p99'] / base['p99']:.2f}x",
            r["requests"],
            f"{r['events'] / r['requests']:.1f}",
            r["throttled"],
            r["duplicates"],
        ]
        for r in results
    ]
    print(
        table(
            [
                "events/s",
                "events",
                "p50 ms",
                "p99 ms",
                "max ms",
                f"p99 x {base['rate']:g}/s",
                "requests",
                "events/request",
                "429s",
                "duplicates",
            ],
            rows,
        )
    )


if __name__ == "__main__":
    main()
