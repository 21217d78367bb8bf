"""Benchmark 2, drain throughput: a backlog, one worker process, an unthrottled stand-in.

Side by side in one run (interleaved, so machine noise hits them alike):
  drain (Worker)          the outbox drain: many events per Bulk Create Events request
  job per event (Worker)  one RQ job per event (``flask_klaviyo.jobs.deliver_events``) under
                          RQ's default forking Worker
  job per event (Simple)  the same under SimpleWorker (no fork per job)

    .venv/bin/python benchmarks/drain_throughput.py [--events 100000] [--rounds 3]
        [--job-events 400] [--job-seconds 10] [--smoke]

The per-job variants are bounded (``--job-events`` jobs or ``--job-seconds``, whichever comes
first) and their time for the whole backlog is extrapolated from their rate (marked "~").
Events/s are medians over ``--rounds``; the stand-in (its own process) keeps no events, only
counts and dedups them. Loopback only.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import redis
from _support import (
    UNLIMITED,
    StandIn,
    event,
    fill,
    median,
    parse_args,
    redis_server,
    start_worker,
    stop,
    table,
    wait_for,
    worker_env,
)
from rq import Queue, Worker

from flask_klaviyo.delivery.outbox import Outbox

DELIVER_JOB = "flask_klaviyo.jobs.deliver_events"


def ready_worker(redis_url: str, stand_in: StandIn, *, simple: bool = False) -> Any:
    """A long-running worker process, once it listens (its start-up is not measured)."""
    env = worker_env(redis_url, stand_in.url, rate_limits=UNLIMITED)
    worker = start_worker(redis_url, env, simple=simple)
    connection = redis.Redis.from_url(redis_url)
    if not wait_for(lambda: len(Worker.all(connection=connection)) >= 1, timeout=60):
        stop(worker)
        raise SystemExit("the worker did not start")
    return worker


def drain_round(redis_url: str, stand_in: StandIn, events: int) -> float:
    """Seconds for one worker process to deliver a backlog of ``events`` through the drain."""
    connection = redis.Redis.from_url(redis_url)
    connection.flushall()
    before = stand_in.stats()["accepted"]
    fill(connection, events, start=before, schedule=False)  # fresh unique ids every round
    worker = ready_worker(redis_url, stand_in)
    try:
        started = time.perf_counter()
        outbox = Outbox(connection)
        outbox.refresh_flag()
        outbox.enqueue_drain()  # what the first push of a busy spell does
        done = wait_for(
            lambda: stand_in.stats()["accepted"] - before >= events, timeout=600, poll=0.02
        )
        elapsed = time.perf_counter() - started
    finally:
        stop(worker)
    if not done:
        raise SystemExit("the drain did not finish within 600 s")
    return elapsed


def jobs_round(
    redis_url: str, stand_in: StandIn, *, simple: bool, events: int, seconds: float
) -> tuple[int, float]:
    """(events delivered, seconds) with one RQ job per event, bounded by count and time."""
    connection = redis.Redis.from_url(redis_url)
    connection.flushall()
    queue = Queue("klaviyo", connection=connection)
    before = stand_in.stats()["accepted"]
    payloads = [[event(n + 10_000_000).to_dict()] for n in range(before, before + events)]
    worker = ready_worker(redis_url, stand_in, simple=simple)
    try:
        started = time.perf_counter()
        for payload in payloads:  # ~0.7 ms each; the worker starts on the first at once
            queue.enqueue(DELIVER_JOB, payload, result_ttl=0)
        wait_for(
            lambda: stand_in.stats()["accepted"] - before >= events,
            timeout=max(0.0, seconds - (time.perf_counter() - started)),
            poll=0.05,
        )
        elapsed = time.perf_counter() - started
        delivered = stand_in.stats()["accepted"] - before
    finally:
        stop(worker)
    return delivered, elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000, help="backlog for the drain")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of each variant")
    parser.add_argument("--job-events", type=int, default=400, help="jobs per per-job round")
    parser.add_argument("--job-seconds", type=float, default=10.0, help="time per per-job round")
    args = parse_args(
        parser, smoke={"events": 2000, "rounds": 1, "job_events": 20, "job_seconds": 3.0}
    )

    rates: dict[str, list[float]] = {"drain": [], "worker": [], "simple": []}
    with redis_server() as redis_url, StandIn(rate_limits=UNLIMITED) as stand_in:
        for _ in range(args.rounds):
            seconds = drain_round(redis_url, stand_in, args.events)
            rates["drain"].append(args.events / seconds)
            for kind in ("worker", "simple"):
                done, seconds = jobs_round(
                    redis_url,
                    stand_in,
                    simple=kind == "simple",
                    events=args.job_events,
                    seconds=args.job_seconds,
                )
                rates[kind].append(done / seconds)
        stats = stand_in.stats()

    base = median(rates["worker"])
    rows = []
    labels = {
        "drain": "drain, bulk requests (Worker)",
        "worker": "one job per event (Worker)",
        "simple": "one job per event (SimpleWorker)",
    }
    for kind, label in labels.items():
        rate = median(rates[kind])
        whole = args.events / rate
        measured = kind == "drain"
        rows.append(
            [
                label,
                f"{args.events:,}"
                if measured
                else f"<= {args.job_events:,} / {args.job_seconds:g} s",
                f"{rate:,.0f}",
                f"{rate / base:,.1f}x",
                f"{whole:,.1f} s" if measured else f"~{whole:,.0f} s (extrapolated)",
            ]
        )
    print(
        f"drain throughput: one worker process, unthrottled stand-in, median of {args.rounds} "
        f"rounds (duplicates at the stand-in: {stats['duplicates']}, rejected: {stats['rejected']})"
    )
    print(
        table(
            [
                "variant",
                "events per round",
                "events/s",
                "x job per event",
                f"{args.events:,} events",
            ],
            rows,
        )
    )


if __name__ == "__main__":
    main()
