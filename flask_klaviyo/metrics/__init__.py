"""Prometheus metrics of delivery (``KLAVIYO_METRICS``, off by default).

    views.py      ``/_klaviyo/metrics``: mounted with a token (or explicitly public), the
                  Prometheus text format; a clear error at init without ``prometheus_client``
    collector.py  ``KlaviyoCollector``: reads the counters from Redis at scrape time, one
                  pipelined round trip (imports ``prometheus_client``; loaded only when on)

The write side is :mod:`flask_klaviyo.delivery.counters`. Importing this package does not
import ``prometheus_client``: ``from flask_klaviyo.metrics.collector import KlaviyoCollector``
does.
"""

from __future__ import annotations

from .views import BLUEPRINT, PATH, metrics_blueprint, mounted, require_prometheus_client

__all__ = ["BLUEPRINT", "PATH", "metrics_blueprint", "mounted", "require_prometheus_client"]
