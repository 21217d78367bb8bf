"""Shared pieces of the delivery benchmarks: an embedded Redis, the stand-in in its own process,
a fast backlog fill, RQ worker processes, and table printing. Loopback only, everything bounded.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import redis

from flask_klaviyo.delivery.outbox import DRAIN_FLAG_TTL, Outbox
from flask_klaviyo.embedded import embedded_redis_url, stop_embedded_redis
from flask_klaviyo.events import Event, viewed_product

API_KEY = "pk_bench_key"
VENV_BIN = Path(sys.executable).parent
BENCH_APP = Path(__file__).resolve().parent / "bench_app.py"
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
PROFILES = 1000  # distinct shoppers the events are spread over
# Limits so high nothing waits: the "unthrottled" runs (worker side and stand-in headers).
UNLIMITED = {
    "bulk_create_events": [[1_000_000_000, 60]],
    "create_event": [[1_000_000_000, 60]],
}


def parse_args(parser: argparse.ArgumentParser, *, smoke: dict[str, Any]) -> argparse.Namespace:
    """The command line, plus ``--smoke``: the same run with the tiny sizes in ``smoke`` (a few
    seconds; tests/test_benchmarks.py runs every script so). Options given explicitly still win.
    """
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="tiny sizes, a few seconds: checks the script works, measures nothing",
    )
    args = parser.parse_args()
    if args.smoke:
        parser.set_defaults(**smoke)
        args = parser.parse_args()
    return args


def event(n: int, *, profiles: int = PROFILES) -> Event:
    """A realistic Viewed Product for shopper ``n % profiles`` (about 600 bytes as JSON)."""
    shopper = n % profiles
    return viewed_product(
        PRODUCT,
        profile={"email": f"shopper{shopper}@shop.test", "first_name": "Sam"},
        render_id=f"render-{n}",
        visitor=f"visitor-{shopper}",
    )


@contextlib.contextmanager
def redis_server() -> Iterator[str]:
    """An embedded Redis for the run (the project's default), stopped afterwards."""
    folder = Path(tempfile.mkdtemp(prefix="klaviyo-bench-"))
    url = embedded_redis_url(folder)
    try:
        yield url
    finally:
        stop_embedded_redis(folder)


def fill(connection: redis.Redis, count: int, *, start: int = 0, schedule: bool = True) -> None:
    """Put ``count`` events in the outbox stream as the request side does (same entry format),
    a thousand per round trip; then schedule a drain the way the first push would."""
    outbox = Outbox(connection)
    template = json.dumps(event(0).to_dict(), separators=(",", ":"))
    template = template.replace(event(0).unique_id or "", "{uid}").replace(
        "shopper0@shop.test", "shopper{shopper}@shop.test"
    )
    for first in range(start, start + count, 1000):
        pipe = connection.pipeline(transaction=False)
        for n in range(first, min(first + 1000, start + count)):
            entry = template.replace("{uid}", f"bench-{n}").replace("{shopper}", str(n % PROFILES))
            pipe.xadd(outbox.stream, {"e": entry})
        pipe.execute()
    if schedule and connection.set(outbox.flag, "1", nx=True, ex=DRAIN_FLAG_TTL):
        outbox.enqueue_drain()


class StandIn:
    """``python -m flask_klaviyo.testing`` in its own process (its CPU is not ours)."""

    def __init__(
        self,
        *,
        rate_limits: Any = None,
        time_scale: float = 1.0,
        keep_events: bool = False,
    ) -> None:
        command = [sys.executable, "-m", "flask_klaviyo.testing", "--port", "0"]
        command += ["--api-key", API_KEY, "--time-scale", str(time_scale)]
        if rate_limits is not None:
            command += [
                "--rate-limits",
                rate_limits if isinstance(rate_limits, str) else json.dumps(rate_limits),
            ]
        if not keep_events:
            command.append("--no-keep-events")
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
        line = self.process.stdout.readline() if self.process.stdout else ""
        found = re.search(r"http://127\.0\.0\.1:\d+", line)
        if not found:
            self.process.kill()
            raise RuntimeError(f"the stand-in did not start: {line!r}")
        self.url = found.group(0)
        self.http = httpx.Client(base_url=self.url + "/_fake", timeout=30.0)

    def stats(self) -> dict[str, int]:
        return self.http.get("/stats").json()

    def throttled(self) -> int:
        return int(self.http.get("/rate-limits").json()["throttled"])

    def requests(self) -> list[dict[str, Any]]:
        return self.http.get("/requests").json()

    def events(self) -> list[dict[str, Any]]:
        return self.http.get("/events").json()

    def set_latency(self, seconds: float) -> None:
        self.http.post("/latency", json={"seconds": seconds})

    def close(self) -> None:
        self.http.close()
        stop(self.process)

    def __enter__(self) -> StandIn:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def worker_env(redis_url: str, api_url: str, **settings: Any) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KLAVIYO_")}
    env.update(
        KLAVIYO_REDIS_URL=redis_url, KLAVIYO_API_URL=api_url, KLAVIYO_PRIVATE_API_KEY=API_KEY
    )
    env["KLAVIYO_INSPECTOR"] = "false"  # as in production (auto: on for a loopback stand-in)
    for key, value in settings.items():
        env[f"KLAVIYO_{key.upper()}"] = value if isinstance(value, str) else json.dumps(value)
    return env


def start_worker(
    redis_url: str, env: dict[str, str], *, simple: bool = False, burst: bool = False
) -> subprocess.Popen[bytes]:
    """``flask klaviyo worker`` for a small app (benchmarks/bench_app.py): RQ's default forking
    Worker, or SimpleWorker with ``simple``; flask-klaviyo is imported before any fork."""
    command = [str(VENV_BIN / "flask"), "--app", str(BENCH_APP), "klaviyo", "worker"]
    if simple:
        command.append("--simple")
    if burst:
        command.append("--burst")
    return subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def stop(process: subprocess.Popen[Any], *, timeout: float = 30.0) -> None:
    """SIGTERM (RQ's warm shutdown), then SIGKILL; by pid, ours only."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def wait_for(condition: Any, *, timeout: float, poll: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(poll)
    return True


def rss_mb(pid: int) -> float:
    """Resident memory of a process, from /proc (MB)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def percentile(samples: Sequence[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


SIDE_BY_SIDE = (
    "variant", "p50", "p99", "added p50", "x untracked", "added p50 per round (median; min-max)",
)  # fmt: skip


def side_by_side(
    rounds: Sequence[dict[str, list[float]]], base: str = "untracked"
) -> list[list[str]]:
    """One row per variant of interleaved rounds (ms samples per variant per round): p50, p99,
    what it adds to ``base`` and each round's added p50 (the machine's drift shows there)."""
    pooled = {name: [x for r in rounds for x in r[name]] for name in rounds[0]}
    base_p50 = statistics.median(pooled[base])
    rows = []
    for name, values in pooled.items():
        p50 = statistics.median(values)
        added = sorted(statistics.median(r[name]) - statistics.median(r[base]) for r in rounds)
        spread = (
            "-"
            if name == base
            else f"{statistics.median(added):.3f}; {added[0]:.3f}-{added[-1]:.3f}"
        )
        rows.append(
            [name, f"{p50:.3f}", f"{percentile(values, 0.99):.3f}", f"{p50 - base_p50:.3f}",
             f"{p50 / base_p50:.2f}", spread]
        )  # fmt: skip
    return rows


def median(samples: Sequence[float]) -> float:
    return statistics.median(samples)


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A Markdown table (pastes into README.md as is)."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = [
        "| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |"
        for row in cells
    ]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)
