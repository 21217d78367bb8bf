"""The in-page bridge in a real headless Chromium (Debian's ``chromium``).

A small store is served by a real werkzeug server on 127.0.0.1. Its product page still carries a
merchant's residual browser tracking (``klaviyo.track('Viewed Product', ...)`` and
``_learnq.push(['track', 'Viewed Product', ...])``, before and after klaviyo.js loads) and calls
for other metrics. klaviyo.js is replaced by a local stub that behaves like it (drains the
queues, replaces ``window.klaviyo``, reassigns ``_learnq.push``) and records every call in
``window.__calls``. Nothing is loaded from outside the loopback interface.

Without ``/usr/bin/chromium`` (``make test`` installs it when apt is usable) these tests are
skipped, except under ``CI=true``, where a missing browser fails them (the ``browser`` fixture,
in conftest.py). The demo store's own pages are driven in ``test_store_browser.py``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import quote

import pytest
import redis
from flask import Flask, Response, render_template_string, request

from flask_klaviyo import Klaviyo, tracks
from flask_klaviyo.delivery.outbox import Outbox
from flask_klaviyo.jobs import deliver_events

pytestmark = pytest.mark.browser

EMAIL = "ann.lee@shop.test"
BREAKOUT = "</script><script>window.__pwned=1</script><!--"
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
# What the merchant's leftover snippet sends (the legacy $event_id and $value included).
RESIDUAL = {
    "ProductName": "Winnie the Pooh",
    "ProductID": "1111",
    "Price": 9.99,
    "$value": 9.99,
    "$event_id": "legacy-1111",
}

# klaviyo.js stand-in: drains _klOnsite and _learnq, then takes over like the real one does.
# With ?define=1 it installs window.klaviyo with Object.defineProperty instead of assigning it.
STUB_JS = """
(function () {
  var calls = window.__calls = window.__calls || [];
  var define = /[?&]define=1/.test(document.currentScript.src);
  var real = { __real: true };
  ["identify", "track", "trackViewedItem", "openForm", "account", "cookieDomain",
   "isIdentified"].forEach(function (method) {
    real[method] = function () {
      var args = Array.prototype.slice.call(arguments);
      var callback = typeof args[args.length - 1] === "function" ? args.pop() : null;
      calls.push(JSON.parse(JSON.stringify([method].concat(args))));
      if (callback) { callback(true); }
      return Promise.resolve(true);
    };
  });
  real.push = function () {
    for (var i = 0; i < arguments.length; i++) {
      real[arguments[i][0]].apply(real, Array.prototype.slice.call(arguments[i], 1));
    }
  };
  var queued = window._klOnsite || [];
  window._klOnsite = { push: real.push };
  for (var i = 0; i < queued.length; i++) { real.push(queued[i]); }
  var learnq = window._learnq || [];
  for (var j = 0; j < learnq.length; j++) { real.push(learnq[j]); }
  learnq.length = 0;
  learnq.push = function () { real.push.apply(real, arguments); };  // reassigned in place
  window._learnq = learnq;
  if (define) {
    Object.defineProperty(window, "klaviyo", { value: real, writable: true, configurable: true });
  } else {
    window.klaviyo = real;
  }
  window.__klaviyoLoaded = true;
})();
"""

# The residual calls, the other metrics, and the same again once klaviyo.js has taken over.
RESIDUAL_CALLS = """
<script>
  var _learnq = _learnq || [];
  var residual = {{ residual|tojson }};
  klaviyo.track("Viewed Product", residual).then(function (ok) { window.__resolved = ok; });
  _learnq.push(["track", "Viewed Product", residual]);
  klaviyo.push(["track", "Viewed Product", residual]);
  klaviyo.track("Viewed Collection", {"Collection": "Books"});
  _learnq.push(["track", "Clicked Banner", {"Banner": "sale"}]);
  window.addEventListener("load", function () {
    klaviyo.track("Viewed Product", residual);
    _learnq.push(["track", "Viewed Product", residual], ["track", "Used Search", {"q": "pooh"}]);
    klaviyo.push(["track", "Viewed Product", residual]);
    klaviyo.track("Added to Wishlist", {"ProductID": "1111"});
    window.__done = true;
  });
</script>
"""

# The bridge at the end of <body> (as in the example store), after the merchant's own copy of
# Klaviyo's klaviyo-object snippet in <head> queued the residual calls into _klOnsite.
TAIL_PAGE = (
    """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><link rel="icon" href="data:,">
<title>{{ product.name }}</title>
<script>
  (function () {
    if (window.klaviyo) { return; }
    window._klOnsite = window._klOnsite || [];
    window.klaviyo = new Proxy({}, { get: function (target, method) {
      if (method === "push") {
        return function () { window._klOnsite.push.apply(window._klOnsite, arguments); };
      }
      return function () {
        var args = Array.prototype.slice.call(arguments);
        var callback = typeof args[args.length - 1] === "function" ? args.pop() : undefined;
        return new Promise(function (resolve) {
          window._klOnsite.push([method].concat(args, [function (result) {
            if (callback) { callback(result); }
            resolve(result);
          }]));
        });
      };
    } });
  })();
</script>
</head><body><h1>{{ product.name }}</h1>"""
    + RESIDUAL_CALLS
    + """{{ klaviyo_bridge() }}
</body></html>"""
)

# The bridge in <head>: its own klaviyo stub serves the residual calls.
HEAD_PAGE = (
    """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><link rel="icon" href="data:,">
<title>{{ product.name }}</title>
{{ klaviyo_bridge() }}
</head><body><h1>{{ product.name }}</h1>"""
    + RESIDUAL_CALLS
    + "</body></html>"
)
LAYOUTS = {"tail": TAIL_PAGE, "head": HEAD_PAGE}


def store_views(app: Flask, klaviyo: Klaviyo) -> None:
    @klaviyo.identity_loader
    def who() -> dict[str, str] | None:
        email = request.args.get("who")
        return {"email": email} if email else None

    @app.get("/products/<pid>")
    @tracks("Viewed Product")
    def product(pid: str) -> str:
        page = LAYOUTS[request.args.get("layout", "tail")]
        item = {**PRODUCT, "name": request.args.get("name", PRODUCT["name"])}
        return render_template_string(page, product=item, residual=RESIDUAL)

    @app.get("/stub/klaviyo.js")
    def stub() -> Response:
        return Response(STUB_JS, mimetype="text/javascript")


@pytest.fixture
def make_store(make_app: Callable[..., Flask]) -> Callable[..., Flask]:
    """``make_store(redis_url, fake, *, mode="drop", **config)``: a product page in either
    layout, the bridge in ``mode``, klaviyo.js replaced by a stub that records its calls."""

    def make(redis_url: str, fake: Any, *, mode: str = "drop", **config: Any) -> Flask:
        return make_app(
            redis_url,
            fake=fake,
            views=store_views,
            **{
                "SECRET_KEY": "browser-secret",
                "KLAVIYO_PRIVATE_API_KEY": fake.api_key,
                "KLAVIYO_PUBLIC_API_KEY": fake.company_id,
                "KLAVIYO_CLIENT_URL": fake.url,
                "KLAVIYO_BRIDGE_MODE": mode,
                "KLAVIYO_JS_URL": "/stub/klaviyo.js",
                "KLAVIYO_STRICT": False,
                **config,
            },
        )

    return make


class Visit:
    """One page load: what the stub recorded, the blob, and every console error."""

    def __init__(self, browser: Any, url: str) -> None:
        self.errors: list[str] = []
        self.context = browser.new_context()
        page = self.page = self.context.new_page()
        page.on("console", lambda msg: msg.type == "error" and self.errors.append(msg.text))
        page.on("pageerror", lambda exc: self.errors.append(f"pageerror: {exc}"))
        page.goto(url)
        page.wait_for_function("window.__done === true && window.__klaviyoLoaded === true")
        page.wait_for_timeout(150)  # let a late (wrong) call or request show up

    @property
    def calls(self) -> list[list[Any]]:
        return self.page.evaluate("window.__calls || []")  # type: ignore[no-any-return]

    def tracked(self, metric: str) -> list[list[Any]]:
        return [c for c in self.calls if c[:2] == ["track", metric]]

    @property
    def blob(self) -> dict[str, Any]:
        text = self.page.evaluate("document.getElementById('klaviyo-bridge-data').textContent")
        return json.loads(text)  # type: ignore[no-any-return]

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def visit(browser: Any) -> Iterator[Any]:
    opened: list[Visit] = []

    def open_(url: str) -> Visit:
        opened.append(Visit(browser, url))
        return opened[-1]

    yield open_
    for one in opened:
        one.close()


def client_requests(fake: Any) -> list[dict[str, Any]]:
    return [r for r in fake.requests if r["path"] == "/client/events"]


def deliver_server_events(app: Flask, redis_url: str) -> None:
    """What a worker would do: send the events the server queued to the stand-in."""
    waiting = Outbox(redis.Redis.from_url(redis_url)).waiting()
    with app.app_context():
        deliver_events(waiting)


OTHER_METRICS = ("Viewed Collection", "Clicked Banner", "Used Search", "Added to Wishlist")


# -- drop mode -------------------------------------------------------------------------------
@pytest.mark.parametrize("layout", ["tail", "head"])
def test_drop_mode_residual_calls_never_reach_klaviyo_js(
    visit: Any,
    redis_url: str,
    fake: Any,
    layout: str,
    live_server: Any,
    make_store: Callable[..., Flask],
) -> None:
    app = make_store(redis_url, fake)
    with live_server(app) as base:
        page = visit(f"{base}/products/1111?layout={layout}&who={EMAIL}")
        assert page.blob["mode"] == "drop"
        assert [e["metric"] for e in page.blob["events"]] == ["Viewed Product"]
        assert page.tracked("Viewed Product") == []  # 3 before klaviyo.js, 3 after: all dropped
        for metric in OTHER_METRICS:
            assert len(page.tracked(metric)) == 1, (metric, page.calls)
        assert page.page.evaluate("window.__resolved") is True  # the dropped call's promise
        assert ["identify", {"email": EMAIL}] in page.calls
        assert page.page.evaluate("window.klaviyo.__real") is True  # klaviyo.js took over
        assert client_requests(fake) == []
        assert page.errors == []


def test_drop_mode_survives_klaviyo_js_redefining_window_klaviyo(
    visit: Any, redis_url: str, fake: Any, live_server: Any, make_store: Callable[..., Flask]
) -> None:
    app = make_store(redis_url, fake, KLAVIYO_JS_URL="/stub/klaviyo.js?define=1")
    with live_server(app) as base:
        page = visit(f"{base}/products/1111?who={EMAIL}")
        assert page.page.evaluate("window.klaviyo.__real") is True
        assert page.tracked("Viewed Product") == []
        assert len(page.tracked("Added to Wishlist")) == 1
        assert page.errors == []


# -- share mode ------------------------------------------------------------------------------
@pytest.mark.parametrize("layout", ["tail", "head"])
def test_share_mode_resends_the_residual_call_once_with_the_servers_unique_id(
    visit: Any,
    redis_url: str,
    fake: Any,
    openapi: Any,
    layout: str,
    live_server: Any,
    make_store: Callable[..., Flask],
) -> None:
    app = make_store(redis_url, fake, mode="share")
    with live_server(app) as base:
        page = visit(f"{base}/products/1111?layout={layout}&who={EMAIL}")
        page.page.wait_for_function("window.__resolved === true")  # the share was answered
        blob = page.blob
        assert blob["mode"] == "share"
        [server_event] = blob["events"]
        assert page.tracked("Viewed Product") == []
        for metric in OTHER_METRICS:
            assert len(page.tracked(metric)) == 1, (metric, page.calls)
        assert page.errors == []

    [sent] = client_requests(fake)  # six residual calls, one share
    assert sent["method"] == "POST" and sent["status"] == 202, sent["errors"]
    assert sent["query"] == {"company_id": fake.company_id}
    headers = {k.lower(): v for k, v in sent["headers"].items()}
    assert headers["revision"] == "2026-07-15"
    assert headers["content-type"].startswith("application/vnd.api+json")
    body = sent["body"]
    openapi.validate("create_client_event", body)
    attributes = body["data"]["attributes"]
    assert body["data"]["type"] == "event"
    assert attributes["metric"]["data"]["attributes"]["name"] == "Viewed Product"
    assert attributes["unique_id"] == server_event["unique_id"]
    assert attributes["profile"]["data"]["attributes"] == {"email": EMAIL}
    residual = {k: v for k, v in RESIDUAL.items() if not k.startswith("$")}
    assert attributes["properties"] == residual
    assert attributes["value"] == RESIDUAL["$value"]
    assert "$event_id" not in json.dumps(body)

    # The server's own event, delivered later, is the same event to Klaviyo: kept once.
    deliver_server_events(app, redis_url)
    [kept] = fake.events_for("Viewed Product")
    assert kept["unique_id"] == server_event["unique_id"]
    assert fake.duplicates == 1
    assert fake.profile_of(kept)["email"] == EMAIL


def test_share_mode_for_an_anonymous_visitor_sends_nothing(
    visit: Any, redis_url: str, fake: Any, live_server: Any, make_store: Callable[..., Flask]
) -> None:
    app = make_store(redis_url, fake, mode="share")
    with live_server(app) as base:
        page = visit(f"{base}/products/1111")
        tracked = [e["metric"] for e in page.blob["events"]]
        assert all("profile" not in e for e in page.blob["events"])
        if "Viewed Product" in tracked:  # parked for later: the page must not count it either
            assert page.tracked("Viewed Product") == []
        assert len(page.tracked("Added to Wishlist")) == 1
        assert page.errors == []
    assert client_requests(fake) == []


# -- identify, escaping ----------------------------------------------------------------------
def test_anonymous_visitor_is_not_identified(
    visit: Any, redis_url: str, fake: Any, live_server: Any, make_store: Callable[..., Flask]
) -> None:
    app = make_store(redis_url, fake)
    with live_server(app) as base:
        page = visit(f"{base}/products/1111?layout=head")
        assert "identify" not in page.blob
        assert [c for c in page.calls if c[0] == "identify"] == []
        assert len(page.tracked("Viewed Collection")) == 1
        assert page.errors == []


def test_script_breakouts_stay_data_in_a_real_browser(
    visit: Any, redis_url: str, fake: Any, live_server: Any, make_store: Callable[..., Flask]
) -> None:
    email = f"ann{BREAKOUT}@shop.test"
    app = make_store(redis_url, fake, mode="share")
    with live_server(app) as base:
        page = visit(f"{base}/products/1111?who={quote(email)}&name={quote('Pooh ' + BREAKOUT)}")
        assert page.page.evaluate("window.__pwned") is None
        assert ["identify", {"email": email.lower()}] in page.calls
        assert page.blob["events"][0]["profile"] == {"email": email.lower()}
        assert page.page.title() == f"Pooh {BREAKOUT}"
        assert page.errors == []
