"""Klaviyo's operation kinds, registered at import: events, bulk profile import,
subscriptions, deletion requests, back in stock, and the catalog's bulk jobs (profiles:
:mod:`.profile_kinds`).

Each payload is the kind's own JSON (README "Operations beyond events" lists them); a body
builder turns a batch of them into the endpoint's JSON:API body, which every test validates
against Klaviyo's OpenAPI document.

A catalog resource is an operation of its own (``catalog_item_update``, key: its external id):
what ``catalog_changed`` queues, coalesced per item while it waits. A sync queues its thousands
of resources as chunks instead (``catalog_item_update_chunk``: one outbox entry holding one
Klaviyo job's worth, ``{"resources": [{"key", "payload"}]}``, see :func:`chunked`), so the
outbox, the drain and the follow-up pay their per-entry cost once per job; a chunk is sent as
its resources' operations, so Klaviyo's errors, dead letters and follow-ups stay per resource.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

from ..events import MAX_BULK_EVENTS
from . import profile_kinds  # noqa: F401 - registers the profile kinds
from .kinds import JobFollowUp, Kind, Payload, get, pointer_index, register
from .operations import EVENT_KIND, Operation

__all__ = ["CATALOG_CHUNK", "CATALOG_JOB_SIZE", "chunk_members", "chunked", "is_chunk"]

# Catalog jobs usually finish within a second or two, and a new item's variants wait for its
# job: look often (the job GETs have their own rate windows), for up to ten minutes.
CATALOG_LOOK_DELAY = 1.0
CATALOG_MAX_LOOKS = 600
CATALOG_JOB_SIZE = 100  # resources per catalog bulk job (Klaviyo's maximum)
CATALOG_CHUNK = "_chunk"  # a catalog kind's name + this: its chunk kind
CATALOG_RESOURCES = (
    ("catalog-item", "items"),
    ("catalog-variant", "variants"),
    ("catalog-category", "categories"),
)
CATALOG_KINDS = frozenset(
    f"catalog_{resource.removeprefix('catalog-')}_{action}"
    for resource, _ in CATALOG_RESOURCES
    for action in ("create", "update", "delete")
)


def _list_relationship(list_id: Any) -> dict[str, Any]:
    return {"list": {"data": {"type": "list", "id": list_id}}}


def _merge_consent(first: Payload, second: Payload) -> dict[str, Any]:
    """Two consent changes of one person on one list waiting together: one, every channel
    (the later consent wins per channel)."""
    profile = {**first.get("profile", {}), **second.get("profile", {})}
    profile["subscriptions"] = {
        **first.get("profile", {}).get("subscriptions", {}),
        **second.get("profile", {}).get("subscriptions", {}),
    }
    return {**first, **second, "profile": profile}


def _subscribe_body(batch: Sequence[Payload]) -> dict[str, Any]:
    first = batch[0]
    attributes: dict[str, Any] = {
        "profiles": {"data": [{"type": "profile", "attributes": p["profile"]} for p in batch]}
    }
    if first.get("custom_source"):
        attributes["custom_source"] = first["custom_source"]
    if first.get("historical_import"):
        attributes["historical_import"] = True
    data: dict[str, Any] = {
        "type": "profile-subscription-bulk-create-job",
        "attributes": attributes,
    }
    if first.get("list_id"):
        data["relationships"] = _list_relationship(first["list_id"])
    return {"data": data}


def _unsubscribe_body(batch: Sequence[Payload]) -> dict[str, Any]:
    data: dict[str, Any] = {
        "type": "profile-subscription-bulk-delete-job",
        "attributes": {
            "profiles": {"data": [{"type": "profile", "attributes": p["profile"]} for p in batch]}
        },
    }
    if batch[0].get("list_id"):
        data["relationships"] = _list_relationship(batch[0]["list_id"])
    return {"data": data}


def _bulk_import_body(batch: Sequence[Payload]) -> dict[str, Any]:
    data: dict[str, Any] = {
        "type": "profile-bulk-import-job",
        "attributes": {
            "profiles": {
                "data": [{"type": "profile", "attributes": dict(p["attributes"])} for p in batch]
            }
        },
    }
    if batch[0].get("list_id"):
        data["relationships"] = {"lists": {"data": [{"type": "list", "id": batch[0]["list_id"]}]}}
    return {"data": data}


def _deletion_body(batch: Sequence[Payload]) -> dict[str, Any]:
    profile = {"type": "profile", "attributes": dict(batch[0]["profile"])}
    return {
        "data": {
            "type": "data-privacy-deletion-job",
            "attributes": {"profile": {"data": profile}},
        }
    }


def _back_in_stock_body(batch: Sequence[Payload]) -> dict[str, Any]:
    payload = batch[0]
    return {
        "data": {
            "type": "back-in-stock-subscription",
            "attributes": {
                "channels": list(payload["channels"]),
                "profile": {"data": {"type": "profile", "attributes": dict(payload["profile"])}},
            },
            "relationships": {
                "variant": {"data": {"type": "catalog-variant", "id": payload["variant_id"]}}
            },
        }
    }


def _latest(first: Payload, second: Payload) -> dict[str, Any]:
    """Two changes of one catalog resource waiting together: the later one is the truth (a
    request with one id twice would be refused)."""
    return dict(second)


def _catalog_body(resource: str, action: str) -> Callable[[Sequence[Payload]], dict[str, Any]]:
    """Bulk catalog jobs: ``{resource}-bulk-{action}-job`` holding up to 100 resources."""
    plural = {"catalog-item": "items", "catalog-variant": "variants"}.get(resource, "categories")

    def body(batch: Sequence[Payload]) -> dict[str, Any]:
        items = []
        for payload in batch:
            item: dict[str, Any] = {"type": resource}
            if payload.get("id") is not None:
                item["id"] = payload["id"]
            if action != "delete":
                item["attributes"] = dict(payload.get("attributes") or {})
            if payload.get("relationships"):
                item["relationships"] = payload["relationships"]
            items.append(item)
        return {
            "data": {
                "type": f"{resource}-bulk-{action}-job",
                "attributes": {plural: {"data": items}},
            }
        }

    return body


def chunked(operations: Iterable[Operation]) -> list[Operation]:
    """Catalog resources' operations as chunk operations of up to one job's worth each (one
    id once per chunk, the later change winning), kinds in the order they first come; any other
    operation as it is, after them."""
    by_kind: dict[str, dict[Any, Operation]] = {}
    others: list[Operation] = []
    for operation in operations:
        if operation.kind in CATALOG_KINDS:
            group = by_kind.setdefault(operation.kind, {})
            group[operation.key if operation.key is not None else object()] = operation
        else:
            others.append(operation)
    chunks = []
    for name, group in by_kind.items():
        members = list(group.values())
        for start in range(0, len(members), CATALOG_JOB_SIZE):
            resources = [
                {"key": member.key, "payload": member.payload}
                for member in members[start : start + CATALOG_JOB_SIZE]
            ]
            chunks.append(Operation(name + CATALOG_CHUNK, {"resources": resources}))
    return [*chunks, *others]


def chunk_members(chunk: Operation) -> list[Operation]:
    """A chunk's resources as operations of their own kind, queued when the chunk was."""
    name = chunk.kind.removesuffix(CATALOG_CHUNK)
    return [
        Operation(name, entry["payload"], entry.get("key"), chunk.queued_at)
        for entry in chunk.payload.get("resources") or ()
    ]


def is_chunk(entry: Any) -> bool:
    """Whether a stored entry (decoded) is a catalog chunk."""
    return isinstance(entry, dict) and str(entry.get("op") or "").endswith(CATALOG_CHUNK)


def _send_catalog_chunk(sender: Any, kind: Kind, batch: Sequence[Operation]) -> None:
    """A chunk as its resources' operations: one job, followed up, errors per resource (the
    follow-up keeps the chunk as it was stored when the job holds all of it)."""
    resource_kind = get(kind.name.removesuffix(CATALOG_CHUNK))
    for chunk in batch:
        sender.send_operations(resource_kind, chunk_members(chunk), stored=chunk.stored)


def _register_builtins() -> None:
    register(
        Kind(
            EVENT_KIND,
            "bulk_create_events",
            "/api/event-bulk-create-jobs",
            MAX_BULK_EVENTS,
            body=lambda batch: {},  # events have their own sender (bulk body, splitting)
        )
    )
    register(
        Kind(
            "bulk_import_profiles",
            "bulk_import_profiles",
            "/api/profile-bulk-import-jobs",
            10_000,
            body=_bulk_import_body,
            locate=pointer_index("/data/attributes/profiles/data"),
            group=lambda p: p.get("list_id"),
            job=JobFollowUp(
                "/api/profile-bulk-import-jobs/{job_id}",
                "get_bulk_import_profiles_job",
                pointer_index("/data/attributes/profiles/data"),
                errors_path="/api/profile-bulk-import-jobs/{job_id}/import-errors",
                errors_endpoint="get_bulk_import_profiles_job_import_errors",
            ),
        )
    )
    register(
        Kind(
            "subscribe",
            "bulk_subscribe_profiles",
            "/api/profile-subscription-bulk-create-jobs",
            1000,
            body=_subscribe_body,
            locate=pointer_index("/data/attributes/profiles/data"),
            merge=_merge_consent,
            group=lambda p: (p.get("list_id"), p.get("custom_source"), p.get("historical_import")),
        )
    )
    register(
        Kind(
            "unsubscribe",
            "bulk_unsubscribe_profiles",
            "/api/profile-subscription-bulk-delete-jobs",
            100,
            body=_unsubscribe_body,
            locate=pointer_index("/data/attributes/profiles/data"),
            merge=_merge_consent,
            group=lambda p: p.get("list_id"),
        )
    )
    register(
        Kind(
            "profile_deletion",
            "request_profile_deletion",
            "/api/data-privacy-deletion-jobs",
            1,
            body=_deletion_body,
        )
    )
    register(
        Kind(
            "back_in_stock",
            "create_back_in_stock_subscription",
            "/api/back-in-stock-subscriptions",
            1,
            body=_back_in_stock_body,
        )
    )
    for resource, plural in CATALOG_RESOURCES:
        short = resource.removeprefix("catalog-")
        for action in ("create", "update", "delete"):
            where = f"/data/attributes/{plural}/data"
            register(
                Kind(
                    f"catalog_{short}_{action}",
                    f"bulk_{action}_catalog_{plural}",
                    f"/api/{resource}-bulk-{action}-jobs",
                    CATALOG_JOB_SIZE,
                    body=_catalog_body(resource, action),
                    locate=pointer_index(where),
                    merge=_latest,  # keyed by the resource's external id
                    job=JobFollowUp(
                        f"/api/{resource}-bulk-{action}-jobs/{{job_id}}",
                        f"get_bulk_{action}_catalog_{plural}_job",
                        pointer_index(where),
                        delay=CATALOG_LOOK_DELAY,
                        max_looks=CATALOG_MAX_LOOKS,
                    ),
                )
            )
            register(
                Kind(
                    f"catalog_{short}_{action}{CATALOG_CHUNK}",
                    f"bulk_{action}_catalog_{plural}",
                    f"/api/{resource}-bulk-{action}-jobs",
                    1,
                    body=lambda batch: {},  # sent by _send_catalog_chunk, as its resources
                    send=_send_catalog_chunk,
                )
            )


_register_builtins()
