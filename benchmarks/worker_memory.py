"""Benchmark 5, worker memory: the worker's resident memory while it delivers a long stream.

One long-running worker process running its jobs in-process (``flask klaviyo worker --simple``,
SimpleWorker: anything a drain leaked would stay in it; RQ's default Worker forks a fresh child
per job and would hide it), an unthrottled stand-in that only counts and dedups. The outbox is
kept topped up (never more than ``--chunk`` waiting) until ``--events`` were pushed; the
worker's RSS (from /proc) is sampled every ``--sample`` delivered events.

    .venv/bin/python benchmarks/worker_memory.py [--events 300000] [--sample 50000]
    .venv/bin/python benchmarks/worker_memory.py --events 1000000     # the full claim (~3 min)
    .venv/bin/python benchmarks/worker_memory.py --smoke              # a few seconds

Verdict: growth after the first sample (warmed up) must stay under ``--bound`` MB.
"""

from __future__ import annotations

import argparse
import time

import redis
from _support import (
    UNLIMITED,
    StandIn,
    fill,
    parse_args,
    redis_server,
    rss_mb,
    start_worker,
    stop,
    table,
    wait_for,
    worker_env,
)
from rq import Worker

from flask_klaviyo.delivery.outbox import Outbox


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=300_000)
    parser.add_argument("--sample", type=int, default=50_000, help="events between samples")
    parser.add_argument("--chunk", type=int, default=50_000, help="most events waiting at once")
    parser.add_argument("--bound", type=float, default=25.0, help="allowed growth, MB")
    parser.add_argument("--timeout", type=float, default=900.0, help="give up after (s)")
    args = parse_args(
        parser, smoke={"events": 3000, "sample": 1000, "chunk": 1000, "timeout": 60.0}
    )

    samples: list[tuple[int, float, float]] = []
    with redis_server() as redis_url, StandIn(rate_limits=UNLIMITED) as stand_in:
        connection = redis.Redis.from_url(redis_url)
        outbox = Outbox(connection)
        env = worker_env(redis_url, stand_in.url, rate_limits=UNLIMITED)
        worker = start_worker(redis_url, env, simple=True)
        started = time.monotonic()
        try:
            if not wait_for(lambda: len(Worker.all(connection=connection)) >= 1, timeout=60):
                raise SystemExit("the worker did not start")
            samples.append((0, time.monotonic() - started, rss_mb(worker.pid)))
            pushed = 0
            next_sample = args.sample
            while True:
                accepted = stand_in.stats()["accepted"]
                if accepted >= next_sample:
                    samples.append((accepted, time.monotonic() - started, rss_mb(worker.pid)))
                    next_sample += args.sample
                if accepted >= args.events:
                    break
                if pushed < args.events and outbox.depth() < args.chunk // 2:
                    count = min(args.chunk, args.events - pushed)
                    fill(connection, count, start=pushed)
                    pushed += count
                if time.monotonic() - started > args.timeout:
                    print(f"stopped after {args.timeout:g} s (bounded run)")
                    break
                time.sleep(0.05)
        finally:
            stop(worker)
        stats = stand_in.stats()

    warm = samples[1][2] if len(samples) > 1 else samples[0][2]
    rows = [
        [f"{n:,}", f"{at:.0f}", f"{mb:.1f}", f"{mb - warm:+.1f}", f"{mb / warm:.2f}x"]
        for n, at, mb in samples
    ]
    growth = max(mb for _, _, mb in samples[1:]) - warm if len(samples) > 1 else 0.0
    delivered = samples[-1][0]
    rate = delivered / max(samples[-1][1] - samples[0][1], 1e-9)
    print(
        f"worker memory (SimpleWorker: every drain in one process), {delivered:,} events at "
        f"~{rate:,.0f} events/s; duplicates {stats['duplicates']}, rejected {stats['rejected']}"
    )
    print(table(["events delivered", "s", "RSS MB", "vs warm (2nd row)", "x warm"], rows))
    verdict = "bounded" if growth <= args.bound else "GROWING"
    print(f"growth after warm-up: {growth:+.1f} MB (bound {args.bound:g} MB): {verdict}")


if __name__ == "__main__":
    main()
