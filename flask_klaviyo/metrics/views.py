"""``/_klaviyo/metrics``: the Prometheus text format of :class:`KlaviyoCollector`, guarded.

Mounted only while ``KLAVIYO_METRICS`` is on and either ``KLAVIYO_METRICS_TOKEN`` is set (every
scrape sends ``Authorization: Bearer <token>``: none is 401, a wrong one 403) or
``KLAVIYO_METRICS_PUBLIC`` says it may be open; every request checks the settings again. Counts
are not secrets, but queue depths and answer codes of a shop are nobody else's business.

``prometheus_client`` is imported only here and in the collector, both loaded only when the
metrics are on: the library works without the package (``require_prometheus_client`` turns its
absence into a clear error at ``init_app``).
"""

from __future__ import annotations

import hmac
import importlib.util
import logging

from flask import Blueprint, Response, abort, current_app, request

from .._state import current_state
from ..exceptions import KlaviyoConfigError

__all__ = ["BLUEPRINT", "PATH", "metrics_blueprint", "mounted", "require_prometheus_client"]

log = logging.getLogger(__name__)

PATH = "/_klaviyo/metrics"
BLUEPRINT = "klaviyo_metrics"
REALM = 'Bearer realm="flask-klaviyo metrics"'


def require_prometheus_client() -> None:
    """Fail at init, naming the setting, when the metrics are on without their package."""
    if importlib.util.find_spec("prometheus_client") is None:
        raise KlaviyoConfigError(
            "KLAVIYO_METRICS",
            "is on but the prometheus_client package is not installed; "
            "pip install 'flask-klaviyo[metrics]' (or turn KLAVIYO_METRICS off)",
        )


def mounted(config: dict[str, object]) -> bool:
    """Whether the endpoint is served: on, and guarded by a token or explicitly public."""
    return bool(
        config.get("KLAVIYO_ENABLED")
        and config.get("KLAVIYO_METRICS")
        and (config.get("KLAVIYO_METRICS_TOKEN") or config.get("KLAVIYO_METRICS_PUBLIC"))
    )


def metrics_blueprint() -> Blueprint:
    blueprint = Blueprint(BLUEPRINT, __name__)
    blueprint.add_url_rule(PATH, "scrape", scrape)
    return blueprint


def _refused(status: int, message: str) -> Response:
    response = Response(message + "\n", status=status, mimetype="text/plain")
    if status == 401:
        response.headers["WWW-Authenticate"] = REALM
    return response


def scrape() -> Response:
    config = current_app.config
    if not mounted(config):
        abort(404)
    token = config.get("KLAVIYO_METRICS_TOKEN")
    if token:
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not given.strip():
            return _refused(401, "a bearer token is required")
        if not hmac.compare_digest(given.strip().encode(), str(token).encode()):
            log.warning("klaviyo: metrics scrape with a wrong token from %s", request.remote_addr)
            return _refused(403, "wrong token")
    from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

    from .collector import KlaviyoCollector

    state = current_state()
    collector = KlaviyoCollector(state.redis, queue=config["KLAVIYO_QUEUE"], spool=state.spool)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    response = Response(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)
    response.headers["Cache-Control"] = "no-store"
    return response
