"""Customer data and consent: profiles, the email change, subscriptions, forgetting, through the
operations pipeline and a real worker to the stand-in."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis
from flask import Flask

from flask_klaviyo import KlaviyoSchemaError
from flask_klaviyo.delivery import keys
from flask_klaviyo.delivery.deadletters import DeadLetters
from flask_klaviyo.delivery.outbox import Outbox

ANN = "ann.lee@shop-test.com"
BOB = "bob.ray@shop-test.com"
PHONE = "+15005550006"
LIST = "Y6nRLr"


@pytest.fixture
def app(make_app: Callable[..., Flask], fake: Any) -> Flask:
    def views(app: Flask, klaviyo: Any) -> None:
        @app.get("/browse")
        def browse() -> str:
            klaviyo.track("Viewed Collection", {"Collection": "Mugs"})  # a stranger: parked
            return "<p>mugs</p>"

        @app.post("/signup")
        def signup() -> dict[str, str]:
            subscription = klaviyo.subscribe(email=ANN, list_id=LIST, source="Footer")
            return {"status": subscription.status}

    return make_app(fake=fake, views=views, KLAVIYO_STRICT=True)


def ext(app: Flask) -> Any:
    return app.extensions["klaviyo"].extension


def requests_to(fake: Any, path: str) -> list[dict[str, Any]]:
    return [r for r in fake.requests if r["path"].startswith(path)]


# -- profiles ------------------------------------------------------------------------------------
def test_a_profile_update_reaches_the_stand_in_valid_and_its_id_is_remembered(
    app: Flask, fake: Any, drain: Callable[[Flask], None], openapi: Any, redis_client: redis.Redis
) -> None:
    with app.app_context():
        ext(app).update_profile(
            email=" Ann.Lee@Shop-Test.com ",
            phone_number="+1 (500) 555-0006",
            first_name="Ann",
            location={"city": "Boston", "region": "MA", "zip": "02110"},
            properties={"Loyalty": "gold"},
        )
    drain(app)
    [sent] = requests_to(fake, "/api/profile-import")
    openapi.validate("create_or_update_profile", sent["body"])
    attributes = sent["body"]["data"]["attributes"]
    assert attributes["email"] == ANN and attributes["phone_number"] == PHONE
    assert attributes["location"]["city"] == "Boston"
    [profile] = [p for p in fake.profiles() if p.get("email") == ANN]
    assert redis_client.hget(keys.PROFILE_IDS, ANN).decode() == profile["id"]


def test_five_updates_of_one_profile_waiting_together_are_one_request(
    app: Flask, fake: Any, drain: Callable[[Flask], None]
) -> None:
    with app.app_context():
        for n in range(5):
            ext(app).update_profile(email=ANN, properties={f"step{n}": n, "last": n})
        ext(app).update_profile(email=BOB, first_name="Bob")
    drain(app)
    sent = requests_to(fake, "/api/profile-import")
    assert len(sent) == 2
    [ann] = [r for r in sent if r["body"]["data"]["attributes"]["email"] == ANN]
    assert ann["body"]["data"]["attributes"]["properties"] == {
        "step0": 0,
        "step1": 1,
        "step2": 2,
        "step3": 3,
        "step4": 4,
        "last": 4,
    }


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"external_id": "cust-7"}, "email"),
        ({"email": "not an email"}, "email"),
        ({"email": ANN, "phone_number": "555-0006"}, "phone_number"),
        ({"email": ANN, "location": {"planet": "Mars"}}, "location.planet"),
        ({"email": ANN, "properties": {"x": float("nan")}}, "properties"),
        ({"email": ANN, "first_name": "x" * 300}, "first_name"),
    ],
)
def test_bad_profile_input_is_refused_naming_the_field_and_nothing_is_queued(
    app: Flask, fields: dict[str, Any], field: str, redis_client: redis.Redis
) -> None:
    with app.app_context(), pytest.raises(KlaviyoSchemaError) as info:
        ext(app).update_profile(**fields)
    assert info.value.field == field
    app.config["KLAVIYO_STRICT"] = False
    with app.app_context():
        assert ext(app).update_profile(**fields) is None
    assert Outbox(redis_client).depth() == 0
    [dead] = DeadLetters(redis_client).all()
    assert dead["reason"] == "invalid" and dead["errors"][0]["pointer"] == field


def test_a_duplicate_profile_conflict_updates_by_email_and_keeps_the_conflict(
    app: Flask, fake: Any, drain: Callable[[Flask], None], redis_client: redis.Redis
) -> None:
    with app.app_context():
        ext(app).update_profile(email=ANN)
        ext(app).update_profile(phone_number=PHONE)  # another person's number, for now
    drain(app)
    with app.app_context():
        ext(app).update_profile(email=ANN, phone_number=PHONE, first_name="Ann")
    drain(app)
    attempts = requests_to(fake, "/api/profile-import")
    assert [r["status"] for r in attempts] == [201, 201, 409, 200]
    retried = attempts[-1]["body"]["data"]["attributes"]
    assert retried == {"email": ANN, "first_name": "Ann"}  # by email, without the phone
    [dead] = DeadLetters(redis_client).all()
    assert dead["status"] == 409 and dead["errors"][0]["code"] == "duplicate_profile"
    assert Outbox(redis_client).depth() == 0  # not retried forever


# -- subscriptions (payload rules; end to end below) ---------------------------------------------
@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"phone_number": PHONE, "channels": ("email",)}, "email"),
        ({"email": ANN, "channels": ("sms",)}, "phone_number"),
        ({"email": ANN, "channels": ("email", "fax")}, "channels"),
        ({"email": ANN, "channels": "email"}, "channels"),
        ({"email": ANN, "list_id": ""}, "list_id"),
        ({"email": ANN, "consented_at": datetime.now(UTC) + timedelta(days=1)}, "consented_at"),
    ],
)
def test_a_subscription_without_what_its_channel_needs_is_refused(
    app: Flask, fields: dict[str, Any], field: str, redis_client: redis.Redis
) -> None:
    arguments = {"list_id": LIST, **fields}
    with app.app_context(), pytest.raises(KlaviyoSchemaError) as info:
        ext(app).subscribe(**arguments)
    assert info.value.field == field
    assert Outbox(redis_client).depth() == 0


def test_subscribe_says_what_to_tell_the_person(app: Flask, queued_operations: Any) -> None:
    with app.app_context():
        assert ext(app).subscribe(email=ANN, list_id=LIST).status == "confirmation_sent"
        past = datetime(2024, 5, 1, tzinfo=UTC)
        historical = ext(app).subscribe(email=BOB, list_id=LIST, consented_at=past)
        assert (historical.status, historical.historical) == ("subscribed", True)
    app.config["KLAVIYO_SINGLE_OPT_IN_LISTS"] = (LIST,)
    with app.app_context():
        assert ext(app).subscribe(email=ANN, list_id=LIST).status == "subscribed"
    payloads = [entry["payload"] for entry in queued_operations(app)]
    assert payloads[1]["historical_import"] is True
    marketing = payloads[1]["profile"]["subscriptions"]["email"]["marketing"]
    assert marketing == {"consent": "SUBSCRIBED", "consented_at": "2024-05-01T00:00:00+00:00"}
    assert "consented_at" not in payloads[0]["profile"]["subscriptions"]["email"]["marketing"]


def test_unsubscribe_spells_out_klaviyos_global_rule(app: Flask) -> None:
    with app.app_context():
        with pytest.raises(KlaviyoSchemaError, match="from all marketing on those channels"):
            ext(app).unsubscribe(email=ANN, list_id=LIST, if_not_on_list="list_only")
        operation = ext(app).unsubscribe(email=ANN, list_id=LIST)
    assert operation is not None and operation.kind == "unsubscribe"


def test_signing_up_identifies_the_visitor(app: Flask, queued_operations: Any) -> None:
    client = app.test_client()
    assert client.post("/signup").json == {"status": "confirmation_sent"}
    cookie = client.get_cookie(app.config["KLAVIYO_COOKIE_NAME"])
    assert cookie is not None  # the server now knows who this browser is
    [entry] = queued_operations(app)
    assert entry["op"] == "subscribe" and entry["payload"]["custom_source"] == "Footer"


# -- forgetting ------------------------------------------------------------------------------------
def test_forget_drops_what_waits_for_the_person_and_refuses_what_comes_later(
    app: Flask, fake: Any, drain: Callable[[Flask], None], redis_client: redis.Redis, tmp_path: Any
) -> None:
    klaviyo = ext(app)
    with app.app_context():
        klaviyo.track("Left Review", {"Stars": 5}, profile={"email": ANN})
        klaviyo.update_profile(email=ANN, first_name="Ann")
        klaviyo.track("Left Review", {"Stars": 4}, profile={"email": BOB})
    state = app.extensions["klaviyo"]
    with app.app_context():
        spooled = klaviyo.track("Left Review", {"Stars": 3}, profile={"email": ANN}, time=None)
    assert spooled is not None
    state.spool.append([spooled])  # as if Redis had been down for this one
    DeadLetters(redis_client).add({"metric": "X", "profile": {"email": ANN}}, reason="invalid")
    with app.app_context():
        report = klaviyo.forget(email=ANN.upper())
    assert report.purged.outbox == 3 and report.purged.dead_letters == 1
    assert report.purged.spool == 1
    with app.app_context():  # queued after the deletion request: dropped before sending
        klaviyo.track("Left Review", {"Stars": 2}, profile={"email": ANN})
    drain(app)
    emails = {event["profile"].get("email") for event in fake.events}
    assert ANN not in emails and BOB in emails
    assert not any(
        r["body"]["data"]["attributes"].get("email") == ANN
        for r in requests_to(fake, "/api/profile-import")
    )
    assert Outbox(redis_client).depth() == 0 and DeadLetters(redis_client).count() == 0
    [deletion] = requests_to(fake, "/api/data-privacy-deletion-jobs")
    assert deletion["body"]["data"]["attributes"]["profile"]["data"]["attributes"] == {"email": ANN}


def test_flask_klaviyo_forget_from_the_shell(app: Flask, redis_client: redis.Redis) -> None:
    with app.app_context():
        ext(app).track("Left Review", {"Stars": 5}, profile={"email": ANN})
    runner = app.test_cli_runner()
    result = runner.invoke(args=["klaviyo", "forget", ANN])
    assert result.exit_code == 0, result.output
    assert "deletion requested in Klaviyo" in result.output and "1 waiting" in result.output
    [entry] = [e for e in Outbox(redis_client).waiting()]
    assert entry["op"] == "profile_deletion"
    bad = runner.invoke(args=["klaviyo", "forget", "not-an-address@"])
    assert bad.exit_code == 2 and "email" in bad.output


# -- end to end through the stand-in's endpoints -------------------------------------------------
def test_the_email_change_keeps_one_profile_with_its_history(
    app: Flask, fake: Any, drain: Callable[[Flask], None], openapi: Any, redis_client: redis.Redis
) -> None:
    with app.app_context():
        ext(app).track("Left Review", {"Stars": 5}, profile={"email": ANN})
    drain(app)  # a profile for Ann exists in "Klaviyo" (its id is not known here yet)
    with app.app_context():
        ext(app).change_email(ANN, BOB)
    drain(app)
    [patch] = requests_to(fake, "/api/profiles/")
    assert patch["method"] == "PATCH" and patch["status"] == 200
    openapi.validate("update_profile", patch["body"])
    assert len(fake.profiles()) == 1
    [profile] = fake.profiles()
    assert profile["email"] == BOB
    assert [e["properties"]["Stars"] for e in fake.events_for(email=BOB)] == [5]
    assert redis_client.hget(keys.PROFILE_IDS, BOB).decode() == profile["id"]
    assert redis_client.hget(keys.PROFILE_IDS, ANN) is None


def test_the_identity_cookie_follows_an_email_change(make_app: Any, fake: Any) -> None:
    def views(app: Flask, klaviyo: Any) -> None:
        @app.post("/login")
        def login() -> str:
            klaviyo.identify(email=ANN, first_name="Ann")
            return "ok"

        @app.post("/email")
        def email() -> str:
            klaviyo.change_email(ANN, BOB)
            return "ok"

        @app.get("/who")
        def who() -> dict[str, Any]:
            return klaviyo.visitor()

    app = make_app(fake=fake, views=views, KLAVIYO_STRICT=True)
    client = app.test_client()
    client.post("/login")
    assert client.get("/who").json["email"] == ANN
    client.post("/email")
    assert client.get("/who").json == {"email": BOB, "first_name": "Ann"}


def test_a_double_submitted_signup_is_one_subscription_and_sms_needs_its_own_consent(
    app: Flask, fake: Any, drain: Callable[[Flask], None], openapi: Any
) -> None:
    client = app.test_client()
    assert client.post("/signup").json == {"status": "confirmation_sent"}
    assert client.post("/signup").json == {"status": "confirmation_sent"}
    with app.app_context():
        ext(app).subscribe(phone_number=PHONE, list_id=LIST, channels=("sms",))
    drain(app)
    sent = requests_to(fake, "/api/profile-subscription-bulk-create-jobs")
    assert len(sent) == 2  # one per source: the footer's (both sign-ups merged) and the SMS one
    for request in sent:
        openapi.validate("bulk_subscribe_profiles", request["body"])
    footer = next(r for r in sent if r["body"]["data"]["attributes"].get("custom_source"))
    assert len(footer["body"]["data"]["attributes"]["profiles"]["data"]) == 1
    rows = fake.subscriptions(LIST)
    assert sorted((r["channel"], r["email"] or r["phone_number"]) for r in rows) == [
        ("email", ANN),
        ("sms", PHONE),
    ]
    assert all(r["consent"] == "SUBSCRIBED" for r in rows)


def test_historical_consent_is_imported_as_such(
    app: Flask, fake: Any, drain: Callable[[Flask], None], openapi: Any
) -> None:
    with app.app_context():
        ext(app).subscribe(
            email=ANN, list_id=LIST, consented_at="2024-05-01T09:30:00+00:00", source="Import"
        )
    drain(app)
    [sent] = requests_to(fake, "/api/profile-subscription-bulk-create-jobs")
    openapi.validate("bulk_subscribe_profiles", sent["body"])
    [row] = fake.subscriptions(LIST)
    assert row["historical_import"] is True and row["consented_at"].startswith("2024-05-01")


def test_unsubscribing_someone_not_on_the_list_is_global_as_klaviyo_says(
    app: Flask, fake: Any, drain: Callable[[Flask], None], openapi: Any
) -> None:
    with app.app_context():
        ext(app).unsubscribe(email=BOB, list_id=LIST)
    drain(app)
    [sent] = requests_to(fake, "/api/profile-subscription-bulk-delete-jobs")
    openapi.validate("bulk_unsubscribe_profiles", sent["body"])
    [row] = fake.subscriptions()
    assert row["consent"] == "UNSUBSCRIBED" and row["global"] is True


@pytest.mark.parametrize(
    ("call", "metric", "properties"),
    [
        (
            lambda k: k.account_created("acct-1", profile={"email": ANN, "first_name": "Ann"}),
            "Created Account",
            {},
        ),
        (
            lambda k: k.account_updated(
                "acct-1",
                update_type="Name Update",
                old_values={"FirstName": "An"},
                new_values={"FirstName": "Ann"},
                profile={"email": ANN},
            ),
            "Updated Account",
            {
                "UpdateType": "Name Update",
                "UpdatedProperties": ["FirstName"],
                "OldValues": {"FirstName": "An"},
                "NewValues": {"FirstName": "Ann"},
            },
        ),
        (
            lambda k: k.password_reset(
                "https://shop.test/account/reset/tok-123", profile={"email": ANN}
            ),
            "Reset Password",
            {"PasswordResetLink": "https://shop.test/account/reset/tok-123"},
        ),
    ],
)
def test_each_account_event_reaches_the_stand_in_valid(
    app: Flask,
    fake: Any,
    drain: Callable[[Flask], None],
    openapi: Any,
    call: Callable[[Any], Any],
    metric: str,
    properties: dict[str, Any],
) -> None:
    with app.app_context():
        assert call(ext(app)) is not None
    drain(app)
    [event] = fake.events
    assert event["metric"] == metric and event["properties"] == properties
    assert fake.profile_of(event)["email"] == ANN
    for request in fake.requests:
        openapi.validate(request["endpoint"], request["body"])


def test_a_relative_reset_link_is_refused(app: Flask) -> None:
    with app.app_context(), pytest.raises(KlaviyoSchemaError) as info:
        ext(app).password_reset("/account/reset/tok", profile={"email": ANN})
    assert info.value.field.endswith("PasswordResetLink")


def test_signing_up_releases_what_the_visitor_did_before(
    app: Flask, fake: Any, drain: Callable[[Flask], None]
) -> None:
    client = app.test_client()
    client.get("/browse")
    drain(app)
    assert fake.events == []  # a stranger's event waits (parked), it is not an orphan profile
    client.post("/signup")
    drain(app)
    [viewed] = [e for e in fake.events if e["metric"] == "Viewed Collection"]
    assert fake.profile_of(viewed)["email"] == ANN
