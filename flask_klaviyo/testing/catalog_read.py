"""Reading the catalog back: Get Catalog Items (``GET /api/catalog-items``) and, as Klaviyo
also has them, Get Catalog Variants and Get Catalog Categories.

Cursor pagination like Klaviyo's: ``page[size]`` (1..100, default 100), an opaque
``page[cursor]``, and ``links.next`` (an absolute URL carrying the next cursor and every other
parameter) on every page but the last. Oldest first (``sort=created``, or ``-created``).
``include=variants`` on items adds the variants to ``included``; every resource carries its
relationships (an item's ``variants`` and ``categories``, a variant's ``item``, a category's
``items``). ``filter``: ``any(ids,[...])``, ``equals(category.id,'..')`` (items),
``equals(item.id,'..')`` (variants, categories), ``contains(title|name,'..')``,
``equals(published,true|false)``, ``equals(sku,'..')``, several joined by ``and(...)`` or
commas. ``fields[catalog-item]`` / ``fields[catalog-variant]`` / ``fields[catalog-category]``
(comma-separated, Klaviyo's sparse fieldsets) answer only the attributes named (an unknown name
is a 400); relationships and links are always there.
"""

from __future__ import annotations

import base64
import binascii
import bisect
import itertools
import json
import logging
import re
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

from . import catalog_store
from .jsonapi import Answer, document_answer, one_error
from .state import Call, State

log = logging.getLogger(__name__)

DEFAULT_PAGE_SIZE = 100  # Klaviyo's: "Default: 100. Min: 1. Max: 100."
MAX_PAGE_SIZE = 100
VALUE = r"\[[^\]]*\]|'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"|true|false"
EXPRESSION = re.compile(rf"\s*(\w+)\(\s*([\w.]+)\s*,\s*({VALUE})\s*\)\s*(,|$)")
QUOTED = re.compile(r"'((?:[^'\\]|\\.)*)'|\"((?:[^\"\\]|\\.)*)\"")

Test = Callable[[State, dict[str, Any]], bool]
# What ``fields[...]`` may name, per resource (Klaviyo's enums).
SPARSE: dict[str, frozenset[str]] = {
    kind: frozenset((*names, "created", "updated", "id"))
    for kind, names in catalog_store.FIELDS.items()
}


def get_items(call: Call) -> Answer:
    return _collection(call, "catalog-item", includable=("variants",))


def get_variants(call: Call) -> Answer:
    return _collection(call, "catalog-variant", includable=())


def get_categories(call: Call) -> Answer:
    return _collection(call, "catalog-category", includable=())


def _collection(call: Call, kind: str, *, includable: tuple[str, ...]) -> Answer:
    query = call.request.query
    size_text = query.get("page[size]", str(DEFAULT_PAGE_SIZE))
    if not size_text.isdigit() or not 1 <= int(size_text) <= MAX_PAGE_SIZE:
        return one_error(
            400,
            detail=f"'page[size]' must be an integer from 1 to {MAX_PAGE_SIZE}.",
            parameter="page[size]",
        )
    after = _cursor(query.get("page[cursor]"))
    if after is None:
        return one_error(400, detail="Invalid page cursor.", parameter="page[cursor]")
    sort = query.get("sort", "created")
    if sort not in ("created", "-created"):
        return one_error(400, detail=f"Invalid sort '{sort[:40]}'.", parameter="sort")
    include = [part for part in query.get("include", "").split(",") if part]
    if any(part not in includable for part in include):
        return one_error(
            400,
            detail=f"'include' may name {list(includable)}, not {include}.",
            parameter="include",
        )
    try:
        tests = _filters(query.get("filter", ""), kind)
    except ValueError as exc:
        return one_error(400, detail=f"Invalid filter: {exc}", parameter="filter")
    shown: dict[str, tuple[str, ...] | None] = {}
    for resource in (kind, *(f"catalog-{part.removesuffix('s')}" for part in include)):
        asked = query.get(f"fields[{resource}]")
        if asked is None:
            shown[resource] = None
            continue
        names = tuple(name for name in asked.split(",") if name)
        wrong = [name for name in names if name not in SPARSE[resource]]
        if wrong or not names:
            return one_error(
                400,
                detail=f"'{(wrong or [''])[0][:40]}' is not a valid field for {resource}.",
                parameter=f"fields[{resource}]",
            )
        shown[resource] = names
    state = call.state
    size = int(size_text)
    with state.lock:
        state.jobs.settle_due()
        records = list(catalog_store.table(state, kind).values())  # oldest first (seq)
        if sort == "-created":
            records.reverse()
        if sort == "created" and after:  # the page starts after the cursor: no full scan
            records = records[bisect.bisect_right(records, after, key=lambda r: r["seq"]) :]
        chosen = list(
            itertools.islice(
                (
                    record
                    for record in records
                    if _beyond(record["seq"], after, sort)
                    and all(test(state, record) for test in tests)
                ),
                size + 1,
            )
        )
        page, more = chosen[:size], len(chosen) > size
        document: dict[str, Any] = {
            "data": [
                catalog_store.resource(r, kind, call.base_url, state=state, fields=shown[kind])
                for r in page
            ],
            "links": {"self": _url(call, query)},
        }
        if more:
            document["links"]["next"] = _url(
                call, {**query, "page[cursor]": _encode(page[-1]["seq"])}
            )
        if "variants" in include:
            variants = state.catalog_variants
            document["included"] = [
                catalog_store.resource(
                    variants[v],
                    "catalog-variant",
                    call.base_url,
                    state=state,
                    fields=shown["catalog-variant"],
                )
                for record in page
                for v in record["variants"]
                if v in variants
            ]
    return document_answer(200, document)


def _beyond(seq: int, after: int, sort: str) -> bool:
    if after == 0:
        return True
    return seq > after if sort == "created" else seq < after


def _url(call: Call, query: dict[str, str]) -> str:
    path = call.request.path.split("?", 1)[0]
    return f"{call.base_url}{path}" + (f"?{urlencode(query)}" if query else "")


def _encode(seq: int) -> str:
    return base64.urlsafe_b64encode(json.dumps({"after": seq}).encode()).decode().rstrip("=")


def _cursor(text: str | None) -> int | None:
    """The position after which a page starts (0: the first page); None: not our cursor."""
    if not text:
        return 0
    try:
        decoded = json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
    except (ValueError, binascii.Error):
        return None
    after = decoded.get("after") if isinstance(decoded, dict) else None
    if isinstance(after, int) and not isinstance(after, bool) and after > 0:
        return after
    return None


# --------------------------------------------------------------------------- filter


def _filters(text: str, kind: str) -> list[Test]:
    text = text.strip()
    if text.startswith("and(") and text.endswith(")"):
        text = text[4:-1]
    tests: list[Test] = []
    position = 0
    while position < len(text):
        found = EXPRESSION.match(text, position)
        if found is None:
            raise ValueError(f"cannot read '{text[position : position + 60]}'")
        tests.append(_test(found[1], found[2], _value(found[3]), kind))
        position = found.end()
    return tests


def _value(text: str) -> Any:
    if text in ("true", "false"):
        return text == "true"
    if text.startswith("["):
        return [a or b for a, b in QUOTED.findall(text)]
    found = QUOTED.fullmatch(text)
    return (found[1] or found[2] or "") if found else text


def _test(operator: str, field: str, value: Any, kind: str) -> Test:
    allowed = {
        "catalog-item": {"ids", "category.id", "title", "published"},
        "catalog-variant": {"ids", "item.id", "sku", "title", "published"},
        "catalog-category": {"ids", "item.id", "name"},
    }[kind]
    if field not in allowed:
        raise ValueError(f"'{field}' cannot be filtered on here; one of {sorted(allowed)}")
    if operator == "any" and field == "ids" and isinstance(value, list):
        wanted = set(value)
        return lambda state, record: record["id"] in wanted
    if operator == "contains" and field in ("title", "name") and isinstance(value, str):
        return lambda state, record: value in (record.get(field) or "")
    if operator == "equals" and field == "published" and isinstance(value, bool):
        return lambda state, record: record.get("published") is value
    if operator == "equals" and field == "sku" and isinstance(value, str):
        return lambda state, record: record.get("sku") == value
    if operator == "equals" and field == "category.id" and isinstance(value, str):
        return lambda state, record: value in record["categories"]
    if operator == "equals" and field == "item.id" and isinstance(value, str):
        if kind == "catalog-variant":
            return lambda state, record: record["item"] == value
        return lambda state, record: (
            record["id"] in state.catalog.get(value, {}).get("categories", [])
        )
    raise ValueError(f"'{operator}' is not supported for '{field}'")
