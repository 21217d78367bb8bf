"""Bad input: what a public storefront receives and what a merchant's code may hand over.

- Events: property tests (hypothesis) over every builder and ``klaviyo.track`` with any input
  (unicode, control characters, lone surrogates, huge strings, NaN/inf/negative/huge numbers,
  Decimals including signaling NaN, None, nested and self-containing structures). Each either
  gives a payload valid against Klaviyo's official schema or a ``KlaviyoSchemaError`` naming the
  field; never another exception, never an invalid payload queued. In lenient mode tracking
  never raises at all: what cannot be sent is a dead letter.
- Cookies and query strings on the demo store: forged, tampered, oversized identity cookies,
  garbage ``__kla_id``, ``_kx`` with control characters or a megabyte long: ignored, the page
  renders (200), no identity is taken from them, nothing crashes.
- Webhooks (``tests/test_webhooks.py`` covers signatures, replays, malformed JSON, size and
  content type): here the bodies that are valid JSON yet not what a provider sends.
"""

from __future__ import annotations

import base64
import json
import math
import os
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from itsdangerous import URLSafeTimedSerializer

from example_store import create_app
from flask_klaviyo.delivery.deadletters import DeadLetters
from flask_klaviyo.delivery.outbox import Outbox
from flask_klaviyo.delivery.parking import Parking
from flask_klaviyo.events import (
    MAX_NESTING,
    Event,
    added_to_cart,
    bulk_payload,
    canceled_order,
    custom_event,
    failed_payment,
    fulfilled_order,
    ordered_products,
    placed_order,
    refunded_order,
    shipping_update,
    started_checkout,
    validate_event,
    viewed_product,
)
from flask_klaviyo.exceptions import KlaviyoSchemaError
from flask_klaviyo.identity.cookies import COOKIE_SALT
from flask_klaviyo.webhooks import SIGNATURE_HEADER, sign

EMAIL = "ann@shop-test.com"
SECRET_KEY = "bad-input-secret"
WEBHOOK_SECRET = "whsec_bad_input"

# -- any input ------------------------------------------------------------------------------------

_text = st.one_of(
    st.text(alphabet=st.characters(codec=None), max_size=8),  # any code point, surrogates too
    st.text(alphabet=st.characters(max_codepoint=0x1F), max_size=4),  # control characters
    st.sampled_from(["", " ", "\x00", "\ud800", "a\u202eb", "</script>", "é" * 60_000]),
)
_numbers = st.one_of(
    st.integers(),
    st.integers(min_value=10**300, max_value=10**400),
    st.floats(),  # NaN, inf, -0.0, subnormals
    st.decimals(),
    st.sampled_from(
        [Decimal("sNaN"), Decimal("-Infinity"), Decimal("1E+30"), Decimal("-0.005"), -1, 0]
    ),
)
_leaves = st.one_of(st.none(), st.booleans(), _text, _numbers)
ANYTHING = st.recursive(
    _leaves,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_text, inner, max_size=3),
    max_leaves=6,
)


def _record(keys: list[str], *, required: tuple[str, ...] = ()) -> st.SearchStrategy[Any]:
    """A mapping with any values under the names the models read (some always present)."""
    return st.fixed_dictionaries(
        {key: ANYTHING for key in required},
        optional={key: ANYTHING for key in keys if key not in required},
    )


PRODUCT_KEYS = ["id", "name", "price", "sku", "url", "image_url", "categories", "brand"]
PRODUCT = st.one_of(
    _record([*PRODUCT_KEYS, "compare_at_price"]),
    _record(PRODUCT_KEYS, required=("id", "name", "price")),
    ANYTHING,
)
LINE = st.one_of(
    st.fixed_dictionaries({"product": PRODUCT}, optional={"quantity": ANYTHING, "price": ANYTHING}),
    PRODUCT,
)
LINES = st.lists(LINE, max_size=3) | ANYTHING
CART = st.fixed_dictionaries({"id": ANYTHING, "items": LINES}, optional={"checkout_url": ANYTHING})
ORDER_KEYS = ["email", "total", "currency", "discount_code", "discount_value", "placed_at"]
ORDER = st.fixed_dictionaries(
    {"id": ANYTHING, "items": LINES},
    optional={
        **{key: ANYTHING for key in ORDER_KEYS},
        "shipping_address": ANYTHING,
        "customer": ANYTHING,
    },
)
PROFILE = st.one_of(
    st.just({"email": EMAIL}),
    st.fixed_dictionaries({"email": st.just(EMAIL)}, optional={"first_name": ANYTHING}),
    st.dictionaries(
        st.sampled_from(["email", "phone_number", "_kx", "first_name", "location", "x"]) | _text,
        ANYTHING,
        max_size=3,
    ),
)
TIMES = st.one_of(
    st.none(),
    st.datetimes(timezones=st.none() | st.timezones()),
    _numbers,
    _text,
)

PROPERTY = settings(
    max_examples=int(os.environ.get("BAD_INPUT_EXAMPLES", "150")),  # more for a long hunt
    deadline=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.function_scoped_fixture,
        HealthCheck.large_base_example,
        HealthCheck.data_too_large,
    ],
)


def valid_or_named(openapi: Any, build: Callable[[], Any]) -> list[Event]:
    """``build()`` then ``validate_event``: each event either fits Klaviyo's schema (as a Create
    Event body and a Bulk Create Events body) or a KlaviyoSchemaError names its field. Returns
    the valid events."""
    try:
        built = build()
    except KlaviyoSchemaError as exc:
        assert_named(exc)
        return []
    valid = []
    for event in built if isinstance(built, list) else [built]:
        try:
            validate_event(event)
        except KlaviyoSchemaError as exc:
            assert_named(exc)
            continue
        payload = event.to_payload()
        json.dumps(payload, allow_nan=False).encode()  # strict JSON, valid UTF-8
        openapi.validate("create_event", payload)
        openapi.validate("bulk_create_events", bulk_payload([event]))
        valid.append(event)
    return valid


def assert_named(exc: KlaviyoSchemaError) -> None:
    assert isinstance(exc.field, str) and exc.field.strip(), repr(exc)[:300]
    assert isinstance(exc.metric, str) and isinstance(exc.message, str) and exc.message


# -- the builders ------------------------------------------------------------------------------


@PROPERTY
@given(product=PRODUCT, profile=PROFILE, time=TIMES)
def test_viewed_product_is_valid_or_names_the_field(
    openapi: Any, product: Any, profile: Any, time: Any
) -> None:
    valid_or_named(
        openapi, lambda: viewed_product(product, profile=profile, render_id="r", time=time)
    )


@PROPERTY
@given(cart=CART, line=LINE, profile=PROFILE, time=TIMES)
def test_cart_events_are_valid_or_name_the_field(
    openapi: Any, cart: Any, line: Any, profile: Any, time: Any
) -> None:
    valid_or_named(openapi, lambda: added_to_cart(cart, line, profile=profile, time=time))
    valid_or_named(openapi, lambda: started_checkout(cart, profile=profile, time=time))


@PROPERTY
@given(order=ORDER, profile=st.none() | PROFILE, time=TIMES, reason=ANYTHING, extra=ANYTHING)
def test_order_events_are_valid_or_name_the_field(
    openapi: Any, order: Any, profile: Any, time: Any, reason: Any, extra: Any
) -> None:
    valid_or_named(openapi, lambda: placed_order(order, profile=profile, time=time))
    valid_or_named(openapi, lambda: ordered_products(order, profile=profile, time=time))
    valid_or_named(openapi, lambda: fulfilled_order(order, profile=profile, TrackingNumber=extra))
    valid_or_named(openapi, lambda: canceled_order(order, profile=profile, reason=reason))
    valid_or_named(openapi, lambda: refunded_order(order, profile=profile, reason=reason))


@PROPERTY
@given(
    order=ORDER,
    text=ANYTHING,
    extra=ANYTHING,
    status=st.sampled_from(["shipped", "out_for_delivery", "delivered"]) | ANYTHING,
    items=st.lists(LINE, max_size=3) | ANYTHING,
    amount=_numbers | ANYTHING,
    sequence=st.integers(min_value=1, max_value=3) | ANYTHING,
)
def test_lifecycle_events_are_valid_or_name_the_field(
    openapi: Any,
    order: Any,
    text: Any,
    extra: Any,
    status: Any,
    items: Any,
    amount: Any,
    sequence: Any,
) -> None:
    """Failed Payment, Shipping Update, partial cancellations and refunds (test_lifecycle.py)."""
    valid_or_named(openapi, lambda: failed_payment(order, failure=text, next_steps=extra))
    valid_or_named(openapi, lambda: shipping_update(order, status=status, carrier=extra))
    for build in (refunded_order, canceled_order):
        valid_or_named(
            openapi, lambda b=build: b(order, items=items, amount=amount, sequence=sequence)
        )


@PROPERTY
@given(
    metric=_text | ANYTHING,
    properties=st.dictionaries(_text, ANYTHING, max_size=4) | ANYTHING,
    profile=PROFILE,
    value=_numbers | ANYTHING,
    unique_id=ANYTHING,
    currency=ANYTHING,
    time=TIMES,
)
def test_custom_events_are_valid_or_name_the_field(
    openapi: Any,
    metric: Any,
    properties: Any,
    profile: Any,
    value: Any,
    unique_id: Any,
    currency: Any,
    time: Any,
) -> None:
    valid_or_named(
        openapi,
        lambda: custom_event(
            metric,
            properties if isinstance(properties, dict) else {"p": properties},
            profile=profile,
            value=value,
            unique_id=unique_id,
            currency=currency,
            time=time,
        ),
    )


def nested(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {"leaf": 1}
    for _ in range(depth):
        value = {"k": value}
    return value


@pytest.mark.parametrize(
    "properties",
    [
        pytest.param({"deep": nested(MAX_NESTING + 1)}, id="too-deep"),
        pytest.param({"deep": nested(5000)}, id="far-too-deep"),
        pytest.param({"lone": "\udcff"}, id="lone-surrogate"),
        pytest.param({"\ud800": 1}, id="surrogate-key"),
        pytest.param({"x" * 110_000: 1}, id="huge-key"),
        pytest.param({"price": Decimal("sNaN")}, id="signaling-nan"),
        pytest.param({"n": 10**400}, id="huge-int-is-fine-in-json"),
    ],
)
def test_pathological_properties_are_named(openapi: Any, properties: dict[str, Any]) -> None:
    valid = valid_or_named(
        openapi, lambda: custom_event("Pathological", properties, profile={"email": EMAIL})
    )
    assert valid == [] or list(properties) == ["n"]


def test_a_property_that_contains_itself_is_named() -> None:
    cycle: dict[str, Any] = {}
    cycle["self"] = cycle
    with pytest.raises(KlaviyoSchemaError) as caught:
        custom_event("Cyclic", {"c": cycle}, profile={"email": EMAIL})
    assert caught.value.field == "properties"


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"value": Decimal("sNaN")}, "value"),
        ({"value": 10**400}, "value"),
        ({"value": math.inf}, "value"),
        ({"time": "next tuesday"}, "time"),
        ({"time": 1e20}, "time"),
        ({"time": ["2026"]}, "time"),
        ({"metric": "\ud800"}, "metric"),
        ({"profile": {"email": "ann@shop-test.com", "first_name": "\udcff"}}, "profile.first_name"),
    ],
)
def test_the_field_named_is_the_one_at_fault(kwargs: dict[str, Any], field: str) -> None:
    options = {"metric": "Left Review", "profile": {"email": EMAIL}, **kwargs}
    metric = options.pop("metric")
    with pytest.raises(KlaviyoSchemaError) as caught:
        validate_event(custom_event(metric, {"Stars": 5}, **options))
    assert caught.value.field == field


def test_order_lines_that_are_not_a_list_are_named() -> None:
    with pytest.raises(KlaviyoSchemaError) as caught:
        placed_order({"id": "o-1", "email": EMAIL, "items": 3.5})
    assert (caught.value.metric, caught.value.field) == ("Order", "items")


# -- klaviyo.track and the order helpers, in an app ---------------------------------------------


@PROPERTY
@given(
    metric=_text,
    properties=st.dictionaries(_text, ANYTHING, max_size=4),
    profile=st.none() | PROFILE,
    value=st.none() | _numbers,
    unique_id=st.none() | _text,
    currency=st.none() | _text,
    time=st.none() | st.datetimes(timezones=st.none() | st.timezones()),
)
def test_track_queues_only_valid_payloads_or_names_the_field(
    redis_url: str,
    tmp_path: Path,
    openapi: Any,
    metric: Any,
    properties: Any,
    profile: Any,
    value: Any,
    unique_id: Any,
    currency: Any,
    time: Any,
    make_app: Callable[..., Flask],
) -> None:
    """Strict mode (debug, tests): an invalid event raises, naming its field; whatever is queued
    fits Klaviyo's schema."""
    app = make_app(redis_url, tmp_path, SECRET_KEY=SECRET_KEY, KLAVIYO_STRICT=True)
    klaviyo = app.extensions["klaviyo"].extension
    outbox = Outbox(redis.Redis.from_url(redis_url))
    before = outbox.depth()
    with app.app_context():
        try:
            event = klaviyo.track(
                metric,
                properties,
                profile=profile,
                value=value,
                unique_id=unique_id,
                currency=currency,
                time=time,
            )
        except KlaviyoSchemaError as exc:
            assert_named(exc)
            assert outbox.depth() == before
            return
    assert event is not None
    [queued] = outbox.waiting()[before:]
    sent = Event.from_dict(queued)
    openapi.validate("create_event", sent.to_payload())
    assert json.dumps(sent.to_payload(), allow_nan=False)


@PROPERTY
@given(
    metric=_text | ANYTHING,
    properties=ANYTHING,
    value=ANYTHING,
    time=TIMES,
    order=ORDER | ANYTHING,
)
def test_lenient_tracking_never_raises_and_keeps_what_it_cannot_send(
    redis_url: str,
    tmp_path: Path,
    openapi: Any,
    metric: Any,
    properties: Any,
    value: Any,
    time: Any,
    order: Any,
    make_app: Callable[..., Flask],
) -> None:
    """Lenient mode (production): tracking never raises into the page. Every call either queues
    schema-valid events or leaves a dead letter naming the field."""
    app = make_app(redis_url, tmp_path, SECRET_KEY=SECRET_KEY, KLAVIYO_STRICT=False)
    klaviyo = app.extensions["klaviyo"].extension
    connection = redis.Redis.from_url(redis_url)
    outbox, dead = Outbox(connection), DeadLetters(connection)
    calls: list[Callable[[], Any]] = [
        lambda: klaviyo.track(
            metric,
            properties if isinstance(properties, dict) else {"p": properties},
            profile={"email": EMAIL},
            value=value,
            time=time,
        ),
        lambda: klaviyo.order_placed(order, profile={"email": EMAIL}),
        lambda: klaviyo.order_refunded(order, reason=properties),
    ]
    with app.app_context():
        for call in calls:
            queued, kept = outbox.depth(), dead.count()
            call()
            assert outbox.depth() > queued or dead.count() > kept
    for record in dead.all():
        assert all(error["pointer"] for error in record["errors"]), record["errors"]
    for item in outbox.waiting():
        openapi.validate("create_event", Event.from_dict(item).to_payload())


# -- cookies and query strings on the demo store ------------------------------------------------

VICTIM = "victim@shop-test.com"
PAGE = "/products/house-blend"


@pytest.fixture
def store(redis_url: str, tmp_path: Path) -> Flask:
    """The demo store, strict (TESTING): any exception in tracking would surface."""
    return create_app(
        {
            "instance_path": str(tmp_path / "store"),
            "TESTING": True,
            "SECRET_KEY": SECRET_KEY,
            "KLAVIYO_REDIS_URL": redis_url,
            "KLAVIYO_PRIVATE_API_KEY": "pk_test_private_key",
            "KLAVIYO_WEBHOOK_SECRET": WEBHOOK_SECRET,
            "STORE_PAYMENTS_AUTO_CALLBACK": False,
            "KLAVIYO_ACTIVE_ON_SITE": False,  # the identity inputs are what is tested
        }
    )


def identity_token(data: Any, key: str = SECRET_KEY) -> str:
    return URLSafeTimedSerializer(key, salt=COOKIE_SALT).dumps(data)


def kla_id(data: Any) -> str:
    return base64.b64encode(json.dumps(data).encode()).decode()


def tampered(token: str) -> str:
    payload, rest = token.split(".", 1)
    return payload[:5] + ("A" if payload[5] != "A" else "B") + payload[6:] + "." + rest


GOOD_KX = "a2xhX2V4Y2hhbmdl.AbC123"
CONTROL_KX = "abc\r\nSet-Cookie: evil=1\x00\x1b[31m.AbC123"
BAD_COOKIES = {
    "forged (another key)": f"klaviyo_id={identity_token({'p': {'email': VICTIM}}, 'guess')}",
    "tampered": f"klaviyo_id={tampered(identity_token({'p': {'email': VICTIM}}))}",
    "oversized": "klaviyo_id=" + "x" * 200_000,
    "signed nonsense": f"klaviyo_id={identity_token({'p': VICTIM, 'k': ['x'], 'a': 7})}",
    "control characters": "klaviyo_id=ab\x01\x7fcd",
    "garbage __kla_id": "__kla_id=%%%not-base64%%%",
    "__kla_id naming a victim": f"__kla_id={kla_id({'$email': VICTIM})}",
    "__kla_id with control characters": f"__kla_id={kla_id({'$exchange_id': CONTROL_KX})}",
    "__kla_id megabyte": "__kla_id=" + kla_id({"$exchange_id": "A" * 1_000_000}),
    "__kla_id deep": "__kla_id=" + base64.b64encode(b"[" * 50_000 + b"]" * 50_000).decode(),
    "garbage session": "session=garbage.value.here",
}
BAD_QUERIES = {
    "_kx with control characters": "?_kx=" + quote(CONTROL_KX, safe=""),
    "_kx of a megabyte": "?_kx=" + "A" * 1_000_000 + ".AbC123",
    "_kx repeated 50,000 times": "?" + "&".join(["_kx=%00"] * 50_000),
    "_kx empty": "?_kx=",
}


def parked(redis_url: str) -> int:
    return len(redis.Redis.from_url(redis_url).keys(Parking.PREFIX + "*"))


def assert_ignored(response: Any, redis_url: str, *bad: str) -> None:
    """The page rendered, the bad value gave no identity (the view is parked, not queued), and
    it was not echoed in the page or a cookie."""
    assert response.status_code == 200
    page = response.get_data(as_text=True)
    assert "Traceback" not in page and "klaviyo-bridge-data" in page
    assert Outbox(redis.Redis.from_url(redis_url)).waiting() == []  # no identity taken
    assert parked(redis_url) == 1  # the view waits for the visitor to be known
    cookies = " ".join(response.headers.getlist("Set-Cookie"))
    for text in (VICTIM, "evil", *bad):
        assert text not in cookies
    for text in (VICTIM, "\x00", "\x1b", "\r\nSet-Cookie"):  # an echoed URL stays escaped
        assert text not in page
    assert len(cookies) < 4096 * 3


@pytest.mark.parametrize("cookie", list(BAD_COOKIES), ids=list(BAD_COOKIES))
def test_bad_cookies_are_ignored(store: Flask, redis_url: str, cookie: str) -> None:
    client = store.test_client(use_cookies=False)  # (a cookie jar would replace the header)
    response = client.get(PAGE, headers={"Cookie": BAD_COOKIES[cookie]})
    assert_ignored(response, redis_url)


@pytest.mark.parametrize("query", list(BAD_QUERIES), ids=list(BAD_QUERIES))
def test_bad_query_strings_are_ignored(store: Flask, redis_url: str, query: str) -> None:
    response = store.test_client().get(PAGE + BAD_QUERIES[query])
    assert_ignored(response, redis_url, "AAAAAAAAAAAAAAAA")


def test_the_same_page_with_good_identity_is_tracked(store: Flask, redis_url: str) -> None:
    """The control: what the bad inputs imitate does identify the visitor."""
    assert store.test_client().get(f"{PAGE}?_kx={quote(GOOD_KX, safe='')}").status_code == 200
    cookie = f"klaviyo_id={identity_token({'p': {'email': EMAIL}})}"
    client = store.test_client(use_cookies=False)
    assert client.get(PAGE, headers={"Cookie": cookie}).status_code == 200
    queued = Outbox(redis.Redis.from_url(redis_url)).waiting()
    assert [event["profile"] for event in queued] == [{"_kx": GOOD_KX}, {"email": EMAIL}]


# -- webhook bodies that are JSON, but not a provider's ----------------------------------------


def place_order(client: FlaskClient) -> str:
    client.post("/api/cart", json={"product_id": "house-blend", "quantity": 1})
    client.post("/checkout/email", data={"email": EMAIL})
    placed = client.post("/checkout", json={})
    assert placed.status_code == 201
    return str(placed.json["order_id"])  # type: ignore[index]


def delivery(order_id: str, **data: Any) -> dict[str, Any]:
    return {"id": "evt_bad", "type": "payment.succeeded", "data": {"order_id": order_id, **data}}


WEBHOOK_BODIES: dict[str, tuple[Callable[[str], bytes], str]] = {
    "UTF-16": (lambda o: json.dumps(delivery(o)).encode("utf-16"), "malformed_json"),
    "UTF-32": (lambda o: json.dumps(delivery(o)).encode("utf-32"), "malformed_json"),
    "UTF-8 BOM": (lambda o: b"\xef\xbb\xbf" + json.dumps(delivery(o)).encode(), "malformed_json"),
    "lone surrogate in the id": (
        lambda o: json.dumps(delivery(o)).replace("evt_bad", "\\ud800").encode(),
        "invalid_payload",
    ),
    "lone surrogate in the order id": (
        lambda o: json.dumps(delivery("\udcff")).encode(),
        "invalid_payload",
    ),
    "lone surrogate in the type": (
        lambda o: json.dumps(delivery(o)).replace("payment.succeeded", "\\ud800").encode(),
        "invalid_payload",
    ),
    "NaN amount": (lambda o: json.dumps(delivery(o, amount=math.nan)).encode(), "invalid_payload"),
    "infinite amount": (
        lambda o: json.dumps(delivery(o)).replace("}}", ', "amount": 1e999}}').encode(),
        "invalid_payload",
    ),
    "5,000-digit amount": (
        lambda o: (
            json.dumps(delivery(o)).replace("}}", ', "amount": ' + "9" * 5000 + "}}").encode()
        ),
        "malformed_json",
    ),
    "nested 20,000 deep": (lambda o: b"[" * 20_000 + b"]" * 20_000, "malformed_json"),
}


@pytest.mark.parametrize("case", list(WEBHOOK_BODIES), ids=list(WEBHOOK_BODIES))
def test_webhook_bodies_a_provider_never_sends_are_refused(store: Flask, case: str) -> None:
    """Even signed (only the secret's holder can send them), they get a JSON 400, nothing is
    recorded or queued, and the order is untouched."""
    client = store.test_client()
    order_id = place_order(client)
    outbox = store.extensions["klaviyo"].outbox
    before = outbox.waiting()
    make, code = WEBHOOK_BODIES[case]
    body = make(order_id)
    answer = client.post(
        "/webhooks/payments",
        data=body,
        headers={"Content-Type": "application/json", SIGNATURE_HEADER: sign(WEBHOOK_SECRET, body)},
    )
    assert answer.status_code == 400, answer.get_data(as_text=True)[:300]
    assert answer.is_json and answer.json["error"] == code  # type: ignore[index]
    assert outbox.waiting() == before
    order = client.get(f"/orders/{order_id}", headers={"Accept": "application/json"}).json
    assert order["status"] == "pending_payment"  # type: ignore[index]
