"""Identity: the resolution table, the signed cookie, ``__kla_id``, ``_kx``, the BFF header,
``identify()``, consent. Real Redis, Flask's test client; nothing is delivered (queue only)."""

from __future__ import annotations

import base64
import functools
import itertools
import json
import logging
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import pytest
import redis
from flask import Flask, jsonify, render_template_string, request
from flask.testing import FlaskClient
from itsdangerous import TimestampSigner, URLSafeTimedSerializer

from flask_klaviyo import Klaviyo, KlaviyoConfigError, tracks
from flask_klaviyo.delivery.parking import Parking
from flask_klaviyo.identity.cookies import COOKIE_SALT, parse_kla_id

SECRET = "identity-secret"
COOKIE = "klaviyo_id"
PRODUCT = {"id": "1111", "name": "Winnie the Pooh", "sku": "WINNIEPOOH", "price": 9.99}
PAGE = "<h1>{{ product.name }}</h1>{{ klaviyo_bridge() }}"
KX_LANDING = "Zm9vYmFyYmF6+/=.AbC123"  # base64-ish: needs URL-encoding in a link
KX_KLA = "a2xhX2V4Y2hhbmdl.AbC123"
ORDER = {
    "id": "order-1",
    "email": "Order.Buyer@shop.test",
    "lines": [{"id": "l1", "product": PRODUCT, "quantity": 1}],
}


class Switches:
    """What the merchant's loaders answer; tests flip them."""

    def __init__(self) -> None:
        self.user: dict[str, Any] | None = None
        self.consent: bool | None = None


def shop(switches: Switches) -> Callable[[Flask, Klaviyo], None]:
    """The merchant's loaders (answering as ``switches`` say) and the views the tests visit."""

    def add(app: Flask, klaviyo: Klaviyo) -> None:
        @klaviyo.identity_loader
        def who() -> dict[str, Any] | None:
            return switches.user

        @klaviyo.consent_loader
        def consent() -> bool | None:
            return switches.consent

        @app.get("/products/<pid>")
        @tracks("Viewed Product")
        def product(pid: str) -> str:
            return render_template_string(PAGE, product={**PRODUCT, "id": pid})

        @app.get("/track")
        def track() -> str:
            explicit = {"email": "event@shop.test"} if request.args.get("explicit") else None
            klaviyo.track("Left Review", {"Stars": 5}, profile=explicit)
            return "ok"

        @app.route("/whoami", methods=["GET", "POST"])
        def whoami() -> Any:
            return jsonify(visitor=klaviyo.visitor(), browse=klaviyo.browse_allowed())

        @app.post("/identify")
        def identify() -> Any:
            return jsonify(klaviyo.identify(**request.form.to_dict()))

        @app.post("/order")
        def order() -> str:
            klaviyo.order_placed(ORDER)
            return "ok"

        @app.get("/landing")
        def landing() -> str:
            return "welcome"

    return add


@pytest.fixture
def switches() -> Switches:
    return Switches()


@pytest.fixture
def make_app(make_app: Callable[..., Flask], switches: Switches) -> Callable[..., Flask]:
    """``make_app(redis_url, tmp_path, **config)``: the shop, its loaders on ``switches``."""
    return functools.partial(make_app, views=shop(switches), SECRET_KEY=SECRET)


@pytest.fixture
def app(redis_url: str, tmp_path: Any, make_app: Callable[..., Flask]) -> Flask:
    return make_app(redis_url, tmp_path)


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


def parked_keys(redis_client: redis.Redis) -> list[bytes]:
    return sorted(redis_client.keys(Parking.PREFIX + "*"))


def token(data: Any, key: str = SECRET, *, age: float = 0) -> str:
    """A signed identity token as the extension writes it, optionally ``age`` seconds old."""

    class Signer(TimestampSigner):
        def get_timestamp(self) -> int:
            return int(time.time() - age)

    return URLSafeTimedSerializer(key, salt=COOKIE_SALT, signer=Signer).dumps(data)


def read_token(value: str, key: str = SECRET) -> Any:
    return URLSafeTimedSerializer(key, salt=COOKIE_SALT).loads(value)


def anonymous_id(client: FlaskClient) -> str:
    return read_token(client.get_cookie(COOKIE).value)["a"]  # type: ignore[union-attr,no-any-return]


def kla_id(data: Any) -> str:
    return base64.b64encode(json.dumps(data).encode()).decode()


def set_cookies(response: Any) -> dict[str, dict[str, Any]]:
    """Every Set-Cookie of a response: name -> {"value": ..., attribute (lowercase): value}."""
    found: dict[str, dict[str, Any]] = {}
    for header in response.headers.getlist("Set-Cookie"):
        first, *attributes = [part.strip() for part in header.split(";")]
        name, _, value = first.partition("=")
        entry: dict[str, Any] = {"value": value}
        for attribute in attributes:
            key, _, val = attribute.partition("=")
            entry[key.lower()] = val or True
        found[name] = entry
    return found


# -- the resolution table ----------------------------------------------------------------------
# Highest trust first. Each source, set up alone, names a different profile.
SOURCES = ("event", "loader", "cookie", "landing", "kla")
EXPECTED = {
    "event": {"email": "event@shop.test"},
    "loader": {"email": "loader@shop.test"},
    "cookie": {"email": "cookie@shop.test"},
    "landing": {"_kx": KX_LANDING},
    "kla": {"_kx": KX_KLA},
}


def request_with(client: FlaskClient, switches: Switches, sources: tuple[str, ...]) -> Any:
    query: dict[str, str] = {}
    if "event" in sources:
        query["explicit"] = "1"
    if "loader" in sources:
        switches.user = {"email": "Loader@Shop.test"}
    if "cookie" in sources:
        client.set_cookie(COOKIE, token({"p": {"email": "cookie@shop.test"}}))
    if "landing" in sources:
        query["_kx"] = KX_LANDING
    if "kla" in sources:
        client.set_cookie("__kla_id", kla_id({"$exchange_id": KX_KLA}))
    url = "/track?" + "&".join(f"{k}={quote(v, safe='')}" for k, v in query.items())
    return client.get(url)


CASES = [c for r in (1, 2) for c in itertools.combinations(SOURCES, r)] + [SOURCES]


@pytest.mark.parametrize("sources", CASES, ids=["+".join(c) for c in CASES])
def test_resolution_first_found_wins(
    client: FlaskClient,
    switches: Switches,
    redis_url: str,
    sources: tuple[str, ...],
    queued: Callable[[str], list[dict[str, Any]]],
) -> None:
    response = request_with(client, switches, sources)
    assert response.status_code == 200
    [event] = queued(redis_url)
    assert event["profile"] == EXPECTED[sources[0]]


def test_a_stranger_is_anonymous_and_the_event_is_parked_not_sent(
    client: FlaskClient,
    redis_url: str,
    redis_client: redis.Redis,
    queued: Callable[[str], list[dict[str, Any]]],
) -> None:
    assert client.get("/track").status_code == 200
    assert queued(redis_url) == []
    [key] = parked_keys(redis_client)
    [parked] = [json.loads(raw) for raw in redis_client.lrange(key, 0, -1)]
    assert parked["metric"] == "Left Review"
    assert client.get("/whoami").json["visitor"] == {}  # type: ignore[index]
    anonymous = anonymous_id(client)
    assert key.decode() == Parking.PREFIX + anonymous and len(anonymous) == 32


def test_visitor_has_the_same_order_without_the_event(
    client: FlaskClient, switches: Switches
) -> None:
    client.set_cookie(COOKIE, token({"p": {"email": "cookie@shop.test"}}))
    assert client.get("/whoami").json["visitor"] == {"email": "cookie@shop.test"}  # type: ignore[index]
    switches.user = {"email": "loader@shop.test", "first_name": "Lo"}
    assert client.get("/whoami").json["visitor"] == {  # type: ignore[index]
        "email": "loader@shop.test",
        "first_name": "Lo",
    }


# -- the signed cookie -------------------------------------------------------------------------
def tampered(value: str) -> str:
    payload, rest = value.split(".", 1)
    flipped = "A" if payload[3] != "A" else "B"
    return payload[:3] + flipped + payload[4:] + "." + rest


@pytest.mark.filterwarnings("ignore:The 'klaviyo_id' cookie is too large")
@pytest.mark.parametrize(
    "bad",
    [
        pytest.param(lambda t: tampered(t), id="tampered"),
        pytest.param(lambda t: t[:-6], id="truncated"),
        pytest.param(lambda t: t + "x" * 5000, id="oversized"),
        pytest.param(
            lambda t: token({"p": {"email": "cookie@shop.test"}}, age=2 * 86400), id="expired"
        ),
        pytest.param(
            lambda t: token({"p": {"email": "cookie@shop.test"}}, "other-key"), id="foreign-key"
        ),
        pytest.param(lambda t: "not a token at all", id="garbage"),
    ],
)
def test_an_unusable_cookie_is_ignored_and_replaced_never_an_error(
    redis_url: str,
    tmp_path: Any,
    switches: Switches,
    redis_client: redis.Redis,
    bad: Any,
    make_app: Callable[..., Flask],
    queued: Callable[[str], list[dict[str, Any]]],
) -> None:
    app = make_app(redis_url, tmp_path, KLAVIYO_COOKIE_MAX_AGE=86400)
    client = app.test_client()
    good = token({"p": {"email": "cookie@shop.test"}})
    client.set_cookie(COOKIE, bad(good))
    response = client.get("/track")
    assert response.status_code == 200
    assert queued(redis_url) == []  # not sent under the forged/expired identity: parked
    assert len(parked_keys(redis_client)) == 1
    replaced = set_cookies(response)[COOKIE]
    assert "a" in read_token(replaced["value"]) and "p" not in read_token(replaced["value"])


def test_an_unusable_cookie_with_nothing_to_replace_it_is_deleted(client: FlaskClient) -> None:
    client.set_cookie(COOKIE, "garbage.value.here")
    response = client.get("/landing")
    assert response.status_code == 200
    deleted = set_cookies(response)[COOKIE]
    assert deleted["value"] == "" and deleted["max-age"] == "0"


def test_signed_nonsense_payloads_are_ignored(
    client: FlaskClient, redis_url: str, queued: Callable[[str], list[dict[str, Any]]]
) -> None:
    for payload in (["a", "list"], {"a": 5, "k": ["x"], "p": "me@shop.test", "n": "many"}):
        client.set_cookie(COOKIE, token(payload))
        assert client.get("/track").status_code == 200
    assert queued(redis_url) == []
    client.set_cookie(COOKIE, token({"p": {"email": "not-an-email", "external_id": "u-1"}}))
    assert client.get("/whoami").json["visitor"] == {}  # type: ignore[index]


def test_a_cookie_signed_with_a_fallback_key_is_read_and_re_signed(
    redis_url: str,
    tmp_path: Any,
    switches: Switches,
    make_app: Callable[..., Flask],
    queued: Callable[[str], list[dict[str, Any]]],
) -> None:
    app = make_app(redis_url, tmp_path, SECRET_KEY_FALLBACKS=["old-secret"])
    client = app.test_client()
    client.set_cookie(COOKIE, token({"p": {"email": "cookie@shop.test"}}, "old-secret"))
    response = client.get("/track")
    assert queued(redis_url)[0]["profile"] == {"email": "cookie@shop.test"}
    fresh = set_cookies(response)[COOKIE]["value"]
    assert read_token(fresh) == {"p": {"email": "cookie@shop.test"}}  # the current key


def test_without_the_fallback_the_old_cookie_is_not_trusted(
    client: FlaskClient, redis_url: str, queued: Callable[[str], list[dict[str, Any]]]
) -> None:
    client.set_cookie(COOKIE, token({"p": {"email": "cookie@shop.test"}}, "old-secret"))
    client.get("/track")
    assert queued(redis_url) == []


def test_a_cookie_near_expiry_is_refreshed_and_a_young_one_is_left_alone(
    redis_url: str, tmp_path: Any, switches: Switches, make_app: Callable[..., Flask]
) -> None:
    app = make_app(redis_url, tmp_path, KLAVIYO_COOKIE_MAX_AGE=86400)
    client = app.test_client()
    client.set_cookie(COOKIE, token({"p": {"email": "cookie@shop.test"}}, age=3600))
    assert COOKIE not in set_cookies(client.get("/track"))
    client.set_cookie(COOKIE, token({"p": {"email": "cookie@shop.test"}}, age=80000))
    refreshed = set_cookies(client.get("/track"))[COOKIE]
    _, signed_at = URLSafeTimedSerializer(SECRET, salt=COOKIE_SALT).loads(
        refreshed["value"], return_timestamp=True
    )
    assert time.time() - signed_at.timestamp() < 60


def test_identity_cookie_attributes(client: FlaskClient) -> None:
    response = client.post("/identify", data={"email": "ann@shop.test"})
    cookie = set_cookies(response)[COOKIE]
    assert cookie["httponly"] is True
    assert cookie["samesite"] == "Lax"
    assert cookie["max-age"] == str(400 * 24 * 3600)
    assert cookie["path"] == "/"
    assert "secure" not in cookie and "domain" not in cookie
    assert read_token(cookie["value"]) == {"p": {"email": "ann@shop.test"}}


def test_secure_and_domain_are_configurable(
    redis_url: str, tmp_path: Any, switches: Switches, make_app: Callable[..., Flask]
) -> None:
    app = make_app(
        redis_url,
        tmp_path,
        KLAVIYO_COOKIE_SECURE=True,
        KLAVIYO_COOKIE_DOMAIN="shop.test",
        KLAVIYO_COOKIE_MAX_AGE=3600,
        KLAVIYO_COOKIE_NAME="kid",
    )
    response = app.test_client().get(f"/landing?_kx={quote(KX_LANDING, safe='')}")
    cookies = set_cookies(response)
    for name in ("kid", "__kla_id"):
        assert cookies[name]["secure"] is True
        assert cookies[name]["domain"] == "shop.test"
        assert cookies[name]["max-age"] == "3600"
    assert COOKIE not in cookies


def test_nothing_is_set_for_a_visitor_the_server_learnt_nothing_about(
    client: FlaskClient,
) -> None:
    assert client.get("/landing").headers.getlist("Set-Cookie") == []
    assert client.get("/whoami").headers.getlist("Set-Cookie") == []


# -- _kx and __kla_id --------------------------------------------------------------------------
def test_kx_landing_is_remembered_for_later_visits(
    client: FlaskClient, redis_url: str, queued: Callable[[str], list[dict[str, Any]]]
) -> None:
    response = client.get(f"/any/page/at/all?_kx={quote(KX_LANDING, safe='')}")
    assert response.status_code == 404  # a landing on a missing page still counts
    assert read_token(client.get_cookie(COOKIE).value)["k"] == KX_LANDING  # type: ignore[union-attr]
    client.get("/track")  # no _kx this time
    assert queued(redis_url)[0]["profile"] == {"_kx": KX_LANDING}


def test_an_unencoded_plus_in_a_kx_link_survives(client: FlaskClient) -> None:
    client.get("/landing?_kx=ab+cd%2Fef%3D.AbC123")
    assert client.get("/whoami").json["visitor"] == {"_kx": "ab+cd/ef=.AbC123"}  # type: ignore[index]


def test_kx_landing_re_sets_kla_id_keeping_klaviyo_js_keys(client: FlaskClient) -> None:
    written_by_js = {
        "$referrer": {"ts": 1700000000, "value": "https://mail.test/", "first_page": "/"},
        "$last_referrer": {"ts": 1700000100, "value": "", "first_page": "/x"},
        "cid": "ZTk2MjY=",
    }
    client.set_cookie("__kla_id", kla_id(written_by_js))
    response = client.get(f"/landing?_kx={quote(KX_LANDING, safe='')}")
    cookie = set_cookies(response)["__kla_id"]
    assert parse_kla_id(cookie["value"]) == {**written_by_js, "$exchange_id": KX_LANDING}
    assert "httponly" not in cookie  # klaviyo.js reads it
    assert cookie["samesite"] == "Lax"
    assert int(cookie["max-age"]) > 7 * 24 * 3600  # outlives Safari's cap on script cookies


def test_identify_re_sets_kla_id_with_the_known_exchange_id(client: FlaskClient) -> None:
    client.get(f"/landing?_kx={quote(KX_LANDING, safe='')}")
    client.set_cookie("__kla_id", kla_id({"cid": "abc"}))
    response = client.post("/identify", data={"email": "ann@shop.test"})
    assert parse_kla_id(set_cookies(response)["__kla_id"]["value"]) == {
        "cid": "abc",
        "$exchange_id": KX_LANDING,
    }


@pytest.mark.filterwarnings("ignore:The '__kla_id' cookie is too large")
@pytest.mark.parametrize(
    "value",
    [
        pytest.param("%%%not-base64%%%", id="bad-base64"),
        pytest.param(base64.b64encode(b"not json {").decode(), id="not-json"),
        pytest.param(kla_id(["$exchange_id", KX_KLA]), id="list"),
        pytest.param(kla_id("just a string"), id="string"),
        pytest.param(kla_id({"$exchange_id": KX_KLA, "pad": "x" * 5000}), id="huge"),
        pytest.param(base64.b64encode(b"[" * 3000 + b"]" * 3000).decode()[:4000], id="deep"),
        pytest.param(kla_id({"$exchange_id": ["not", "a", "string"]}), id="odd-exchange-id"),
        pytest.param(base64.b64encode(b"\xff\xfe\x00").decode(), id="not-utf8"),
    ],
)
def test_a_malformed_kla_id_is_ignored(
    client: FlaskClient, redis_url: str, value: str, queued: Callable[[str], list[dict[str, Any]]]
) -> None:
    client.set_cookie("__kla_id", value)
    response = client.get("/track")
    assert response.status_code == 200
    assert queued(redis_url) == []
    assert client.get("/whoami").json["visitor"] == {}  # type: ignore[index]


def test_an_email_in_kla_id_is_never_trusted(
    client: FlaskClient,
    redis_url: str,
    redis_client: redis.Redis,
    queued: Callable[[str], list[dict[str, Any]]],
) -> None:
    client.set_cookie(
        "__kla_id", kla_id({"$email": "victim@shop.test", "$phone_number": "+15551234567"})
    )
    client.get("/track")
    assert queued(redis_url) == []  # parked as anonymous, not sent to the victim
    assert len(parked_keys(redis_client)) == 1
    client.set_cookie("__kla_id", kla_id({"$email": "victim@shop.test", "$exchange_id": KX_KLA}))
    client.get("/track")
    # Known now by the exchange id alone; the parked event is released to the same profile.
    sent, released = queued(redis_url)
    assert sent["profile"] == {"_kx": KX_KLA}
    assert released["profile"] == {"_kx": KX_KLA, "anonymous_id": anonymous_id(client)}
    assert all("victim" not in json.dumps(e) for e in (sent, released))


def test_kla_id_accepts_url_encoded_and_unpadded_values() -> None:
    raw = kla_id({"$exchange_id": KX_KLA})
    assert parse_kla_id(quote(raw, safe=""))["$exchange_id"] == KX_KLA  # type: ignore[index]
    assert parse_kla_id(raw.rstrip("="))["$exchange_id"] == KX_KLA  # type: ignore[index]


# -- the BFF header ----------------------------------------------------------------------------
def test_the_header_carries_the_signed_token_with_cookie_trust(
    client: FlaskClient, redis_url: str, queued: Callable[[str], list[dict[str, Any]]]
) -> None:
    signed = token({"p": {"email": "cookie@shop.test"}})
    client.get("/track", headers={"X-Klaviyo-Id": signed})
    assert queued(redis_url)[0]["profile"] == {"email": "cookie@shop.test"}


def test_the_header_carries_a_kla_id_trusted_only_for_its_exchange_id(
    client: FlaskClient, redis_url: str, queued: Callable[[str], list[dict[str, Any]]]
) -> None:
    forged = kla_id({"$email": "victim@shop.test"})
    client.get("/track", headers={"X-Klaviyo-Id": forged})
    assert queued(redis_url) == []
    client.get(
        "/track",
        headers={"X-Klaviyo-Id": kla_id({"$email": "v@shop.test", "$exchange_id": KX_KLA})},
    )
    assert queued(redis_url)[0]["profile"] == {"_kx": KX_KLA}


def test_a_tampered_header_token_is_ignored(
    client: FlaskClient, redis_url: str, queued: Callable[[str], list[dict[str, Any]]]
) -> None:
    signed = token({"p": {"email": "cookie@shop.test"}})
    assert client.get("/track", headers={"X-Klaviyo-Id": tampered(signed)}).status_code == 200
    assert queued(redis_url) == []


def test_a_headless_front_end_gets_the_new_token_back_in_the_header(
    redis_url: str,
    tmp_path: Any,
    switches: Switches,
    make_app: Callable[..., Flask],
    queued: Callable[[str], list[dict[str, Any]]],
) -> None:
    app = make_app(redis_url, tmp_path, KLAVIYO_ID_HEADER="X-Shop-Visitor")
    client = app.test_client()
    response = client.post(
        "/identify", data={"email": "ann@shop.test"}, headers={"X-Shop-Visitor": ""}
    )
    returned = response.headers["X-Shop-Visitor"]
    assert read_token(returned) == {"p": {"email": "ann@shop.test"}}
    other = app.test_client()  # no cookies: the header alone identifies
    other.get("/track", headers={"X-Shop-Visitor": returned})
    assert queued(redis_url)[0]["profile"] == {"email": "ann@shop.test"}


# -- identify() --------------------------------------------------------------------------------
def test_identify_makes_the_visitor_known_now_and_later(
    app: Flask, client: FlaskClient, redis_url: str, queued: Callable[[str], list[dict[str, Any]]]
) -> None:
    klaviyo = app.extensions["klaviyo"].extension

    @app.post("/signup")
    def signup() -> str:
        klaviyo.identify(email=" Ann@Shop.TEST ", first_name="Ann", last_name="Lee")
        klaviyo.track("Signed Up", {"Source": "footer"})
        return "ok"

    client.post("/signup")
    client.get("/track")
    profiles = [e["profile"] for e in queued(redis_url)]
    ann = {"email": "ann@shop.test", "first_name": "Ann", "last_name": "Lee"}
    assert profiles == [ann, ann]


def test_identify_after_an_anonymous_track_in_the_same_request_sends_it(
    app: Flask,
    client: FlaskClient,
    redis_url: str,
    redis_client: redis.Redis,
    queued: Callable[[str], list[dict[str, Any]]],
) -> None:
    klaviyo = app.extensions["klaviyo"].extension

    @app.post("/checkout")
    def checkout() -> str:
        klaviyo.track("Viewed Checkout Form", {"Step": 1})  # before the email is known
        klaviyo.identify(email="ann@shop.test")
        return "ok"

    client.post("/checkout")
    assert [e["profile"] for e in queued(redis_url)] == [{"email": "ann@shop.test"}]
    assert parked_keys(redis_client) == []


def test_external_id_alone_is_never_sent(
    client: FlaskClient,
    switches: Switches,
    redis_url: str,
    caplog: pytest.LogCaptureFixture,
    queued: Callable[[str], list[dict[str, Any]]],
) -> None:
    switches.user = {"external_id": "user-42"}
    client.get("/track")
    assert queued(redis_url) == []  # parked as anonymous rather than an id-only profile
    caplog.set_level(logging.WARNING, logger="flask_klaviyo")
    assert client.post("/identify", data={"external_id": "user-42"}).json == {}
    assert "identify()" in caplog.text
    switches.user = {"external_id": "user-42", "email": "ann@shop.test"}
    client.get("/track")
    assert queued(redis_url)[0]["profile"] == {"email": "ann@shop.test", "external_id": "user-42"}


@pytest.mark.parametrize(
    ("given", "kept"),
    [
        ("+1 (555) 123-4567", "+15551234567"),
        ("0044 20 7946 0958", "+442079460958"),
        ("+44.20.7946.0958", "+442079460958"),
        ("5551234567", None),  # no country code: not guessed
        ("+0123456789", None),
        ("call me", None),
    ],
)
def test_phone_numbers_are_kept_only_as_e164(
    client: FlaskClient, given: str, kept: str | None
) -> None:
    answer = client.post("/identify", data={"phone_number": given}).json
    assert answer == ({"phone_number": kept} if kept else {})


def test_identifying_an_example_com_address_warns(
    client: FlaskClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="flask_klaviyo")
    client.post("/identify", data={"email": "shopper@shop.test"})
    assert "example.com" not in caplog.text
    client.post("/identify", data={"email": "Shopper@Example.com"})
    assert "drops @example.com" in caplog.text
    assert "shopper@example.com" not in caplog.text  # masked


def test_identify_rejects_unknown_attributes(app: Flask) -> None:
    klaviyo = app.extensions["klaviyo"].extension
    with app.test_request_context(), pytest.raises(TypeError, match="mail"):
        klaviyo.identify(mail="ann@shop.test")


def test_identifying_someone_else_replaces_the_profile_the_same_person_adds_to_it(
    client: FlaskClient,
) -> None:
    client.post("/identify", data={"email": "ann@shop.test", "first_name": "Ann"})
    client.post("/identify", data={"email": "ann@shop.test", "phone_number": "+15551234567"})
    assert client.get("/whoami").json["visitor"] == {  # type: ignore[index]
        "email": "ann@shop.test",
        "first_name": "Ann",
        "phone_number": "+15551234567",
    }
    client.post("/identify", data={"email": "bob@shop.test"})
    assert client.get("/whoami").json["visitor"] == {"email": "bob@shop.test"}  # type: ignore[index]


# -- consent -----------------------------------------------------------------------------------
@pytest.mark.parametrize("how", ["consent_loader", "__kla_off"])
def test_without_consent_no_cookies_no_browse_events_but_orders_go(
    client: FlaskClient,
    switches: Switches,
    redis_url: str,
    redis_client: redis.Redis,
    how: str,
    queued: Callable[[str], list[dict[str, Any]]],
) -> None:
    if how == "consent_loader":
        switches.consent = False
    else:
        client.set_cookie("__kla_off", "true")
    responses = [
        client.get(f"/landing?_kx={quote(KX_LANDING, safe='')}"),
        client.get("/products/1111"),
        client.get("/track"),
        client.post("/identify", data={"email": "ann@shop.test"}),
        client.get("/products/2222"),  # even known now: still no browse event
        client.post("/order"),
    ]
    assert all(r.status_code == 200 for r in responses)
    assert all(r.headers.getlist("Set-Cookie") == [] for r in responses)
    assert parked_keys(redis_client) == []
    metrics = [(e["metric"], e["profile"].get("email")) for e in queued(redis_url)]
    assert metrics == [
        ("Placed Order", "order.buyer@shop.test"),
        ("Ordered Product", "order.buyer@shop.test"),
    ]
    assert client.get("/whoami").json == {"visitor": {}, "browse": False}
    switches.user = {"email": "ann@shop.test"}  # logged in: known, still no browse events
    assert client.get("/products/3333").status_code == 200
    assert [e["metric"] for e in queued(redis_url)] == ["Placed Order", "Ordered Product"]


def test_without_consent_existing_identity_cookies_are_not_used(
    client: FlaskClient, switches: Switches, redis_url: str
) -> None:
    client.set_cookie(COOKIE, token({"p": {"email": "cookie@shop.test"}}))
    client.set_cookie("__kla_id", kla_id({"$exchange_id": KX_KLA}))
    assert client.get("/whoami").json["visitor"] == {"email": "cookie@shop.test"}  # type: ignore[index]
    switches.consent = False
    assert client.get("/whoami").json["visitor"] == {}  # type: ignore[index]
    switches.user = {"email": "loader@shop.test"}  # the merchant's own login still counts
    assert client.get("/whoami").json["visitor"] == {"email": "loader@shop.test"}  # type: ignore[index]


def test_with_consent_browse_events_are_captured(
    client: FlaskClient,
    switches: Switches,
    redis_url: str,
    queued: Callable[[str], list[dict[str, Any]]],
) -> None:
    switches.user = {"email": "ann@shop.test"}
    switches.consent = True
    client.get("/products/1111")
    assert [e["metric"] for e in queued(redis_url)] == ["Viewed Product"]


# -- never breaks the page ---------------------------------------------------------------------
def test_redis_down_while_parking_still_renders_the_page(
    tmp_path: Any, switches: Switches, make_app: Callable[..., Flask]
) -> None:
    app = make_app("redis://127.0.0.1:1/0", tmp_path, KLAVIYO_STRICT=False)
    response = app.test_client().get("/products/1111")
    assert response.status_code == 200
    assert "Winnie the Pooh" in response.get_data(as_text=True)


def test_a_crashing_loader_is_logged_not_fatal_outside_strict_mode(
    redis_url: str,
    tmp_path: Any,
    switches: Switches,
    caplog: pytest.LogCaptureFixture,
    make_app: Callable[..., Flask],
) -> None:
    app = make_app(redis_url, tmp_path, KLAVIYO_STRICT=False)
    klaviyo = app.extensions["klaviyo"].extension
    klaviyo.identity_loader(lambda: 1 / 0)
    klaviyo.consent_loader(lambda: 1 / 0)
    caplog.set_level(logging.ERROR, logger="flask_klaviyo")
    response = app.test_client().get("/whoami")
    assert response.status_code == 200
    assert response.json == {"visitor": {}, "browse": False}  # a failing consent check is a no
    assert "identity_loader raised" in caplog.text


# -- configuration -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("KLAVIYO_COOKIE_NAME", ""),
        ("KLAVIYO_COOKIE_NAME", "__kla_id"),
        ("KLAVIYO_COOKIE_NAME", "bad name"),
        ("KLAVIYO_COOKIE_SECURE", "yes"),
        ("KLAVIYO_COOKIE_MAX_AGE", 0),
        ("KLAVIYO_COOKIE_MAX_AGE", "400"),
        ("KLAVIYO_COOKIE_DOMAIN", ""),
        ("KLAVIYO_ID_HEADER", "X Klaviyo"),
        ("KLAVIYO_PARK_MAX_EVENTS", -1),
        ("KLAVIYO_PARK_MAX_EVENTS", True),
        ("KLAVIYO_PARK_TTL", 0),
        ("KLAVIYO_PARK_TTL", 1.5),
    ],
)
def test_unusable_identity_config_names_the_key(
    redis_url: str,
    tmp_path: Any,
    switches: Switches,
    key: str,
    value: Any,
    make_app: Callable[..., Flask],
) -> None:
    with pytest.raises(KlaviyoConfigError) as info:
        make_app(redis_url, tmp_path, **{key: value})
    assert info.value.key == key


def test_identity_config_defaults(app: Flask) -> None:
    assert app.config["KLAVIYO_ID_HEADER"] == "X-Klaviyo-Id"
    assert app.config["KLAVIYO_PARK_MAX_EVENTS"] == 50
    assert app.config["KLAVIYO_PARK_TTL"] == 30 * 24 * 3600
    assert app.config["KLAVIYO_COOKIE_NAME"] == COOKIE
