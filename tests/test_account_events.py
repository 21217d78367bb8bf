"""The account notifications (Created Account, Updated Account, Reset Password) and Active on
Site from the server: property names as Klaviyo's guide spells them (read from
../shared/seeds at test time), payloads valid against the Create Event OpenAPI document,
deterministic unique_ids, bad input named by field, Klaviyo's limits still enforced."""

from __future__ import annotations

import json
import re
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

import flask_klaviyo.events as events
from flask_klaviyo.events import (
    ACTIVE_ON_SITE,
    CREATED_ACCOUNT,
    MAX_PROPERTIES,
    MAX_STRING_BYTES,
    REQUIRED_PROPERTIES,
    RESET_PASSWORD,
    UPDATED_ACCOUNT,
    Event,
    active_on_site,
    created_account,
    reset_password,
    updated_account,
    validate,
    validate_event,
)
from flask_klaviyo.exceptions import KlaviyoSchemaError

# The profile of seed 001's account examples.
SEED_PROFILE = {
    "email": "john.smith@test.com",
    "phone_number": "+15551234567",
    "first_name": "John",
    "last_name": "Smith",
    "location": {"address1": "123 Abc St", "city": "Boston", "country": "USA", "region": "MA"},
}
SHOPPER = {"email": "john.smith@test.com"}
TIME = datetime(2024, 5, 1, 12, 30, tzinfo=UTC)
LINK = "https://shop.test/account/reset/IjQyIg.ZkJ3cA.s3cr3t-t0k3n"


def seed_section(shared_dir: Path, start: str, end: str) -> str:
    (path,) = sorted((shared_dir / "seeds").glob("001_*.txt"))
    text = path.read_text(encoding="utf-8")
    return text[text.index(start) : text.index(end, text.index(start))]


def seed_json(section: str) -> dict[str, Any]:
    match = re.search(r"```json\n(.*?)```", section, re.S)
    assert match, "no JSON example in the section"
    return json.loads(match.group(1))


def every_builder() -> dict[str, Event]:
    return {
        CREATED_ACCOUNT: created_account(SEED_PROFILE, account_id="1234", time=TIME),
        UPDATED_ACCOUNT: updated_account(
            SEED_PROFILE,
            account_id="1234",
            update_type="Property Update",
            new_values={"first_name": "Johnny"},
            old_values={"first_name": "John"},
            time=TIME,
        ),
        RESET_PASSWORD: reset_password(SEED_PROFILE, link=LINK, time=TIME),
        ACTIVE_ON_SITE: active_on_site(
            SEED_PROFILE, visit_id="v-1", page_url="https://shop.test/", time=TIME
        ),
    }


# -- Klaviyo's own names and schema ----------------------------------------------------------


@pytest.mark.parametrize(
    "metric", [CREATED_ACCOUNT, UPDATED_ACCOUNT, RESET_PASSWORD, ACTIVE_ON_SITE]
)
def test_each_builder_makes_a_valid_create_event_body(metric: str, openapi: Any) -> None:
    event = every_builder()[metric]
    validate_event(event)
    validate._validate_event_slow(event)
    payload = event.to_payload()
    openapi.validate("create_event", payload)
    attributes = payload["data"]["attributes"]
    assert attributes["metric"]["data"]["attributes"]["name"] == metric
    assert attributes["profile"]["data"]["attributes"] == SEED_PROFILE
    assert attributes["unique_id"] == event.unique_id
    assert "value" not in attributes  # none of these carries revenue


def test_metric_names_are_the_guides(shared_dir: Path) -> None:
    section = seed_section(shared_dir, "## Account Notifications\n\nIf people", "## Order Notif")
    names = re.findall(r'"name": "([^"]+)"', section)
    assert names == [CREATED_ACCOUNT, UPDATED_ACCOUNT, RESET_PASSWORD]
    (guide,) = sorted((shared_dir / "seeds").glob("001_*.txt"))
    assert f"**{ACTIVE_ON_SITE}** - When someone visits your website" in guide.read_text()


def test_updated_account_properties_are_the_guides_table(shared_dir: Path) -> None:
    section = seed_section(shared_dir, "### Updated Account", "### Updated Email")
    table = dict(re.findall(r"^\| (\w+)\s+\| (\w+)\s+\|", section, re.M)[1:])
    assert table == {
        "UpdateType": "string",
        "UpdatedProperties": "array",
        "OldValues": "dictionary",
        "NewValues": "dictionary",
    }
    event = every_builder()[UPDATED_ACCOUNT]
    assert list(event.properties) == list(table)
    kinds = {"string": str, "array": list, "dictionary": dict}
    for name, kind in table.items():
        assert isinstance(event.properties[name], kinds[kind]), name


def test_updated_account_reproduces_the_guides_example(shared_dir: Path, openapi: Any) -> None:
    example = seed_json(seed_section(shared_dir, "### Updated Account", "### Updated Email"))
    expected = example["data"]["attributes"]["properties"]
    event = updated_account(
        SEED_PROFILE,
        account_id="1234",
        update_type=expected["UpdateType"],
        new_values=expected["NewValues"],
        old_values=expected["OldValues"],
        updated_properties=expected["UpdatedProperties"],
        time=example["data"]["attributes"]["time"],
    )
    assert event.properties == expected
    validate_event(event)
    openapi.validate("create_event", event.to_payload())


def test_reset_password_carries_the_link_as_the_guide_names_it(shared_dir: Path) -> None:
    section = seed_section(shared_dir, "### Reset Password", "## Order Notifications")
    assert '"PasswordResetLink": "https://' in section
    event = every_builder()[RESET_PASSWORD]
    assert event.properties == {"PasswordResetLink": LINK}


def test_created_account_carries_the_merchants_properties_only() -> None:
    event = created_account(
        SHOPPER,
        account_id=7,
        time=TIME,
        properties={"Source": "checkout", "SignedUpOn": date(2024, 5, 1), "Credit": Decimal(5)},
    )
    assert event.properties == {"Source": "checkout", "SignedUpOn": "2024-05-01", "Credit": 5.0}
    assert created_account(SHOPPER, account_id=7).properties == {}


def test_active_on_site_stays_minimal() -> None:
    assert every_builder()[ACTIVE_ON_SITE].properties == {"page": "https://shop.test/"}
    assert active_on_site(SHOPPER, visit_id="v-1").properties == {}


def test_updated_properties_come_from_new_values_in_order() -> None:
    event = updated_account(
        SHOPPER,
        account_id="u-1",
        update_type="Profile",
        new_values={"last_name": "Smyth", "Birthday": date(1989, 1, 18)},
        time=TIME,
    )
    assert event.properties == {
        "UpdateType": "Profile",
        "UpdatedProperties": ["last_name", "Birthday"],
        "NewValues": {"last_name": "Smyth", "Birthday": "1989-01-18"},
    }


def test_changed_at_is_the_events_time_unless_time_is_given() -> None:
    changed = datetime(2024, 4, 30, 8, 0, tzinfo=UTC)
    kwargs: dict[str, Any] = {"account_id": "u-1", "update_type": "Name", "new_values": {}}
    assert updated_account(SHOPPER, changed_at=changed, **kwargs).time == changed
    assert updated_account(SHOPPER, changed_at=changed, time=TIME, **kwargs).time == TIME
    assert reset_password(SHOPPER, link=LINK, requested_at=changed).time == changed


def test_schema_rules_are_registered() -> None:
    assert REQUIRED_PROPERTIES[CREATED_ACCOUNT] == ()
    assert REQUIRED_PROPERTIES[UPDATED_ACCOUNT] == ("UpdateType", "UpdatedProperties", "NewValues")
    assert REQUIRED_PROPERTIES[RESET_PASSWORD] == ("PasswordResetLink",)
    assert REQUIRED_PROPERTIES[ACTIVE_ON_SITE] == ()
    for name in (
        "ACTIVE_ON_SITE",
        "CREATED_ACCOUNT",
        "RESET_PASSWORD",
        "UPDATED_ACCOUNT",
        "active_on_site",
        "created_account",
        "reset_password",
        "updated_account",
    ):
        assert name in events.__all__


# -- unique_id rules ---------------------------------------------------------------------------


def test_created_account_is_one_per_account() -> None:
    first = created_account(SHOPPER, account_id="42", time=TIME)
    again = created_account(
        {"email": "other@test.com"}, account_id=42, time=TIME + timedelta(days=3)
    )
    assert first.unique_id == again.unique_id == events.stable_id(CREATED_ACCOUNT, "42")
    assert created_account(SHOPPER, account_id="43", time=TIME).unique_id != first.unique_id


def change(**overrides: Any) -> Event:
    kwargs: dict[str, Any] = {
        "account_id": "u-1",
        "update_type": "Name",
        "new_values": {"first_name": "Johnny"},
        "old_values": {"first_name": "John"},
        "changed_at": TIME,
    }
    kwargs.update(overrides)
    return updated_account(SHOPPER, **kwargs)


def test_updated_account_same_change_same_id() -> None:
    assert change().unique_id == change().unique_id
    # the event's time may be when it is sent; the change is what it digests
    assert change(time=TIME + timedelta(hours=1)).unique_id == change().unique_id
    # one instant, however spelled (naive is UTC, another offset, an ISO string)
    east = timezone(timedelta(hours=2))
    for spelling in (TIME.replace(tzinfo=None), TIME.astimezone(east), TIME.isoformat()):
        assert change(changed_at=spelling).unique_id == change().unique_id


@pytest.mark.parametrize(
    "overrides",
    [
        {"account_id": "u-2"},
        {"update_type": "Profile"},
        {"new_values": {"first_name": "Jon"}},
        {"new_values": {"last_name": "Johnny"}},
        {"old_values": {"first_name": "Jack"}},
        {"old_values": None},
        {"updated_properties": ["Name"]},
        {"changed_at": TIME + timedelta(seconds=1)},
        {"changed_at": TIME + timedelta(microseconds=1)},
    ],
    ids=lambda overrides: next(iter(overrides)),
)
def test_updated_account_another_change_another_id(overrides: dict[str, Any]) -> None:
    assert change(**overrides).unique_id != change().unique_id


def test_updated_account_without_changed_at_digests_the_second() -> None:
    """A form submitted twice in one second is one change; a second later, another."""
    first = change(changed_at=None, time=TIME)
    assert change(changed_at=None, time=TIME + timedelta(microseconds=900)).unique_id == (
        first.unique_id
    )
    assert change(changed_at=None, time=TIME + timedelta(seconds=1)).unique_id != first.unique_id


def test_reset_password_is_one_per_link() -> None:
    first = reset_password(SHOPPER, link=LINK, time=TIME)
    again = reset_password(SHOPPER, link=LINK, time=TIME + timedelta(minutes=5))
    other = reset_password(SHOPPER, link=LINK.replace("s3cr3t", "n3w"), time=TIME)
    assert first.unique_id == again.unique_id == events.stable_id(RESET_PASSWORD, LINK)
    assert other.unique_id != first.unique_id
    assert "s3cr3t" not in first.unique_id


def test_active_on_site_is_one_per_visit() -> None:
    first = active_on_site(SHOPPER, visit_id="v-1", page_url="https://shop.test/", time=TIME)
    later = active_on_site(
        SHOPPER, visit_id="v-1", page_url="https://shop.test/p/1", time=TIME + timedelta(minutes=9)
    )
    assert first.unique_id == later.unique_id == events.stable_id(ACTIVE_ON_SITE, "v-1")
    assert active_on_site(SHOPPER, visit_id="v-2", time=TIME).unique_id != first.unique_id


def test_ids_survive_the_outbox_round_trip() -> None:
    for event in every_builder().values():
        assert Event.from_dict(json.loads(json.dumps(event.to_dict()))) == event


# -- bad input, named ----------------------------------------------------------------------------


def rejected(build: Any) -> KlaviyoSchemaError:
    """The error of building, else of validating (both validators name the same one)."""
    try:
        event = build()
    except KlaviyoSchemaError as error:
        return error
    verdicts = []
    for check in (validate_event, validate._validate_event_slow):
        with pytest.raises(KlaviyoSchemaError) as caught:
            check(event)
        verdicts.append(caught.value)
    fast, slow = verdicts
    assert (fast.metric, fast.field, fast.message) == (slow.metric, slow.field, slow.message)
    return fast


@pytest.mark.parametrize(
    "link",
    [
        "/account/reset/t0k3n",
        "shop.test/account/reset/t0k3n",
        "javascript:alert(document.cookie)",
        "JavaScript:alert(1)",
        "data:text/html,<script>alert(1)</script>",
        "ftp://shop.test/reset/t0k3n",
        "https://",
        "https:///reset/t0k3n",
        "http:/shop.test/reset",
        " https://shop.test/reset/t0k3n",
        "https://shop.test/reset/t0k3n\n",
        "java\tscript:alert(1)",
        "https://shop.test:99999/reset",
        "",
        None,
        42,
    ],
)
def test_reset_link_must_be_an_absolute_http_url(link: Any) -> None:
    error = rejected(lambda: reset_password(SHOPPER, link=link, time=TIME))
    assert (error.metric, error.field) == (RESET_PASSWORD, "PasswordResetLink")
    assert "t0k3n" not in str(error)  # the token never reaches a log line


@pytest.mark.parametrize(
    "link",
    ["https://shop.test/r/t", "http://localhost:5000/r/t", "HTTPS://Shop.test/r?t=1#x"],
)
def test_reset_link_absolute_http_urls_pass(link: str, openapi: Any) -> None:
    event = reset_password(SHOPPER, link=link, time=TIME)
    validate_event(event)
    openapi.validate("create_event", event.to_payload())


@pytest.mark.parametrize(
    ("build", "field"),
    [
        (lambda: change(update_type=5), "UpdateType"),
        (lambda: change(update_type=None), "UpdateType"),
        (lambda: change(update_type=" "), "UpdateType"),
        (lambda: change(new_values=["first_name"]), "NewValues"),
        (lambda: change(new_values="Johnny"), "NewValues"),
        (lambda: change(new_values=None), "NewValues"),
        (lambda: change(old_values=["John"]), "OldValues"),
        (lambda: change(updated_properties="first_name"), "UpdatedProperties"),
        (lambda: change(updated_properties=["first_name", 3]), "UpdatedProperties"),
        (lambda: change(new_values={"bio": "x" * (MAX_STRING_BYTES + 1)}), "NewValues.bio"),
        (lambda: change(new_values={1: "x"}), "NewValues"),
        (lambda: change(changed_at="yesterday"), "changed_at"),
        (lambda: change(account_id=None), "account_id"),
        (lambda: change(account_id=""), "account_id"),
        (lambda: change(account_id="  "), "account_id"),
        (lambda: change(account_id=True), "account_id"),
        (lambda: created_account(SHOPPER, account_id=None), "account_id"),
        (lambda: created_account(SHOPPER, account_id=3.5), "account_id"),
        (lambda: created_account(SHOPPER, account_id="u", properties=["x"]), "properties"),
        (lambda: created_account(SHOPPER, account_id="u", time="soon"), "time"),
        (lambda: reset_password(SHOPPER, link=LINK, requested_at=object()), "requested_at"),
        (lambda: active_on_site(SHOPPER, visit_id=None), "visit_id"),
        (lambda: active_on_site(SHOPPER, visit_id=""), "visit_id"),
        (lambda: active_on_site(SHOPPER, visit_id="v", page_url="/products/1"), "page"),
        (lambda: active_on_site(SHOPPER, visit_id="v", page_url="javascript:x"), "page"),
    ],
)
def test_bad_input_is_named_by_field(build: Any, field: str) -> None:
    assert rejected(build).field == field


def test_missing_account_id_keyword_is_a_type_error() -> None:
    with pytest.raises(TypeError):
        created_account(SHOPPER)  # type: ignore[call-arg]


# -- Klaviyo's limits still apply --------------------------------------------------------------


@pytest.mark.parametrize(
    ("build", "field"),
    [
        (lambda: created_account({}, account_id="u"), "profile"),
        (lambda: created_account({"anonymous_id": "a-1"}, account_id="u"), "profile"),
        (lambda: created_account({"email": "nope"}, account_id="u"), "profile.email"),
        (lambda: reset_password({"phone_number": "555"}, link=LINK), "profile.phone_number"),
        (
            lambda: created_account(
                SHOPPER, account_id="u", properties={f"p{i}": i for i in range(MAX_PROPERTIES + 1)}
            ),
            "properties",
        ),
        (
            lambda: created_account(
                SHOPPER, account_id="u", properties={"Nested": {"deep": [float("nan")]}}
            ),
            "Nested.deep[0]",
        ),
        (lambda: created_account(SHOPPER, account_id="u", time=datetime(1989, 1, 1)), "time"),
        (
            lambda: active_on_site(
                SHOPPER, visit_id="v", time=datetime.now(UTC) + timedelta(days=400)
            ),
            "time",
        ),
        (
            lambda: created_account(
                SHOPPER,
                account_id="u",
                properties={f"Notes{i}": "x" * MAX_STRING_BYTES for i in range(60)},
            ),
            "payload",
        ),
        (
            lambda: change(
                new_values={f"n{i}": "x" * MAX_STRING_BYTES for i in range(30)},
                old_values={f"n{i}": "y" * MAX_STRING_BYTES for i in range(30)},
            ),
            "payload",
        ),
    ],
)
def test_klaviyos_limits_still_hold(build: Any, field: str) -> None:
    assert rejected(build).field == field


def test_at_the_limits_is_accepted(openapi: Any) -> None:
    event = created_account(
        SHOPPER,
        account_id="u",
        time=TIME,
        properties={f"p{i}": "x" * 100 for i in range(MAX_PROPERTIES)},
    )
    validate_event(event)
    openapi.validate("create_event", event.to_payload())
    long_link = "https://shop.test/r/" + "t" * (MAX_STRING_BYTES - len("https://shop.test/r/"))
    validate_event(reset_password(SHOPPER, link=long_link, time=TIME))
    with pytest.raises(KlaviyoSchemaError) as caught:
        validate_event(reset_password(SHOPPER, link=long_link + "t", time=TIME))
    assert caught.value.field == "PasswordResetLink"
