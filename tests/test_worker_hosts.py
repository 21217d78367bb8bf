"""Two worker "hosts" on one queue; one is SIGKILLed mid-batch and the other finishes.

Each host is a ``flask klaviyo worker`` process (and its work horse) with its own instance
folder, on the same Redis. The stand-in holds requests long enough that the first host is inside
one (Klaviyo has accepted the batch, the answer never comes back) when the whole host goes. The
second host's drain reclaims the dead host's entries (``KLAVIYO_RECLAIM_AFTER``) and delivers
them: every event in the stand-in once, the dead host's batch twice on the wire.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Any

import pytest
from test_sentinel import METRIC, event, store_env, worker_command

pytestmark = pytest.mark.slow

EVENTS = 400
BATCH = "50"
BUDGET = 55.0  # seconds for the whole test, every wait included


def test_a_lost_worker_host_is_covered_by_the_other(
    make_app: Any, redis_url: str, fake: Any, workers: Any, wait_until: Any, tmp_path: Path
) -> None:
    end = time.monotonic() + BUDGET

    def left() -> float:
        return max(0.1, end - time.monotonic())

    app = make_app(fake=fake)
    with app.app_context():
        app.extensions["klaviyo"].outbox.push([event(n) for n in range(1, EVENTS + 1)])

    hosts = []
    for name in ("host-a", "host-b"):
        folder = tmp_path / name
        folder.mkdir()
        hosts.append(
            store_env(fake, redis_url, folder, KLAVIYO_DRAIN_BATCH=BATCH, KLAVIYO_RECLAIM_AFTER="1")
        )

    def api_requests() -> list[dict[str, Any]]:
        return [r for r in fake.requests if r["endpoint"] in ("create_event", "bulk_create_events")]

    fake.latency = 6  # each request held: host A will be inside its first one
    host_a = workers(hosts[0], command=worker_command())
    wait_until(lambda: api_requests(), left(), "host A's first request")
    host_b = workers(hosts[1], command=worker_command())
    wait_until(lambda: "Listening on" in host_b.output(), left(), "host B listening")
    killed = host_a.signal_all(signal.SIGKILL)  # the whole host: worker and work horse
    host_a.wait(10)
    assert len(killed) >= 2, "host A had no work horse: it was not inside a batch"
    accepted_before = len(fake.events)
    fake.latency = 0

    kept = fake.wait_for(EVENTS, metric=METRIC, timeout=left())
    ids = [e["unique_id"] for e in kept]
    assert sorted(ids) == sorted(f"order-{n}" for n in range(1, EVENTS + 1))
    assert len(set(ids)) == len(ids) == EVENTS
    # Host A's batch reached the stand-in before A died and was sent again by B, kept once.
    assert accepted_before >= 1 and fake.duplicates >= 1, (accepted_before, fake.duplicates)
    with app.app_context():
        outbox = app.extensions["klaviyo"].outbox
        while (outbox.depth() or outbox.pending()) and time.monotonic() < end:
            time.sleep(0.1)
        assert outbox.depth() == 0 and outbox.pending() == 0
    assert "drain the klaviyo outbox" in host_b.output()  # B did the work
