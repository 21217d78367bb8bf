"""Metric builders against Klaviyo's own examples (read from ../shared/seeds at test time),
validation, stable ids, bulk bodies, batching and masking."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flask_klaviyo.events import (
    MAX_METRIC_NAME,
    MAX_PROPERTIES,
    MAX_STRING_BYTES,
    METRIC_SCHEMAS,
    REQUIRED_PROPERTIES,
    Event,
    added_to_cart,
    bulk_payload,
    canceled_order,
    canonical_json,
    custom_event,
    encoded_size,
    events_at_pointer,
    fulfilled_order,
    locate_bulk_pointer,
    mask_email,
    mask_phone,
    mask_profile,
    ordered_products,
    placed_order,
    refunded_order,
    split_batches,
    stable_id,
    started_checkout,
    validate_event,
    viewed_product,
)
from flask_klaviyo.exceptions import KlaviyoSchemaError
from flask_klaviyo.models import Address, Cart, LineItem, Order, Product

SERVER_METRICS = (
    "Placed Order",
    "Ordered Product",
    "Fulfilled Order",
    "Canceled Order",
    "Refunded Order",
)
SEED_PROFILE = {"email": "sarah.mason@klaviyo-demo.com", "phone_number": "+15005550006"}
SHOPPER = {"email": "john.smith@shop-test.com"}


# -- reading Klaviyo's examples from the seeds ------------------------------------------------


def seed_text(shared_dir: Path, number: str) -> str:
    files = sorted((shared_dir / "seeds").glob(f"{number}_*.txt"))
    assert len(files) == 1, files
    return files[0].read_text(encoding="utf-8")


def _metric_of(body: dict[str, Any]) -> str | None:
    try:
        return body["data"]["attributes"]["metric"]["data"]["attributes"]["name"]
    except (KeyError, TypeError):
        return None


@pytest.fixture(scope="module")
def server_seeds(shared_dir: Path) -> dict[str, dict[str, Any]]:
    """Seed 001's Create Event examples by metric: the curl --data body and the json blocks
    (blocks with placeholders such as ``{...}`` are not JSON and are skipped)."""
    text = seed_text(shared_dir, "001")
    bodies = []
    curl = re.search(r"--data '\n(.*?)\n'\n", text, re.S)
    assert curl, "seed 001 has no curl --data example"
    bodies.append(json.loads(curl.group(1)))
    for block in re.findall(r"```json\n(.*?)```", text, re.S):
        try:
            bodies.append(json.loads(block))
        except json.JSONDecodeError:
            continue
    found: dict[str, dict[str, Any]] = {}
    for body in bodies:
        metric = _metric_of(body)
        if metric in SERVER_METRICS:
            found.setdefault(metric, body["data"]["attributes"])
    assert sorted(found) == sorted(SERVER_METRICS)
    return found


def _js_object_after(text: str, marker: str) -> dict[str, Any]:
    start = text.index(marker) + len(marker)
    start = text.index("{", start)
    obj, _ = json.JSONDecoder().raw_decode(text, start)
    return obj


@pytest.fixture(scope="module")
def browser_seeds(shared_dir: Path) -> dict[str, dict[str, Any]]:
    """The klaviyo.track(...) objects of seed 001 and seed 003's literal Viewed Product item."""
    text = seed_text(shared_dir, "001")
    found = {
        metric: _js_object_after(text, f'klaviyo.track("{metric}", ')
        for metric in ("Added to Cart", "Started Checkout")
    }
    older = seed_text(shared_dir, "003")
    assert '_learnq.push(["track", "Viewed Product", item])' in older
    found["Viewed Product"] = _js_object_after(older, "var item = ")
    return found


# -- the seed's example order, built with the models ------------------------------------------

URL1 = "http://www.example.com/path/to/product"
URL2 = "http://www.example.com/path/to/product2"


def winnie(price: Any = 9.99) -> Product:
    return Product(
        id="1111",
        name="Winnie the Pooh",
        price=price,
        sku="WINNIEPOOH",
        url=URL1,
        image_url="http://www.example.com/path/to/product/image.png",
        categories=["Fiction", "Children"],
        brand="Kids Books",
        compare_at_price=14.99,
    )


def tale(price: Any = 19.99) -> Product:
    return Product(
        id="1112",
        name="A Tale of Two Cities",
        price=price,
        sku="TALEOFTWO",
        url=URL2,
        image_url="http://www.example.com/path/to/product/image2.png",
        categories=["Fiction", "Classics"],
        brand="Harcourt Classics",
    )


def seed_order(prices: tuple[Any, Any] = (9.99, 19.99), **changes: Any) -> Order:
    fields: dict[str, Any] = {
        "id": "1234",
        "items": [LineItem(winnie(prices[0])), LineItem(tale(prices[1]))],
        "email": SEED_PROFILE["email"],
        "phone_number": SEED_PROFILE["phone_number"],
        "total": 29.98,  # the seed's value: its "Free Shipping" discount is not off the items
        "currency": "USD",
        "discount_code": "Free Shipping",
        "discount_value": 5,
        "billing_address": Address(
            first_name="John",
            last_name="Smith",
            address1="123 Abc St",
            city="Boston",
            region_code="MA",
            country_code="US",
            zip="02110",
            phone="+15551234567",
        ),
        "shipping_address": Address(address1="123 Abc St"),
        "placed_at": datetime(2022, 11, 8, tzinfo=UTC),
    }
    fields.update(changes)
    return Order(**fields)


def seed_cart(prices: tuple[Any, Any] = (9.99, 19.99)) -> Cart:
    return Cart(
        id="1000123",
        items=[LineItem(winnie(prices[0])), LineItem(tale(prices[1]))],
        checkout_url="http://www.example.com/path/to/checkout",
    )


def _seed_time(attributes: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(attributes["time"]).replace(tzinfo=UTC)


def server_events(seeds: dict[str, dict[str, Any]], order: Order) -> dict[str, Event]:
    reason = seeds["Canceled Order"]["properties"]["Reason"]
    return {
        "Placed Order": placed_order(order),
        "Ordered Product": ordered_products(order)[0],
        "Fulfilled Order": fulfilled_order(order, time=_seed_time(seeds["Fulfilled Order"])),
        "Canceled Order": canceled_order(
            order, reason=reason, time=_seed_time(seeds["Canceled Order"])
        ),
        "Refunded Order": refunded_order(
            order,
            reason=seeds["Refunded Order"]["properties"]["Reason"],
            time=_seed_time(seeds["Refunded Order"]),
        ),
    }


def assert_properties_match(built: dict[str, Any], seed: dict[str, Any]) -> None:
    """Equal names and values. Top-level ``Categories`` is compared as a set: for the same two
    books the seed lists ["Fiction", "Children", "Classics"] in Started Checkout but
    ["Fiction", "Classics", "Children"] in the order examples, so no one order is Klaviyo's."""
    assert sorted(built) == sorted(seed)
    for key, expected in seed.items():
        if key == "Categories" and "OrderId" in seed and "ProductID" not in seed:
            assert sorted(built[key]) == sorted(expected), key
            assert len(built[key]) == len(expected), key
        else:
            assert built[key] == expected, key


# -- the builders reproduce Klaviyo's examples ------------------------------------------------


@pytest.mark.parametrize("money", ["float", "decimal"])
@pytest.mark.parametrize("metric", SERVER_METRICS)
def test_server_metric_matches_seed_001(
    server_seeds: dict[str, dict[str, Any]], metric: str, money: str, openapi: Any
) -> None:
    prices = (9.99, 19.99) if money == "float" else (Decimal("9.99"), Decimal("19.99"))
    total = 29.98 if money == "float" else Decimal("29.98")
    order = seed_order(prices, total=total, discount_value=5 if money == "float" else Decimal(5))
    seed = server_seeds[metric]
    event = server_events(server_seeds, order)[metric]

    assert event.metric == metric
    assert_properties_match(event.properties, seed["properties"])
    assert event.value == seed["value"]
    assert isinstance(event.value, float)
    assert event.value_currency == seed["value_currency"]
    assert event.time == _seed_time(seed)
    assert event.profile == seed["profile"]["data"]["attributes"]
    validate_event(event)
    openapi.validate("create_event", event.to_payload())
    json.dumps(event.to_payload())  # JSON can carry it: no Decimal left anywhere


def test_discount_keys_follow_each_seed_example_literally(
    server_seeds: dict[str, dict[str, Any]],
) -> None:
    events = server_events(server_seeds, seed_order())
    for metric in ("Placed Order", "Fulfilled Order"):
        assert "DiscountCode" in server_seeds[metric]["properties"]
        assert events[metric].properties["DiscountCode"] == "Free Shipping"
        assert "Discount Code" not in events[metric].properties
    for metric in ("Canceled Order", "Refunded Order"):
        assert "Discount Code" in server_seeds[metric]["properties"]
        assert events[metric].properties["Discount Value"] == 5
        assert "DiscountCode" not in events[metric].properties


def test_added_to_cart_matches_seed_001(
    browser_seeds: dict[str, dict[str, Any]], openapi: Any
) -> None:
    seed = dict(browser_seeds["Added to Cart"])
    value = seed.pop("$value")
    event = added_to_cart(seed_cart(), LineItem(tale()), profile=SHOPPER)
    # Exact, order included: the added item's categories first, then the rest of the cart's,
    # which is seed 001's ["Fiction", "Classics", "Children"].
    assert event.properties == seed
    assert event.value == value
    assert event.value_currency == "USD"
    validate_event(event)
    openapi.validate("create_event", event.to_payload())


def test_started_checkout_matches_seed_001(
    browser_seeds: dict[str, dict[str, Any]], openapi: Any
) -> None:
    seed = dict(browser_seeds["Started Checkout"])
    event_id = seed.pop("$event_id")
    value = seed.pop("$value")
    cart_id, unix = event_id.split("_")
    cart = seed_cart()
    cart.id = cart_id
    event = started_checkout(cart, profile=SHOPPER, time=datetime.fromtimestamp(int(unix), UTC))
    assert event.properties == seed
    assert event.value == value
    assert event.unique_id == event_id  # the seed's {cart id}_{unix time} rule, to the digit
    validate_event(event)
    openapi.validate("create_event", event.to_payload())


def test_viewed_product_matches_seed_003(
    browser_seeds: dict[str, dict[str, Any]], openapi: Any
) -> None:
    seed = browser_seeds["Viewed Product"]
    event = viewed_product(winnie(), profile=SHOPPER, render_id="r1", visitor="v1")
    assert event.properties == seed
    assert event.value == seed["Price"]
    assert event.value_currency == "USD"
    validate_event(event)
    openapi.validate("create_event", event.to_payload())


def test_all_seed_events_in_one_bulk_body_fit_the_bulk_schema(
    server_seeds: dict[str, dict[str, Any]], openapi: Any
) -> None:
    order = seed_order()
    events = [
        *(e for e in server_events(server_seeds, order).values() if e.metric != "Ordered Product"),
        *ordered_products(order),
        viewed_product(winnie(), profile=SHOPPER, render_id="r", visitor="v"),
        added_to_cart(seed_cart(), LineItem(tale()), profile=SHOPPER),
        started_checkout(seed_cart(), profile=SHOPPER),
        custom_event("Created Account", {"Plan": "Free"}, profile=SHOPPER, value=0),
    ]
    body = bulk_payload(events)
    openapi.validate("bulk_create_events", body)
    entries = body["data"]["attributes"]["events-bulk-create"]["data"]
    assert [e["attributes"]["profile"]["data"]["attributes"] for e in entries] == [
        SEED_PROFILE,
        SHOPPER,
    ]
    assert sum(len(e["attributes"]["events"]["data"]) for e in entries) == len(events)


def test_ordered_product_one_per_line_with_line_values(openapi: Any) -> None:
    order = seed_order(items=[LineItem(winnie(), quantity=3), LineItem(tale(), id="L2")])
    first, second = ordered_products(order)
    assert first.value == pytest.approx(29.97)  # the line's total before order adjustments
    assert first.properties["Quantity"] == 3
    assert first.unique_id == "1234_WINNIEPOOH"  # seed 003's $event_id
    assert second.unique_id == "1234_L2"  # the line id wins over the SKU
    for event in (first, second):
        validate_event(event)
        openapi.validate("create_event", event.to_payload())


def test_ordered_product_ids_stay_unique_for_repeated_skus() -> None:
    order = seed_order(items=[LineItem(winnie()), LineItem(winnie(), price=5)])
    ids = [e.unique_id for e in ordered_products(order)]
    assert ids == ["1234_WINNIEPOOH", "1234_WINNIEPOOH_2"]


def test_order_metrics_share_the_order_id_as_unique_id() -> None:
    order = seed_order()
    events = [
        placed_order(order),
        fulfilled_order(order),
        canceled_order(order),
        refunded_order(order),
    ]
    assert {e.unique_id for e in events} == {"1234"}


def test_order_event_defaults_and_extras() -> None:
    order = seed_order(placed_at=None, currency=None, external_id="u-9")
    before = datetime.now(UTC)
    event = placed_order(order, currency="EUR")
    assert event.time >= before.replace(microsecond=0)
    assert event.value_currency == "EUR"  # the fallback, since the order has none
    assert event.profile == {**SEED_PROFILE, "external_id": "u-9"}
    assert placed_order(seed_order(currency="GBP"), currency="EUR").value_currency == "GBP"

    fulfilled = fulfilled_order(order, TrackingNumber="1Z999", ShippedAt=datetime(2023, 1, 2))
    assert fulfilled.properties["TrackingNumber"] == "1Z999"
    assert fulfilled.properties["ShippedAt"] == "2023-01-02T00:00:00+00:00"
    assert "Reason" not in canceled_order(order).properties
    assert canceled_order(order, reason="Fraud").properties["Reason"] == "Fraud"
    explicit = placed_order(order, profile={"email": "other@shop-test.com"})
    assert explicit.profile == {"email": "other@shop-test.com"}


def test_viewed_product_omits_unknown_keys() -> None:
    event = viewed_product(
        Product(id=7, name="Mug", price=Decimal("12.345")), profile=SHOPPER, render_id="r"
    )
    assert event.properties == {"ProductName": "Mug", "ProductID": "7", "Price": 12.35}
    assert event.value == 12.35


# -- unique ids ------------------------------------------------------------------------------

T0 = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)


def test_stable_id_is_deterministic_short_hex() -> None:
    assert stable_id("a", 1, None) == stable_id("a", 1, None)
    assert stable_id("a", 1) != stable_id("a", "1")
    assert stable_id("ab", "c") != stable_id("a", "bc")
    assert re.fullmatch(r"[0-9a-f]{24}", stable_id("x"))


@given(st.lists(st.text() | st.integers() | st.none(), max_size=6))
def test_stable_id_is_the_digest_of_the_canonical_json_of_its_parts(parts: list[Any]) -> None:
    """Ids must not change between releases: a replayed order would count twice. The all-str
    fast path spells exactly what canonical_json spells (escapes, lone surrogates, unicode)."""
    expected = hashlib.sha256(canonical_json(parts).encode("utf-8", "surrogatepass"))
    assert stable_id(*parts) == expected.hexdigest()[:24]
    assert (
        stable_id("Viewed Product", "sarah@x.co", "1111", "r1")
        == (hashlib.sha256(b'["Viewed Product","sarah@x.co","1111","r1"]').hexdigest()[:24])
    )


def test_viewed_product_unique_id_per_render() -> None:
    def build(render: str, visitor: str = "v1", product: Product | None = None) -> Event:
        return viewed_product(
            product or winnie(), profile=SHOPPER, render_id=render, visitor=visitor, time=T0
        )

    assert build("r1").unique_id == build("r1").unique_id
    assert build("r1").unique_id != build("r2").unique_id
    assert build("r1").unique_id != build("r1", visitor="v2").unique_id
    assert build("r1").unique_id != build("r1", product=tale()).unique_id
    # Time does not enter it: the same page view built again later is the same event.
    later = viewed_product(
        winnie(), profile=SHOPPER, render_id="r1", visitor="v1", time=T0 + timedelta(minutes=5)
    )
    assert later.unique_id == build("r1").unique_id


def test_added_to_cart_unique_id() -> None:
    def build(cart: Cart, mutation: str | None = None, time: datetime = T0) -> Event:
        return added_to_cart(cart, LineItem(tale()), profile=SHOPPER, mutation=mutation, time=time)

    cart = seed_cart()
    assert build(cart).unique_id == build(seed_cart()).unique_id
    assert build(cart, "rev-1").unique_id == build(cart, "rev-1", T0 + timedelta(hours=1)).unique_id
    assert build(cart, "rev-1").unique_id != build(cart, "rev-2").unique_id
    assert build(cart).unique_id != build(cart, time=T0 + timedelta(seconds=1)).unique_id
    # The same second, but the line's quantity after the add differs: a second add.
    more = seed_cart()
    more.items[1].quantity = 2
    assert build(more).unique_id != build(cart).unique_id
    other_cart = seed_cart()
    other_cart.id = "999"
    assert build(other_cart, "rev-1").unique_id != build(cart, "rev-1").unique_id


def test_started_checkout_unique_id_is_cart_and_unix_seconds() -> None:
    event = started_checkout(seed_cart(), profile=SHOPPER, time=T0.replace(microsecond=654321))
    assert event.unique_id == f"1000123_{int(T0.timestamp())}"


def test_custom_event_unique_id() -> None:
    def build(props: dict[str, Any], time: datetime = T0) -> Event:
        return custom_event("Signed Up", props, profile=SHOPPER, time=time)

    assert build({"a": 1, "b": 2}).unique_id == build({"b": 2, "a": 1}).unique_id
    assert build({"a": 1}).unique_id == build({"a": 1}, T0 + timedelta(microseconds=500)).unique_id
    assert build({"a": 1}).unique_id != build({"a": 2}).unique_id
    assert build({"a": 1}).unique_id != build({"a": 1}, T0 + timedelta(seconds=1)).unique_id
    assert (
        build({"a": 1}).unique_id
        != custom_event("Other", {"a": 1}, profile=SHOPPER, time=T0).unique_id
    )
    kept = custom_event("Signed Up", {}, profile=SHOPPER, unique_id="mine", time=T0)
    assert kept.unique_id == "mine"


def test_custom_event_converts_python_values_to_json() -> None:
    event = custom_event(
        "Quoted",
        {"Amount": Decimal("1.5"), "When": datetime(2024, 1, 1), "Tags": ("a", "b")},
        profile=SHOPPER,
        value=Decimal("10.005"),
        currency="EUR",
    )
    assert event.properties == {
        "Amount": 1.5,
        "When": "2024-01-01T00:00:00+00:00",
        "Tags": ["a", "b"],
    }
    assert event.value == 10.01
    validate_event(event)


# -- Event serialisation ----------------------------------------------------------------------


def test_event_dict_round_trip_through_json() -> None:
    event = placed_order(seed_order(), time=T0.replace(microsecond=123456))
    event.backfill = True
    carried = json.loads(json.dumps(event.to_dict()))
    assert carried["time"] == "2024-05-01T12:00:00.123456+00:00"
    assert Event.from_dict(carried) == event


def test_event_time_is_normalised_to_utc() -> None:
    naive = Event("M", {}, SHOPPER, datetime(2024, 1, 1, 9, 0))
    assert naive.time == datetime(2024, 1, 1, 9, 0, tzinfo=UTC)
    eastern = timezone(timedelta(hours=-5))
    shifted = Event("M", {}, SHOPPER, datetime(2024, 1, 1, 9, 0, tzinfo=eastern))
    assert shifted.time.isoformat() == "2024-01-01T14:00:00+00:00"


def test_to_payload_shape_and_omissions(openapi: Any) -> None:
    event = Event(
        metric="Signed Up",
        properties={"Plan": "Free"},
        profile={"id": "01H81WC034AKRMQJQARPEEBHJE", "first_name": "Ann", "last_name": None},
        time=T0,
        unique_id="u1",
    )
    assert event.to_payload() == {
        "data": {
            "type": "event",
            "attributes": {
                "properties": {"Plan": "Free"},
                "time": "2024-05-01T12:00:00+00:00",
                "unique_id": "u1",
                "metric": {"data": {"type": "metric", "attributes": {"name": "Signed Up"}}},
                "profile": {
                    "data": {
                        "type": "profile",
                        "id": "01H81WC034AKRMQJQARPEEBHJE",
                        "attributes": {"first_name": "Ann"},
                    }
                },
            },
        }
    }
    validate_event(event)
    openapi.validate("create_event", event.to_payload())
    full = replace(event, value=3.5, value_currency="EUR", backfill=True).to_payload()
    attributes = full["data"]["attributes"]
    assert (attributes["value"], attributes["value_currency"], attributes["backfill"]) == (
        3.5,
        "EUR",
        True,
    )
    openapi.validate("create_event", full)


def test_profile_key_groups_by_identifiers_only() -> None:
    a = Event("M", {}, {"email": "Ann@Shop-Test.com", "first_name": "Ann"}, T0)
    b = Event("M", {}, {"email": "ann@shop-test.com"}, T0)
    c = Event("M", {}, {"email": "ann@shop-test.com", "phone_number": "+15551234567"}, T0)
    assert a.profile_key() == b.profile_key()
    assert b.profile_key() != c.profile_key()
    assert json.loads(c.profile_key()) == {
        "email": "ann@shop-test.com",
        "phone_number": "+15551234567",
    }


# -- validation ------------------------------------------------------------------------------


def _valid_order_event() -> Event:
    return placed_order(seed_order())


def _bad(kind: str) -> Event:
    """One invalid event per case."""
    ok = _valid_order_event()
    cases: dict[str, Any] = {
        "no value": lambda: replace(ok, value=None),
        "empty items": lambda: placed_order(seed_order(items=[], total=10)),
        "string price in order": lambda: placed_order(seed_order(("9.99", 19.99))),
        "string price in cart": lambda: added_to_cart(
            seed_cart(("9.99", 19.99)), LineItem(tale()), profile=SHOPPER
        ),
        "string price viewed": lambda: viewed_product(
            Product.coerce({"id": "1", "name": "x", "price": "9.99"}),
            profile=SHOPPER,
            render_id="r",
        ),
        "string price checkout": lambda: started_checkout(
            seed_cart((9.99, "19.99")), profile=SHOPPER
        ),
        "string price line": lambda: ordered_products(seed_order(("9.99", 19.99)))[0],
        "string value": lambda: custom_event("M", {}, profile=SHOPPER, value="9.99"),
        "bool value": lambda: replace(ok, value=True),
        "nan value": lambda: replace(ok, value=float("nan")),
        "no identifier": lambda: replace(ok, profile={"first_name": "John"}),
        "empty profile": lambda: replace(ok, profile={}),
        "external_id alone": lambda: replace(ok, profile={"external_id": "u1"}),
        "anonymous_id alone": lambda: replace(ok, profile={"anonymous_id": "anon-1"}),
        "101 KB string": lambda: custom_event("M", {"Body": "x" * (101 * 1024)}, profile=SHOPPER),
        "101 KB nested string": lambda: custom_event(
            "M", {"Note": {"Html": ["ok", "é" * (51 * 1024)]}}, profile=SHOPPER
        ),
        "401 properties": lambda: custom_event(
            "M", {f"p{i}": i for i in range(MAX_PROPERTIES + 1)}, profile=SHOPPER
        ),
        "128-char metric": lambda: custom_event("M" * (MAX_METRIC_NAME + 1), {}, profile=SHOPPER),
        "empty metric": lambda: custom_event(" ", {}, profile=SHOPPER),
        "1989": lambda: replace(ok, time=datetime(1989, 12, 31, tzinfo=UTC)),
        "far future": lambda: replace(ok, time=datetime.now(UTC) + timedelta(days=400)),
        "lowercase currency": lambda: replace(ok, value_currency="usd"),
        "long currency": lambda: replace(ok, value_currency="DOLLAR"),
        "bad phone": lambda: replace(ok, profile={"phone_number": "555-123-4567"}),
        "short phone": lambda: replace(ok, profile={"phone_number": "+12345"}),
        "bad email": lambda: replace(ok, profile={"email": "john.smith"}),
        "legacy profile key": lambda: replace(ok, profile={"$email": "a@shop-test.com"}),
        "non-string first name": lambda: replace(ok, profile={**SHOPPER, "first_name": 5}),
        "zero quantity": lambda: placed_order(seed_order(items=[LineItem(winnie(), quantity=0)])),
        "decimal property": lambda: replace(ok, properties={**ok.properties, "Tax": Decimal("1")}),
        "missing order id": lambda: replace(
            ok, properties={k: v for k, v in ok.properties.items() if k != "OrderId"}
        ),
        "no added item": lambda: replace(
            added_to_cart(seed_cart(), LineItem(tale()), profile=SHOPPER),
            properties={"Items": [{}]},
        ),
        "bad location": lambda: replace(ok, profile={**SHOPPER, "location": {"zip": 2110}}),
        "empty unique_id": lambda: replace(ok, unique_id=""),
        "huge payload": lambda: custom_event(
            "M", {f"p{i}": "x" * (100 * 1024) for i in range(52)}, profile=SHOPPER
        ),
    }
    return cases[kind]()


INVALID_CASES = [
    ("no value", "Placed Order", "value"),
    ("empty items", "Placed Order", "Items"),
    ("string price in order", "Placed Order", "Items[0].ItemPrice"),
    ("string price in cart", "Added to Cart", "Items[0].ItemPrice"),
    ("string price viewed", "Viewed Product", "Price"),
    ("string price checkout", "Started Checkout", "Items[1].ItemPrice"),
    ("string price line", "Ordered Product", "value"),  # no ItemPrice in Ordered Product
    ("string value", "M", "value"),
    ("bool value", "Placed Order", "value"),
    ("nan value", "Placed Order", "value"),
    ("no identifier", "Placed Order", "profile"),
    ("empty profile", "Placed Order", "profile"),
    ("external_id alone", "Placed Order", "profile"),
    ("anonymous_id alone", "Placed Order", "profile"),
    ("101 KB string", "M", "Body"),
    ("101 KB nested string", "M", "Note.Html[1]"),
    ("401 properties", "M", "properties"),
    ("128-char metric", "M" * (MAX_METRIC_NAME + 1), "metric"),
    ("empty metric", " ", "metric"),
    ("1989", "Placed Order", "time"),
    ("far future", "Placed Order", "time"),
    ("lowercase currency", "Placed Order", "value_currency"),
    ("long currency", "Placed Order", "value_currency"),
    ("bad phone", "Placed Order", "profile.phone_number"),
    ("short phone", "Placed Order", "profile.phone_number"),
    ("bad email", "Placed Order", "profile.email"),
    ("legacy profile key", "Placed Order", "profile.$email"),
    ("non-string first name", "Placed Order", "profile.first_name"),
    ("zero quantity", "Placed Order", "Items[0].Quantity"),
    ("decimal property", "Placed Order", "Tax"),
    ("missing order id", "Placed Order", "OrderId"),
    ("no added item", "Added to Cart", "AddedItemProductID"),
    ("bad location", "Placed Order", "profile.location.zip"),
    ("empty unique_id", "Placed Order", "unique_id"),
    ("huge payload", "M", "payload"),
]


@pytest.mark.parametrize(
    ("kind", "metric", "field"), INVALID_CASES, ids=[c[0] for c in INVALID_CASES]
)
def test_invalid_event_names_metric_and_field(kind: str, metric: str, field: str) -> None:
    event = _bad(kind)
    with pytest.raises(KlaviyoSchemaError) as caught:
        validate_event(event)
    assert (caught.value.metric, caught.value.field) == (metric, field), caught.value


def test_profile_error_messages_say_why() -> None:
    messages = {}
    for kind in ("external_id alone", "anonymous_id alone", "no identifier"):
        with pytest.raises(KlaviyoSchemaError) as caught:
            validate_event(_bad(kind))
        messages[kind] = caught.value.message
    assert "external_id alone" in messages["external_id alone"]
    assert "anonymous-only events must not be sent" in messages["anonymous_id alone"]
    assert "email, phone_number, _kx or id" in messages["no identifier"]


@pytest.mark.parametrize(
    "event",
    [
        custom_event("M" * MAX_METRIC_NAME, {}, profile=SHOPPER),
        custom_event("M", {f"p{i}": i for i in range(MAX_PROPERTIES)}, profile=SHOPPER),
        custom_event("M", {"Body": "x" * MAX_STRING_BYTES}, profile=SHOPPER),
        custom_event("M", {}, profile={"_kx": "abc.def"}),
        custom_event("M", {}, profile={"id": "01H81WC034AKRMQJQARPEEBHJE"}),
        custom_event("M", {}, profile={"phone_number": "+15005550006", "anonymous_id": "a"}),
        custom_event("M", {}, profile={**SHOPPER, "external_id": "u1"}),
        custom_event("M", {}, profile=SHOPPER, time=datetime(1990, 1, 2, tzinfo=UTC)),
        custom_event("M", {}, profile=SHOPPER, value=0, currency="JPY"),
    ],
    ids=[
        "127-char metric",
        "400 properties",
        "100 KB string",
        "_kx",
        "id",
        "phone+anon",
        "email+external",
        "1990",
        "zero value",
    ],
)
def test_limits_are_not_stricter_than_klaviyo(event: Event, openapi: Any) -> None:
    validate_event(event)
    openapi.validate("create_event", event.to_payload())


def test_required_properties_table_covers_every_built_in_metric() -> None:
    assert set(REQUIRED_PROPERTIES) == {
        "Viewed Product",
        "Added to Cart",
        "Started Checkout",
        "Placed Order",
        "Ordered Product",
        "Fulfilled Order",
        "Canceled Order",
        "Refunded Order",
        "Created Account",
        "Updated Account",
        "Reset Password",
        "Active on Site",
        "Failed Payment",
        "Shipping Update",
    }
    assert REQUIRED_PROPERTIES["Placed Order"] == ("OrderId", "Items")
    assert REQUIRED_PROPERTIES["Failed Payment"] == ("OrderId", "PaymentFailure")
    assert REQUIRED_PROPERTIES["Shipping Update"] == ("OrderId", "UpdateType")
    assert METRIC_SCHEMAS["Placed Order"].value_required
    assert not METRIC_SCHEMAS["Viewed Product"].value_required


# Mostly valid events with a sprinkling of wrong types: whatever validate_event accepts,
# Klaviyo's schema must accept too.
_identities = st.sampled_from(
    [
        {"email": "ann@shop-test.com"},
        {"phone_number": "+15551234567"},
        {"_kx": "k.x"},
        {"id": "01H81WC034AKRMQJQARPEEBHJE"},
        {"external_id": "u1"},
        {"anonymous_id": "a1"},
        {},
    ]
)
_extra_profile = st.dictionaries(
    st.sampled_from(
        [
            "first_name",
            "external_id",
            "anonymous_id",
            "locale",
            "location",
            "properties",
            "meta",
            "email",
            "$email",
        ]
    ),
    st.one_of(
        st.none(),
        st.text(max_size=4),
        st.sampled_from(["+15551234567", "b@shop-test.com", "not an email"]),
        st.integers(-2, 2),
        st.dictionaries(
            st.sampled_from(["zip", "city", "latitude", "x"]),
            st.one_of(st.text(max_size=3), st.floats(), st.none()),
            max_size=2,
        ),
    ),
    max_size=3,
)
_json_leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.text(max_size=5),
    st.floats(allow_nan=False, allow_infinity=False),
    st.floats(),
    st.decimals(allow_nan=False, places=2, min_value=-100, max_value=100),
)
_properties = st.dictionaries(
    st.text(max_size=5),
    st.recursive(
        _json_leaves,
        lambda inner: (
            st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3)
        ),
        max_leaves=4,
    ),
    max_size=4,
)
_finite = st.floats(allow_nan=False, allow_infinity=False)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    identity=_identities,
    extra=_extra_profile,
    properties=_properties,
    value=st.one_of(
        st.none(), _finite, st.integers(), st.floats(), st.text(max_size=3), st.booleans()
    ),
    currency=st.sampled_from([None, "USD", "EUR", "usd", "", "EURO", 840]),
    unique_id=st.one_of(st.none(), st.text(min_size=1, max_size=4), st.just(""), st.integers()),
    backfill=st.sampled_from([False, True, False, None]),
)
def test_whatever_validate_event_accepts_fits_klaviyos_schema(
    openapi: Any,
    identity: dict[str, Any],
    extra: dict[str, Any],
    properties: dict[str, Any],
    value: Any,
    currency: Any,
    unique_id: Any,
    backfill: Any,
) -> None:
    profile = {**extra, **identity}
    event = Event("Signed Up", properties, profile, T0, value, currency, unique_id, backfill)
    try:
        validate_event(event)
    except KlaviyoSchemaError:
        return
    openapi.validate("create_event", event.to_payload())
    openapi.validate("bulk_create_events", bulk_payload([event]))
    json.dumps(event.to_payload(), allow_nan=False)


# -- bulk bodies, error pointers, batches ------------------------------------------------------

ANN = {"email": "ann@shop-test.com"}
BOB = {"phone_number": "+15551234567", "first_name": "Bob"}


def _interleaved() -> list[Event]:
    return [
        custom_event("M", {"n": 0}, profile=ANN, time=T0),
        custom_event("M", {"n": 1}, profile=BOB, time=T0),
        custom_event("M", {"n": 2}, profile={**ANN, "first_name": "Ann"}, time=T0),
        custom_event("M", {"n": 3}, profile=BOB, time=T0, value=2.5, currency="USD"),
    ]


def _resolve(body: Any, pointer: str) -> Any:
    for token in pointer.strip("/").split("/"):
        body = body[int(token)] if isinstance(body, list) else body[token]
    return body


def test_bulk_payload_groups_events_per_profile_in_first_seen_order(openapi: Any) -> None:
    events = _interleaved()
    body = bulk_payload(events)
    openapi.validate("bulk_create_events", body)
    assert body["data"]["type"] == "event-bulk-create-job"
    entries = body["data"]["attributes"]["events-bulk-create"]["data"]
    assert [e["type"] for e in entries] == ["event-bulk-create"] * 2
    profiles = [e["attributes"]["profile"]["data"]["attributes"] for e in entries]
    # Ann's later event adds her first name to the one profile entry.
    assert profiles == [{**ANN, "first_name": "Ann"}, BOB]
    numbers = [
        [ev["attributes"]["properties"]["n"] for ev in e["attributes"]["events"]["data"]]
        for e in entries
    ]
    assert numbers == [[0, 2], [1, 3]]
    for entry in entries:
        for bulk_event in entry["attributes"]["events"]["data"]:
            assert "profile" not in bulk_event["attributes"]
            assert bulk_event["type"] == "event"


def test_bulk_payload_backfill_and_meta_placement(openapi: Any) -> None:
    meta = {"patch_properties": {"append": {"skus": "1"}}}
    event = Event("M", {}, {**ANN, "meta": meta}, T0, unique_id="u", backfill=True)
    entry = bulk_payload([event])["data"]["attributes"]["events-bulk-create"]["data"][0]
    assert entry["attributes"]["backfill"] is True
    assert entry["attributes"]["events"]["data"][0]["attributes"]["backfill"] is True
    # The two schemas differ: meta beside the attributes in bulk, inside them for one event.
    assert entry["attributes"]["profile"]["data"]["meta"] == meta
    assert "meta" not in entry["attributes"]["profile"]["data"]["attributes"]
    assert event.to_payload()["data"]["attributes"]["profile"]["data"]["attributes"]["meta"] == meta
    validate_event(event)
    openapi.validate("bulk_create_events", bulk_payload([event]))
    openapi.validate("create_event", event.to_payload())


@pytest.mark.parametrize(
    "events",
    [
        [],
        [
            custom_event("M", {}, profile=ANN, unique_id="same"),
            custom_event(
                "M", {"other": 1}, profile={"email": "ANN@shop-test.com"}, unique_id="same"
            ),
        ],
        [Event("M", {"a": 1}, ANN, T0), Event("M", {"a": 2}, ANN, T0 + timedelta(microseconds=9))],
        [custom_event("M", {"i": i}, profile=ANN, time=T0) for i in range(1001)],
    ],
    ids=["empty", "repeat", "repeat by time (no unique_id)", "1001 events"],
)
def test_bulk_payload_refuses_what_klaviyo_fails_as_a_whole(events: list[Event]) -> None:
    with pytest.raises(KlaviyoSchemaError) as caught:
        bulk_payload(events)
    assert (caught.value.metric, caught.value.field) == ("Bulk Create Events", "events")


def test_same_unique_id_for_different_metric_or_profile_is_fine() -> None:
    events = [
        custom_event("M", {}, profile=ANN, unique_id="same"),
        custom_event("N", {}, profile=ANN, unique_id="same"),
        custom_event("M", {}, profile=BOB, unique_id="same"),
    ]
    assert len(bulk_payload(events)["data"]["attributes"]["events-bulk-create"]["data"]) == 2


def test_every_event_pointer_locates_the_event_it_points_at() -> None:
    events = _interleaved()
    body = bulk_payload(events)
    entries = body["data"]["attributes"]["events-bulk-create"]["data"]
    for i, entry in enumerate(entries):
        for j in range(len(entry["attributes"]["events"]["data"])):
            pointer = f"/data/attributes/events-bulk-create/data/{i}/attributes/events/data/{j}"
            index = locate_bulk_pointer(events, pointer + "/attributes/value")
            assert index is not None
            pointed = _resolve(body, pointer)["attributes"]["properties"]
            assert pointed == events[index].properties


def test_pointer_examples() -> None:
    events = _interleaved()
    base = "/data/attributes/events-bulk-create/data"
    assert locate_bulk_pointer(events, f"{base}/1/attributes/events/data/0/attributes/value") == 1
    assert locate_bulk_pointer(events, f"{base}/0/attributes/events/data/1/attributes/time") == 2
    profile_pointer = f"{base}/1/attributes/profile/data/attributes/phone_number"
    assert locate_bulk_pointer(events, profile_pointer) == 1
    assert events_at_pointer(events, profile_pointer) == [1, 3]
    assert events_at_pointer(events, f"{base}/0") == [0, 2]
    assert events_at_pointer(events, f"{base}/1/attributes/events/data/1") == [3]
    for nowhere in (
        f"{base}/2/attributes/events/data/0",
        f"{base}/0/attributes/events/data/5",
        "/data/attributes",
        "/data/attributes/events-bulk-create/data/x",
        "",
    ):
        assert locate_bulk_pointer(events, nowhere) is None
        assert events_at_pointer(events, nowhere) == []


def test_split_batches_respects_count_and_keeps_every_event() -> None:
    events = [
        custom_event("M", {"i": i}, profile={"email": f"u{i % 7}@shop-test.com"}, time=T0)
        for i in range(2500)
    ]
    batches = split_batches(events)
    assert [len(b) for b in batches] == [1000, 1000, 500]
    assert [e for b in batches for e in b] == events  # order kept when nothing forces a move
    for batch in batches:
        bulk_payload(batch)


def test_split_batches_never_repeats_a_key_in_one_batch() -> None:
    a = custom_event("M", {"v": 1}, profile=ANN, unique_id="dup", time=T0)
    events = [
        a,
        replace(a, properties={"v": 2}),
        custom_event("M", {}, profile=BOB, time=T0),
        replace(a, properties={"v": 3}),
    ]
    batches = split_batches(events)
    assert len(batches) == 3
    assert batches[0] == [events[0], events[2]]  # the unrelated event stays in the first batch
    for batch in batches:
        bulk_payload(batch)


def test_split_batches_respects_bytes(openapi: Any) -> None:
    events = [
        custom_event("M", {"Body": "é" * 3000, "i": i}, profile=ANN if i % 2 else BOB, time=T0)
        for i in range(40)
    ]
    limit = 50_000
    batches = split_batches(events, max_bytes=limit)
    assert len(batches) > 1
    for batch in batches:
        assert encoded_size(bulk_payload(batch)) <= limit
    assert sorted(e.properties["i"] for b in batches for e in b) == list(range(40))
    openapi.validate("bulk_create_events", bulk_payload(batches[0]))


def test_split_batches_refuses_an_event_larger_than_a_request() -> None:
    big = custom_event("M", {"Body": "x" * 2000}, profile=ANN, time=T0)
    with pytest.raises(KlaviyoSchemaError) as caught:
        split_batches([big], max_bytes=1000)
    assert caught.value.field == "payload"


@settings(max_examples=150, deadline=None)
@given(
    keys=st.lists(
        st.tuples(
            st.integers(0, 3), st.sampled_from(["M", "N"]), st.integers(0, 4), st.integers(0, 400)
        ),
        max_size=60,
    ),
    max_events=st.integers(1, 12),
    max_bytes=st.integers(1500, 6000),
)
def test_split_batches_invariants(
    keys: list[tuple[int, str, int, int]], max_events: int, max_bytes: int
) -> None:
    events = [
        Event(
            metric,
            {"pad": "x" * pad, "n": n},
            {"email": f"p{who}@shop-test.com"},
            T0,
            unique_id=f"u{uid}",
        )
        for n, (who, metric, uid, pad) in enumerate(keys)
    ]
    batches = split_batches(events, max_events=max_events, max_bytes=max_bytes)
    assert sorted(e.properties["n"] for b in batches for e in b) == list(range(len(events)))
    for batch in batches:
        assert 0 < len(batch) <= max_events
        body = bulk_payload(batch)  # raises on a repeated (profile, metric, unique_id)
        assert encoded_size(body) <= max_bytes
        positions = [events.index(e) for e in batch]
        assert positions == sorted(positions)


# -- masking ---------------------------------------------------------------------------------


def test_mask_email_and_phone() -> None:
    assert mask_email("john@test.com") == "j***@test.com"
    assert mask_email("not-an-email") == "***"
    assert mask_email(None) == "***"
    assert mask_phone("+15551234567") == "+1******4567"
    assert mask_phone("+123") == "***"


def test_mask_profile_hides_contact_details_keeps_ids() -> None:
    profile = {
        "email": "john.smith@test.com",
        "phone_number": "+15551234567",
        "first_name": "John",
        "last_name": "Smith",
        "_kx": "secret-exchange-token",
        "external_id": "u-1",
        "anonymous_id": "anon-1",
        "location": {"city": "Boston"},
        "image": None,
    }
    masked = mask_profile(profile)
    text = json.dumps(masked)
    for secret in ("john.smith", "5551234", "John", "Smith", "exchange-token", "Boston"):
        assert secret not in text
    assert masked["email"] == "j***@test.com"
    assert masked["phone_number"] == "+1******4567"
    assert (masked["external_id"], masked["anonymous_id"]) == ("u-1", "anon-1")
    assert "image" not in masked
    assert profile["email"] == "john.smith@test.com"  # the original is untouched
    assert mask_profile(None) == {}
