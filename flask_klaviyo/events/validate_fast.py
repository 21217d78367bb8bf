"""The fast path, :func:`validate_event`: what runs on every tracked page.

The common case (exact dicts, lists, strings and numbers, as the builders make them) is checked
in one loop per container instead of one call per value, and the payload's size is bounded
instead of serialised. Each fast check only ever concludes "passes"; whenever it cannot, the
reference check (:mod:`.validate`) runs in its place, in the same order, so what is accepted and
the first error named (metric, field, message) are exactly ``_validate_event_slow``'s.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from ..exceptions import KlaviyoSchemaError
from ..identity.identifiers import E164_PATTERN, EMAIL_PATTERN
from .model import (
    MAX_NESTING,
    MAX_PAYLOAD_BYTES,
    MAX_PROPERTIES,
    MAX_STRING_BYTES,
    Event,
    _describe,
)
from .schema import ITEM_RULES, METRIC_SCHEMAS, Rule, RuleKind
from .validate import (
    _check_json,
    _check_metric_name,
    _check_payload_size,
    _check_profile,
    _check_profile_entry,
    _check_profile_fields,
    _check_properties,
    _check_rules,
    _check_time,
    _check_value,
    _rule_problem,
)

__all__ = ["validate_event"]

_INFINITY = math.inf
_PLAIN_INT_LIMIT = 10**20  # ints inside it are at most 21 characters of JSON
# Bytes a value adds to its container's JSON besides its strings' characters: a float's repr
# (at most 24 characters), an int inside the limit (21), true/false/null (5) or a container's
# brackets (2), plus a comma and a colon, or a string's quotes and the comma.
_BYTES_PER_VALUE = 32
_BYTES_PER_CHARACTER = 6  # compact JSON, ensure_ascii=False: "\u001f" is the longest


def _plain_json_bound(root: dict[Any, Any]) -> int | None:
    """An upper bound of ``root``'s size as compact UTF-8 JSON when one walk proves that
    _check_json passes it, else None (then the reference check decides).

    It proves that when everything is an exact dict with str keys, list, tuple, str, float,
    bool, None or an int of at most 20 digits; no container sits MAX_NESTING deep (so there is
    no cycle either); floats are finite; no string or key holds a lone surrogate or more than
    MAX_STRING_BYTES. Subclasses, Mappings that are not dicts, Decimals and the like give None.
    """
    strings: list[str] = []  # every key and string value, checked together at the end
    add_string = strings.append
    values = 0
    stack: list[tuple[Any, int]] = [(root, 1)]  # a container and the depth of its items
    while stack:
        node, depth = stack.pop()
        if type(node) is dict:
            for key in node:
                if type(key) is not str:
                    return None
            strings.extend(node)
            node = node.values()
        values += len(node)
        for item in node:
            kind = type(item)
            if kind is str:
                add_string(item)
            elif kind is float:
                if not -_INFINITY < item < _INFINITY:
                    return None
            elif kind is dict or kind is list or kind is tuple:
                if depth >= MAX_NESTING:
                    return None
                stack.append((item, depth + 1))
            elif kind is int:
                if not -_PLAIN_INT_LIMIT < item < _PLAIN_INT_LIMIT:
                    return None  # (str() refuses ints past 4300 digits: the exact path says so)
            elif item is not None and kind is not bool:
                return None
    text = "".join(strings)
    ascii_only = text.isascii()  # (constant time in CPython)
    if ascii_only:
        size = len(text)
    else:
        try:
            size = len(text.encode())  # UTF-8 refuses any surrogate code point
        except UnicodeEncodeError:
            return None
    if size > MAX_STRING_BYTES:  # only then can one string be over the limit
        if ascii_only:
            longest = max(map(len, strings))
        else:
            longest = max(len(string.encode()) for string in strings)
        if longest > MAX_STRING_BYTES:
            return None
    return 2 + _BYTES_PER_CHARACTER * size + 2 * len(strings) + _BYTES_PER_VALUE * values


_CompiledRules = tuple[tuple[str, RuleKind, bool], ...]
_compiled_rules: dict[int, tuple[Mapping[str, Rule], _CompiledRules]] = {}


def _rules_of(rules: Mapping[str, Rule]) -> _CompiledRules:
    """``rules`` as (name, kind, required) triples, compiled once per rule table (the tables
    are constants; a table replaced by another one is compiled afresh)."""
    cached = _compiled_rules.get(id(rules))
    if cached is None or cached[0] is not rules:
        cached = (rules, tuple((name, rule.kind, rule.required) for name, rule in rules.items()))
        _compiled_rules[id(rules)] = cached
    return cached[1]


def _broken_rule(metric: str, container: dict[str, Any], rules: _CompiledRules) -> Any:
    """_check_rules' first failure in an exact dict as (name, message), or None."""
    for name, kind, required in rules:
        value = container.get(name)  # an exact dict: absent and None read alike
        if value is None:
            if required:
                return name, f"required for {metric}"
            continue
        # Exact types that plainly satisfy the rule; anything else asks _rule_problem.
        kind_of = type(value)
        if kind_of is str:
            if (kind == "text" or kind == "id") and value.strip():
                continue
        elif kind_of is float:
            if kind == "number" and -_INFINITY < value < _INFINITY:
                continue
        elif kind_of is int:
            if kind == "id" or (kind == "quantity" and value > 0):
                continue
        elif kind_of is list:
            if kind == "strings":
                for item in value:
                    if type(item) is not str:
                        break
                else:
                    continue
        elif kind_of is dict and kind == "object":
            continue
        problem = _rule_problem(kind, value)
        if problem:
            return name, problem
    return None


def _check_profile_fast(metric: str, profile: Any) -> int | None:
    """_check_profile; returns an upper bound of the profile's compact JSON size, or None."""
    if type(profile) is not dict:
        _check_profile(metric, profile)
        return None
    for key, value in profile.items():
        if type(key) is not str:
            _check_profile(metric, profile)
            return None
        _check_profile_entry(metric, key, value)
    bound = _plain_json_bound(profile)
    if bound is None:
        _check_json(metric, dict(profile), "profile")
    # The usual profile, a valid email (and phone), passes _check_profile_fields: the email
    # alone identifies it. Anything else is checked by it.
    get = profile.get
    email = get("email")
    phone = get("phone_number")
    if not (
        type(email) is str
        and email
        and EMAIL_PATTERN.match(email)
        and (phone is None or (type(phone) is str and (not phone or E164_PATTERN.match(phone))))
        and get("location") is None
        and get("meta") is None
    ):
        _check_profile_fields(metric, profile)
    return bound


def _check_properties_fast(metric: str, properties: Any) -> int | None:
    """_check_properties; returns an upper bound of the properties' compact JSON size, or
    None."""
    if type(properties) is not dict or len(properties) > MAX_PROPERTIES:
        _check_properties(metric, properties)
        return None
    bound = _plain_json_bound(properties)
    if bound is None:
        _check_json(metric, dict(properties), "")
    schema = METRIC_SCHEMAS.get(metric)
    if schema is None:
        return bound
    broken = _broken_rule(metric, properties, _rules_of(schema.properties))
    if broken is not None:
        raise KlaviyoSchemaError(metric, *broken)
    items = properties.get("Items")
    if items is None:
        if schema.items_required:
            raise KlaviyoSchemaError(metric, "Items", f"required for {metric}")
        return bound
    if not isinstance(items, list):
        raise KlaviyoSchemaError(metric, "Items", f"must be a list, got {_describe(items)}")
    if not items:
        if schema.items_required:
            raise KlaviyoSchemaError(metric, "Items", "must not be empty")
        return bound
    item_rules = _rules_of(ITEM_RULES)
    for index, item in enumerate(items):
        if type(item) is dict:
            broken = _broken_rule(metric, item, item_rules)
            if broken is not None:
                name, message = broken
                raise KlaviyoSchemaError(metric, f"Items[{index}].{name}", message)
        elif isinstance(item, Mapping):
            _check_rules(metric, item, ITEM_RULES, f"Items[{index}].")
        else:
            raise KlaviyoSchemaError(metric, f"Items[{index}]", "must be an object")
    return bound


# What the Create Event body (Event.to_payload, serialised by encoded_size) adds to the JSON of
# the properties P and of the profile, at most:
#   {"data":{"type":"event","attributes":{"properties":P,"time":"T","value":V,
#   "value_currency":"C","unique_id":"U","backfill":true,"metric":{"data":{"type":"metric",
#   "attributes":{"name":"M"}}},"profile":{"data":{"type":"profile","id":I,"attributes":A}}}}}
# is under 300 bytes of fixed text besides P, T, V, C, U, M, I and A. T, an aware datetime's
# isoformat, is at most 42 characters (microseconds, an offset with seconds and microseconds);
# V, a finite int or float, at most 310 (|int| < 2**1024 has 309 digits). C, U and M are
# strings, each once, at most _BYTES_PER_CHARACTER per character (validate_event adds those).
# The profile part holds the id entry I and the attributes A, which are the profile's entries
# minus those with None or "" and minus the id: a subset of the profile's own JSON entries,
# spelled identically, plus at most one more comma. So the body is at most the two bounds,
# the strings' characters and this.
_PAYLOAD_OVERHEAD_BYTES = 1024
_PLAIN_OPTIONAL_STR = frozenset({str, type(None)})
_PLAIN_OPTIONAL_NUMBER = frozenset({int, float, type(None)})


def validate_event(event: Event) -> None:
    """Raise KlaviyoSchemaError for an event Klaviyo would reject, misread or not recognise."""
    _check_metric_name(event.metric)
    metric = event.metric
    profile_bound = _check_profile_fast(metric, event.profile)
    _check_time(metric, event.time)
    properties_bound = _check_properties_fast(metric, event.properties)
    _check_value(metric, event)
    unique_id = event.unique_id
    if unique_id is not None:
        if not (isinstance(unique_id, str) and unique_id.strip()):
            raise KlaviyoSchemaError(
                metric, "unique_id", f"must be a non-empty string: {unique_id!r}"
            )
        # An ASCII str is valid UTF-8 of its length; anything else is measured by _check_json.
        if (
            type(unique_id) is not str
            or not unique_id.isascii()
            or len(unique_id) > MAX_STRING_BYTES
        ):
            _check_json(metric, unique_id, "unique_id")
    if not isinstance(event.backfill, bool):
        raise KlaviyoSchemaError(metric, "backfill", "must be true or false")
    # The body's size is bounded from the two walks; serialised only when the bound is over
    # the limit, or when a value is of a type whose JSON the bound does not cover.
    currency = event.value_currency
    if (
        properties_bound is not None
        and profile_bound is not None
        and type(event) is Event
        and type(event.time) is datetime
        and type(metric) is str
        and type(unique_id) in _PLAIN_OPTIONAL_STR
        and type(currency) in _PLAIN_OPTIONAL_STR
        and type(event.value) in _PLAIN_OPTIONAL_NUMBER
    ):
        characters = len(metric) + len(unique_id or "") + len(currency or "")
        bound = (
            properties_bound
            + profile_bound
            + _BYTES_PER_CHARACTER * characters
            + _PAYLOAD_OVERHEAD_BYTES
        )
        if bound <= MAX_PAYLOAD_BYTES:
            return
    _check_payload_size(metric, event)
