"""validate_event's fast path against the reference validator it replaces.

``validate_event`` walks each container once and bounds the payload's size instead of
serialising it; ``_validate_event_slow`` is the original, one call per value. On every input
they must agree: both accept, or both raise KlaviyoSchemaError with the same metric, field and
message (or, for the few inputs the reference crashes on, the same exception). Property tests
over arbitrary events, then one example for each corner the fast path has to hand back.
"""

from __future__ import annotations

import json
import math
import os
import sys
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from types import MappingProxyType
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flask_klaviyo.events import (
    ITEM_RULES,
    MAX_NESTING,
    MAX_PAYLOAD_BYTES,
    MAX_PROPERTIES,
    MAX_STRING_BYTES,
    METRIC_SCHEMAS,
    Event,
    active_on_site,
    added_to_cart,
    canceled_order,
    created_account,
    custom_event,
    encoded_size,
    fulfilled_order,
    ordered_products,
    placed_order,
    refunded_order,
    reset_password,
    started_checkout,
    updated_account,
    validate,
    validate_event,
    validate_fast,
    viewed_product,
)
from flask_klaviyo.exceptions import KlaviyoSchemaError
from flask_klaviyo.identity.identifiers import PROFILE_OBJECT_KEYS, PROFILE_STRING_KEYS
from flask_klaviyo.models import Address, Cart, LineItem, Order, Product

REFERENCE = validate._validate_event_slow
EMAIL = "sarah.mason@klaviyo-demo.com"
PHONE = "+15005550006"
TIME = datetime(2024, 5, 1, 12, 30, tzinfo=UTC)


def examples(count: int) -> settings:
    """Property-test settings; VALIDATE_FAST_SCALE=20 runs 20 times the examples (a long hunt)."""
    return settings(
        max_examples=max(1, int(count * float(os.environ.get("VALIDATE_FAST_SCALE", "1")))),
        deadline=None,
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.large_base_example,
            HealthCheck.data_too_large,
        ],
    )


def outcome(validate: Callable[[Event], None], event: Event) -> tuple[Any, ...]:
    try:
        validate(event)
    except KlaviyoSchemaError as exc:
        return ("rejected", exc.metric, exc.field, exc.message)
    except Exception as exc:  # what the reference itself crashes on must crash alike
        return ("raised", type(exc).__name__, str(exc))
    return ("accepted",)


def same_verdict(event: Event) -> tuple[Any, ...]:
    """The fast validator's verdict, asserted equal to the reference's."""
    fast = outcome(validate_event, event)
    slow = outcome(REFERENCE, event)
    assert fast == slow, f"fast {str(fast)[:300]} != reference {str(slow)[:300]}"
    return fast


def make_event(
    metric: Any = "Left Review",
    properties: Any = None,
    profile: Any = None,
    **attributes: Any,
) -> Event:
    """An Event with any attribute, even one Event() would not take (a naive time, say)."""
    event = Event(
        metric=metric,
        properties={"Stars": 5} if properties is None else properties,
        profile={"email": EMAIL} if profile is None else profile,
        time=TIME,
        unique_id="review-1",
    )
    for name, value in attributes.items():
        setattr(event, name, value)
    return event


class ReadOnly(Mapping[Any, Any]):
    """A Mapping that is not a dict (json.dumps cannot write it)."""

    def __init__(self, data: dict[Any, Any]) -> None:
        self._data = dict(data)

    def __getitem__(self, key: Any) -> Any:
        return self._data[key]

    def __iter__(self) -> Iterator[Any]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __repr__(self) -> str:
        return f"ReadOnly({self._data!r})"


class Text(str):
    """A str subclass: only the reference path handles those."""


class Count(int):
    pass


class Moment(datetime):
    pass


def nested(depth: int, kind: str = "dict", leaf: Any = 1) -> Any:
    """``depth`` containers around ``leaf``."""
    value = leaf
    for _ in range(depth):
        value = {"k": value} if kind == "dict" else [value] if kind == "list" else (value,)
    return value


def cyclic(kind: str) -> Any:
    if kind == "dict":
        loop: Any = {"a": 1}
        loop["self"] = loop
    elif kind == "list":
        loop = [1]
        loop.append(loop)
    else:
        inner: list[Any] = []
        loop = {"x": [inner]}
        inner.append(loop)
    return loop


# -- strategies -----------------------------------------------------------------------------

BIG_STRINGS = [
    "x" * MAX_STRING_BYTES,
    "x" * (MAX_STRING_BYTES + 1),
    "é" * (MAX_STRING_BYTES // 2),  # exactly the limit in UTF-8
    "é" * (MAX_STRING_BYTES // 2 + 1),
    "\x01" * MAX_STRING_BYTES,  # 6 bytes each in JSON, 1 in UTF-8: within the limit
    "😀" * (MAX_STRING_BYTES // 4) + "x",
    "x" * 150_000 + "\ud800",
]
TEXT = st.one_of(
    st.text(alphabet=st.characters(codec=None), max_size=6),  # surrogates too
    st.sampled_from(
        ["", " ", ".", "a.b", "[0]", " pad ", "\x00", '"', "\\", "\ud800", "\udcff", "é", "😀"]
    ),
)
NUMBERS = st.one_of(
    st.integers(-(10**6), 10**6),
    st.sampled_from([10**20 - 1, 10**20, -(10**20) + 1, -(10**20), 10**400, 2**1023, Count(3)]),
    st.floats(),  # NaN, inf, -0.0, subnormals
    st.decimals(allow_nan=True),
)
KEYS = st.one_of(
    TEXT,
    st.integers(-2, 2),
    st.floats(allow_nan=True),
    st.booleans(),
    st.none(),
    TEXT.map(Text),
    st.sampled_from(["x" * (MAX_STRING_BYTES + 1), "é" * (MAX_STRING_BYTES // 2)]),
)
LEAVES = st.one_of(
    st.none(),
    st.booleans(),
    TEXT,
    NUMBERS,
    st.sampled_from(BIG_STRINGS),
    TEXT.map(Text),
    st.sampled_from([b"bytes", {1, 2}, TIME, object()]),
)


def _containers(inner: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(
        st.lists(inner, max_size=3),
        st.lists(inner, max_size=3).map(tuple),
        st.dictionaries(KEYS, inner, max_size=3),
        st.dictionaries(TEXT, inner, max_size=3).map(ReadOnly),
        st.dictionaries(TEXT, inner, max_size=2).map(MappingProxyType),
        st.dictionaries(TEXT, inner, max_size=2).map(OrderedDict),
    )


DEEP = st.builds(
    nested,
    st.integers(MAX_NESTING - 3, MAX_NESTING + 2),
    st.sampled_from(["dict", "list", "tuple"]),
    st.sampled_from([1, math.nan, "\ud800", {}, [], Decimal(1), {3: 1}]),
)
ANYTHING = st.recursive(
    st.one_of(LEAVES, DEEP, st.sampled_from(["dict", "list", "mixed"]).map(cyclic)),
    _containers,
    max_leaves=8,
)
PLAIN = st.recursive(
    st.one_of(st.none(), st.booleans(), TEXT, st.integers(-(10**19), 10**19), st.floats()),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3),
    max_leaves=10,
)

RULE_NAMES = sorted(
    {name for schema in METRIC_SCHEMAS.values() for name in schema.properties} | set(ITEM_RULES)
)
# Links for the "url" rule (PasswordResetLink, Active on Site's page): good, relative, other
# schemes, no host, hidden whitespace, a broken port or bracket.
URLS = st.one_of(
    st.sampled_from(
        [
            "https://shop.test/account/reset/t0k3n",
            "http://shop.test/",
            "HTTPS://Shop.test/r?t=1#x",
            "https://[::1]:8443/r",
            "https://bücher.test/r",
            "/account/reset/t0k3n",
            "shop.test/reset",
            "javascript:alert(1)",
            "data:text/html,x",
            "ftp://shop.test/r",
            "https://",
            "http:/shop.test",
            "https://:443/",
            "https://shop.test/a b",
            " https://shop.test/",
            "https://shop.test/\n",
            "java\tscript:alert(1)",
            "https://shop.test:99999/",
            "http://[::1/r",
            "https://shop.test/\ud800",
            Text("https://shop.test/sub"),
        ]
    ),
    st.builds("{}://{}/{}".format, st.sampled_from(["http", "https", "ftp", ""]), TEXT, TEXT),
)
RULE_VALUES = st.one_of(
    st.sampled_from(
        ["Pooh", " ", "", 1, 0, -1, True, 1.5, math.nan, math.inf, 10**400, ["a"], ["a", 1]]
    ),
    URLS,
    st.sampled_from([("a",), {}, {"a": 1}, ReadOnly({"a": 1}), Decimal("1.5"), Count(2)]),
    st.none(),
    st.floats(),
    TEXT,
)
ITEM = st.one_of(
    st.dictionaries(st.sampled_from(sorted(ITEM_RULES)), RULE_VALUES, max_size=len(ITEM_RULES)),
    st.fixed_dictionaries(
        {"ProductID": st.just("1"), "ProductName": st.just("P"), "Quantity": st.just(1)},
        optional={"ItemPrice": RULE_VALUES, "RowTotal": RULE_VALUES, "SKU": RULE_VALUES},
    ),
    st.dictionaries(st.sampled_from(sorted(ITEM_RULES)), RULE_VALUES, max_size=5).map(ReadOnly),
    RULE_VALUES,
)
RULE_PROPERTIES = st.builds(
    lambda named, items, extra: {**named, **items, **extra},
    st.dictionaries(st.sampled_from(RULE_NAMES), RULE_VALUES, max_size=10),
    st.one_of(
        st.just({}),
        st.fixed_dictionaries({"Items": st.lists(ITEM, max_size=3) | RULE_VALUES}),
    ),
    st.dictionaries(KEYS, ANYTHING, max_size=2),
)
PROPERTIES = st.one_of(
    RULE_PROPERTIES,
    st.dictionaries(KEYS, ANYTHING, max_size=4),
    st.dictionaries(TEXT, PLAIN, max_size=4),
    st.dictionaries(TEXT, ANYTHING, max_size=3).map(ReadOnly),
    st.dictionaries(TEXT, PLAIN, max_size=3).map(OrderedDict),
    ANYTHING,
)
PROFILE_VALUES = st.one_of(
    st.sampled_from([None, "", EMAIL, "not-an-email", PHONE, "555-1234", "kx.AbC", 7, ["a"]]),
    TEXT,
    st.sampled_from(["x" * (MAX_STRING_BYTES + 1), "é" * 40_000]),
    st.dictionaries(
        st.sampled_from(["city", "zip", "latitude", "planet", "patch_properties", "append"]),
        st.one_of(st.none(), TEXT, st.floats(), st.sampled_from([{}, ["a"], {"a": 1}])),
        max_size=3,
    ),
    st.just(ReadOnly({"city": "Boston"})),
    ANYTHING,
)
PROFILE_KEY_NAMES = [*PROFILE_STRING_KEYS, *PROFILE_OBJECT_KEYS, "x", "Email"]
PROFILES = st.one_of(
    st.just({"email": EMAIL}),
    st.fixed_dictionaries(
        {"email": st.just(EMAIL)},
        optional={key: PROFILE_VALUES for key in ("phone_number", "first_name", "id", "meta")},
    ),
    st.dictionaries(st.sampled_from(PROFILE_KEY_NAMES) | KEYS, PROFILE_VALUES, max_size=4),
    st.dictionaries(st.sampled_from(PROFILE_KEY_NAMES).map(Text), PROFILE_VALUES, max_size=2),
    st.just(ReadOnly({"email": EMAIL})),
    ANYTHING,
)
METRICS = st.one_of(
    st.sampled_from(sorted(METRIC_SCHEMAS)),
    st.sampled_from(["Left Review", "", "  ", "x" * 127, "x" * 128, "\ud800", Text("Viewed")]),
    TEXT,
    st.sampled_from([None, 7]),
)
TIMES = st.one_of(
    st.just(TIME),
    st.sampled_from(
        [
            datetime(2024, 5, 1, 12, 30),  # naive
            datetime(1990, 1, 1, tzinfo=UTC),  # not after 1990
            datetime(1989, 6, 1, tzinfo=UTC),
            datetime.now(UTC) + timedelta(days=400),
            datetime(2024, 5, 1, tzinfo=timezone(timedelta(hours=-9, seconds=-59))),
            Moment(2024, 5, 1, tzinfo=UTC),
            "2024-05-01T00:00:00+00:00",
            None,
        ]
    ),
)
OPTIONAL_VALUES = st.one_of(st.none(), NUMBERS, st.sampled_from([True, "9.99", Count(5)]))
CURRENCIES = st.sampled_from([None, "USD", "usd", "USD\n", "US", 3, Text("EUR")]) | TEXT
UNIQUE_IDS = st.one_of(
    st.none(),
    TEXT,
    st.sampled_from(["r-1", "", "  ", 5, "x" * (MAX_STRING_BYTES + 1), Text("id-1")]),
    st.sampled_from(["é" * (MAX_STRING_BYTES // 2), "é" * (MAX_STRING_BYTES // 2 + 1)]),
)
BACKFILLS = st.sampled_from([False, True, 0, 1, None])

EVENTS = st.builds(
    make_event,
    metric=METRICS,
    properties=PROPERTIES,
    profile=PROFILES,
    time=TIMES,
    value=OPTIONAL_VALUES,
    value_currency=CURRENCIES,
    unique_id=UNIQUE_IDS,
    backfill=BACKFILLS,
)
# Events that get past the early checks, so the later ones are exercised too.
MOSTLY_VALID_EVENTS = st.builds(
    make_event,
    metric=st.sampled_from([*sorted(METRIC_SCHEMAS), "Left Review"]),
    properties=st.one_of(RULE_PROPERTIES, st.dictionaries(TEXT, PLAIN, max_size=4)),
    profile=st.just({"email": EMAIL}) | PROFILES,
    value=st.one_of(st.none(), st.floats(0, 1e6), st.integers(0, 10**6)),
    value_currency=st.sampled_from([None, "USD", "EUR"]),
    unique_id=st.one_of(st.none(), st.sampled_from(["r-1", "é-1"])),
)


# -- equivalence ----------------------------------------------------------------------------


@examples(600)
@given(event=EVENTS)
def test_any_event_gets_the_reference_verdict(event: Event) -> None:
    same_verdict(event)


@examples(400)
@given(event=MOSTLY_VALID_EVENTS)
def test_events_near_valid_get_the_reference_verdict(event: Event) -> None:
    same_verdict(event)


@examples(200)
@given(
    properties=st.dictionaries(TEXT, ANYTHING, max_size=4),
    extra=st.dictionaries(TEXT, PLAIN, max_size=3),
)
def test_every_problem_in_the_properties_is_named_first_as_the_reference_does(
    properties: dict[str, Any], extra: dict[str, Any]
) -> None:
    """Several problems at once (a bad key, a NaN, a rule broken): the first one named is the
    reference's first, whichever check would find the others."""
    for metric in ("Placed Order", "Viewed Product", "Left Review"):
        same_verdict(make_event(metric, {**extra, **properties}, value=1.0, value_currency="USD"))


STORE_TEXT = st.one_of(st.sampled_from(["Pooh", "A Tale", "", " ", "é", "x" * 200]), TEXT)
STORE_MONEY = st.one_of(
    st.sampled_from([9.99, 0, 19.99, 10**20]),
    st.floats(),
    st.decimals(allow_nan=True),
    st.none(),
)
PRODUCTS = st.builds(
    Product,
    id=st.one_of(st.sampled_from(["1111", 1111, 0, ""]), TEXT),
    name=STORE_TEXT,
    price=STORE_MONEY,
    sku=st.none() | STORE_TEXT,
    url=st.none() | st.just("http://shop.test/p/1"),
    image_url=st.none() | st.just("http://shop.test/i/1.png"),
    categories=st.lists(STORE_TEXT, max_size=3),
    brand=st.none() | STORE_TEXT,
    compare_at_price=STORE_MONEY,
)
LINES = st.builds(
    LineItem,
    PRODUCTS,
    quantity=st.sampled_from([1, 2, 0, -1]),
    price=st.none() | STORE_MONEY,
)
ADDRESSES = st.none() | st.builds(Address, address1=STORE_TEXT, city=st.none() | STORE_TEXT)
ORDERS = st.builds(
    Order,
    id=st.one_of(st.sampled_from(["1234", 1234]), TEXT),
    items=st.lists(LINES, max_size=4),
    email=st.sampled_from([EMAIL, None, "nope"]),
    phone_number=st.sampled_from([PHONE, None, "555"]),
    total=STORE_MONEY,
    currency=st.sampled_from([None, "USD", "eur"]),
    discount_code=st.none() | STORE_TEXT,
    discount_value=STORE_MONEY,
    billing_address=ADDRESSES,
    shipping_address=ADDRESSES,
    placed_at=st.just(TIME),
)
SHOPPERS = st.sampled_from(
    [{"email": EMAIL}, {"email": EMAIL, "phone_number": PHONE}, {"_kx": "kx.AbC"}, {}]
)


def built(build: Callable[[], Any]) -> list[Event]:
    try:
        made = build()
    except KlaviyoSchemaError:  # the builder named a field itself: nothing to validate
        return []
    return made if isinstance(made, list) else [made]


@examples(150)
@given(product=PRODUCTS, lines=st.lists(LINES, max_size=4), order=ORDERS, profile=SHOPPERS)
def test_every_builder_event_gets_the_reference_verdict(
    product: Product, lines: list[LineItem], order: Order, profile: dict[str, Any]
) -> None:
    cart = Cart(id="c-1", items=lines, checkout_url="http://shop.test/checkout")
    made = [
        *built(lambda: viewed_product(product, profile=profile, render_id="r", time=TIME)),
        *built(lambda: added_to_cart(cart, LineItem(product), profile=profile, time=TIME)),
        *built(lambda: started_checkout(cart, profile=profile, time=TIME)),
        *built(lambda: placed_order(order)),
        *built(lambda: ordered_products(order, profile=profile)),
        *built(lambda: fulfilled_order(order, time=TIME, TrackingNumber="T1")),
        *built(lambda: canceled_order(order, reason="Out of stock", time=TIME)),
        *built(lambda: refunded_order(order, profile=profile, time=TIME)),
        *built(lambda: custom_event("Left Review", {"Stars": 5}, profile=profile, time=TIME)),
    ]
    for event in made:
        same_verdict(event)


ACCOUNT_IDS = st.one_of(st.sampled_from(["u-1", 42, "", " ", None, True, 1.5]), TEXT)
ACCOUNT_VALUES = st.one_of(
    st.dictionaries(TEXT, PLAIN, max_size=3),
    st.dictionaries(KEYS, ANYTHING, max_size=2),
    st.dictionaries(TEXT, ANYTHING, max_size=2).map(ReadOnly),
    st.sampled_from([None, "first_name", ["first_name"], 3]),
)
UPDATE_TYPES = st.one_of(st.sampled_from(["Property Update", "", " ", None, 5, ["x"]]), TEXT)
UPDATED_NAMES = st.one_of(st.none(), st.lists(TEXT, max_size=3), RULE_VALUES)


@examples(150)
@given(
    profile=SHOPPERS,
    account_id=ACCOUNT_IDS,
    update_type=UPDATE_TYPES,
    new_values=ACCOUNT_VALUES,
    old_values=ACCOUNT_VALUES,
    names=UPDATED_NAMES,
    extra=st.one_of(st.none(), st.dictionaries(TEXT, ANYTHING, max_size=3)),
    link=st.one_of(URLS, RULE_VALUES),
    visit_id=ACCOUNT_IDS,
    page=st.one_of(st.none(), URLS, RULE_VALUES),
    when=st.sampled_from([TIME, None, datetime(1989, 6, 1, tzinfo=UTC)]),
)
def test_every_account_builder_event_gets_the_reference_verdict(
    profile: dict[str, Any],
    account_id: Any,
    update_type: Any,
    new_values: Any,
    old_values: Any,
    names: Any,
    extra: Any,
    link: Any,
    visit_id: Any,
    page: Any,
    when: Any,
) -> None:
    made = [
        *built(lambda: created_account(profile, account_id=account_id, properties=extra)),
        *built(
            lambda: updated_account(
                profile,
                account_id=account_id,
                update_type=update_type,
                new_values=new_values,
                old_values=old_values,
                updated_properties=names,
                changed_at=when,
            )
        ),
        *built(lambda: reset_password(profile, link=link, requested_at=when)),
        *built(lambda: active_on_site(profile, visit_id=visit_id, page_url=page, time=when)),
    ]
    for event in made:
        same_verdict(event)


def pad_to(event: Event, pad: list[str], target: int, filler: str) -> None:
    """Grow ``pad`` (a list inside the event) until the payload is exactly ``target`` bytes."""
    chunk = filler * (MAX_STRING_BYTES // len(filler.encode()))
    chunk_bytes = encoded_size(chunk) + 1  # and its comma
    size = encoded_size(event.to_payload())
    while size + chunk_bytes + 2 * MAX_STRING_BYTES < target:
        pad.append(chunk)
        size += chunk_bytes
    size = encoded_size(event.to_payload())
    while size < target:  # then ASCII strings: one byte a character, 3 for quotes and comma
        room = target - size - 3
        if room < 0:
            break
        pad.append("x" * min(room, MAX_STRING_BYTES))
        size = encoded_size(event.to_payload())
    assert abs(size - target) <= 3


@examples(30)
@given(
    offset=st.integers(-300, 300),
    filler=st.sampled_from(["x", "é", "\x01", '"', "😀"]),
    where=st.sampled_from(["properties", "nested", "profile", "profile-id", "unique_id"]),
)
def test_payloads_near_five_megabytes_get_the_reference_verdict(
    offset: int, filler: str, where: str
) -> None:
    pad: list[str] = []
    profile: dict[str, Any] = {"email": EMAIL, "first_name": None, "last_name": ""}
    properties: dict[str, Any] = {"Stars": 5}
    if where == "properties":
        properties["pad"] = pad
    elif where == "nested":
        properties["deep"] = {"a": [{"pad": pad}]}
    elif where == "unique_id":
        properties["pad"] = pad
    else:
        profile["properties"] = {"pad": pad}
    if where == "profile-id":
        profile["id"] = "01GDDKASAP8TKDDA2GRZDSVP4H"
    event = make_event(properties=properties, profile=profile, value=9.99, value_currency="USD")
    if where == "unique_id":
        event.unique_id = filler * 1000
    pad_to(event, pad, MAX_PAYLOAD_BYTES + offset, filler)
    size = encoded_size(event.to_payload())
    verdict = same_verdict(event)
    if size > MAX_PAYLOAD_BYTES:
        assert verdict == ("rejected", "Left Review", "payload", f"{size} bytes; " + LIMIT_TEXT)
    else:
        assert verdict == ("accepted",)


LIMIT_TEXT = f"Klaviyo accepts at most {MAX_PAYLOAD_BYTES}"


# -- the size bound -----------------------------------------------------------------------


def compact(value: Any) -> int:
    return len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode())


@examples(400)
@given(value=st.dictionaries(TEXT, PLAIN, max_size=5) | st.dictionaries(TEXT, ANYTHING))
def test_the_walk_bounds_the_json_size_from_above(value: dict[str, Any]) -> None:
    bound = validate_fast._plain_json_bound(value)
    if bound is not None:
        assert bound >= compact(value)


def test_the_walk_vouches_for_plain_json_only() -> None:
    assert validate_fast._plain_json_bound({"a": [1, 2.5, None, True, "é", ("t",)]}) is not None
    for value in (
        {1: "a"},
        {"a": {None: 1}},
        {"a": math.nan},
        {"a": [math.inf]},
        {"a": "\ud800"},
        {"\udcff": 1},
        {"a": Decimal(1)},
        {"a": Text("t")},
        {Text("t"): 1},
        {"a": OrderedDict()},
        {"a": ReadOnly({})},
        {"a": 10**20},
        {"a": "x" * (MAX_STRING_BYTES + 1)},
        {"a": nested(MAX_NESTING)},
        cyclic("dict"),
    ):
        assert validate_fast._plain_json_bound(value) is None, value


def test_the_payload_overhead_covers_the_largest_fixed_fields() -> None:
    """Everything the body adds to the properties' and profile's JSON, at its longest: the time
    with microseconds and an offset to the microsecond, the largest finite int, every optional
    field, the id moved out of the attributes, profile entries that are dropped."""
    offset = timezone(-timedelta(hours=23, minutes=59, seconds=59, microseconds=999_999))
    profile = {"email": EMAIL, "id": "p", "first_name": None, "last_name": "", "meta": {}}
    longest = 0
    for value in (-(2**1024 - 2**970 - 1), -1.7976931348623157e308, -2.2250738585072014e-308):
        assert validate._is_number(value)  # the longest finite values validate_event lets by
        event = make_event(
            "m",
            {},
            profile,
            time=datetime(2024, 5, 1, 12, 30, 59, 999_999, tzinfo=offset),
            value=value,
            value_currency="",
            unique_id="",
            backfill=True,
        )
        fixed = encoded_size(event.to_payload()) - compact({}) - compact(profile)
        characters = len("m")  # metric, unique_id and value_currency
        assert (
            fixed
            <= validate_fast._PAYLOAD_OVERHEAD_BYTES
            + validate_fast._BYTES_PER_CHARACTER * characters
        )
        longest = max(longest, fixed)
    assert longest > 500  # (the 309-digit value: the case is the long one it means to be)


# -- each corner, named -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("properties", "field", "message"),
    [
        ({1: "a"}, "properties", "key 1 is not a string"),
        ({"a": {2.5: "b"}}, "a", "key 2.5 is not a string"),
        ({"a": [{True: 1}]}, "a[0]", "key True is not a string"),
        ({"a": {"b": {None: 1}}}, "a.b", "key None is not a string"),
        ({"a": {"b": [1, math.nan]}}, "a.b[1]", "nan is not a JSON number"),
        ({"a": -math.inf}, "a", "-inf is not a JSON number"),
        ({"price": Decimal("9.99")}, "price", "Decimal is not JSON (convert Decimal to float)"),
        ({"a": ["ok", "\udcff"]}, "a[1]", "not valid Unicode (a lone surrogate)"),
        ({"a": {"\ud800": 1}}, "a", "not valid Unicode (a lone surrogate)"),
        ({"a b ": {"c.d": math.nan}}, "['a b ']['c.d']", "nan is not a JSON number"),
        ({"s": "x" * (MAX_STRING_BYTES + 1)}, "s", "string of 102401 bytes exceeds 102400"),
        ({"s": "é" * (MAX_STRING_BYTES // 2 + 1)}, "s", "string of 102402 bytes exceeds 102400"),
        ({"x" * (MAX_STRING_BYTES + 1): 1}, "properties", "a key exceeds 100 KB"),
        ({"a": [b"raw"]}, "a[0]", "bytes is not JSON"),
        ({"a": {1, 2}}, "a", "set is not JSON"),
    ],
)
def test_each_problem_is_named_as_before(properties: Any, field: str, message: str) -> None:
    assert same_verdict(make_event(properties=properties)) == (
        "rejected",
        "Left Review",
        field,
        message,
    )


@pytest.mark.parametrize("kind", ["dict", "list", "tuple"])
@pytest.mark.parametrize("depth", [MAX_NESTING - 2, MAX_NESTING - 1, MAX_NESTING, MAX_NESTING + 1])
def test_nesting_is_refused_at_the_same_depth(kind: str, depth: int) -> None:
    """``properties.deep`` is at depth 1, so MAX_NESTING - 1 containers there are the most."""
    verdict = same_verdict(make_event(properties={"deep": nested(depth, kind)}))
    if depth < MAX_NESTING:
        assert verdict == ("accepted",)
    else:
        assert verdict[0] == "rejected"
        assert verdict[3] == f"nested deeper than {MAX_NESTING} levels (or a cycle)"


@pytest.mark.parametrize("kind", ["dict", "list", "mixed"])
def test_a_cycle_is_named_as_before(kind: str) -> None:
    verdict = same_verdict(make_event(properties={"loop": cyclic(kind)}))
    assert verdict[0] == "rejected" and "(or a cycle)" in verdict[3]


@pytest.mark.parametrize(
    "properties",
    [
        pytest.param(ReadOnly({"Stars": 5}), id="mapping-properties"),
        pytest.param({"a": ReadOnly({"b": 1})}, id="mapping-inside"),
        pytest.param({"a": MappingProxyType({"b": 1})}, id="mappingproxy-inside"),
    ],
)
def test_a_mapping_that_is_no_dict_passes_validation_then_fails_serialising(
    properties: Any,
) -> None:
    """The reference accepts any Mapping, then cannot serialise the payload: a TypeError. The
    fast path must not hide that (it hands such events to the exact serialisation)."""
    assert same_verdict(make_event(properties=properties))[:2] == ("raised", "TypeError")


@pytest.mark.parametrize(
    ("properties", "expected"),
    [
        ({"t": ("a", ("b", 1.5))}, ("accepted",)),
        ({"t": OrderedDict(a=1)}, ("accepted",)),
        ({"n": 10**20 - 1, "m": -(10**20) + 1}, ("accepted",)),
        ({"n": 10**20, "m": 2**1023}, ("accepted",)),
        ({"n": 10**400}, ("accepted",)),
        ({Text("key"): Text("value")}, ("accepted",)),
    ],
)
def test_what_only_the_reference_can_vouch_for_is_still_accepted(
    properties: dict[str, Any], expected: tuple[Any, ...]
) -> None:
    assert same_verdict(make_event(properties=properties)) == expected


def test_an_int_too_long_to_print_still_fails_serialising() -> None:
    verdict = same_verdict(make_event(properties={"n": 10**5000}))
    assert verdict[:2] == ("raised", "ValueError")


def test_strings_at_the_limit_are_accepted() -> None:
    properties = {
        "ascii": "x" * MAX_STRING_BYTES,
        "two-byte": "é" * (MAX_STRING_BYTES // 2),
        "escaped": "\x01" * MAX_STRING_BYTES,
        "y" * MAX_STRING_BYTES: 1,
    }
    assert same_verdict(make_event(properties=properties)) == ("accepted",)


@pytest.mark.parametrize(
    ("attributes", "field"),
    [
        ({"profile": {"email": EMAIL, 3: "x"}}, "profile.3"),
        ({"profile": {"email": "nope", "first_name": "\ud800"}}, "profile.first_name"),
        ({"profile": {"email": "nope", "location": {"city": math.nan}}}, "profile.location.city"),
        ({"profile": {"email": "nope", "location": {"planet": "Mars"}}}, "profile.location.planet"),
        (
            {"profile": {"email": EMAIL, "meta": {"patch_properties": {"x": 1}}}},
            "profile.meta.patch_properties.x",
        ),
        ({"profile": {"email": "nope"}}, "profile.email"),
        ({"profile": {"email": EMAIL, "phone_number": "555"}}, "profile.phone_number"),
        ({"profile": {"email": "", "phone_number": ""}}, "profile"),
        ({"profile": {"external_id": "e-1"}}, "profile"),
        ({"profile": {"anonymous_id": "a-1"}}, "profile"),
        ({"profile": {Text("email"): EMAIL, "x": 1}}, "profile.x"),
        ({"profile": ReadOnly({"email": "nope"})}, "profile.email"),
        ({"profile": {"email": EMAIL}, "properties": {1: 1}}, "properties"),
        ({"profile": {"email": "nope"}, "properties": {1: 1}}, "profile.email"),
        ({"time": datetime(2024, 5, 1), "properties": {1: 1}}, "time"),
        ({"properties": {"a": math.nan}, "value": math.nan}, "a"),
        ({"value": math.inf, "unique_id": ""}, "value"),
        ({"unique_id": "x" * (MAX_STRING_BYTES + 1)}, "unique_id"),
        ({"unique_id": "é" * (MAX_STRING_BYTES // 2 + 1)}, "unique_id"),
        ({"unique_id": "r-\ud800"}, "unique_id"),
        ({"unique_id": " ", "backfill": 1}, "unique_id"),
        ({"backfill": 1}, "backfill"),
    ],
)
def test_the_first_problem_named_is_the_references(attributes: dict[str, Any], field: str) -> None:
    verdict = same_verdict(make_event(**attributes))
    assert verdict[0] == "rejected" and verdict[2] == field


@pytest.mark.parametrize(
    ("metric", "properties", "field"),
    [
        ("Viewed Product", {"ProductName": "P"}, "ProductID"),
        ("Viewed Product", {"ProductID": True, "ProductName": "P"}, "ProductID"),
        ("Viewed Product", {"ProductID": "1", "ProductName": " "}, "ProductName"),
        ("Viewed Product", {"ProductID": "1", "ProductName": "P", "Price": 10**400}, "raised"),
        (
            "Viewed Product",
            {"ProductID": "1", "ProductName": "P", "Categories": ("a",)},
            "Categories",
        ),
        ("Placed Order", {"OrderId": "1"}, "Items"),
        ("Placed Order", {"OrderId": "1", "Items": []}, "Items"),
        ("Placed Order", {"OrderId": "1", "Items": ({},)}, "Items"),
        ("Placed Order", {"OrderId": "1", "Items": [{}, 3]}, "Items[0].ProductID"),
        ("Placed Order", {"OrderId": "1", "Items": [3]}, "Items[0]"),
        (
            "Placed Order",
            {"OrderId": "1", "Items": [ReadOnly({"ProductID": 1})]},
            "Items[0].ProductName",
        ),
        ("Fulfilled Order", {"OrderId": "1", "Items": []}, None),
        ("Placed Order", {"OrderId": "1", "BillingAddress": ReadOnly({})}, "Items"),
    ],
)
def test_metric_rules_name_the_same_property(
    metric: str, properties: dict[str, Any], field: str | None
) -> None:
    verdict = same_verdict(make_event(metric, properties, value=1.0, value_currency="USD"))
    if field is None:
        assert verdict == ("accepted",)
    elif field == "raised":
        assert verdict[0] == "raised"
    else:
        assert verdict[0] == "rejected" and verdict[2] == field


ORDER_ITEM = {
    "ProductID": "1",
    "ProductName": "P",
    "Quantity": 1,
    "ItemPrice": 9.99,
    "RowTotal": 9.99,
    "Categories": ["a"],
}


@pytest.mark.parametrize(
    ("change", "field", "message_start"),
    [
        ({"Quantity": 0}, "Items[1].Quantity", "must be an integer above 0"),
        ({"Quantity": True}, "Items[1].Quantity", "must be an integer above 0"),
        ({"ItemPrice": math.nan}, "Items[1].ItemPrice", "nan is not a JSON number"),
        ({"RowTotal": "9.99"}, "Items[1].RowTotal", "must be a finite number"),
        ({"Categories": ["a", 1]}, "Items[1].Categories", "must be a list of strings"),
        ({"ProductID": ""}, "Items[1].ProductID", "must be a non-empty string or an integer"),
    ],
)
def test_a_broken_line_is_named_by_index(
    change: dict[str, Any], field: str, message_start: str
) -> None:
    properties = {"OrderId": "1", "Items": [ORDER_ITEM, {**ORDER_ITEM, **change}, {}]}
    verdict = same_verdict(make_event("Placed Order", properties, value=9.99, value_currency="USD"))
    assert verdict[0] == "rejected" and verdict[2] == field
    assert verdict[3].startswith(message_start)


def test_too_many_properties_are_named_as_before() -> None:
    properties = {f"p{i}": i for i in range(MAX_PROPERTIES + 1)}
    verdict = same_verdict(make_event(properties=properties))
    assert verdict[2:] == ("properties", f"{MAX_PROPERTIES + 1} properties; Klaviyo allows 400")


def test_a_datetime_subclass_and_an_event_subclass_take_the_exact_size() -> None:
    class Bigger(Event):
        def to_payload(self) -> dict[str, Any]:
            return {"padding": "x" * (MAX_PAYLOAD_BYTES + 1)}

    moment = make_event(time=Moment(2024, 5, 1, tzinfo=UTC))
    assert same_verdict(moment) == ("accepted",)
    bigger = Bigger(metric="Left Review", properties={}, profile={"email": EMAIL}, time=TIME)
    assert same_verdict(bigger)[2] == "payload"


# -- the common path stays fast ---------------------------------------------------------------


def storefront_events() -> list[Event]:
    product = Product.coerce(
        {
            "id": "1111",
            "name": "Winnie the Pooh",
            "sku": "WINNIEPOOH",
            "price": 9.99,
            "url": "http://shop.test/p/1111",
            "image_url": "http://shop.test/i/1111.png",
            "categories": ["Fiction", "Children"],
            "brand": "Kids Books",
        }
    )
    lines = [LineItem(product, quantity=n) for n in (1, 2, 3, 4)]
    order = Order(
        id="1234",
        items=lines,
        email=EMAIL,
        phone_number=PHONE,
        total=99.9,
        currency="USD",
        discount_code="Free Shipping",
        discount_value=5,
        billing_address=Address(address1="123 Abc St", city="Boston", zip="02110"),
        shipping_address=Address(address1="123 Abc St"),
        placed_at=TIME,
    )
    cart = Cart(id="c-1", items=lines, checkout_url="http://shop.test/checkout")
    shopper = {"email": EMAIL}
    return [
        viewed_product(product, profile=shopper, render_id="r", visitor="v", currency="USD"),
        added_to_cart(cart, lines[0], profile=shopper),
        started_checkout(cart, profile=shopper),
        placed_order(order),
        *ordered_products(order),
        fulfilled_order(order, TrackingNumber="T1"),
        canceled_order(order, reason="Out of stock"),
        refunded_order(order, reason="Damaged"),
        custom_event("Left Review", {"Stars": 5, "Tags": ["a"]}, profile={"_kx": "kx.AbC"}),
    ]


def test_builder_events_never_take_the_reference_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """The storefront's own events are vouched for by the walk: no per-value check, no
    serialisation of the payload."""

    def forbidden(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the reference path ran")

    made = storefront_events()
    for module in (validate, validate_fast):  # where the fast path and the checks look them up
        for name in ("_check_json", "_check_profile", "_check_properties", "_check_rules"):
            monkeypatch.setattr(module, name, forbidden)
    monkeypatch.setattr(validate, "encoded_size", forbidden)
    for event in made:
        validate_event(event)


def python_calls(function: Callable[[Event], None], event: Event) -> int:
    calls = 0

    def profiler(frame: Any, what: str, arg: Any) -> None:
        nonlocal calls
        if what == "call":
            calls += 1

    function(event)  # warm (rule tables are compiled on first use)
    previous = sys.getprofile()
    sys.setprofile(profiler)
    try:
        function(event)
    finally:
        sys.setprofile(previous)
    return calls


def test_validation_makes_a_handful_of_python_calls() -> None:
    """What costs in a real request (cold caches) is Python calls: a dozen or so per event,
    not one per value (the reference makes about 80 for Viewed Product, 300 for the order)."""
    viewed, *_, placed = storefront_events()[:4]
    assert python_calls(validate_event, viewed) <= 15
    assert python_calls(validate_event, placed) <= 20
    assert python_calls(REFERENCE, viewed) > 60  # (what the limits are measured against)
