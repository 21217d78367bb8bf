"""Benchmark 3, a drain at Klaviyo's limits: how much of the allowed rate it gets.

The stand-in enforces Klaviyo's published limits as Klaviyo does (fixed windows; Bulk Create
Events 10/s burst and 150/min steady; 429 with Retry-After), time-scaled: every period divided
by ``--scale`` with the same counts. The workers get the same scaled limits
(``KLAVIYO_RATE_LIMITS``) and, so that the event rate stays Klaviyo's real one (150 requests of
1,000 events a minute = 2,500 events/s), requests of 1,000 / scale events
(``KLAVIYO_DRAIN_BATCH``). Side by side: 1 and 4 worker processes (``KLAVIYO_DRAIN_CONCURRENCY``
= the number of workers), each on a backlog that outlasts the measured windows.

    .venv/bin/python benchmarks/rate_limited_drain.py [--scale 10] [--windows 3] [--workers 1,4]
        [--smoke]

Achieved = 202 answers inside the first ``--windows`` steady windows (anchored at the first
request, as the stand-in anchors them); allowed = 150 per window. Then the rest of the backlog
is delivered and checked: every event accepted once, no failed job, no dead letter; the 429s
Klaviyo answered are counted (each was waited out and retried, or an event would be missing).
"""

from __future__ import annotations

import argparse
import time

import redis
from _support import (
    StandIn,
    fill,
    parse_args,
    redis_server,
    start_worker,
    stop,
    table,
    wait_for,
    worker_env,
)
from rq import Queue, Worker

from flask_klaviyo.delivery.deadletters import DeadLetters
from flask_klaviyo.delivery.outbox import Outbox
from flask_klaviyo.testing import KLAVIYO_RATE_LIMITS

STEADY_LIMIT, STEADY_PERIOD = KLAVIYO_RATE_LIMITS["bulk_create_events"][1]


def scaled_limits(scale: float) -> dict[str, list[list[float]]]:
    return {
        endpoint: [[limit, period / scale] for limit, period in windows]
        for endpoint, windows in KLAVIYO_RATE_LIMITS.items()
        if endpoint in ("bulk_create_events", "create_event")
    }


def run(redis_url: str, *, workers: int, scale: float, windows: int) -> dict[str, float]:
    batch = max(1, round(1000 / scale))
    period = STEADY_PERIOD / scale
    events = (windows + 1) * STEADY_LIMIT * batch  # the last window's worth is the tail
    connection = redis.Redis.from_url(redis_url)
    connection.flushall()
    fill(connection, events, schedule=False)
    with StandIn(rate_limits="klaviyo", time_scale=scale) as stand_in:
        env = worker_env(
            redis_url,
            stand_in.url,
            rate_limits=scaled_limits(scale),
            drain_batch=str(batch),
            drain_concurrency=str(workers),
        )
        processes = [start_worker(redis_url, env) for _ in range(workers)]
        try:
            if not wait_for(lambda: len(Worker.all(connection=connection)) >= workers, timeout=60):
                raise SystemExit("the workers did not start")
            outbox = Outbox(connection)
            outbox.refresh_flag()
            outbox.enqueue_drain()
            delivered = wait_for(
                lambda: stand_in.stats()["accepted"] >= events,
                timeout=(windows + 1) * period * 3 + 60,
                poll=0.1,
            )
        finally:
            for process in processes:
                stop(process)
        stats, throttled = stand_in.stats(), stand_in.throttled()
        requests = [r for r in stand_in.requests() if r["path"].startswith("/api/")]
    if not delivered:
        print(f"warning: {workers} worker(s) did not deliver everything in time")
    start = min(r["received_at"] for r in requests)
    end = start + windows * period
    achieved = sum(1 for r in requests if r["status"] == 202 and start <= r["received_at"] < end)
    queue = Queue("klaviyo", connection=connection)
    return {
        "workers": workers,
        "achieved": achieved,
        "allowed": windows * STEADY_LIMIT,
        "events_per_s": achieved * batch / (windows * period),
        "throttled": throttled,
        "lost": events - stats["accepted"],
        "duplicates": stats["duplicates"],
        "failed_jobs": queue.failed_job_registry.count,
        "dead": DeadLetters(connection).count(),
        "batch": batch,
        "events": events,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=10.0, help="time-scale factor")
    parser.add_argument("--windows", type=int, default=3, help="steady windows measured")
    parser.add_argument("--workers", default="1,4", help="worker counts to compare")
    args = parse_args(parser, smoke={"scale": 60.0, "windows": 1, "workers": "1,2"})

    results = []
    with redis_server() as redis_url:
        for count in (int(n) for n in args.workers.split(",")):
            results.append(run(redis_url, workers=count, scale=args.scale, windows=args.windows))
            time.sleep(1.0)
    first = results[0]
    period = STEADY_PERIOD / args.scale
    print(
        f"rate-limited drain: Klaviyo's limits enforced, time-scaled 1/{args.scale:g} "
        f"(steady window {period:g} s, {first['batch']} events per request, backlog "
        f"{first['events']:,}); {args.windows} steady windows measured"
    )
    rows = [
        [
            r["workers"],
            f"{r['achieved']} / {r['allowed']}",
            f"{r['achieved'] / r['allowed']:.1%}",
            f"{r['events_per_s']:,.0f}",
            r["throttled"],
            r["lost"],
            r["duplicates"],
            f"{r['failed_jobs']} / {r['dead']}",
            f"{(r['achieved'] / r['allowed']) / (first['achieved'] / first['allowed']):.2f}x",
        ]
        for r in results
    ]
    print(
        table(
            [
                "workers",
                "202s / allowed",
                "of allowed",
                "events/s (scaled)",
                "429s (all retried)",
                "lost",
                "duplicates",
                "failed jobs / dead",
                "x 1 worker",
            ],
            rows,
        )
    )


if __name__ == "__main__":
    main()
