"""The demo store's catalog (issue 12): variants and stock, "Notify me", the back office's stock
page, and the SQLite catalog as flask-klaviyo's catalog source.

Two halves, like ``test_store_accounts.py``:
- What the store asks of flask-klaviyo, with the extension's catalog calls recorded (``calls``;
  tracking off): pages, happy paths and every refusal (4xx with a message, nothing asked).
- End to end with the real extension: what waits in the outbox (``queued_operations``), what
  reaches the local Klaviyo stand-in (``drain``), and ``klaviyo catalog sync --dry-run`` reading
  the store's catalog source.
"""

from __future__ import annotations

import base64
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from conftest import RecordedCalls
from flask import Flask
from flask.testing import FlaskClient

from example_store import create_app, klaviyo
from example_store.catalog import SEED_PRODUCTS
from example_store.klaviyo_catalog import catalog_product, products
from example_store.variants import SEED_VARIANTS, get_variant

EMAIL = "ann.lee@klaviyo-demo.com"
ADMIN_PASSWORD = "stock-secret"
CATALOG_CALLS = ("notify_back_in_stock", "catalog_changed", "catalog_removed")

SEVERAL = "house-blend"  # Grind: whole bean (40), espresso (12), filter (sold out)
WHOLE_BEAN, ESPRESSO, FILTER = "CC-HSE-340-WB", "CC-HSE-340-ES", "CC-HSE-340-FL"
IN_STOCK_ONLY = "gooseneck-kettle"  # one variant, in stock (its SKU is the product's)
SOLD_OUT_SINGLE = "cold-brew-kit"  # one variant, sold out


def page(response: Any) -> str:
    return response.get_data(as_text=True)


def store_config(instance: Path, **extra: Any) -> dict[str, Any]:
    return {
        "instance_path": str(instance),
        "SECRET_KEY": "catalog-secret",
        "TESTING": True,
        "STORE_PAYMENTS_AUTO_CALLBACK": False,
        "STORE_ADMIN_PASSWORD": ADMIN_PASSWORD,
        **extra,
    }


def admin(password: str = ADMIN_PASSWORD) -> dict[str, str]:
    token = base64.b64encode(f"admin:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> RecordedCalls:
    """The extension's catalog methods, recorded instead of run."""
    recorder = RecordedCalls(klaviyo, CATALOG_CALLS)
    recorder.install(monkeypatch)
    return recorder


@pytest.fixture
def shop(tmp_path: Path) -> Flask:
    return create_app(store_config(tmp_path / "instance", KLAVIYO_ENABLED=False))


@pytest.fixture
def client(shop: Flask) -> FlaskClient:
    return shop.test_client()


def stock_of(app: Flask, variant_id: str) -> int:
    with app.app_context():
        found = get_variant(variant_id)
        assert found is not None
        return found.inventory_quantity


# -- the seed data ------------------------------------------------------------------------------


def test_every_product_has_variants_with_unique_skus_and_some_are_sold_out() -> None:
    by_product: dict[str, list[Any]] = {}
    for variant in SEED_VARIANTS:
        by_product.setdefault(variant.product_id, []).append(variant)
    assert set(by_product) == {p.id for p in SEED_PRODUCTS}
    assert len({v.id for v in SEED_VARIANTS}) == len(SEED_VARIANTS)
    several = {pid for pid, vs in by_product.items() if len(vs) > 1}
    assert len(several) >= 4
    for pid, found in by_product.items():
        names = {v.option_name for v in found}
        assert (names == {""}) if len(found) == 1 else ("" not in names and len(names) == 1), pid
    singles = {pid: vs[0] for pid, vs in by_product.items() if len(vs) == 1}
    products = {p.id: p for p in SEED_PRODUCTS}
    assert all(v.sku == products[pid].sku for pid, v in singles.items())
    assert sum(not v.in_stock for v in SEED_VARIANTS) >= 5
    assert all(v.inventory_policy in ("deny", "continue") for v in SEED_VARIANTS)


def test_reseeding_keeps_the_stock_the_back_office_set(
    tmp_path: Path, calls: RecordedCalls
) -> None:
    config = store_config(tmp_path / "instance", KLAVIYO_ENABLED=False)
    first = create_app(config)
    first.test_client().post(
        f"/admin/products/{SEVERAL}/stock",
        data={"variant": FILTER, "quantity": "7"},
        headers=admin(),
    )
    assert stock_of(create_app(config), FILTER) == 7


# -- the product page ---------------------------------------------------------------------------


def test_the_variant_choice_renders_with_availability(client: FlaskClient) -> None:
    html = page(client.get(f"/products/{SEVERAL}"))
    fieldset = re.search(r'<fieldset class="variants">(.*?)</fieldset>', html, re.S)
    assert fieldset is not None
    group = fieldset.group(1)
    assert "<legend>Grind</legend>" in group
    radios = re.findall(
        r'<input type="radio" id="variant-([^"]+)" name="variant" value="\1"', group
    )
    assert radios == [WHOLE_BEAN, ESPRESSO, FILTER]
    for variant_id, label, availability in (
        (WHOLE_BEAN, "Whole bean", "In stock"),
        (ESPRESSO, "Espresso grind", "In stock"),
        (FILTER, "Filter grind", "Out of stock"),
    ):
        assert f'<label for="variant-{variant_id}">{label}</label>' in group
        span = f'<span class="stock stock-(in|out)" id="stock-{variant_id}">{availability}</span>'
        assert re.search(span, group), variant_id
        radio = re.search(rf'<input type="radio" id="variant-{variant_id}"[^>]*>', group)
        assert radio is not None and f'aria-describedby="stock-{variant_id}"' in radio.group(0)
        assert ("disabled" in radio.group(0)) == (variant_id == FILTER)
    checked = re.search(r'id="variant-([^"]+)"[^>]*checked', group)
    assert checked is not None and checked.group(1) == WHOLE_BEAN  # the first one in stock
    # The sold-out grind gets a "Notify me" form.
    notify = re.search(r'<form class="notify-me"[^>]*action="([^"]+)"(.*?)</form>', html, re.S)
    assert notify is not None and notify.group(1) == f"/products/{SEVERAL}/notify"
    assert f'name="variant" value="{FILTER}"' in notify.group(2)
    assert 'type="email"' in notify.group(2) and "Notify me" in notify.group(2)


def test_a_link_to_one_variant_preselects_it(client: FlaskClient) -> None:
    html = page(client.get(f"/products/{SEVERAL}?variant={ESPRESSO}"))
    checked = re.search(r'id="variant-([^"]+)"[^>]*checked', html)
    assert checked is not None and checked.group(1) == ESPRESSO
    assert client.get(f"/products/{SEVERAL}?variant=nope").status_code == 200


def test_a_product_sold_one_way_shows_no_choice(client: FlaskClient) -> None:
    html = page(client.get(f"/products/{IN_STOCK_ONLY}"))
    assert "<fieldset" not in html and "notify-me" not in html
    assert 'action="/cart/add"' in html and '<p class="stock stock-in">In stock</p>' in html
    sold_out = page(client.get(f"/products/{SOLD_OUT_SINGLE}"))
    assert 'action="/cart/add"' not in sold_out  # nothing to buy ...
    assert "Out of stock" in sold_out and f'action="/products/{SOLD_OUT_SINGLE}/notify"' in sold_out


def test_the_email_of_a_known_shopper_is_filled_in(client: FlaskClient) -> None:
    client.post("/login", data={"email": EMAIL})
    html = page(client.get(f"/products/{SOLD_OUT_SINGLE}"))
    assert re.search(rf'name="email" type="email" value="{re.escape(EMAIL)}"', html)


# -- the cart with variants ---------------------------------------------------------------------


def test_a_chosen_variant_is_the_cart_lines_sku(client: FlaskClient) -> None:
    added = client.post("/cart/add", data={"product_id": SEVERAL, "variant": ESPRESSO})
    assert added.status_code == 303
    answer = client.post("/api/cart", json={"product_id": SEVERAL, "variant": WHOLE_BEAN})
    assert answer.status_code == 200
    items = answer.json["cart"]["items"]
    assert [(i["variant_id"], i["sku"], i["product"]["sku"]) for i in items] == [
        (ESPRESSO, ESPRESSO, ESPRESSO),
        (WHOLE_BEAN, WHOLE_BEAN, WHOLE_BEAN),
    ]
    assert [i["product_id"] for i in items] == [SEVERAL, SEVERAL]
    assert items[0]["product"]["name"].endswith("(Espresso grind)")
    assert answer.json["added_item"]["sku"] == WHOLE_BEAN
    # Each line is changed by its variant; the cart page's forms carry it.
    assert f'name="variant" value="{ESPRESSO}"' in page(client.get("/cart"))
    client.post("/cart/update", data={"product_id": SEVERAL, "variant": ESPRESSO, "quantity": "0"})
    items = client.get("/api/cart").json["cart"]["items"]
    assert [i["variant_id"] for i in items] == [WHOLE_BEAN]


def test_without_a_variant_the_first_in_stock_is_added(client: FlaskClient) -> None:
    answer = client.post("/api/cart", json={"product_id": SEVERAL})
    assert answer.json["added_item"]["variant_id"] == WHOLE_BEAN
    single = client.post("/api/cart", json={"product_id": IN_STOCK_ONLY}).json["added_item"]
    assert single["sku"] == single["variant_id"] == single["product"]["sku"]


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"product_id": SEVERAL, "variant": FILTER}, "out_of_stock"),
        ({"product_id": SEVERAL, "variant": "RS-BTL-750-RD"}, "unknown_variant"),  # another's
        ({"product_id": SEVERAL, "variant": "nope"}, "unknown_variant"),
        ({"product_id": SEVERAL, "variant": 7}, "invalid_variant"),
        ({"product_id": SOLD_OUT_SINGLE}, "out_of_stock"),
        ({"product_id": SEVERAL, "variant": ESPRESSO, "quantity": 13}, "not_enough_stock"),
    ],
)
def test_what_cannot_be_sold_is_refused(client: FlaskClient, body: Any, code: str) -> None:
    answer = client.post("/api/cart", json=body)
    assert answer.status_code == 400 and answer.json["error"] == code, answer.json
    assert client.get("/api/cart").json["cart"]["items"] == []


# -- "Notify me" --------------------------------------------------------------------------------


def test_notify_me_asks_klaviyo_for_a_back_in_stock_subscription(
    client: FlaskClient, calls: RecordedCalls
) -> None:
    form = client.post(f"/products/{SEVERAL}/notify", data={"email": EMAIL, "variant": FILTER})
    assert form.status_code == 303
    assert form.location == f"/products/{SEVERAL}?variant={FILTER}"
    assert "when House Blend Coffee, 340 g (Filter grind) is back" in page(
        client.get(form.location)
    )
    answer = client.post(f"/products/{SOLD_OUT_SINGLE}/notify", json={"email": " Ann@X.test "})
    assert answer.status_code == 202
    assert answer.json == {
        "status": "subscribed",
        "product_id": SOLD_OUT_SINGLE,
        "variant": "CC-CBK-001",
    }
    assert calls.made == [
        ("notify_back_in_stock", (), {"email": EMAIL, "variant": FILTER}),
        ("notify_back_in_stock", (), {"email": "ann@x.test", "variant": "CC-CBK-001"}),
    ]


def test_without_a_variant_the_first_sold_out_one_is_meant(
    client: FlaskClient, calls: RecordedCalls
) -> None:
    assert client.post(f"/products/{SEVERAL}/notify", json={"email": EMAIL}).status_code == 202
    assert calls.made[0][2]["variant"] == FILTER


def test_a_known_shopper_need_not_type_their_email(
    client: FlaskClient, calls: RecordedCalls
) -> None:
    client.post("/login", data={"email": EMAIL})
    assert client.post(f"/products/{SOLD_OUT_SINGLE}/notify", data={}).status_code == 303
    assert calls.made[0][2]["email"] == EMAIL


@pytest.mark.parametrize(
    ("product_id", "body", "status", "code"),
    [
        (SEVERAL, {"email": "not-an-email", "variant": FILTER}, 400, "invalid_email"),
        (SEVERAL, {"variant": FILTER}, 400, "invalid_email"),
        (SEVERAL, {"email": "a@b.co" + "m" * 300, "variant": FILTER}, 400, "invalid_email"),
        (SEVERAL, {"email": EMAIL, "variant": "nope"}, 400, "unknown_variant"),
        (SEVERAL, {"email": EMAIL, "variant": "RS-BTL-750-WH"}, 400, "unknown_variant"),
        (SEVERAL, {"email": EMAIL, "variant": ["x"]}, 400, "invalid_variant"),
        (SEVERAL, {"email": EMAIL, "variant": WHOLE_BEAN}, 409, "in_stock"),
        (IN_STOCK_ONLY, {"email": EMAIL}, 400, "nothing_sold_out"),
        ("no-such-product", {"email": EMAIL}, 404, "not_found"),
    ],
)
def test_notify_me_refusals_ask_nothing_of_klaviyo(
    client: FlaskClient, calls: RecordedCalls, product_id: str, body: Any, status: int, code: str
) -> None:
    answer = client.post(f"/products/{product_id}/notify", json=body)
    assert answer.status_code == status and answer.json["error"] == code, answer.json
    assert answer.json["message"]
    assert calls.made == []


def test_a_refused_form_shows_the_product_page_with_the_message(
    client: FlaskClient, calls: RecordedCalls
) -> None:
    answer = client.post(f"/products/{SEVERAL}/notify", data={"email": "nope", "variant": FILTER})
    assert answer.status_code == 400 and answer.mimetype == "text/html"
    html = page(answer)
    assert '<p class="form-error" role="alert">Please enter a valid email address' in html
    assert 'value="nope"' in html  # what they typed, to fix
    assert calls.made == []


# -- the back office's stock --------------------------------------------------------------------


def test_setting_stock_needs_the_admin(shop: Flask, calls: RecordedCalls) -> None:
    client = shop.test_client()
    url = f"/admin/products/{SEVERAL}/stock"
    assert client.post(url, data={"variant": FILTER, "quantity": "5"}).status_code == 401
    wrong = client.post(url, data={"variant": FILTER, "quantity": "5"}, headers=admin("x"))
    assert wrong.status_code == 401
    assert client.get("/admin/products").status_code == 401
    assert stock_of(shop, FILTER) == 0 and calls.made == []


def test_the_stock_page_is_closed_without_an_admin_password(tmp_path: Path) -> None:
    app = create_app(
        store_config(tmp_path / "instance", KLAVIYO_ENABLED=False, STORE_ADMIN_PASSWORD=None)
    )
    assert app.test_client().get("/admin/products", headers=admin()).status_code == 404


def test_a_restock_reaches_klaviyos_catalog(shop: Flask, calls: RecordedCalls) -> None:
    client = shop.test_client()
    listing = page(client.get("/admin/products", headers=admin()))
    form = rf'<input id="stock-{FILTER}" type="number" name="quantity" value="0"'
    assert re.search(form, listing) and f'action="/admin/products/{SEVERAL}/stock"' in listing
    answer = client.post(
        f"/admin/products/{SEVERAL}/stock",
        data={"variant": FILTER, "quantity": "25"},
        headers=admin(),
    )
    assert answer.status_code == 303 and answer.location == "/admin/products"
    assert stock_of(shop, FILTER) == 25
    [(name, (product,), _)] = calls.made
    assert name == "catalog_changed" and product["id"] == SEVERAL
    restocked = next(v for v in product["variants"] if v["id"] == FILTER)
    assert restocked["inventory_quantity"] == 25 and restocked["sku"] == FILTER
    # The same quantity again changes nothing and queues nothing.
    again = client.post(
        f"/admin/products/{SEVERAL}/stock",
        json={"variant": FILTER, "quantity": 25},
        headers=admin(),
    )
    assert again.json == {
        "product_id": SEVERAL,
        "variant": FILTER,
        "inventory_quantity": 25,
        "previous": 25,
        "changed": False,
    }
    assert calls.names() == ["catalog_changed"]


def test_a_product_sold_one_way_needs_no_variant(shop: Flask, calls: RecordedCalls) -> None:
    answer = shop.test_client().post(
        f"/admin/products/{SOLD_OUT_SINGLE}/stock", json={"quantity": 3}, headers=admin()
    )
    assert answer.status_code == 200 and answer.json["changed"] is True
    assert answer.json["previous"] == 0 and stock_of(shop, "CC-CBK-001") == 3
    assert calls.names() == ["catalog_changed"]


@pytest.mark.parametrize(
    ("product_id", "body", "status", "code"),
    [
        (SEVERAL, {"quantity": 5}, 400, "invalid_variant"),  # which one?
        (SEVERAL, {"variant": "RS-BTL-750-WH", "quantity": 5}, 400, "invalid_variant"),
        (SEVERAL, {"variant": FILTER, "quantity": -1}, 400, "invalid_quantity"),
        (SEVERAL, {"variant": FILTER, "quantity": "2.5"}, 400, "invalid_quantity"),
        (SEVERAL, {"variant": FILTER, "quantity": 10**9}, 400, "invalid_quantity"),
        (SEVERAL, {"variant": FILTER, "quantity": True}, 400, "invalid_quantity"),
        (SEVERAL, {"variant": FILTER}, 400, "invalid_quantity"),
        ("no-such-product", {"quantity": 1}, 404, "unknown_product"),
    ],
)
def test_bad_stock_changes_are_refused(
    shop: Flask, calls: RecordedCalls, product_id: str, body: Any, status: int, code: str
) -> None:
    answer = shop.test_client().post(
        f"/admin/products/{product_id}/stock", json=body, headers=admin()
    )
    assert answer.status_code == status and answer.json["error"] == code, answer.json
    assert calls.made == [] and stock_of(shop, FILTER) == 0


# -- the catalog source -------------------------------------------------------------------------


def absolute(url: str, host: str) -> bool:
    parts = urlsplit(url)
    return parts.scheme in ("http", "https") and parts.netloc == host


def test_the_catalog_source_yields_every_product_with_absolute_urls(tmp_path: Path) -> None:
    app = create_app(
        store_config(
            tmp_path / "instance",
            KLAVIYO_ENABLED=False,
            STORE_BASE_URL="https://shop.example.com",
        )
    )
    with app.app_context():  # no request: URLs come from STORE_BASE_URL
        yielded = list(products())
    assert [p["id"] for p in yielded] == sorted(
        (p.id for p in SEED_PRODUCTS),
        key=lambda pid: next(s.name for s in SEED_PRODUCTS if s.id == pid),
    )
    for product in yielded:
        assert product["title"] and product["description"] and product["price"] > 0
        assert product["published"] is True and product["categories"]
        assert product["url"] == f"https://shop.example.com/products/{product['id']}"
        assert absolute(product["image_url"], "shop.example.com")
        assert product["variants"], product["id"]
        for variant in product["variants"]:
            assert absolute(variant["url"], "shop.example.com")
            assert absolute(variant["image_url"], "shop.example.com")
            assert variant["sku"] == variant["id"] and variant["price"] > 0
            assert variant["inventory_quantity"] >= 0
            assert variant["inventory_policy"] in ("deny", "continue")
    house = next(p for p in yielded if p["id"] == SEVERAL)
    filter_grind = next(v for v in house["variants"] if v["id"] == FILTER)
    assert filter_grind["url"] == f"https://shop.example.com/products/{SEVERAL}?variant={FILTER}"
    assert filter_grind["title"] == "House Blend Coffee, 340 g (Filter grind)"


def test_in_a_request_the_urls_are_the_requests(shop: Flask) -> None:
    with shop.test_request_context(base_url="http://store.test:8000"):
        entry = catalog_product(SEVERAL)
    assert entry is not None and entry["url"] == f"http://store.test:8000/products/{SEVERAL}"


def test_the_default_base_url(shop: Flask) -> None:
    assert shop.config["STORE_BASE_URL"] == "http://127.0.0.1:5000"
    with shop.app_context():
        entry = catalog_product(IN_STOCK_ONLY)
        assert catalog_product("no-such-product") is None
    assert entry is not None and entry["url"] == f"http://127.0.0.1:5000/products/{IN_STOCK_ONLY}"


# -- end to end: the real extension, the outbox, the stand-in ------------------------------------


@pytest.fixture
def live_shop(tmp_path: Path, redis_url: str, fake: Any) -> Flask:
    """The store with tracking on: the embedded Redis, delivering to the stand-in."""
    return create_app(
        store_config(
            tmp_path / "instance",
            KLAVIYO_REDIS_URL=redis_url,
            KLAVIYO_API_URL=fake.url,
            KLAVIYO_PRIVATE_API_KEY="pk_test_private_key",
        )
    )


def of_kind(entries: list[dict[str, Any]], part: str) -> list[dict[str, Any]]:
    return [e for e in entries if part in str(e.get("op", ""))]


def sync(app: Flask, *args: str) -> Any:
    result = app.test_cli_runner().invoke(args=["klaviyo", "catalog", "sync", *args])
    assert result.exit_code == 0, result.output
    return result


def test_the_dry_run_plans_the_whole_catalog_and_sends_nothing(live_shop: Flask, fake: Any) -> None:
    result = sync(live_shop, "--dry-run")
    assert str(len(SEED_PRODUCTS)) in result.output
    assert fake.writes() == 0 and fake.catalog_items == {}


def test_notify_me_reaches_klaviyo_as_a_back_in_stock_subscription(
    live_shop: Flask, fake: Any, queued_operations: Any, drain: Any
) -> None:
    sync(live_shop)  # the stand-in, like Klaviyo, knows only variants in its catalog
    assert len(fake.catalog_items) == len(SEED_PRODUCTS)
    client = live_shop.test_client()
    answer = client.post(f"/products/{SEVERAL}/notify", json={"email": EMAIL, "variant": FILTER})
    assert answer.status_code == 202
    [operation] = of_kind(queued_operations(live_shop), "back_in_stock")
    assert FILTER in repr(operation["payload"]) and EMAIL in repr(operation["payload"])
    drain(live_shop)
    [subscription] = fake.back_in_stock()
    assert subscription["email"] == EMAIL and subscription["channels"] == ["EMAIL"]
    assert subscription["variant"].endswith(f":::{FILTER}")


def test_refused_notify_requests_queue_nothing(live_shop: Flask, queued_operations: Any) -> None:
    client = live_shop.test_client()
    for body in (
        {"email": "nope", "variant": FILTER},
        {"email": EMAIL, "variant": "nope"},
        {"email": EMAIL, "variant": WHOLE_BEAN},
    ):
        assert client.post(f"/products/{SEVERAL}/notify", data=body).status_code in (400, 409)
    assert queued_operations(live_shop) == []


def test_a_restock_queues_the_catalog_change_and_reaches_klaviyo(
    live_shop: Flask, fake: Any, queued_operations: Any, drain: Any
) -> None:
    sync(live_shop)
    client = live_shop.test_client()
    url = f"/admin/products/{SEVERAL}/stock"
    assert client.post(url, data={"variant": FILTER, "quantity": "9"}).status_code == 401
    assert queued_operations(live_shop) == []
    answer = client.post(url, data={"variant": FILTER, "quantity": "9"}, headers=admin())
    assert answer.status_code == 303
    assert of_kind(queued_operations(live_shop), "catalog"), queued_operations(live_shop)
    drain(live_shop)
    held = next(v for key, v in fake.catalog_variants.items() if key.endswith(f":::{FILTER}"))
    assert held["inventory_quantity"] == 9


def test_a_products_absolute_urls_follow_the_host_and_mount_of_each_request(
    tmp_path: Path,
) -> None:
    """They are remembered per app and request root: another host, scheme or mount point
    gets its own, never one built for an earlier request."""
    app = create_app(store_config(tmp_path / "instance", KLAVIYO_ENABLED=False))
    product = SEED_PRODUCTS[0]
    seen = {}
    for base in ("http://a.test/", "https://a.test/", "http://b.test:8080/", "http://a.test/shop/"):
        for _ in range(2):  # the second time from memory
            with app.test_request_context("/", base_url=base):
                found = product.to_klaviyo_product()
            assert found["url"] == f"{base}products/{product.id}", found["url"]
            assert found["image_url"].startswith(f"{base}static/")
            seen.setdefault(base, found["url"])
    assert len(set(seen.values())) == 4
