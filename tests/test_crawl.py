"""Every route of the demo store, crawled with garbage: never a 5xx.

The routes come from the app's URL map and the fields each route reads are found by asking it
(a probe with a plausible body records which keys the view looked up), so a route or a field
added tomorrow is crawled without touching this file. Each route is tried as an anonymous
visitor, a logged-in shopper (with a cart and an order) and the admin (HTTP basic auth), with
junk path parameters and query strings, form and JSON bodies where each field it reads is junk
in turn (lone surrogates, 300 KB strings, numbers too big for SQLite or a float, wrong types),
every field junk at once, and bodies in the wrong content type. The answer must be a normal
page, a redirect, or a 4xx that says what is wrong (JSON clients get ``{"error", "message"}``).
Hypothesis then mixes the same ingredients at random, bounded.

The store runs as in tests/test_example_store.py but with tracking on, into a real embedded
Redis, in testing mode (strict: a bad value reaching flask-klaviyo raises, so it would show).
Requests cost 10-30 ms here, so the crawl picks its combinations rather than multiplying them.
"""

from __future__ import annotations

import base64
import functools
import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote, urlencode

import pytest
import redis
from flask import Flask, Request
from flask.json.provider import DefaultJSONProvider
from flask.testing import FlaskClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from werkzeug.datastructures import ImmutableMultiDict
from werkzeug.routing import Rule
from werkzeug.security import generate_password_hash

from example_store import accounts, create_app
from example_store.variants import SEED_VARIANTS
from flask_klaviyo.webhooks import SIGNATURE_HEADER, sign

ADMIN_PASSWORD = "crawl-admin-password"
WEBHOOK_SECRET = "whsec_crawl"
SHOPPER = "crawler@shop-test.com"
SHOPPER_PASSWORD = "correct horse battery"
PRODUCT = "house-blend"
VARIANT = next(v.id for v in SEED_VARIANTS if v.product_id == PRODUCT)
FORM = "application/x-www-form-urlencoded"
JSON = "application/json"

# A plausible value for any field a form or JSON body of the store may read: a body is this
# with one field (or all of them) replaced by junk, so each field's own check is reached.
VALID: dict[str, Any] = {
    "product_id": PRODUCT,
    "variant": VARIANT,
    "quantity": 1,
    "email": SHOPPER,
    "password": SHOPPER_PASSWORD,
    "first_name": "Ann",
    "last_name": "Lee",
    "phone_number": "+16175550123",
    "newsletter": "yes",
    "consent": "yes",
    "sms_consent": "yes",
    "reason": "Damaged in transit",
    "next": "/cart",
    "city": "Boston",
    "country_code": "us",
    "shipping_address": {"city": "Boston", "country_code": "us"},
    "category": "Coffee",
    # a payment provider's delivery (every body the crawl sends is signed, so the webhook
    # gets past its signature check to the payload's own checks)
    "id": "evt_crawl",
    "type": "payment.succeeded",
    "data": {"order_id": "SP-UNKNOWN", "amount": 1750, "currency": "USD"},
}

HUGE = "x" * 300_000
LONG_URL_PART = "x" * 8_000  # what fits in a URL a real server accepts
SURROGATE = "\ud800"
# JSON values of every type, out of every range.
JSON_JUNK: list[Any] = [
    SURROGATE,
    HUGE,
    10**400,
    -(10**30),
    1e308,
    float("nan"),
    float("-inf"),
    -1,
    0,
    2.5,
    True,
    None,
    "",
    "\x00\x1b[31m",
    "9" * 40,
    [],
    [PRODUCT],
    {"$gt": ""},
]
# What a form field or a query string can carry: text, and bytes that are not UTF-8.
TEXT_JUNK: list[str | bytes] = [
    SURROGATE.encode("utf-8", "surrogatepass"),  # \ud800 as bytes: not UTF-8
    b"\xff\xfe\x00",
    HUGE,
    "9" * 40,
    "-1",
    "1e999",
    "NaN",
    "",
    "\x00\r\n",
    "<script>alert(1)</script>",
    "../../etc/passwd",
]
PATH_JUNK: list[str] = [
    "%ED%A0%80",  # a lone surrogate, percent-encoded
    "%FF%FE",
    LONG_URL_PART,
    "9" * 40,
    "..%2F..%2Fetc%2Fpasswd",
    "%00",
    "%C3%A9",
    "-1",
]
# Bodies that are not what they claim to be.
WRONG_BODIES: list[tuple[str, bytes]] = [
    (JSON, b'{"product_id": "\\ud800"}'),  # JSON's own escape of a lone surrogate
    (JSON, b'{"product_id": "house-blend", "quantity": 1e999}'),
    (JSON, b'{"quantity": NaN, "email": -Infinity}'),
    (JSON, b"\xff\xfe{garbage"),
    (JSON, b"[1, 2"),
    (JSON, b"[]"),
    (JSON, b'"just a string"'),
    (JSON, b"product_id=house-blend&quantity=1"),
    (JSON, b"[" * 5000 + b"]" * 5000),  # deeper than Python's parser goes
    (FORM, json.dumps(VALID).encode()),
    (FORM, b"%%%&&&=%ZZ"),
    ("text/plain", json.dumps(VALID).encode()),
    ("multipart/form-data", b"--nope\r\n"),
    ("multipart/form-data; boundary=b", b"--b\r\nContent-Disposition: form-data\r\n\r\nx\r\n"),
    ("application/xml", b"<product_id>house-blend</product_id>"),
]

# -- which fields a route reads: recorded while it handles a plausible body ------------------------

READ: set[str] = set()


class _RecordingDict(dict[str, Any]):
    """A JSON object that notes each key a view looks up (behaves as a dict otherwise)."""

    def get(self, key: Any, default: Any = None) -> Any:
        READ.add(key)
        return super().get(key, default)

    def __getitem__(self, key: Any) -> Any:
        READ.add(key)
        return super().__getitem__(key)


class _RecordingMultiDict(ImmutableMultiDict[str, str]):
    """Form fields and query arguments that note each key a view looks up."""

    def get(self, key: Any, default: Any = None, type: Any = None) -> Any:
        READ.add(key)
        return super().get(key, default, type)

    def __getitem__(self, key: Any) -> Any:
        READ.add(key)
        return super().__getitem__(key)

    def to_dict(self, flat: bool = True) -> Any:
        return _RecordingDict(super().to_dict(flat))


class _RecordingJSON(DefaultJSONProvider):
    def loads(self, s: str | bytes, **kwargs: Any) -> Any:
        return json.loads(s, object_pairs_hook=_RecordingDict, **kwargs)


class _RecordingRequest(Request):
    parameter_storage_class = _RecordingMultiDict


# -- the store and who visits it ------------------------------------------------------------


class Persona:
    """A browser state (cookies) and headers; every request starts from them afresh."""

    def __init__(self, name: str, cookies: dict[str, str], headers: dict[str, str]) -> None:
        self.name = name
        self.cookies = cookies
        self.headers = headers

    def client(self, app: Flask) -> FlaskClient:
        client = app.test_client()
        for key, value in self.cookies.items():
            client.set_cookie(key, value)
        return client


def _sign_up_shopper(app: Flask) -> dict[str, str]:
    """Register the shopper, place an order, fill a cart; the session cookie that holds it."""
    shopper = app.test_client()
    form = {"email": SHOPPER, "password": SHOPPER_PASSWORD, "first_name": "Ann"}
    registered = shopper.post("/account/register", data={**form, "last_name": "Lee"})
    assert registered.status_code < 400, registered.get_data(as_text=True)
    shopper.post("/cart/add", data={"product_id": PRODUCT})
    placed = shopper.post("/checkout", data={"city": "Boston", "country_code": "us"})
    assert placed.status_code == 303, placed.get_data(as_text=True)
    shopper.post("/cart/add", data={"product_id": PRODUCT})  # and a cart again
    cookie = shopper.get_cookie("session")
    assert cookie is not None
    return {"session": cookie.value}


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory, redis_server: str) -> Iterator[Flask]:
    redis.Redis.from_url(redis_server).flushall()
    with pytest.MonkeyPatch.context() as patch:
        # scrypt is slow on purpose (~50 ms a hash); the crawl hashes hundreds of passwords.
        # A one-round hash takes the same code path, in a fraction of the time.
        cheap = functools.partial(generate_password_hash, method="pbkdf2:sha256:1")
        patch.setattr(accounts, "generate_password_hash", cheap)
        patch.setattr(accounts, "_DUMMY_HASH", cheap("not-a-real-password"))
        yield _store(tmp_path_factory, redis_server)


def _store(tmp_path_factory: pytest.TempPathFactory, redis_server: str) -> Flask:
    app = create_app(
        {
            "instance_path": str(tmp_path_factory.mktemp("crawl")),
            "TESTING": True,  # strict tracking: a bad value reaching flask-klaviyo raises
            "SECRET_KEY": "crawl-secret",
            "KLAVIYO_REDIS_URL": redis_server,
            "KLAVIYO_PRIVATE_API_KEY": "pk_test_private_key",
            "STORE_ADMIN_PASSWORD": ADMIN_PASSWORD,
            "STORE_PAYMENTS_AUTO_CALLBACK": False,
            "KLAVIYO_WEBHOOK_SECRET": WEBHOOK_SECRET,
            "KLAVIYO_INSPECTOR": True,  # its pages are routes of the demo store too
        }
    )
    app.config["PROPAGATE_EXCEPTIONS"] = False  # an exception answers 500, as in production
    app.request_class = _RecordingRequest
    app.json = _RecordingJSON(app)
    return app


@pytest.fixture(scope="module")
def personas(store: Flask) -> dict[str, Persona]:
    token = base64.b64encode(f"admin:{ADMIN_PASSWORD}".encode()).decode()
    return {
        "anonymous": Persona("anonymous", {}, {}),
        "shopper": Persona("shopper", _sign_up_shopper(store), {}),
        "admin": Persona("admin", {}, {"Authorization": f"Basic {token}"}),
    }


def crawled_rules(app: Flask) -> list[tuple[Rule, str]]:
    """Every (rule, method) of the store but static files."""
    found = []
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static" or rule.endpoint.endswith(".static"):
            continue
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            found.append((rule, method))
    return found


def body_rules(app: Flask) -> list[tuple[Rule, str]]:
    return [(rule, method) for rule, method in crawled_rules(app) if method != "GET"]


def owner(rule: Rule) -> str:
    """Who can reach the most of a route: the admin for the back office, else the shopper."""
    return "admin" if rule.rule.startswith("/admin") else "shopper"


ORDER = {"id": "unknown"}  # the shopper's order, once placed (a real /orders/<id> path)


def build_path(rule: Rule, junk: str | None = None) -> str:
    """The rule's path with every parameter ``junk`` (URL-encoded already), or a real value."""
    path = rule.rule
    for name in rule.arguments:
        real = {"product_id": PRODUCT, "order_id": ORDER["id"], "action": "fulfill"}.get(name, "x")
        path = path.replace(f"<{name}>", junk if junk is not None else real)
    return path


def json_body(body: Any) -> bytes:
    """JSON as a client sends it: lone surrogates as ``\\udXXX`` escapes, NaN, huge ints."""
    return json.dumps(body, allow_nan=True).encode()


def form_body(body: dict[str, Any]) -> bytes:
    fields = []
    for key, value in body.items():
        if isinstance(value, dict):
            continue
        for item in value if isinstance(value, list) else [value]:
            raw = item.encode("utf-8", "surrogatepass") if isinstance(item, str) else item
            fields.append((key, raw if isinstance(raw, bytes) else str(raw)))
    return urlencode(fields).encode()


def check(response: Any, what: str) -> None:
    """A page, a redirect, or a 4xx that says what is wrong; never a 5xx."""
    status = response.status_code
    body = response.get_data()
    response.close()
    assert status < 500, f"{what} -> {status}: {body[:300]!r}"
    if 400 <= status < 500:
        if response.mimetype == JSON:
            answer = json.loads(body)
            assert isinstance(answer, dict) and answer.get("error"), f"{what}: {answer}"
            assert str(answer.get("message") or "").strip(), f"{what}: no message: {answer}"
        else:
            assert body.strip(), f"{what} -> {status} with an empty body"


def send(
    app: Flask,
    persona: Persona,
    method: str,
    path: str,
    *,
    body: bytes | None = None,
    content_type: str | None = None,
    accept: str | None = None,
) -> None:
    headers = dict(persona.headers)
    if body is not None:
        headers[SIGNATURE_HEADER] = sign(WEBHOOK_SECRET, body)
    if content_type is not None:
        headers["Content-Type"] = content_type
    if accept is not None:
        headers["Accept"] = accept
    response = persona.client(app).open(path, method=method, data=body, headers=headers)
    check(response, f"{persona.name} {method} {path[:100]} {content_type} {(body or b'')[:160]!r}")
    ended = path.split("?")[0] == "/account/delete" and response.status_code < 400
    if ended and persona.name == "shopper":
        read = set(READ)  # what the route read, not what signing up again reads
        persona.cookies = _sign_up_shopper(app)  # the one route that ends the persona
        READ.clear()
        READ.update(read)


def fields_read(app: Flask, persona: Persona, method: str, path: str) -> list[str]:
    """The top-level fields the route looks up, from a plausible JSON and form body."""
    READ.clear()
    send(app, persona, method, path, body=json_body(VALID), content_type=JSON)
    send(app, persona, method, path, body=form_body(VALID), content_type=FORM)
    return sorted(READ & set(VALID))


@pytest.fixture(scope="module")
def crawl(store: Flask, personas: dict[str, Persona]) -> dict[str, Any]:
    """The order the shopper placed (its page is a real path) and the fields of each route."""
    with store.app_context():
        from example_store.db import get_db

        row = get_db().execute("SELECT id FROM orders LIMIT 1").fetchone()
    ORDER["id"] = row["id"]
    VALID["data"] = {**VALID["data"], "order_id": row["id"]}  # the provider's word on it
    fields, query_fields = {}, {}
    for rule, method in body_rules(store):
        persona = personas[owner(rule)]
        fields[(rule.rule, method)] = fields_read(store, persona, method, build_path(rule))
    plain = {k: v for k, v in VALID.items() if isinstance(v, str | int)}
    for rule, method in crawled_rules(store):
        if method == "GET":
            READ.clear()
            send(store, personas[owner(rule)], method, f"{build_path(rule)}?{urlencode(plain)}")
            query_fields[rule.rule] = sorted(READ & set(VALID))
    return {"fields": fields, "query_fields": query_fields}


# -- the crawl --------------------------------------------------------------------------------


def test_the_crawl_covers_every_route_and_finds_their_fields(
    store: Flask, crawl: dict[str, Any]
) -> None:
    """The URL map is the list; the probes find what each form and query string is read for."""
    paths = {rule.rule for rule, _ in crawled_rules(store)}
    expected = {"/", "/api/cart", "/admin/orders", "/webhooks/payments", "/_klaviyo/inspector/"}
    assert expected <= paths
    assert len(paths) >= 25
    fields = crawl["fields"]
    assert fields[("/api/cart", "POST")] == ["product_id", "quantity", "variant"]
    assert {"email", "password", "first_name"} <= set(fields[("/account/register", "POST")])
    assert "reason" in fields[("/admin/orders/<order_id>/<action>", "POST")]
    body = json_body({**VALID, "id": "evt_covers"})
    signed = {SIGNATURE_HEADER: sign(WEBHOOK_SECRET, body), "Content-Type": JSON}
    delivery = store.test_client().post("/webhooks/payments", data=body, headers=signed)
    assert delivery.status_code == 200, delivery.json  # signed: the payload's checks are reached
    assert crawl["query_fields"]["/"] == ["category"]
    assert crawl["query_fields"]["/products/<product_id>"] == ["variant"]


def test_junk_paths_and_query_strings_are_never_a_server_error(
    store: Flask, personas: dict[str, Persona], crawl: dict[str, Any]
) -> None:
    """Every route, every junk path parameter, every junk query value (in every field the
    store reads from a query, and more), by each persona in turn, HTML and JSON clients."""
    who = list(personas.values())
    for index, (rule, method) in enumerate(crawled_rules(store)):
        for turn, junk in enumerate(PATH_JUNK if rule.arguments else []):
            send(store, who[(index + turn) % 3], method, build_path(rule, junk))
        path = build_path(rule)
        for turn, value in enumerate(TEXT_JUNK):
            raw = value if isinstance(value, bytes) else value.encode()
            if len(raw) > len(LONG_URL_PART):
                raw = LONG_URL_PART.encode()
            names = {"next", *crawl["query_fields"].get(rule.rule, ())}  # what it reads, and more
            query = "&".join(f"{name}={quote(raw)}" for name in sorted(names))
            accept = JSON if turn % 2 else None
            send(store, who[(index + turn) % 3], method, f"{path}?{query}", accept=accept)


def test_each_field_a_route_reads_meets_every_junk_value(
    store: Flask, personas: dict[str, Persona], crawl: dict[str, Any]
) -> None:
    """One field junk at a time, the rest plausible, so each field's own check is reached:
    every JSON junk value and half the form junk values, as the route's owner."""
    for rule, method in body_rules(store):
        persona = personas[owner(rule)]
        path = build_path(rule)
        for field in crawl["fields"][(rule.rule, method)]:
            for junk in JSON_JUNK[1:]:  # a lone surrogate meets one rule for all (see below)
                body = json_body({**VALID, field: junk})
                send(store, persona, method, path, body=body, content_type=JSON)
            for junk in TEXT_JUNK[len(field) % 2 :: 2]:  # half, by turns: forms are text
                body = form_body({**VALID, field: junk})
                send(store, persona, method, path, body=body, content_type=FORM)


def test_all_junk_and_wrong_content_types_are_never_a_server_error(
    store: Flask, personas: dict[str, Persona], crawl: dict[str, Any]
) -> None:
    """Every field junk at once (half the junk values per route, by turns), and bodies in the
    wrong content type, by each persona in turn."""
    who = list(personas.values())
    for index, (rule, method) in enumerate(body_rules(store)):
        path = build_path(rule)
        for turn, junk in enumerate(JSON_JUNK[index % 2 :: 2]):  # half of them, by turns
            body = json_body(dict.fromkeys(VALID, junk))
            send(store, who[(index + turn) % 3], method, path, body=body, content_type=JSON)
        for turn, text in enumerate(TEXT_JUNK[index % 2 :: 2]):
            body = form_body(dict.fromkeys(VALID, text))
            send(store, who[(index + turn) % 3], method, path, body=body, content_type=FORM)
        for turn, (content_type, body) in enumerate(WRONG_BODIES):
            send(store, who[(index + turn) % 3], method, path, body=body, content_type=content_type)


_json_leaf = st.one_of(
    st.sampled_from(JSON_JUNK),
    st.text(alphabet=st.characters(codec=None), max_size=6),  # any code point, surrogates too
    st.integers(),
    st.floats(),
    st.booleans(),
    st.none(),
)
_json_value = st.recursive(
    _json_leaf, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner)
)


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    data=st.data(),
    overrides=st.dictionaries(st.sampled_from(sorted(VALID)), _json_value, max_size=4),
    as_form=st.booleans(),
)
def test_random_mixes_are_never_a_server_error(
    store: Flask,
    personas: dict[str, Persona],
    crawl: dict[str, Any],
    data: st.DataObject,
    overrides: dict[str, Any],
    as_form: bool,
) -> None:
    rule, method = data.draw(st.sampled_from(body_rules(store)), label="route")
    persona = personas[data.draw(st.sampled_from(sorted(personas)), label="persona")]
    body = {**VALID, **overrides}
    path = build_path(rule)
    if as_form:
        send(store, persona, method, path, body=form_body(body), content_type=FORM)
    else:
        send(store, persona, method, path, body=json_body(body), content_type=JSON)


def test_a_lone_surrogate_in_json_is_a_clear_400(store: Flask) -> None:
    """The report that started this: ``POST /api/cart`` with ``{"product_id": "\\ud800"}``
    answered 500. Now every JSON route refuses such text, saying which field and why."""
    body = b'{"product_id": "\\ud800"}'
    response = store.test_client().post("/api/cart", data=body, content_type=JSON)
    assert response.status_code == 400
    assert response.json["error"] == "invalid_text"
    assert "'product_id'" in response.json["message"] and "Unicode" in response.json["message"]
    nested = json_body({"shipping_address": {"city": f"Bo{SURROGATE}ston"}})
    page = store.test_client().post("/newsletter", data=nested, content_type=JSON)
    assert page.status_code == 400 and page.json["error"] == "invalid_text"


def test_the_store_still_works_after_the_crawl(
    store: Flask, personas: dict[str, Persona], crawl: dict[str, Any]
) -> None:
    """The junk broke nothing: the shopper is still logged in, every page renders."""
    shopper = personas["shopper"].client(store)
    assert SHOPPER in shopper.get("/account").get_data(as_text=True)
    # The crawl may have emptied the cart (a junk /cart/update): checkout needs something in it.
    added = shopper.post("/api/cart", json={"product_id": PRODUCT, "quantity": 1})
    assert added.status_code in (200, 201), added.get_data(as_text=True)
    for page in ("/", f"/products/{PRODUCT}", "/cart", "/checkout", "/newsletter"):
        assert shopper.get(page).status_code == 200, page
