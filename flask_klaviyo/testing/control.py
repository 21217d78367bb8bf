"""``/_fake/*``: the Python API over HTTP, for processes that do not hold the FakeKlaviyo object
(RQ workers, browsers, the demo store, benchmarks in another process)."""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any

from ._config import DEFAULT_TIMEOUT_HOLD
from .jsonapi import Answer, Request, json_answer

if TYPE_CHECKING:
    from .fake import FakeKlaviyo

log = logging.getLogger(__name__)


def handle(fake: FakeKlaviyo, request: Request, path: str) -> Answer:
    """One control route; a bad spec is a 400 with the reason, an unknown route a 404."""
    name = path[len("/_fake") :].strip("/")
    method = request.method
    try:
        if method == "GET":
            answer = _read(fake, request, name)
            if answer is not None:
                return answer
        if method == "POST":
            answer = _write(fake, request, name)
            if answer is not None:
                return answer
        if name == "rate-limits" and method in ("GET", "POST"):
            if method == "POST":
                spec = _json(request)
                fake.set_rate_limits(spec.get("limits"), time_scale=spec.get("time_scale"))
            return json_answer(
                200,
                {
                    "limits": fake.rate_limits,
                    "time_scale": fake.time_scale,
                    "throttled": fake.throttled,
                },
            )
    except (ValueError, TypeError) as exc:
        return json_answer(400, {"error": str(exc)})
    return json_answer(404, {"error": f"no control endpoint {method} {request.path}"})


def _read(fake: FakeKlaviyo, request: Request, name: str) -> Answer | None:
    if name == "events":
        found = fake.events_for(request.query.get("metric"), email=request.query.get("email"))
        return json_answer(200, found)
    if name == "requests":
        return json_answer(200, fake.requests)
    if name == "profiles":
        return json_answer(200, fake.profiles())
    if name == "stats":
        return json_answer(200, fake.stats())
    if name == "dedup-hits":
        with fake.state.lock:
            return json_answer(200, list(fake.state.dedup_hits))
    if name == "exchange-id":
        email = request.query.get("email", "")
        return json_answer(200, {"email": email, "_kx": fake.exchange_id_for(email)})
    if name == "catalog-items":
        return json_answer(200, fake.catalog_items)
    if name == "catalog-variants":
        return json_answer(200, fake.catalog_variants)
    if name == "catalog-categories":
        return json_answer(200, fake.catalog_categories)
    if name == "back-in-stock":
        return json_answer(200, fake.back_in_stock(request.query.get("variant")))
    if name == "request-counts":
        return json_answer(200, fake.request_counts())
    if name == "jobs":
        return json_answer(200, fake.jobs())
    if name == "subscriptions":
        return json_answer(200, fake.subscriptions(request.query.get("list_id")))
    if name == "deletions":
        return json_answer(200, fake.deletions())
    return None


def _write(fake: FakeKlaviyo, request: Request, name: str) -> Answer | None:
    if name == "reset":
        fake.reset()
        return json_answer(200, {"reset": True})
    if name == "faults":
        return json_answer(200, _faults(fake, _json(request)))
    if name == "latency":
        fake.latency = _json(request).get("seconds")
        return json_answer(200, {"latency": fake.latency})
    if name == "job-delay":
        fake.job_delay = _json(request).get("seconds")
        return json_answer(200, {"job_delay": fake.job_delay})
    if name == "spend":
        spec = _json(request)
        admitted = fake.spend(str(spec.get("endpoint")), spec.get("count", 1))
        return json_answer(200, {"admitted": admitted})
    if name == "catalog-failures":
        spec = _json(request)
        fake.fail_catalog_items(_strings(spec.get("ids")), **_failure(spec))
        return json_answer(200, {"failing": sorted(fake.state.catalog_failures)})
    if name == "import-failures":
        spec = _json(request)
        fake.fail_import_profiles(_strings(spec.get("identifiers")), **_failure(spec))
        return json_answer(200, {"failing": sorted(fake.state.import_failures)})
    return None


def _faults(fake: FakeKlaviyo, spec: dict[str, Any]) -> dict[str, Any]:
    count = spec.get("count", 1)
    if not isinstance(count, int) or isinstance(count, bool):
        raise ValueError("'count' must be an integer")
    if spec.get("reset"):
        fake.reset_next(count=count)
    elif spec.get("timeout"):
        fake.timeout_next(count=count, hold=float(spec.get("hold", DEFAULT_TIMEOUT_HOLD)))
    else:
        status = spec.get("status")
        if not isinstance(status, int) or isinstance(status, bool):
            raise ValueError("give 'status' (an HTTP code), 'timeout': true or 'reset': true")
        retry_after = spec.get("retry_after")
        fake.fail_next(
            status,
            count=count,
            retry_after=None if retry_after is None else float(retry_after),
            code=spec.get("code"),
            detail=spec.get("detail"),
            pointer=spec.get("pointer"),
        )
    with fake.state.lock:
        return {"queued": len(fake.state.faults)}


def _failure(spec: dict[str, Any]) -> dict[str, str]:
    return {key: str(spec[key]) for key in ("detail", "code", "title") if spec.get(key)}


def _strings(value: Any) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ValueError("give a list of strings")
    return value


def _json(request: Request) -> dict[str, Any]:
    try:
        payload = json.loads(request.raw or b"{}")
    except ValueError as exc:
        raise ValueError(f"the body must be JSON: {exc}") from exc
    if not isinstance(payload, dict):
        raise ValueError("the body must be a JSON object")
    return payload
