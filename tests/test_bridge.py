"""``{{ klaviyo_bridge() }}`` as HTML: the blob, the scripts, escaping, consent, modes."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from typing import Any

import pytest
from flask import Flask, render_template_string

from flask_klaviyo import Klaviyo, KlaviyoConfigError, bridge, tracks
from flask_klaviyo.bridge import identify_payload, klaviyo_js_url, share_profile

BREAKOUT = "</script><script>alert(1)</script><!--"
PRIVATE_KEY = "pk_test_private_key"
PUBLIC_KEY = "AbC123"
PRODUCT = {
    "id": "1111",
    "name": "Winnie the Pooh",
    "sku": "WINNIEPOOH",
    "price": 9.99,
    "url": "http://shop.test/products/1111",
    "image_url": "http://shop.test/img/1111.png",
    "categories": ["Fiction", "Children"],
    "brand": "Kids Books",
}
PAGE = "<h1>{{ product.name }}</h1>{{ klaviyo_bridge() }}"


def pages(product: Mapping[str, Any]) -> Callable[[Flask, Klaviyo], None]:
    def add(app: Flask, klaviyo: Klaviyo) -> None:
        @app.get("/products/<pid>")
        @tracks("Viewed Product")
        def product_page(pid: str) -> str:
            return render_template_string(PAGE, product=product)

        @app.get("/plain")
        def plain() -> str:
            return render_template_string("<p>plain</p>{{ klaviyo_bridge() }}")

    return add


@pytest.fixture
def make_app(make_app: Callable[..., Flask]) -> Callable[..., Flask]:
    """``make_app(redis_url, tmp_path, *, visitor=None, consent=None, product=PRODUCT,
    **config)``: a product page and a plain page, with the public key, lenient."""

    def make(
        redis_url: str,
        tmp_path: Any,
        *,
        visitor: Mapping[str, Any] | None = None,
        consent: bool | None = None,
        product: Mapping[str, Any] = PRODUCT,
        **config: Any,
    ) -> Flask:
        return make_app(
            redis_url,
            tmp_path,
            identity=lambda: dict(visitor) if visitor else None,
            consent=consent,
            views=pages(product),
            **{
                "KLAVIYO_PRIVATE_API_KEY": PRIVATE_KEY,
                "KLAVIYO_PUBLIC_API_KEY": PUBLIC_KEY,
                "KLAVIYO_STRICT": False,
                **config,
            },
        )

    return make


def get(app: Flask, path: str, **kwargs: Any) -> str:
    response = app.test_client().get(path, **kwargs)
    assert response.status_code == 200
    return response.get_data(as_text=True)


def blob(html: str) -> dict[str, Any]:
    raw = html.split('id="klaviyo-bridge-data">', 1)[1].split("</script>", 1)[0]
    return json.loads(raw)  # type: ignore[no-any-return]


def script_srcs(html: str) -> list[str]:
    return re.findall(r'<script(?: async)? src="([^"]+)"', html)


KLAVIYO_JS = f"https://static.klaviyo.com/onsite/js/klaviyo.js?company_id={PUBLIC_KEY}"
BRIDGE_JS = "/_klaviyo/static/klaviyo-bridge.js"


# -- a known visitor, a stranger ---------------------------------------------------------------
def test_known_visitor_page_has_blob_bridge_klaviyo_js_and_identify(
    redis_url: str,
    tmp_path: Any,
    make_app: Callable[..., Flask],
    queued: Callable[[str], list[dict[str, Any]]],
) -> None:
    visitor = {
        "email": "Ann.Lee@Shop.test",
        "first_name": "Ann",
        "last_name": "Lee",
        "external_id": "u-42",
    }
    app = make_app(redis_url, tmp_path, visitor=visitor)
    html = get(app, "/products/1111")
    data = blob(html)
    [event] = queued(redis_url)
    assert data == {
        "mode": "drop",
        "companyId": PUBLIC_KEY,
        "events": [{"metric": "Viewed Product", "unique_id": event["unique_id"]}],
        "identify": {
            "email": "ann.lee@shop.test",
            "first_name": "Ann",
            "last_name": "Lee",
            "external_id": "u-42",
        },
    }
    assert script_srcs(html) == [BRIDGE_JS, KLAVIYO_JS]
    # order: the blob, then the bridge (synchronous), then klaviyo.js (async)
    assert html.index("klaviyo-bridge-data") < html.index(BRIDGE_JS) < html.index("klaviyo.js?")
    assert f'<script async src="{KLAVIYO_JS}"></script>' in html
    assert f'<script src="{BRIDGE_JS}"></script>' in html
    assert "<script>" not in html  # no inline JavaScript: a strict CSP works
    assert PRIVATE_KEY not in html


def test_stranger_gets_klaviyo_js_but_no_identify(
    redis_url: str, tmp_path: Any, make_app: Callable[..., Flask]
) -> None:
    app = make_app(redis_url, tmp_path)
    html = get(app, "/plain")
    data = blob(html)
    assert "identify" not in data
    assert data["events"] == []
    assert script_srcs(html) == [BRIDGE_JS, KLAVIYO_JS]


@pytest.mark.parametrize(
    "visitor",
    [{"external_id": "u-42"}, {"_kx": "kx.token"}, {"anonymous_id": "anon-1"}],
    ids=["external_id-alone", "kx-alone", "anonymous-alone"],
)
def test_no_identify_without_an_email_or_phone(
    redis_url: str, tmp_path: Any, visitor: dict[str, str], make_app: Callable[..., Flask]
) -> None:
    app = make_app(redis_url, tmp_path, visitor=visitor)
    data = blob(get(app, "/plain"))
    assert "identify" not in data


def test_identify_payload_rules() -> None:
    assert identify_payload({}) is None
    assert identify_payload({"external_id": "u-1", "_kx": "k", "first_name": "A"}) is None
    assert identify_payload({"phone_number": "+15005550006", "external_id": "u-1"}) == {
        "phone_number": "+15005550006",
        "external_id": "u-1",
    }
    assert identify_payload({"email": "a@shop.test", "_kx": "k", "anonymous_id": "x"}) == {
        "email": "a@shop.test"
    }


def test_share_profile_rules() -> None:
    assert share_profile({}) is None
    assert share_profile({"anonymous_id": "anon-1", "external_id": "u-1"}) is None
    assert share_profile({"_kx": "k", "external_id": "u-1"}) == {"_kx": "k"}
    full = {
        "email": "a@shop.test",
        "phone_number": "+15005550006",
        "external_id": "u-1",
        "_kx": "k",
        "anonymous_id": "anon-1",
        "first_name": "A",
        "last_name": "B",
    }
    assert share_profile({**full, "id": "01ABC", "organization": "x"}) == full


# -- consent -----------------------------------------------------------------------------------
def test_consent_false_means_no_klaviyo_js_no_identify_and_no_sharing(
    redis_url: str, tmp_path: Any, make_app: Callable[..., Flask]
) -> None:
    app = make_app(
        redis_url,
        tmp_path,
        visitor={"email": "ann@shop.test"},
        consent=False,
        KLAVIYO_BRIDGE_MODE="share",
    )
    html = get(app, "/plain")
    data = blob(html)
    assert "klaviyo.js" not in html
    assert "ann@shop.test" not in html
    assert "identify" not in data
    assert data["mode"] == "drop"
    assert "clientUrl" not in data
    assert script_srcs(html) == [BRIDGE_JS]  # the bridge still drops residual calls


def test_kla_off_cookie_is_no_consent(
    redis_url: str, tmp_path: Any, make_app: Callable[..., Flask]
) -> None:
    app = make_app(redis_url, tmp_path, visitor={"email": "ann@shop.test"})
    client = app.test_client()
    client.set_cookie("__kla_off", "1")
    html = client.get("/plain").get_data(as_text=True)
    assert "klaviyo.js" not in html
    assert "identify" not in blob(html)


# -- modes -------------------------------------------------------------------------------------
def test_share_mode_blob_carries_the_servers_identifiers_and_the_client_endpoint(
    redis_url: str,
    tmp_path: Any,
    make_app: Callable[..., Flask],
    queued: Callable[[str], list[dict[str, Any]]],
) -> None:
    visitor = {"email": "ann@shop.test", "first_name": "Ann", "external_id": "u-42"}
    app = make_app(
        redis_url,
        tmp_path,
        visitor=visitor,
        KLAVIYO_BRIDGE_MODE="share",
        KLAVIYO_CLIENT_URL="http://127.0.0.1:9/",
    )
    data = blob(get(app, "/products/1111"))
    [event] = queued(redis_url)
    assert data["mode"] == "share"
    assert data["clientUrl"] == "http://127.0.0.1:9"
    assert data["revision"] == "2026-07-15"
    assert data["events"] == [
        {"metric": "Viewed Product", "unique_id": event["unique_id"], "profile": event["profile"]}
    ]
    assert event["profile"] == {
        "email": "ann@shop.test",
        "first_name": "Ann",
        "external_id": "u-42",
    }


def test_share_mode_default_client_url_is_klaviyos(
    redis_url: str, tmp_path: Any, make_app: Callable[..., Flask]
) -> None:
    app = make_app(
        redis_url, tmp_path, visitor={"email": "ann@shop.test"}, KLAVIYO_BRIDGE_MODE="share"
    )
    assert blob(get(app, "/products/1111"))["clientUrl"] == "https://a.klaviyo.com"


def test_share_mode_without_a_public_key_falls_back_to_drop(
    redis_url: str, tmp_path: Any, make_app: Callable[..., Flask]
) -> None:
    app = make_app(
        redis_url,
        tmp_path,
        visitor={"email": "ann@shop.test"},
        KLAVIYO_BRIDGE_MODE="share",
        KLAVIYO_PUBLIC_API_KEY=None,
    )
    html = get(app, "/products/1111")
    data = blob(html)
    assert data["mode"] == "drop"
    assert data["companyId"] is None
    assert "profile" not in data["events"][0]
    assert "identify" not in data  # nothing would read it without klaviyo.js
    assert "klaviyo.js" not in html
    assert "ann@shop.test" not in html


def test_drop_mode_blob_holds_no_profile_data(
    redis_url: str, tmp_path: Any, make_app: Callable[..., Flask]
) -> None:
    app = make_app(
        redis_url, tmp_path, visitor={"email": "ann@shop.test"}, KLAVIYO_PUBLIC_API_KEY=None
    )
    html = get(app, "/products/1111")
    assert set(blob(html)["events"][0]) == {"metric", "unique_id"}
    assert "ann@shop.test" not in html


# -- escaping and secrets ----------------------------------------------------------------------
def test_script_breakouts_in_every_value_stay_inside_the_json(
    redis_url: str,
    tmp_path: Any,
    make_app: Callable[..., Flask],
    queued: Callable[[str], list[dict[str, Any]]],
) -> None:
    email = f"ann{BREAKOUT}@shop.test"
    product = {**PRODUCT, "name": f"Pooh {BREAKOUT}"}
    app = make_app(
        redis_url,
        tmp_path,
        visitor={"email": email, "first_name": BREAKOUT},
        product=product,
        KLAVIYO_BRIDGE_MODE="share",
    )
    klaviyo = app.extensions["klaviyo"].extension

    @app.get("/evil")
    def evil() -> str:
        klaviyo.track(BREAKOUT, {"Name": BREAKOUT}, unique_id=BREAKOUT)
        return render_template_string("{{ klaviyo_bridge() }}")

    for path in ("/evil", "/products/1111"):
        html = get(app, path)
        assert "<script>alert(1)" not in html
        assert "<!--" not in html
        assert html.count("</script>") == 3  # blob, bridge, klaviyo.js: nothing closed early
        data = blob(html)
        assert data["identify"] == {"email": email.lower(), "first_name": BREAKOUT}
        assert data["events"][0]["profile"]["email"] == email.lower()
        assert PRIVATE_KEY not in html
    data = blob(get(app, "/evil"))
    assert data["events"][0]["metric"] == BREAKOUT
    assert data["events"][0]["unique_id"] == BREAKOUT
    product_event = next(e for e in queued(redis_url) if e["metric"] == "Viewed Product")
    assert product_event["properties"]["ProductName"] == product["name"]


def test_public_key_and_js_url_are_escaped_in_the_src(
    redis_url: str, tmp_path: Any, make_app: Callable[..., Flask]
) -> None:
    app = make_app(
        redis_url,
        tmp_path,
        KLAVIYO_PUBLIC_API_KEY='X"><b',
        KLAVIYO_JS_URL="/stub/klaviyo.js?v=2",
    )
    html = get(app, "/plain")
    assert '"><b' not in html.split("</script>", 1)[1]
    assert '<script async src="/stub/klaviyo.js?v=2&amp;company_id=X%22%3E%3Cb"></script>' in html


def test_klaviyo_js_url_appends_the_company_id() -> None:
    base = "https://static.klaviyo.com/onsite/js/klaviyo.js"
    assert klaviyo_js_url(base, "AbC123") == f"{base}?company_id=AbC123"
    assert klaviyo_js_url("/k.js?v=1", "AbC123") == "/k.js?v=1&company_id=AbC123"


def test_private_key_never_appears_in_any_mode(
    redis_url: str, tmp_path: Any, make_app: Callable[..., Flask]
) -> None:
    for mode in ("drop", "share"):
        app = make_app(
            redis_url,
            tmp_path / mode,
            visitor={"email": "ann@shop.test"},
            KLAVIYO_BRIDGE_MODE=mode,
        )
        html = get(app, "/products/1111")
        assert PRIVATE_KEY not in html
        assert blob(html)["mode"] == mode


def test_no_klaviyo_js_without_a_public_key(
    redis_url: str, tmp_path: Any, make_app: Callable[..., Flask]
) -> None:
    app = make_app(
        redis_url, tmp_path, visitor={"email": "a@shop.test"}, KLAVIYO_PUBLIC_API_KEY=None
    )
    html = get(app, "/plain")
    assert script_srcs(html) == [BRIDGE_JS]


# -- disabled, configuration -------------------------------------------------------------------
def test_only_an_inert_blob_is_rendered_when_disabled(
    redis_url: str,
    tmp_path: Any,
    make_app: Callable[..., Flask],
    queued: Callable[[str], list[dict[str, Any]]],
) -> None:
    app = make_app(redis_url, tmp_path, visitor={"email": "ann@shop.test"}, KLAVIYO_ENABLED=False)
    inert = (
        '<script type="application/json" id="klaviyo-bridge-data">'
        '{"mode": "drop", "companyId": null, "events": []}</script>'
    )
    assert get(app, "/plain") == f"<p>plain</p>{inert}"
    assert get(app, "/products/1111") == f"<h1>Winnie the Pooh</h1>{inert}"
    assert queued(redis_url) == []


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("KLAVIYO_CLIENT_URL", "a.klaviyo.com"),
        ("KLAVIYO_CLIENT_URL", None),
        ("KLAVIYO_JS_URL", "javascript:alert(1)"),
        ("KLAVIYO_JS_URL", "klaviyo.js"),
        ("KLAVIYO_JS_URL", "/stub/klaviyo.js onerror=alert(1)"),
    ],
)
def test_bad_bridge_urls_fail_at_init_naming_the_key(
    redis_url: str, tmp_path: Any, key: str, value: Any, make_app: Callable[..., Flask]
) -> None:
    with pytest.raises(KlaviyoConfigError) as info:
        make_app(redis_url, tmp_path, **{key: value})
    assert info.value.key == key


@pytest.mark.parametrize(
    "value", ["https://cdn.shop.test/k.js", "//static.klaviyo.com/onsite/js/klaviyo.js", "/k.js"]
)
def test_good_klaviyo_js_urls_are_accepted(
    redis_url: str, tmp_path: Any, value: str, make_app: Callable[..., Flask]
) -> None:
    app = make_app(redis_url, tmp_path, KLAVIYO_JS_URL=value)
    assert script_srcs(get(app, "/plain"))[1].startswith(value + "?company_id=")


def test_a_page_that_names_the_visitor_is_private_to_caches(redis_url: str, tmp_path: Any) -> None:
    app = Flask(__name__, instance_path=str(tmp_path))
    app.config.update(SECRET_KEY="s", KLAVIYO_REDIS_URL=redis_url, KLAVIYO_PUBLIC_API_KEY="AbC123")
    klaviyo = Klaviyo(app)
    who: dict[str, Any] = {"email": "sarah.mason@klaviyo-demo.com"}
    klaviyo.identity_loader(lambda: dict(who) if who else None)

    @app.get("/page")
    def page() -> str:
        return render_template_string("<p>hi</p>{{ klaviyo_bridge() }}")

    client = app.test_client()
    known = client.get("/page")
    assert "sarah.mason@klaviyo-demo.com" in known.get_data(as_text=True)
    assert known.cache_control.private and not known.cache_control.public
    assert "Cookie" in known.vary
    who.clear()
    stranger = app.test_client().get("/page")
    assert not stranger.cache_control.private


def test_a_personal_page_keeps_the_views_own_cache_headers_but_never_public(
    redis_url: str, tmp_path: Any
) -> None:
    app = Flask(__name__, instance_path=str(tmp_path))
    app.config.update(SECRET_KEY="s", KLAVIYO_REDIS_URL=redis_url, KLAVIYO_PUBLIC_API_KEY="AbC123")
    klaviyo = Klaviyo(app)
    klaviyo.identity_loader(lambda: {"email": "sarah.mason@klaviyo-demo.com"})

    @app.get("/page")
    def page() -> Any:
        body = render_template_string("<p>hi</p>{{ klaviyo_bridge() }}")
        return body, {"Cache-Control": "public, max-age=60", "Vary": "Accept-Encoding"}

    known = app.test_client().get("/page")
    assert known.cache_control.private and not known.cache_control.public
    assert known.cache_control.max_age == 60
    assert set(known.vary) == {"Accept-Encoding", "Cookie"}


def test_the_bridge_script_follows_the_script_root_and_remembers_few(
    redis_url: str, tmp_path: Any, make_app: Callable[..., Flask]
) -> None:
    app = make_app(redis_url, tmp_path)
    assert script_srcs(get(app, "/plain"))[0] == BRIDGE_JS
    for n in range(bridge.MAX_SCRIPT_ROOTS + 5):  # e.g. a prefix header through a proxy
        root = f"/shop{n}"
        html = get(app, "/plain", environ_overrides={"SCRIPT_NAME": root})
        assert script_srcs(html)[0] == root + BRIDGE_JS
    assert len(bridge._script_tags[app]) == bridge.MAX_SCRIPT_ROOTS
    assert script_srcs(get(app, "/plain"))[0] == BRIDGE_JS
