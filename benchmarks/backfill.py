"""Benchmark 7, a historical backfill at Klaviyo's limits: ``flask klaviyo backfill orders FILE``
of N past orders (``store history``: ~3.6 events an order), timed from the command's start until
it returns with everything delivered, against the time Klaviyo's Bulk Create Events budget
allows for those events; the RSS of the command and of the workers, the outbox's length and
Redis's memory sampled as it runs.

The stand-in enforces Klaviyo's published limits (fixed windows: 10/s burst, 150/min steady;
429 + Retry-After), time-scaled by ``--scale`` (periods divided, counts kept); the workers and
the command get the same scaled ``KLAVIYO_RATE_LIMITS`` and requests of 1,000 / scale events
(``KLAVIYO_DRAIN_BATCH``), so the event rate is Klaviyo's real one (2,500 events/s steady).
"Allowed" is the earliest the last request could be sent under those windows, the first one
sent at 0. The workers are ``flask klaviyo worker --simple`` (no fork per job: their RSS is
the drain's own).

    .venv/bin/python benchmarks/backfill.py [--orders 100000] [--workers 2] [--scale 1] [--smoke]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import redis
from _support import (
    BENCH_APP,
    VENV_BIN,
    StandIn,
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

from example_store.history import orders, write_lines
from flask_klaviyo.testing import KLAVIYO_RATE_LIMITS

SAMPLES = 12  # RSS samples over the run (about)


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a running process so far, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def events_of(order: dict[str, Any]) -> int:
    status = sum(1 for key in ("fulfilled_at", "canceled_at", "refunded_at") if key in order)
    return 1 + len(order["lines"]) + status


def scaled_limits(scale: float) -> dict[str, list[list[float]]]:
    return {
        endpoint: [[limit, period / scale] for limit, period in windows]
        for endpoint, windows in KLAVIYO_RATE_LIMITS.items()
        if endpoint in ("bulk_create_events", "create_event")
    }


def allowed_seconds(requests: int, scale: float) -> float:
    """When the last of ``requests`` can go under the fixed windows, the first at 0."""
    windows = [
        (limit, period / scale) for limit, period in KLAVIYO_RATE_LIMITS["bulk_create_events"]
    ]
    counts: list[dict[int, int]] = [{} for _ in windows]
    at = 0.0
    for _ in range(requests):
        while True:
            moved = False
            for (limit, period), used in zip(windows, counts, strict=True):
                index = math.floor(at / period + 1e-9)
                if used.get(index, 0) >= limit:
                    at = (index + 1) * period
                    moved = True
            if not moved:
                break
        for (_, period), used in zip(windows, counts, strict=True):
            index = math.floor(at / period + 1e-9)
            used[index] = used.get(index, 0) + 1
    return at


def run(args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    path = folder / "orders.jsonl"
    with path.open("w") as out:
        write_lines(orders(args.orders, seed=7), out)
    expected = sum(events_of(json.loads(line)) for line in path.open())
    batch = max(1, round(1000 / args.scale))
    limits = scaled_limits(args.scale)
    samples: list[tuple[float, float, float, int, float]] = []
    with (
        redis_server() as redis_url,
        StandIn(rate_limits="klaviyo", time_scale=args.scale) as stand_in,
    ):
        env = worker_env(redis_url, stand_in.url, rate_limits=limits, drain_batch=str(batch))
        workers = [start_worker(redis_url, env, simple=True) for _ in range(args.workers)]
        connection = redis.Redis.from_url(redis_url)
        try:
            if not wait_for(lambda: len(Worker.all(connection=connection)) >= args.workers,
                            timeout=60):  # fmt: skip
                raise SystemExit("the workers did not start")
            command = [str(VENV_BIN / "flask"), "--app", str(BENCH_APP), "klaviyo", "backfill",
                       "orders", str(path)]  # fmt: skip
            log = (folder / "backfill.log").open("w")
            started = time.monotonic()
            cli = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
            every = max(0.2, allowed_seconds(math.ceil(expected / batch), args.scale) / SAMPLES)
            usage = None
            while True:
                pid, status, usage = os.wait4(cli.pid, os.WNOHANG)
                if pid:
                    cli.returncode = os.waitstatus_to_exitcode(status)
                    break
                try:
                    sample = (time.monotonic() - started, rss_mb(cli.pid),
                              max(rss_mb(w.pid) for w in workers),
                              int(connection.xlen("klaviyo:outbox:klaviyo")),
                              connection.info("memory")["used_memory"] / 1e6)  # fmt: skip
                except (FileNotFoundError, ProcessLookupError):
                    break
                samples.append(sample)
                time.sleep(every)
            wall = time.monotonic() - started
            cpu = {
                "CLI": usage.ru_utime + usage.ru_stime,
                "workers": sum(cpu_seconds(w.pid) for w in workers),
                "stand-in": cpu_seconds(stand_in.process.pid),
            }
            log.close()
            stats, throttled = stand_in.stats(), stand_in.throttled()
            requests = [r for r in stand_in.requests() if r["path"].startswith("/api/")]
        finally:
            for worker in workers:
                stop(worker)
    output = (folder / "backfill.log").read_text()
    if cli.returncode != 0:
        raise SystemExit(f"the backfill exited {cli.returncode}:\n{output[-3000:]}")
    sent = [r for r in requests if r["status"] == 202]
    first = min(r["received_at"] for r in sent)
    last = max(r["received_at"] for r in sent)
    return {
        "orders": args.orders, "events": expected, "accepted": stats["accepted"],
        "duplicates": stats["duplicates"], "requests": len(sent), "throttled": throttled,
        "wall": wall, "span": last - first,
        "allowed": allowed_seconds(math.ceil(expected / batch), args.scale),
        "samples": samples, "batch": batch, "output": output, "cpu": cpu,
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, default=100_000, help="past orders in the file")
    parser.add_argument("--workers", type=int, default=2, help="worker processes")
    parser.add_argument("--scale", type=float, default=1.0, help="time-scale factor")
    args = parse_args(parser, smoke={"orders": 400, "workers": 1, "scale": 30.0})
    with tempfile.TemporaryDirectory(prefix="klaviyo-backfill-bench-") as folder:
        result = run(args, Path(folder))
    samples = result["samples"]
    # Once the command queues (its imports done): min-max, the flatness that matters.
    busy = [s for s in samples if s[3] > 0] or samples
    cli = [s[1] for s in busy] or [0.0]
    worker = [s[2] for s in busy] or [0.0]
    print(
        f"backfill: {result['orders']:,} past orders = {result['events']:,} events, Bulk Create "
        f"Events limits time-scaled 1/{args.scale:g}, {result['batch']} events a request, "
        f"{args.workers} worker(s) (--simple); wall = the command's run, allowed = the last "
        "request's earliest time under the windows"
    )
    print(
        table(
            [
                "orders",
                "events accepted",
                "requests",
                "wall s",
                "allowed s",
                "x allowed",
                "first-to-last request s",
                "429s",
                "duplicates",
                "CLI RSS MB",
                "worker RSS MB",
                "outbox peak",
                "Redis MB peak",
            ],
            [
                [
                    f"{result['orders']:,}",
                    f"{result['accepted']:,} / {result['events']:,}",
                    result["requests"],
                    f"{result['wall']:.1f}",
                    f"{result['allowed']:.1f}",
                    f"{result['wall'] / max(result['allowed'], 1e-9):.2f}x",
                    f"{result['span']:.1f}",
                    result["throttled"],
                    result["duplicates"],
                    f"{min(cli):.0f}-{max(cli):.0f}",
                    f"{min(worker):.0f}-{max(worker):.0f}",
                    f"{max(s[3] for s in samples):,}" if samples else "-",
                    f"{max(s[4] for s in samples):.0f}" if samples else "-",
                ]
            ],
        )
    )
    print("as it ran (s: CLI RSS MB / worker RSS MB / outbox entries / Redis MB): " + ", ".join(
        f"{t:.0f}: {c:.0f}/{w:.0f}/{d:,}/{r:.0f}" for t, c, w, d, r in samples))  # fmt: skip
    print(
        "CPU seconds over the run: "
        + ", ".join(f"{name} {seconds:.1f}" for name, seconds in result["cpu"].items())
        + f" (wall {result['wall']:.1f} s, {os.cpu_count()} cores shared with other work)"
    )
    if result["accepted"] != result["events"] or result["duplicates"]:
        print(result["output"][-3000:])
        raise SystemExit("Klaviyo (the stand-in) does not hold every event exactly once")


if __name__ == "__main__":
    main()
