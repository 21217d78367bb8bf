"""Benchmark 3, a drain at Klaviyo's limits: how much of the budget it gets, and how politely.

The stand-in enforces Klaviyo's published limits as Klaviyo does (fixed windows; Bulk Create
Events 10/s burst and 150/min steady; 429 with Retry-After; RateLimit-* headers on every other
answer), time-scaled: every period divided by ``--scale`` with the same counts. The workers get
the same scaled limits (``KLAVIYO_RATE_LIMITS``) and, so that the event rate stays Klaviyo's
real one (150 requests of 1,000 events a minute = 2,500 events/s), requests of 1,000 / scale
events (``KLAVIYO_DRAIN_BATCH``; ``--batch`` for fewer, when the machine is too busy to
process 2,500 events/s and would measure its CPU instead of the limiter). Side by side: 1 and 4
worker processes (``KLAVIYO_DRAIN_CONCURRENCY`` = the number of workers), alone on the account
and with another integration spending ``--other`` of each steady window's budget (its requests
evenly spaced, counted by ``/_fake/spend``), each on a backlog that outlasts the measured
windows; ``--rounds`` rounds, interleaved, medians.

    .venv/bin/python benchmarks/rate_limited_drain.py [--scale 10] [--windows 3] [--workers 1,4]
        [--other 0.2] [--rounds 3] [--batch N] [--smoke]

Budget = 150 per steady window for ``--windows`` of the stand-in's windows after the first (the
first, the workers warming up, is not measured; the windows are rebuilt from the 202s' times as
the stand-in's engine starts them; the other integration starts right after our first request);
used = the 202s in them, ours plus the other integration's. 429 share = our 429s / our requests
over the whole run. Then the rest of the backlog is delivered and checked: every event accepted
once, no failed job, no dead letter (each 429 was waited out and retried, or an event would be
missing).
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time
from typing import Any

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

ENDPOINT = "bulk_create_events"
STEADY_LIMIT, STEADY_PERIOD = KLAVIYO_RATE_LIMITS[ENDPOINT][1]


def scaled_limits(scale: float) -> dict[str, list[list[float]]]:
    return {
        endpoint: [[limit, period / scale] for limit, period in windows]
        for endpoint, windows in KLAVIYO_RATE_LIMITS.items()
        if endpoint in (ENDPOINT, "create_event")
    }


class OtherIntegration(threading.Thread):
    """Another private-key integration on the account: one request every ``spacing`` seconds,
    counted by the stand-in in the same windows. Records when each was admitted or refused."""

    def __init__(self, stand_in: StandIn, spacing: float) -> None:
        super().__init__(daemon=True)
        self.stand_in = stand_in
        self.spacing = spacing
        self.stopping = threading.Event()
        self.admitted: list[float] = []
        self.refused = 0

    def run(self) -> None:
        next_at = time.monotonic()
        while not self.stopping.is_set():
            reply = self.stand_in.http.post("/spend", json={"endpoint": ENDPOINT, "count": 1})
            if reply.json()["admitted"]:
                self.admitted.append(time.time())
            else:
                self.refused += 1
            next_at += self.spacing
            self.stopping.wait(max(0.0, next_at - time.monotonic()))

    def stop(self) -> None:
        self.stopping.set()
        self.join(timeout=10)


def server_windows(ours: list[float], theirs: list[float], period: float) -> list[tuple[int, int]]:
    """(our 202s, the other integration's) in each of the stand-in's steady windows, rebuilt
    from the admission times as its engine starts them: a window starts with the first request
    admitted after the last one ended."""
    stamps = sorted([(at, 0) for at in ours] + [(at, 1) for at in theirs])
    counts: list[list[int]] = []
    start = None
    for at, whose in stamps:
        if start is None or at - start >= period:
            start = at
            counts.append([0, 0])
        counts[-1][whose] += 1
    return [(a, b) for a, b in counts]


def run(
    redis_url: str, *, workers: int, other: float, scale: float, windows: int, batch: int
) -> dict[str, Any]:
    period = STEADY_PERIOD / scale
    ours_per_window = STEADY_LIMIT * (1 - other)
    # the first window (the workers warming up) is not measured; the last one's worth is the tail
    events = round((windows + 2) * ours_per_window) * batch
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
        integration = None
        try:
            if not wait_for(lambda: len(Worker.all(connection=connection)) >= workers, timeout=60):
                raise SystemExit("the workers did not start")
            outbox = Outbox(connection)
            outbox.refresh_flag()
            outbox.enqueue_drain()
            if other > 0:  # from our first request on (the workers' start is not measured)
                wait_for(lambda: stand_in.stats()["accepted"] > 0, timeout=60, poll=0.005)
                integration = OtherIntegration(stand_in, period / (STEADY_LIMIT * other))
                integration.start()
            delivered = wait_for(
                lambda: stand_in.stats()["accepted"] >= events,
                timeout=(windows + 2) * period * 4 + 60,
                poll=0.1,
            )
        finally:
            if integration is not None:
                integration.stop()
            for process in processes:
                stop(process)
        stats, throttled = stand_in.stats(), stand_in.throttled()
        requests = [r for r in stand_in.requests() if r["path"].startswith("/api/")]
    if not delivered:
        print(f"warning: {workers} worker(s) did not deliver everything in time")
    theirs = integration.admitted if integration is not None else []
    measured = server_windows(
        [r["received_at"] for r in requests if r["status"] == 202], theirs, period
    )[1 : windows + 1]
    if len(measured) < windows:
        print(f"warning: {workers} worker(s): only {len(measured)} full windows after the first")
    ours = sum(n for n, _ in measured)
    other_202s = sum(n for _, n in measured)
    queue = Queue("klaviyo", connection=connection)
    return {
        "ours": ours,
        "theirs": other_202s,
        "allowed": windows * STEADY_LIMIT,
        "used": (ours + other_202s) / (windows * STEADY_LIMIT),
        "share_429": throttled / len(requests) if requests else 0.0,
        "throttled": throttled,
        "requests": len(requests),
        "refused": integration.refused if integration is not None else 0,
        "events_per_s": ours * batch / (windows * period),
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
    parser.add_argument(
        "--other", type=float, default=0.2, help="share of each window another integration spends"
    )
    parser.add_argument("--rounds", type=int, default=3, help="rounds (interleaved), medians")
    parser.add_argument(
        "--batch",
        type=int,
        default=0,
        help="events per request (default 1000 / scale: Klaviyo's real event rate); fewer "
        "measure the limiter, not the CPU, on a busy machine",
    )
    args = parse_args(
        parser,
        smoke={
            "scale": 60.0,
            "windows": 1,
            "workers": "2",
            "other": 0.2,
            "rounds": 1,
            "batch": 5,
        },
    )
    if not 0 <= args.other < 1:
        parser.error("--other is a share of the budget, 0 <= share < 1")

    counts = [int(n) for n in args.workers.split(",")]
    variants = [(n, 0.0) for n in counts]
    if args.other > 0:
        variants += [(n, args.other) for n in counts]
    results: dict[tuple[int, float], list[dict[str, Any]]] = {v: [] for v in variants}
    with redis_server() as redis_url:
        for _ in range(args.rounds):
            for workers, other in variants:
                results[(workers, other)].append(
                    run(
                        redis_url,
                        workers=workers,
                        other=other,
                        scale=args.scale,
                        windows=args.windows,
                        batch=args.batch or max(1, round(1000 / args.scale)),
                    )
                )
                time.sleep(1.0)
    first = results[variants[0]][0]
    period = STEADY_PERIOD / args.scale
    print(
        f"rate-limited drain: Klaviyo's limits enforced, time-scaled 1/{args.scale:g} "
        f"(steady window {period:g} s, {first['batch']} events per request); "
        f"{args.windows} steady windows measured; median of {args.rounds} round(s)"
    )

    def med(runs: list[dict[str, Any]], key: str) -> float:
        return statistics.median(r[key] for r in runs)

    rows = []
    for workers, other in variants:
        runs = results[(workers, other)]
        rows.append(
            [
                workers,
                f"{other:.0%} of the budget" if other else "-",
                f"{med(runs, 'ours'):g}",
                f"{med(runs, 'theirs'):g}" if other else "-",
                f"{med(runs, 'used'):.1%}",
                f"{med(runs, 'share_429'):.1%} ({med(runs, 'throttled'):g} of "
                f"{med(runs, 'requests'):g})",
                f"{med(runs, 'refused'):g}" if other else "-",
                f"{med(runs, 'events_per_s'):,.0f}",
                f"{max(r['lost'] for r in runs)} / {max(r['duplicates'] for r in runs)}",
                f"{max(r['failed_jobs'] for r in runs)} / {max(r['dead'] for r in runs)}",
            ]
        )
    print(
        table(
            [
                "workers",
                "other integration",
                "our 202s",
                "its 202s",
                f"of the budget ({first['allowed']})",
                "429s / our requests",
                "its 429s",
                "our events/s (scaled)",
                "lost / duplicates",
                "failed jobs / dead",
            ],
            rows,
        )
    )
    spread = [f"{r['used']:.1%}" for v in variants for r in results[v]]
    print(f"budget used, every run (by variant, rounds in order): {', '.join(spread)}")


if __name__ == "__main__":
    main()
