"""Metrics and the account's metric mapping: Get Metrics (``GET /api/metrics``), Get Mapped
Metrics (``GET /api/mapped-metrics``) and Update Mapped Metric (``PATCH
/api/mapped-metrics/{id}``).

The stand-in knows the metrics of the events it received (Klaviyo creates a metric with its
first event): each has a stable six-character id derived from its name, its integration is
"API". The mapping starts empty (nothing mapped, as in a fresh account); an update's body is
checked against update_mapped_metric.json's required shape (``data.type`` "mapped-metric",
``data.id`` the path's mapping, exactly one relationship, ``metric`` or ``custom-metric``, whose
``data`` has ``type`` and ``id``; a null id unsets) and must name a metric the stand-in knows.
Rate windows (registry): 10/s 150/m, 3/s 60/m, and 1/s 15/m 30/day for updates.
"""

from __future__ import annotations

import base64
import hashlib
import logging
from typing import Any
from urllib.parse import urlencode

from .jsonapi import Answer, Checker, document_answer, iso, one_error
from .jsonapi import problems_answer as problems
from .state import Call, State

log = logging.getLogger(__name__)

MAPPINGS = (
    "added_to_cart",
    "cancelled_sales",
    "ordered_product",
    "refunded_sales",
    "revenue",
    "started_checkout",
    "viewed_product",
)
MAPPED_TYPE = "mapped-metric"
RELATIONSHIPS = {"metric": "metric", "custom-metric": "custom-metric"}
API_INTEGRATION = {"object": "integration", "id": "0rG4eQ", "name": "API", "category": "API"}
PAGE_SIZE = 200  # Get Metrics: "Returns a maximum of 200 results per page"
_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"


def metric_id(name: str) -> str:
    """A six-character id like Klaviyo's (``VevE7N``), the same for a name every time."""
    number = int.from_bytes(hashlib.sha256(name.encode("utf-8", "surrogatepass")).digest()[:8])
    chars = []
    for _ in range(6):
        number, digit = divmod(number, len(_ALPHABET))
        chars.append(_ALPHABET[digit])
    return "".join(chars)


def known_metrics(state: State) -> dict[str, dict[str, Any]]:
    """Every metric the stand-in received an event of, by id, oldest first: ``name``,
    ``created`` (its first event's arrival; None when events are not kept)."""
    found: dict[str, dict[str, Any]] = {}
    with state.lock:
        for event in state.events:
            name = event["metric"]
            key = metric_id(name)
            if key not in found:
                found[key] = {"name": name, "created": event["received_at"]}
        seen = {metric for p in state.profiles.profiles.values() for metric, _ in p.seen}
    for name in sorted(seen):
        found.setdefault(metric_id(name), {"name": name, "created": None})
    return found


def _metric_resource(key: str, metric: dict[str, Any], base_url: str) -> dict[str, Any]:
    moment = iso(metric["created"])
    return {
        "type": "metric",
        "id": key,
        "attributes": {
            "name": metric["name"],
            "created": moment,
            "updated": moment,
            "integration": dict(API_INTEGRATION),
        },
        "links": {"self": f"{base_url}/api/metrics/{key}/"},
    }


# --------------------------------------------------------------------------- Get Metrics


def get_metrics(call: Call) -> Answer:
    """All metrics, 200 a page (``page[cursor]``, ``links.next``); ``filter`` may be
    ``equals(integration.name,"...")`` or ``equals(integration.category,"...")``."""
    query = call.request.query
    cursor = query.get("page[cursor]", "")
    try:
        start = int(base64.urlsafe_b64decode(cursor.encode()).decode()) if cursor else 0
    except (ValueError, UnicodeDecodeError):
        return one_error(400, detail="Invalid page cursor.", parameter="page[cursor]")
    wanted = query.get("filter")
    field_value = None
    if wanted:
        field_value = _integration_filter(wanted)
        if field_value is None:
            return one_error(
                400,
                detail="Filter on integration.name or integration.category with equals().",
                parameter="filter",
            )
    metrics = [
        _metric_resource(key, metric, call.base_url)
        for key, metric in known_metrics(call.state).items()
    ]
    if field_value is not None:
        field, value = field_value
        metrics = [m for m in metrics if m["attributes"]["integration"][field] == value]
    page = metrics[start : start + PAGE_SIZE]
    links: dict[str, Any] = {"self": f"{call.base_url}/api/metrics/"}
    if start + PAGE_SIZE < len(metrics):
        token = base64.urlsafe_b64encode(str(start + PAGE_SIZE).encode()).decode()
        params = {k: v for k, v in query.items() if k != "page[cursor]"}
        params["page[cursor]"] = token
        links["next"] = f"{call.base_url}/api/metrics/?{urlencode(params)}"
    return document_answer(200, {"data": page, "links": links})


def _integration_filter(text: str) -> tuple[str, str] | None:
    text = text.strip()
    for field in ("name", "category"):
        prefix = f"equals(integration.{field},"
        if text.startswith(prefix) and text.endswith(")"):
            value = text[len(prefix) : -1].strip()
            if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
                return field, value[1:-1]
    return None


# --------------------------------------------------------------------------- the mapping


def _mapped_resource(state: State, mapping: str, base_url: str) -> dict[str, Any]:
    here = f"{base_url}/api/mapped-metrics/{mapping}"
    held = state.mapped_metrics.get(mapping) or {}
    relationships: dict[str, Any] = {}
    for name in RELATIONSHIPS:
        links = {"self": f"{here}/relationships/{name}/", "related": f"{here}/{name}/"}
        target = held.get(name)
        shown: dict[str, Any] = {"links": links}
        if target is not None:
            shown["data"] = {"type": name, "id": target}
        relationships[name] = shown
    return {
        "type": MAPPED_TYPE,
        "id": mapping,
        "attributes": {"updated": iso(held.get("updated"))},
        "relationships": relationships,
        "links": {"self": f"{here}/"},
    }


def get_mapped_metrics(call: Call) -> Answer:
    """Every mapping, mapped or not; ``include=metric`` adds the mapped metrics."""
    include = [part for part in call.request.query.get("include", "").split(",") if part]
    if any(part not in RELATIONSHIPS for part in include):
        return one_error(
            400, detail=f"'include' may name {sorted(RELATIONSHIPS)}.", parameter="include"
        )
    state = call.state
    with state.lock:
        for mapping in MAPPINGS:  # a fresh account's mappings exist, pointing nowhere
            state.mapped_metrics.setdefault(mapping, {"updated": call.request.received_at})
        data = [_mapped_resource(state, mapping, call.base_url) for mapping in MAPPINGS]
        targets = [state.mapped_metrics[m].get("metric") for m in MAPPINGS]
    self_link = {"self": f"{call.base_url}/api/mapped-metrics/"}
    document: dict[str, Any] = {"data": data, "links": self_link}
    if "metric" in include:
        metrics = known_metrics(state)
        document["included"] = [
            _metric_resource(key, metrics[key], call.base_url)
            for key in dict.fromkeys(t for t in targets if t in metrics)
        ]
    return document_answer(200, document)


def update_mapped_metric(call: Call) -> Answer:
    """Point one mapping at a metric (or custom metric), or unset it with a null id."""
    mapping = call.params["id"]
    if mapping not in MAPPINGS:
        detail = f"'{mapping[:40]}' is not a mapping; one of {list(MAPPINGS)}."
        return one_error(400, detail=detail, parameter="id")
    checker = Checker()
    chosen = _check_update(checker, call.body, mapping)
    if checker.problems or chosen is None:
        return problems(checker.problems)
    kind, target = chosen
    state = call.state
    with state.lock:
        if kind == "metric" and target is not None and target not in known_metrics(state):
            return one_error(
                404,
                detail=f"Metric '{target[:40]}' does not exist.",
                pointer="/data/relationships/metric/data/id",
            )
        if kind == "custom-metric" and target is not None:
            return one_error(
                404,
                detail=f"Custom metric '{target[:40]}' does not exist.",
                pointer="/data/relationships/custom-metric/data/id",
            )
        held = {"updated": call.request.received_at, "metric": None, "custom-metric": None}
        held[kind] = target
        state.mapped_metrics[mapping] = held
        resource = _mapped_resource(state, mapping, call.base_url)
        state.changed.notify_all()
    log.debug("mapped %s to %s %s", mapping, kind, target)
    return document_answer(200, {"data": resource, "links": resource["links"]})


def _check_update(checker: Checker, body: Any, mapping: str) -> tuple[str, str | None] | None:
    """(relationship, target id or None to unset), after recording any problem."""
    if not isinstance(body, dict):
        checker.fail("/data", "The body must be a JSON object.")
        return None
    data = checker.member(body, "data", "", "object", required=True)
    checker.resource_type(data, MAPPED_TYPE, "/data")
    given_id = checker.member(data, "id", "/data", "string", required=True)
    if given_id is not None and given_id != mapping:
        checker.fail("/data/id", f"'id' must be the mapping in the path, '{mapping}'.")
    relationships = checker.member(data, "relationships", "/data", "object", required=True)
    if relationships is None:
        return None
    named = [name for name in relationships if name in RELATIONSHIPS]
    unknown = [name for name in relationships if name not in RELATIONSHIPS]
    for name in unknown:
        checker.fail(f"/data/relationships/{name}", f"Unknown relationship '{name[:40]}'.")
    if len(named) != 1:
        checker.fail(
            "/data/relationships", "Give exactly one relationship: 'metric' or 'custom-metric'."
        )
        return None
    name = named[0]
    base = f"/data/relationships/{name}"
    holder = checker.member(relationships, name, "/data/relationships", "object", required=True)
    target = checker.member(holder, "data", base, "object", required=True)
    if target is None:
        return None
    checker.resource_type(target, RELATIONSHIPS[name], f"{base}/data")
    if "id" not in target:
        checker.fail(f"{base}/data/id", "'id' is a required field.")
        return None
    value = target["id"]
    if value is not None and (not isinstance(value, str) or not value.strip()):
        checker.fail(f"{base}/data/id", "'id' must be a metric id or null (to unset).")
        return None
    return name, value
