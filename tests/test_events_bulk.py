"""One Bulk Create Events builder: the body built straight from outbox entries
(``events.bulk.raw_bulk_payload``) is, byte for byte, the one ``bulk_payload`` builds from the
Event objects, whatever the grouping of profiles; what raw declines (a repeat, a lone event)
is what the careful path refuses or sends otherwise.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flask_klaviyo.events import (
    Event,
    added_to_cart,
    bulk_payload,
    custom_event,
    ordered_products,
    placed_order,
    split_batches,
    viewed_product,
)
from flask_klaviyo.events.bulk import raw_bulk_payload
from flask_klaviyo.exceptions import KlaviyoSchemaError

TIME = datetime(2026, 11, 1, 10, 0, 0, tzinfo=UTC)
PROFILES: list[dict[str, Any]] = [
    {"email": "ann@shop.test", "first_name": "Ann"},
    {"email": " Ann@Shop.test", "last_name": "Lee", "meta": {"patch_properties": {}}},
    {"email": "ann@shop.test", "first_name": "Annie", "phone_number": "+15005550006"},
    {"phone_number": "+15005550006"},
    {"email": "bob@shop.test", "location": {"city": "Boston"}, "id": "01BOB"},
    {"_kx": "kx.AbC", "first_name": "", "external_id": "x-1", "email": "cy@shop.test"},
    {"id": "01DEE", "email": None},
]


def review(n: int, profile: dict[str, Any], *, backfill: bool = False) -> Event:
    event = custom_event(
        "Left Review",
        {"Stars": n % 5 + 1, "Text": f"review {n}"},
        profile=profile,
        unique_id=f"review-{n}",
        time=datetime(2026, 11, 1, 10, 0, n % 60, 123 * n, tzinfo=UTC),
        value=n + 0.5 if n % 2 else None,
        currency="USD" if n % 2 else None,
    )
    event.backfill = backfill
    return event


def raw(events: list[Event]) -> tuple[list[dict[str, Any]], list[int]]:
    """Events as the outbox keeps them: JSON entries, and their lengths."""
    texts = [json.dumps(e.to_dict(), separators=(",", ":")) for e in events]
    return [json.loads(t) for t in texts], [len(t) for t in texts]


def wire(body: Any) -> str:
    """The body as the client sends it (key order included)."""
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False)


def assert_one_builder(events: list[Event]) -> dict[str, Any]:
    items, sizes = raw(events)
    fast = raw_bulk_payload(items, sizes)
    assert fast is not None
    assert wire(fast) == wire(bulk_payload(events))
    return fast


def entries(body: dict[str, Any]) -> list[dict[str, Any]]:
    return body["data"]["attributes"]["events-bulk-create"]["data"]


def test_one_profile_many_events() -> None:
    body = assert_one_builder([review(n, PROFILES[0]) for n in range(5)])
    assert len(entries(body)) == 1


def test_profiles_interleaved_group_in_first_seen_order_and_merge() -> None:
    events = [review(n, PROFILES[n % len(PROFILES)]) for n in range(20)]
    body = assert_one_builder(events)
    groups = entries(body)
    # Ann's two spellings of one email are one entry; with a phone too she is another
    # (identifiers differ), then the phone alone, Bob, Cy and Dee.
    assert len(groups) == 6
    ann = groups[0]["attributes"]["profile"]["data"]
    assert ann["attributes"]["first_name"] == "Ann"  # the first event's attributes win
    assert ann["attributes"]["last_name"] == "Lee"  # completed by later ones
    assert ann["meta"] == {"patch_properties": {}}  # beside the attributes in a bulk body


def test_backfill_marks_an_entry_only_when_all_its_events_are() -> None:
    events = [
        review(1, PROFILES[0], backfill=True),
        review(2, PROFILES[4], backfill=True),
        review(3, PROFILES[0]),
        review(4, PROFILES[4], backfill=True),
    ]
    body = assert_one_builder(events)
    assert ["backfill" in g["attributes"] for g in entries(body)] == [False, True]


def test_the_storefront_builders_events() -> None:
    who = {"email": "sarah.mason@klaviyo-demo.com"}
    product = {"id": 1111, "name": "Winnie the Pooh", "price": 9.99, "categories": ["Kids"]}
    line = {"product": product, "quantity": 2, "price": 9.99}
    cart = {"id": "c-1", "items": [line], "total": 19.98}
    order = {
        "id": "o-1",
        "items": [line, {**line, "id": "l-2"}],
        "total": 39.96,
        "email": who["email"],
        "placed_at": TIME,
    }
    events = [
        viewed_product(product, profile=who, render_id="r-1", time=TIME),
        added_to_cart(cart, line, profile={**who, "first_name": "Sarah"}, time=TIME),
        placed_order(order),
        *ordered_products(order),
        review(7, {"phone_number": "+15005550006"}),
    ]
    body = assert_one_builder(events)
    assert [len(g["attributes"]["events"]["data"]) for g in entries(body)] == [5, 1]


def test_a_repeat_is_declined_raw_and_refused_whole_then_split_apart() -> None:
    events = [review(1, PROFILES[0]), review(2, PROFILES[4]), review(1, PROFILES[1])]
    items, sizes = raw(events)
    assert raw_bulk_payload(items, sizes) is None
    with pytest.raises(KlaviyoSchemaError):
        bulk_payload(events)
    batches = split_batches(events)
    assert [len(batch) for batch in batches] == [2, 1]
    assert_one_builder(batches[0])


@settings(max_examples=150, deadline=None)
@given(
    picks=st.lists(
        st.tuples(
            st.integers(0, len(PROFILES) - 1),  # whose event
            st.integers(0, 12),  # which unique_id: small, so repeats happen
            st.booleans(),  # backfill
        ),
        min_size=2,
        max_size=30,
    )
)
def test_any_mix_of_profiles_and_repeats(picks: list[tuple[int, int, bool]]) -> None:
    events = [review(n, PROFILES[who], backfill=old) for who, n, old in picks]
    items, sizes = raw(events)
    fast = raw_bulk_payload(items, sizes)
    try:
        careful = bulk_payload(events)
    except KlaviyoSchemaError:
        assert fast is None  # a repeated (profile, metric, unique_id): both decline
        return
    assert fast is not None
    assert wire(fast) == wire(careful)
