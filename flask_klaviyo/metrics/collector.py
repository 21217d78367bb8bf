"""``KlaviyoCollector``: a ``prometheus_client`` collector that reads delivery's counters from
Redis at scrape time, in one pipelined round trip.

The counters live in Redis (:mod:`flask_klaviyo.delivery.counters` writes them, parking keeps
its own), so every web process and worker on every host adds to the same ones and any process
can serve them: multiprocess-safe under gunicorn with no ``PROMETHEUS_MULTIPROC_DIR``. Only the
spool is per host (a file in this host's instance folder): ``klaviyo_spool_bytes`` carries a
``host`` label and comes from the process that answered. With Redis unreachable the scrape still
answers: ``klaviyo_redis_up 0`` and the spool, which is when it matters.

This module imports ``prometheus_client`` (the ``metrics`` extra); the rest of the package never
does, so the library works without it.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import redis
from flask import Flask
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from ..delivery import counters, keys
from ..delivery.spool import Spool

__all__ = ["STAGE_METRICS", "KlaviyoCollector"]

log = logging.getLogger(__name__)

# counters.STAGES -> (metric name without _total, help)
STAGE_METRICS = {
    "queued": ("klaviyo_operations_queued", "Operations pushed to the outbox, by kind and metric"),
    "delivered": ("klaviyo_operations_delivered", "Operations Klaviyo accepted"),
    "retried": (
        "klaviyo_operations_retried",
        "Operations that met a retryable answer (429, 408, 5xx, no answer), once per drain",
    ),
    "dead": ("klaviyo_operations_dead_lettered", "Operations kept as dead letters by a drain"),
    "dropped": (
        "klaviyo_operations_dropped",
        "Operations never sent: their person was forgotten while they waited",
    ),
}
PARKING_METRICS = {
    "parked": ("klaviyo_events_parked", "Anonymous visitors' events parked"),
    "released": ("klaviyo_events_released", "Parked events released once their visitor was known"),
    "dropped": ("klaviyo_parked_events_dropped", "Parked events dropped over the per-visitor cap"),
    "expired": (
        "klaviyo_parked_events_expired",
        "Parked events that expired unreleased (counted by the next park)",
    ),
}


def _cumulative(
    counts: Mapping[str, float], bounds: Sequence[float]
) -> tuple[list[tuple[str, float]], float]:
    """Per-bucket counts (as stored) as Prometheus's cumulative buckets, and the total."""
    total = 0.0
    buckets = []
    for bound in bounds:
        le = str(float(bound))
        total += counts.get(le, 0.0)
        buckets.append((le, total))
    total += counts.get(counters.INF, 0.0)
    buckets.append(("+Inf", total))
    return buckets, total


class KlaviyoCollector:
    """Every flask-klaviyo metric, read from Redis when collected.

    ``KlaviyoCollector.from_app(app)`` for an app's Redis, queue and spool; register it in a
    registry of your own (``prometheus_client.REGISTRY.register(...)``) to serve the metrics
    elsewhere than ``/_klaviyo/metrics``.
    """

    def __init__(
        self,
        connection: redis.Redis,
        *,
        queue: str = "klaviyo",
        spool: Spool | None = None,
        host: str | None = None,
    ) -> None:
        self.connection = connection
        self.queue = queue
        self.spool = spool
        self.host = host or socket.gethostname()

    @classmethod
    def from_app(cls, app: Flask) -> KlaviyoCollector:
        state = app.extensions["klaviyo"]
        with app.app_context():
            connection = state.redis
        return cls(connection, queue=app.config["KLAVIYO_QUEUE"], spool=state.spool)

    def describe(self) -> list[Metric]:
        return []  # read at scrape time only (registering never touches Redis)

    def read(self) -> tuple[Mapping[bytes, bytes], Mapping[bytes, bytes], int, int, int]:
        """One pipelined round trip: the counters, parking's, and three gauges."""
        pipe = self.connection.pipeline(transaction=False)
        pipe.hgetall(keys.METRICS)
        pipe.hgetall(keys.PARKED_STATS)
        pipe.hlen(keys.PARKED_COUNTS)
        pipe.xlen(keys.outbox_stream(self.queue))
        pipe.hlen(keys.DEAD_LETTERS)
        raw, parked, visitors, waiting, dead = pipe.execute()
        return raw, parked, int(visitors), int(waiting), int(dead)

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("klaviyo_redis_up", "Whether the scrape could read Redis (1/0)")
        try:
            raw, parked, visitors, waiting, dead = self.read()
        except redis.RedisError as exc:
            log.warning("klaviyo: metrics could not read Redis: %s", exc)
            up.add_metric([], 0)
            yield up
            yield from self._spool()
            return
        up.add_metric([], 1)
        yield up
        yield from self._counters(counters.parse(raw))
        yield from self._parking(parked, visitors)
        outbox = GaugeMetricFamily(
            "klaviyo_outbox_waiting",
            "Operations in the outbox (queued or being delivered)",
            labels=["queue"],
        )
        outbox.add_metric([self.queue], waiting)
        yield outbox
        yield GaugeMetricFamily(
            "klaviyo_dead_letters", "Dead letters kept (every reason), replayable", value=dead
        )
        yield from self._spool()

    def _counters(self, found: Mapping[str, Any]) -> Iterator[Metric]:
        for stage, (name, doc) in STAGE_METRICS.items():
            family = CounterMetricFamily(name, doc, labels=["kind", "metric"])
            for (kind, metric), value in sorted(found["stages"][stage].items()):
                family.add_metric([kind, metric], value)
            yield family
        answers = CounterMetricFamily(
            "klaviyo_api_responses", "Klaviyo's answers by endpoint and HTTP status",
            labels=["endpoint", "code"],
        )  # fmt: skip
        for (endpoint, code), value in sorted(found["answers"].items()):
            answers.add_metric([endpoint, code], value)
        yield answers
        for name, key, doc in (
            ("klaviyo_api_transport_errors", "transport", "Requests that got no answer"),
            ("klaviyo_rate_limit_waits", "waits", "Times the rate limiter made a request wait"),
            ("klaviyo_rate_limit_wait_seconds", "wait_seconds", "Seconds requests waited"),
        ):
            family = CounterMetricFamily(name, doc, labels=["endpoint"])
            for endpoint, value in sorted(found[key].items()):
                family.add_metric([endpoint], value)
            yield family
        batch = HistogramMetricFamily(
            "klaviyo_drain_batch_size", "Operations per drain batch acknowledged"
        )
        buckets, _ = _cumulative(found["batch"], counters.BATCH_BUCKETS)
        batch.add_metric([], buckets, found["batch_sum"])
        yield batch
        latency = HistogramMetricFamily(
            "klaviyo_delivery_latency_seconds",
            "Seconds from queued (in the outbox) to accepted by Klaviyo",
            labels=["kind"],
        )
        for kind, counts in sorted(found["latency"].items()):
            buckets, _ = _cumulative(counts, counters.LATENCY_BUCKETS)
            latency.add_metric([kind], buckets, found["latency_sum"].get(kind, 0.0))
        yield latency

    def _parking(self, parked: Mapping[bytes, bytes], visitors: int) -> Iterator[Metric]:
        stats = {key.decode(): float(value) for key, value in parked.items()}
        for field, (name, doc) in PARKING_METRICS.items():
            yield CounterMetricFamily(name, doc, value=stats.get(field, 0.0))
        yield GaugeMetricFamily(
            "klaviyo_parked_visitors", "Anonymous visitors with events parked", value=visitors
        )

    def _spool(self) -> Iterator[Metric]:
        if self.spool is None:
            return
        family = GaugeMetricFamily(
            "klaviyo_spool_bytes",
            "Bytes waiting in this host's spool file (Redis was unreachable)",
            labels=["host"],
        )
        family.add_metric([self.host], self.spool.size())
        yield family
