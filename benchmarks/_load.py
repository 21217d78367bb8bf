"""A small HTTP load generator for store_server.py when wrk is not installed: ``concurrency``
threads, each sending GET requests one after another (a new connection each: gunicorn's sync
workers close it anyway) for ``duration`` seconds. Runs as its own process, so its CPU is not
the server's; prints one JSON line: requests, non-2xx, errors, seconds, latency p50/p99 (ms).

    python benchmarks/_load.py URL --concurrency 8 --duration 10 [--header 'Cookie: ...']
"""

from __future__ import annotations

import argparse
import http.client
import json
import statistics
import threading
import time
from urllib.parse import urlsplit


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--header", action="append", default=[], help="'Name: value'")
    args = parser.parse_args()

    target = urlsplit(args.url)
    path = target.path + (f"?{target.query}" if target.query else "")
    headers = dict(line.split(": ", 1) for line in args.header)
    latencies: list[list[float]] = [[] for _ in range(args.concurrency)]
    failures = [0] * args.concurrency
    non_2xx = [0] * args.concurrency
    start = time.perf_counter()
    deadline = start + args.duration

    def run(slot: int) -> None:
        while True:
            began = time.perf_counter()
            if began >= deadline:
                return
            connection = http.client.HTTPConnection(target.hostname, target.port, timeout=10)
            try:
                connection.request("GET", path, headers=headers)
                response = connection.getresponse()
                response.read()
                if not 200 <= response.status < 300:
                    non_2xx[slot] += 1
            except (OSError, http.client.HTTPException):
                failures[slot] += 1
                continue
            finally:
                connection.close()
            latencies[slot].append((time.perf_counter() - began) * 1000)

    threads = [
        threading.Thread(target=run, args=(n,), daemon=True) for n in range(args.concurrency)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(args.duration + 15)
    seconds = time.perf_counter() - start
    pooled = sorted(x for slot in latencies for x in slot)
    print(
        json.dumps(
            {
                "requests": len(pooled),
                "non_2xx": sum(non_2xx),
                "errors": sum(failures),
                "seconds": seconds,
                "p50_ms": statistics.median(pooled) if pooled else None,
                "p99_ms": pooled[min(len(pooled) - 1, int(0.99 * len(pooled)))] if pooled else None,
            }
        )
    )


if __name__ == "__main__":
    main()
