"""The demo storefront: catalog, product pages, login, cart, checkout, orders, admin,
configuration, database.

Tracking is off here (``KLAVIYO_ENABLED=False``) so nothing needs Redis: what the store hands the
extension is checked through ``to_klaviyo_product()`` and ``flask_klaviyo.models.Product``; the
tracking itself is tested in the extension's own tests and the journeys.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sqlite3
import stat
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from flask import Flask, session
from flask.testing import FlaskClient
from flask_testing import TestCase
from markupsafe import escape

import example_store
from example_store import create_app, klaviyo
from example_store.catalog import SEED_PRODUCTS, Product, get_product, list_products
from example_store.db import ADDED_COLUMNS, TABLES, get_db
from example_store.extensions import current_shopper
from example_store.settings import SECRET_KEY_FILE, settings_from_environ
from flask_klaviyo.models import Product as KlaviyoProduct

STATIC = Path(example_store.__file__).parent / "static"
SALE = next(p for p in SEED_PRODUCTS if p.compare_at_cents)  # a product with a compare-at price
PLAIN = next(p for p in SEED_PRODUCTS if not p.compare_at_cents)
AMPERSAND = next(p for p in SEED_PRODUCTS if "&" in p.brand)  # shows escaping is right


def store_config(instance: Path | str, **extra: Any) -> dict[str, Any]:
    return {
        "instance_path": str(instance),
        "SECRET_KEY": "test-secret",
        "TESTING": True,
        "KLAVIYO_ENABLED": False,
        **extra,
    }


def page(response: Any) -> str:
    return response.get_data(as_text=True)


@pytest.fixture
def clean_environ(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No store or KLAVIYO_* settings leak in from the shell running the tests."""
    for name in list(os.environ):
        if name.startswith(("KLAVIYO_", "STORE_")) or name == "SECRET_KEY":
            monkeypatch.delenv(name)
    return monkeypatch


@pytest.fixture
def app(tmp_path: Path) -> Flask:
    return create_app(store_config(tmp_path / "instance"))


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


# -- the catalog --------------------------------------------------------------------------------


def test_catalog_has_at_least_12_products_with_unique_ids_and_skus() -> None:
    assert len(SEED_PRODUCTS) >= 12
    assert len({p.id for p in SEED_PRODUCTS}) == len(SEED_PRODUCTS)
    assert len({p.sku for p in SEED_PRODUCTS}) == len(SEED_PRODUCTS)
    for product in SEED_PRODUCTS:
        assert 2 <= len(product.categories) <= 3, product.id
        assert len(set(product.categories)) == len(product.categories), product.id
        assert isinstance(product.price_cents, int) and product.price_cents > 0, product.id
        assert product.name and product.description and product.brand, product.id
    # categories overlap: every one is shared by at least two products
    uses = Counter(c for p in SEED_PRODUCTS for c in p.categories)
    assert min(uses.values()) >= 2
    assert len({p.brand for p in SEED_PRODUCTS}) >= 3
    assert any(p.on_sale for p in SEED_PRODUCTS)
    assert any(not p.on_sale for p in SEED_PRODUCTS)


def test_every_product_image_is_a_small_local_svg_and_is_served(client: FlaskClient) -> None:
    for product in SEED_PRODUCTS:
        path = STATIC / product.image
        assert path.is_file(), product.image
        assert path.stat().st_size < 2048, product.image
        assert ET.parse(path).getroot().tag == "{http://www.w3.org/2000/svg}svg"
        response = client.get(f"/static/{product.image}")
        assert response.status_code == 200, product.image
        assert response.mimetype == "image/svg+xml"
        assert response.data == path.read_bytes()
        response.close()


def test_database_serves_the_seed_catalog(app: Flask) -> None:
    with app.app_context():
        assert {p.id for p in list_products()} == {p.id for p in SEED_PRODUCTS}
        names = [p.name for p in list_products()]
        assert names == sorted(names)
        for seeded in SEED_PRODUCTS:
            assert get_product(seeded.id) == seeded
        assert get_product("no-such-product") is None
        in_coffee = {p.id for p in list_products("Coffee")}
        assert in_coffee == {p.id for p in SEED_PRODUCTS if "Coffee" in p.categories}


# -- pages (flask-testing) ----------------------------------------------------------------------


class StorefrontPages(TestCase):
    render_templates = True

    def create_app(self) -> Flask:
        instance = tempfile.mkdtemp(prefix="store-")
        self.addCleanup(shutil.rmtree, instance, True)
        return create_app(store_config(instance))

    def test_catalog_page_lists_every_product(self) -> None:
        response = self.client.get("/")
        self.assert200(response)
        self.assert_template_used("index.html")
        shown = self.get_context_variable("products")
        assert {p.id for p in shown} == {p.id for p in SEED_PRODUCTS}
        html = page(response)
        for product in SEED_PRODUCTS:
            assert f'href="/products/{product.id}"' in html
            assert str(escape(product.name)) in html
            assert f'src="/static/{product.image}"' in html

    def test_catalog_filters_by_category(self) -> None:
        response = self.client.get("/?category=Camp Kitchen")
        self.assert200(response)
        expected = {p.id for p in SEED_PRODUCTS if "Camp Kitchen" in p.categories}
        assert {p.id for p in self.get_context_variable("products")} == expected
        assert len(expected) < len(SEED_PRODUCTS)
        assert 'aria-current="page">Camp Kitchen</a>' in page(response)
        self.assert404(self.client.get("/?category=Nope"))

    def test_product_page_renders_name_price_and_image(self) -> None:
        response = self.client.get(f"/products/{SALE.id}")
        self.assert200(response)
        self.assert_template_used("product.html")
        self.assert_context("product", SALE)
        html = page(response)
        assert f"<h1>{escape(SALE.name)}</h1>" in html
        assert f"${SALE.price_cents / 100:,.2f}" in html
        assert f'<s class="price-was">${SALE.compare_at_cents / 100:,.2f}</s>' in html
        assert f'src="/static/{SALE.image}"' in html
        assert f'alt="{escape(SALE.name)}"' in html
        assert SALE.sku in html

    def test_product_without_compare_at_price_shows_one_price(self) -> None:
        response = self.client.get(f"/products/{PLAIN.id}")
        self.assert200(response)
        self.assert_context("product", PLAIN)
        html = page(response)
        assert f"${PLAIN.price_cents / 100:,.2f}" in html
        assert "price-was" not in html

    def test_brand_with_an_ampersand_is_escaped_once(self) -> None:
        html = page(self.client.get(f"/products/{AMPERSAND.id}"))
        assert str(escape(AMPERSAND.brand)) in html
        assert "&amp;amp;" not in html

    def test_unknown_product_is_a_friendly_404(self) -> None:
        response = self.client.get("/products/no-such-thing")
        self.assert404(response)
        self.assert_template_used("error.html")
        html = page(response)
        assert "catalog" in html
        assert 'href="/">Back to the shop</a>' in html
        assert 'id="header-email"' in html  # the full store layout, not a bare error

    def test_base_template_renders_the_klaviyo_bridge_at_the_end_of_body(self) -> None:
        html = page(self.client.get(f"/products/{SALE.id}"))
        bridge = html.index('id="klaviyo-bridge-data"')
        assert html.index("</footer>") < bridge < html.index("</body>")

    def test_login_stores_the_email_and_logout_clears_it(self) -> None:
        with self.client:
            response = self.client.post(
                "/login",
                data={"email": "  Shopper@Example.COM ", "next": f"/products/{SALE.id}"},
            )
            self.assertStatus(response, 303)
            assert response.location == f"/products/{SALE.id}"
            assert session["email"] == "shopper@example.com"

            html = page(self.client.get(f"/products/{SALE.id}"))
            assert "Signed in as <strong>shopper@example.com</strong>" in html
            assert 'id="header-email"' not in html

            response = self.client.post("/logout", data={"next": "/"})
            self.assertStatus(response, 303)
            assert "email" not in session
            assert 'id="header-email"' in page(self.client.get("/"))

    def test_login_rejects_an_invalid_email(self) -> None:
        for bad in ("", "not-an-email", "a@b", "two@@example.com", "sp ace@example.com"):
            with self.client:
                response = self.client.post("/login", data={"email": bad}, follow_redirects=True)
                self.assert200(response)
                assert "email" not in session, bad
                assert "Please enter a valid email address" in page(response)

    def test_login_redirects_back_but_never_off_site(self) -> None:
        cases = {
            "/?category=Coffee": "/?category=Coffee",
            "https://evil.example/steal": "/",
            "//evil.example/steal": "/",
            "/\\evil.example": "/",
            "javascript:alert(1)": "/",
        }
        for target, expected in cases.items():
            response = self.client.post("/login", data={"email": "a@b.co", "next": target})
            assert response.location == expected, target
        referred = self.client.post(
            "/login",
            data={"email": "a@b.co"},
            headers={"Referer": f"http://localhost/products/{PLAIN.id}"},
        )
        assert referred.location == f"/products/{PLAIN.id}"

    def test_cross_site_form_posts_are_refused(self) -> None:
        with self.client:
            response = self.client.post(
                "/login", data={"email": "a@b.co"}, headers={"Origin": "https://evil.example"}
            )
            self.assert403(response)
            assert "email" not in session
            same_site = self.client.post(
                "/login", data={"email": "a@b.co"}, headers={"Origin": "http://localhost"}
            )
            self.assertStatus(same_site, 303)
            assert session["email"] == "a@b.co"


# -- how products and shoppers reach the extension ----------------------------------------------


def test_products_expose_themselves_to_flask_klaviyo(app: Flask, client: FlaskClient) -> None:
    with app.test_request_context(base_url="https://shop.example"):
        data = SALE.to_klaviyo_product()
        plain = PLAIN.to_klaviyo_product()
        coerced = KlaviyoProduct.coerce(SALE)
    assert data == {
        "id": SALE.id,
        "name": SALE.name,
        "price": SALE.price_cents / 100,
        "sku": SALE.sku,
        "url": f"https://shop.example/products/{SALE.id}",
        "image_url": f"https://shop.example/static/{SALE.image}",
        "categories": list(SALE.categories),
        "brand": SALE.brand,
        "compare_at_price": SALE.compare_at_cents / 100,
    }
    assert isinstance(data["price"], float)
    assert plain["compare_at_price"] is None
    assert (coerced.id, coerced.name, coerced.price, coerced.sku) == (
        SALE.id,
        SALE.name,
        data["price"],
        SALE.sku,
    )
    assert list(coerced.categories) == list(SALE.categories)
    assert coerced.url == data["url"] and coerced.image_url == data["image_url"]
    # the URLs Klaviyo would link to are real pages of this store
    assert client.get(f"/products/{SALE.id}").status_code == 200
    assert client.get(f"/static/{SALE.image}").status_code == 200


def test_identity_loader_names_the_logged_in_shopper(app: Flask) -> None:
    with app.test_request_context():
        session["email"] = "shopper@example.com"
        assert current_shopper() == {"email": "shopper@example.com"}
        assert klaviyo.resolve_profile() == {"email": "shopper@example.com"}
    with app.test_request_context():
        assert current_shopper() is None
        assert klaviyo.resolve_profile() == {}


# -- configuration ------------------------------------------------------------------------------


def test_create_app_without_config_reads_the_environment(
    clean_environ: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    database = tmp_path / "env-store.sqlite3"
    clean_environ.setenv("KLAVIYO_ENABLED", "false")
    clean_environ.setenv("KLAVIYO_STRICT", "1")
    clean_environ.setenv("KLAVIYO_COOKIE_SECURE", "TRUE")
    clean_environ.setenv("KLAVIYO_API_URL", "http://127.0.0.1:9")
    clean_environ.setenv("KLAVIYO_QUEUE", "store-events")
    clean_environ.setenv("KLAVIYO_TIMEOUT", "2.5")
    clean_environ.setenv("KLAVIYO_PUBLIC_API_KEY", "")  # empty counts as unset
    clean_environ.setenv("SECRET_KEY", "from-the-environment")
    clean_environ.setenv("STORE_ADMIN_PASSWORD", "correct horse")
    clean_environ.setenv("STORE_DATABASE", str(database))
    clean_environ.setenv("UNRELATED_SETTING", "ignored")

    app = create_app()

    assert app.config["KLAVIYO_ENABLED"] is False
    assert app.config["KLAVIYO_STRICT"] is True
    assert app.config["KLAVIYO_COOKIE_SECURE"] is True
    assert app.config["KLAVIYO_API_URL"] == "http://127.0.0.1:9"
    assert app.config["KLAVIYO_QUEUE"] == "store-events"
    assert app.config["KLAVIYO_TIMEOUT"] == 2.5
    assert app.config["KLAVIYO_PUBLIC_API_KEY"] is None
    assert app.config["SECRET_KEY"] == "from-the-environment"
    assert app.config["STORE_ADMIN_PASSWORD"] == "correct horse"
    assert app.config["STORE_DATABASE"] == str(database)
    assert "UNRELATED_SETTING" not in app.config
    assert database.is_file()


def test_a_config_mapping_is_used_instead_of_the_environment(
    clean_environ: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    clean_environ.setenv("KLAVIYO_API_URL", "http://from-env.example")
    clean_environ.setenv("KLAVIYO_QUEUE", "from-env")
    clean_environ.setenv("SECRET_KEY", "from-env")
    clean_environ.setenv("STORE_ADMIN_PASSWORD", "from-env")
    clean_environ.setenv("STORE_DATABASE", str(tmp_path / "env.sqlite3"))
    instance = tmp_path / "instance"

    app = create_app(store_config(instance, SECRET_KEY="from-config", KLAVIYO_QUEUE="cfg"))

    assert app.config["SECRET_KEY"] == "from-config"
    assert app.config["KLAVIYO_QUEUE"] == "cfg"
    assert app.config["KLAVIYO_API_URL"] != "http://from-env.example"
    assert app.config["STORE_ADMIN_PASSWORD"] is None
    assert app.config["STORE_DATABASE"] == str(instance / "store.sqlite3")
    assert not (tmp_path / "env.sqlite3").exists()
    assert app.instance_path == str(instance)
    assert "instance_path" not in app.config


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("true", True), ("True", True), ("1", True), ("false", False), ("FALSE", False), ("0", False)],
)
def test_boolean_settings_from_the_environment(raw: str, expected: bool) -> None:
    names = ("KLAVIYO_ENABLED", "KLAVIYO_STRICT", "KLAVIYO_COOKIE_SECURE")
    settings = settings_from_environ({name: raw for name in names})
    assert settings == dict.fromkeys(names, expected)


def test_a_boolean_setting_that_is_not_a_boolean_is_an_error() -> None:
    with pytest.raises(ValueError, match="KLAVIYO_ENABLED"):
        settings_from_environ({"KLAVIYO_ENABLED": "sometimes"})


def test_string_booleans_in_a_config_mapping_are_read_as_booleans(tmp_path: Path) -> None:
    app = create_app(store_config(tmp_path / "instance", KLAVIYO_ENABLED="false"))
    assert app.config["KLAVIYO_ENABLED"] is False


def test_a_generated_secret_key_persists_in_the_instance_folder(
    clean_environ: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    instance = tmp_path / "instance"
    config = {"instance_path": str(instance), "TESTING": True, "KLAVIYO_ENABLED": False}

    web, worker = create_app(config), create_app(config)

    key = web.config["SECRET_KEY"]
    assert isinstance(key, str) and len(key) >= 32
    assert worker.config["SECRET_KEY"] == key
    key_file = instance / SECRET_KEY_FILE
    assert key_file.read_text().strip() == key
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    # what one process signs, the other reads
    first, second = web.test_client(), worker.test_client()
    first.post("/login", data={"email": "shopper@example.com"})
    cookie = first.get_cookie("session")
    assert cookie is not None
    second.set_cookie("session", cookie.value)
    assert "Signed in as <strong>shopper@example.com</strong>" in page(second.get("/"))
    # another instance folder is another store with its own key
    other = create_app({**config, "instance_path": str(tmp_path / "other")})
    assert other.config["SECRET_KEY"] != key


def test_a_given_secret_key_is_not_written_to_disk(tmp_path: Path) -> None:
    instance = tmp_path / "instance"
    app = create_app(store_config(instance, SECRET_KEY="given"))
    assert app.config["SECRET_KEY"] == "given"
    assert not (instance / SECRET_KEY_FILE).exists()


# -- the database -------------------------------------------------------------------------------


def test_database_is_created_under_the_instance_folder_and_seeded_once(tmp_path: Path) -> None:
    instance = tmp_path / "not" / "yet" / "there"
    app = create_app(store_config(instance))
    database = instance / "store.sqlite3"
    assert instance.is_dir()
    assert app.config["STORE_DATABASE"] == str(database)
    assert database.is_file()

    conn = sqlite3.connect(database)
    try:
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
        assert set(TABLES) <= tables
        assert conn.execute("SELECT count(*) FROM products").fetchone()[0] == len(SEED_PRODUCTS)
        with conn:
            conn.execute("UPDATE products SET price_cents = 1 WHERE id = ?", (SALE.id,))
    finally:
        conn.close()

    create_app(store_config(instance))  # again: no duplicates, the seed wins

    conn = sqlite3.connect(database)
    try:
        assert conn.execute("SELECT count(*) FROM products").fetchone()[0] == len(SEED_PRODUCTS)
        price = conn.execute("SELECT price_cents FROM products WHERE id = ?", (SALE.id,))
        assert price.fetchone()[0] == SALE.price_cents
    finally:
        conn.close()


def test_a_connection_lives_for_one_context_and_is_closed_at_teardown(app: Flask) -> None:
    with app.app_context():
        conn = get_db()
        assert get_db() is conn
        assert conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    with pytest.raises(sqlite3.ProgrammingError):
        conn.execute("SELECT 1")
    with app.app_context():
        assert get_db() is not conn


def test_product_rows_round_trip() -> None:
    row = {
        "id": "x",
        "sku": "X-1",
        "name": "X",
        "description": "",
        "price_cents": 100,
        "compare_at_cents": None,
        "brand": "B",
        "categories": '["A", "B"]',
        "image": "products/x.svg",
    }
    product = Product.from_row(row)
    assert product.categories == ("A", "B")
    assert product.on_sale is False


# -- the worker's view of the store --------------------------------------------------------------


def test_flask_cli_finds_the_store_and_its_klaviyo_commands(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KLAVIYO_", "STORE_"))}
    env.update(
        SECRET_KEY="cli-secret",
        KLAVIYO_ENABLED="false",
        STORE_DATABASE=str(tmp_path / "cli.sqlite3"),
    )
    done = subprocess.run(
        [sys.executable, "-m", "flask", "--app", "example_store", "klaviyo", "--help"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "worker" in done.stdout
    assert (tmp_path / "cli.sqlite3").is_file()  # create_app() ran with the environment


def test_the_login_form_on_an_error_page_after_a_post_returns_to_the_shop(
    client: FlaskClient,
) -> None:
    refused = page(client.post("/login", headers={"Origin": "https://evil.example"}))
    assert '<input type="hidden" name="next" value="/">' in refused
    on_a_page = page(client.get("/?category=Coffee"))
    assert '<input type="hidden" name="next" value="/?category=Coffee">' in on_a_page


# -- cart, checkout, orders, admin (tracking off: what the store does, not what it sends) -------

ADMIN = "admin-password"
SHOPPER = "shopper@klaviyo-demo.com"


def admin_auth(password: str = ADMIN, user: str = "admin") -> dict[str, str]:
    import base64

    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


@pytest.fixture
def shop(tmp_path: Path) -> Flask:
    return create_app(
        store_config(
            tmp_path / "instance",
            STORE_ADMIN_PASSWORD=ADMIN,
            STORE_PAYMENTS_AUTO_CALLBACK=False,
        )
    )


def checkout(client: FlaskClient, *products: str) -> str:
    """Add ``products`` (one each), give the email, place the order; returns its id."""
    for product_id in products:
        client.post("/cart/add", data={"product_id": product_id, "quantity": "1"})
    client.post("/checkout/email", data={"email": SHOPPER})
    placed = client.post("/checkout", data={"city": "Boston", "country_code": "us"})
    assert placed.status_code == 303, page(placed)
    return placed.location.rsplit("/", 1)[1]


def order_row(app: Flask, order_id: str) -> sqlite3.Row:
    conn = sqlite3.connect(app.config["STORE_DATABASE"])
    conn.row_factory = sqlite3.Row
    try:
        return conn.execute("SELECT * FROM orders WHERE id = ?", (order_id,)).fetchone()
    finally:
        conn.close()


def test_the_cart_keeps_lines_in_sqlite_under_a_session_cart_id(shop: Flask) -> None:
    client = shop.test_client()
    assert "Your cart is empty" in page(client.get("/cart"))
    with client:
        added = client.post("/cart/add", data={"product_id": SALE.id, "quantity": "2"})
        assert added.status_code == 303 and added.location == "/cart"
        client.post("/cart/add", data={"product_id": SALE.id, "quantity": "1"})
        client.post("/cart/add", data={"product_id": PLAIN.id})
        cart_id = session["cart_id"]
    html = page(client.get("/cart"))
    assert str(escape(SALE.name)) in html and str(escape(PLAIN.name)) in html
    total = 3 * SALE.price_cents + PLAIN.price_cents
    assert f"${total / 100:,.2f}" in html
    assert 'Cart <span class="cart-count">(4)</span>' in page(client.get("/"))
    with shop.app_context():
        rows = get_db().execute(
            "SELECT product_id, quantity FROM cart_items WHERE cart_id = ? ORDER BY id", (cart_id,)
        )
        assert [tuple(r) for r in rows] == [(SALE.id, 3), (PLAIN.id, 1)]
    # a quantity of 0 removes the line
    client.post("/cart/update", data={"product_id": SALE.id, "quantity": "0"})
    assert client.get("/api/cart").json["cart"]["item_count"] == 1


@pytest.mark.parametrize(
    ("form", "status"),
    [
        ({"product_id": "no-such-thing"}, 400),
        ({}, 400),
        ({"product_id": PLAIN.id, "quantity": "0"}, 400),
        ({"product_id": PLAIN.id, "quantity": "100"}, 400),
        ({"product_id": PLAIN.id, "quantity": "-1"}, 400),
        ({"product_id": PLAIN.id, "quantity": "two"}, 400),
    ],
)
def test_a_bad_add_to_cart_form_is_a_400_page(
    shop: Flask, form: dict[str, str], status: int
) -> None:
    client = shop.test_client()
    response = client.post("/cart/add", data=form)
    assert response.status_code == status
    assert str(escape("That didn't work")) in page(response)
    assert client.get("/api/cart").json["cart"]["items"] == []


@pytest.mark.parametrize(
    ("kwargs", "code"),
    [
        (
            {"data": "product_id=x", "content_type": "application/x-www-form-urlencoded"},
            "invalid_json",
        ),
        ({"data": "{nope", "content_type": "application/json"}, "invalid_json"),
        ({"json": ["house-blend"]}, "invalid_json"),
        ({"json": {}}, "invalid_product_id"),
        ({"json": {"product_id": 7}}, "invalid_product_id"),
        ({"json": {"product_id": "no-such-thing"}}, "unknown_product"),
        ({"json": {"product_id": "house-blend", "quantity": 0}}, "invalid_quantity"),
        ({"json": {"product_id": "house-blend", "quantity": 1.5}}, "invalid_quantity"),
        ({"json": {"product_id": "house-blend", "quantity": True}}, "invalid_quantity"),
        ({"json": {"product_id": "house-blend", "quantity": 100}}, "invalid_quantity"),
    ],
)
def test_a_bad_api_add_to_cart_is_a_json_400(
    shop: Flask, kwargs: dict[str, Any], code: str
) -> None:
    client = shop.test_client()
    response = client.post("/api/cart", **kwargs)
    assert response.status_code == 400
    assert response.json["error"] == code and response.json["message"]
    assert client.get("/api/cart").json["cart"]["items"] == []


def test_the_api_answers_the_cart_and_the_line_just_added(shop: Flask) -> None:
    client = shop.test_client()
    client.post("/api/cart", json={"product_id": SALE.id, "quantity": 2})
    body = client.post("/api/cart", json={"product_id": SALE.id}).json
    assert body["added_item"]["quantity"] == 1  # what was just added ...
    assert body["cart"]["items"][0]["quantity"] == 3  # ... and what the cart now holds
    assert body["cart"]["total_cents"] == 3 * SALE.price_cents
    assert body["cart"]["checkout_url"] == "http://localhost/checkout"
    assert body["added_item"]["product"]["url"] == f"http://localhost/products/{SALE.id}"


def test_checkout_needs_items_and_an_email(shop: Flask) -> None:
    client = shop.test_client()
    empty = client.get("/checkout")
    assert empty.status_code == 303 and empty.location == "/cart"
    assert client.post("/checkout", json={}).json["error"] == "empty_cart"
    client.post("/cart/add", data={"product_id": PLAIN.id})
    assert 'action="/checkout/email"' in page(client.get("/checkout"))
    assert "Place order" not in page(client.get("/checkout"))
    no_email = client.post("/checkout", json={})
    assert no_email.status_code == 400 and no_email.json["error"] == "email_required"
    bad = client.post("/checkout/email", data={"email": "not-an-email"}, follow_redirects=True)
    assert "Please enter a valid email address" in page(bad)
    with client:
        client.post("/checkout/email", data={"email": "  Shopper@Klaviyo-Demo.com "})
        assert session["checkout_email"] == SHOPPER
        assert "email" not in session  # giving an email at checkout is not logging in
    assert "Place order" in page(client.get("/checkout"))


def test_placing_an_order_copies_the_cart_as_sold_and_waits_for_payment(shop: Flask) -> None:
    client = shop.test_client()
    client.post("/cart/add", data={"product_id": SALE.id, "quantity": "2"})
    client.post("/checkout/email", data={"email": SHOPPER})
    placed = client.post(
        "/checkout",
        json={"shipping_address": {"first_name": "Ann", "city": "Boston", "country_code": "US"}},
    )
    assert placed.status_code == 201
    order_id = placed.json["order_id"]
    assert re.fullmatch(r"SP-[0-9A-F]{8}", order_id)
    assert placed.headers["Location"] == f"/orders/{order_id}"
    row = order_row(shop, order_id)
    assert row["status"] == "pending_payment"
    assert row["email"] == SHOPPER
    assert row["total_cents"] == 2 * SALE.price_cents
    assert row["payment_id"].startswith("pay_")
    assert json.loads(row["address"]) == {
        "first_name": "Ann",
        "city": "Boston",
        "country_code": "US",
        "country": "United States",
    }
    with shop.app_context():
        [line] = get_db().execute("SELECT * FROM order_items WHERE order_id = ?", (order_id,))
        assert (line["sku"], line["name"], line["quantity"]) == (SALE.sku, SALE.name, 2)
        assert line["unit_price_cents"] == SALE.price_cents
        assert json.loads(line["categories"]) == list(SALE.categories)
        assert line["product_url"] == f"http://localhost/products/{SALE.id}"
    # the cart is gone: a new visit starts a new one
    assert client.get("/api/cart").json["cart"]["items"] == []
    confirmation = page(client.get(f"/orders/{order_id}"))
    assert "Waiting for the payment provider" in confirmation
    assert 'http-equiv="refresh"' in confirmation


def test_an_order_page_is_only_for_the_shopper_who_placed_it_and_the_admin(shop: Flask) -> None:
    order_id = checkout(shop.test_client(), PLAIN.id)
    stranger = shop.test_client()
    assert stranger.get(f"/orders/{order_id}").status_code == 404
    assert stranger.get(f"/orders/{order_id}", headers=admin_auth()).status_code == 200
    assert stranger.get(f"/orders/{order_id}", headers=admin_auth("wrong")).status_code == 404


def test_the_admin_is_closed_without_a_password(app: Flask, client: FlaskClient) -> None:
    assert app.config["STORE_ADMIN_PASSWORD"] is None
    assert client.get("/admin/orders", headers=admin_auth("")).status_code == 404
    assert client.post("/admin/orders/SP-1/fulfill", headers=admin_auth("")).status_code == 404


def test_the_admin_needs_basic_auth(shop: Flask) -> None:
    client = shop.test_client()
    for headers in ({}, admin_auth("wrong"), admin_auth(user="root")):
        refused = client.get("/admin/orders", headers=headers)
        assert refused.status_code == 401
        assert refused.headers["WWW-Authenticate"].startswith("Basic realm=")
        assert client.post("/admin/orders/SP-1/fulfill", headers=headers).status_code == 401
    order_id = checkout(shop.test_client(), PLAIN.id)
    listing = client.get("/admin/orders", headers=admin_auth())
    assert listing.status_code == 200
    html = page(listing)
    assert order_id in html and SHOPPER in html and "pending payment" in html
    assert f'action="/admin/orders/{order_id}/cancel"' in html
    assert f'action="/admin/orders/{order_id}/fulfill"' not in html  # not paid yet


def test_admin_actions_follow_the_order_lifecycle(shop: Flask) -> None:
    client = shop.test_client()
    order_id = checkout(shop.test_client(), PLAIN.id)
    act = f"/admin/orders/{order_id}"
    json_admin = {**admin_auth(), "Accept": "application/json"}
    early = client.post(f"{act}/fulfill", headers=json_admin)
    assert early.status_code == 409 and early.json["error"] == "invalid_transition"
    assert client.post(f"{act}/refund", headers=admin_auth()).status_code == 409
    assert client.post(f"{act}/explode", headers=admin_auth()).status_code == 404
    assert client.post("/admin/orders/SP-NOPE/fulfill", headers=json_admin).status_code == 404

    with shop.app_context():  # what the payment webhook does
        from example_store.db import transaction
        from example_store.orders import transition

        with transaction() as db:
            assert transition(db, order_id, "pay")
    fulfilled = client.post(f"{act}/fulfill", headers=json_admin)
    assert fulfilled.json == {"order_id": order_id, "status": "fulfilled", "changed": True}
    again = client.post(f"{act}/fulfill", headers=json_admin)
    assert again.status_code == 200 and again.json["changed"] is False
    assert client.post(f"{act}/cancel", headers=json_admin).status_code == 409
    refunded = client.post(f"{act}/refund", data={"reason": " Damaged "}, headers=admin_auth())
    assert refunded.status_code == 303 and refunded.location == "/admin/orders"
    row = order_row(shop, order_id)
    assert (row["status"], row["status_reason"]) == ("refunded", "Damaged")


def test_the_simulated_provider_calls_back_even_if_the_shopper_left(
    tmp_path: Path, live_server: Any
) -> None:
    """A real HTTP server in a thread: after checkout the provider's background thread POSTs
    the signed webhook; nobody opens the confirmation page, and the order is paid."""
    from example_store import payments

    app = create_app(
        store_config(tmp_path / "instance", STORE_PAYMENTS_DELAY=0.05, STORE_ADMIN_PASSWORD=ADMIN)
    )
    with live_server(app) as base:
        import httpx

        with httpx.Client(base_url=base) as browser:
            browser.post("/api/cart", json={"product_id": PLAIN.id})
            browser.post("/checkout/email", data={"email": SHOPPER})
            order_id = browser.post("/checkout", json={}).json()["order_id"]
        # the tab is closed; the provider calls back by itself
        assert payments.wait_idle(timeout=20)
        assert order_row(app, order_id)["status"] == "paid"
        conn = sqlite3.connect(app.config["STORE_DATABASE"])
        try:
            [(kind, paid_order)] = conn.execute(
                "SELECT event_type, order_id FROM webhook_deliveries"
            ).fetchall()
        finally:
            conn.close()
        assert (kind, paid_order) == ("payment.succeeded", order_id)


def test_a_declined_card_is_a_failed_payment(tmp_path: Path) -> None:
    from example_store import payments

    app = create_app(store_config(tmp_path / "instance", STORE_PAYMENTS_AUTO_CALLBACK=False))
    with app.test_request_context():
        declined = payments.charge(
            order_id="SP-1",
            amount=100,
            currency="USD",
            email="ann+decline@shop.test",
            payment_id="pay_1",
            callback_url="http://localhost/webhooks/payments",
        )
        approved = payments.charge(
            order_id="SP-2",
            amount=100,
            currency="USD",
            email="ann@shop.test",
            payment_id="pay_2",
            callback_url="http://localhost/webhooks/payments",
        )
    assert declined.type == payments.PAYMENT_FAILED
    assert approved.type == payments.PAYMENT_SUCCEEDED
    assert declined.id != approved.id


def test_the_cli_delivers_the_payment_webhook(shop: Flask) -> None:
    order_id = checkout(shop.test_client(), PLAIN.id)
    runner = shop.test_cli_runner()
    first = runner.invoke(args=["payments", "deliver", order_id, "--id", "evt_cli_1"])
    assert first.exit_code == 0, first.output
    assert '"processed"' in first.output
    again = runner.invoke(args=["payments", "deliver", order_id, "--id", "evt_cli_1"])
    assert again.exit_code == 0 and '"duplicate"' in again.output
    assert order_row(shop, order_id)["status"] == "paid"
    missing = runner.invoke(args=["payments", "deliver", "SP-NOPE"])
    assert missing.exit_code != 0 and "no order" in missing.output


def test_the_webhook_secret_defaults_to_one_derived_from_the_secret_key(tmp_path: Path) -> None:
    one = create_app(store_config(tmp_path / "a"))
    two = create_app(store_config(tmp_path / "b"))
    other = create_app(store_config(tmp_path / "c", SECRET_KEY="another"))
    given = create_app(store_config(tmp_path / "d", KLAVIYO_WEBHOOK_SECRET="whsec_given"))
    secret = one.config["KLAVIYO_WEBHOOK_SECRET"]
    assert len(secret) == 64 and secret != one.config["SECRET_KEY"]
    assert two.config["KLAVIYO_WEBHOOK_SECRET"] == secret  # web process and workers agree
    assert other.config["KLAVIYO_WEBHOOK_SECRET"] != secret
    assert given.config["KLAVIYO_WEBHOOK_SECRET"] == "whsec_given"
    assert not list((tmp_path / "a").glob("*secret*"))  # nothing written


def test_store_settings_from_the_environment_are_typed() -> None:
    settings = settings_from_environ(
        {
            "STORE_PAYMENTS_AUTO_CALLBACK": "false",
            "STORE_PAYMENTS_DELAY": "0.5",
            "STORE_PAYMENTS_CALLBACK_URL": "http://127.0.0.1:5000/webhooks/payments",
            "STORE_WEBHOOK_MAX_BYTES": "1024",
            "STORE_WEBHOOK_TOLERANCE": "60",
        }
    )
    assert settings == {
        "STORE_PAYMENTS_AUTO_CALLBACK": False,
        "STORE_PAYMENTS_DELAY": 0.5,
        "STORE_PAYMENTS_CALLBACK_URL": "http://127.0.0.1:5000/webhooks/payments",
        "STORE_WEBHOOK_MAX_BYTES": 1024,
        "STORE_WEBHOOK_TOLERANCE": 60,
    }


def test_the_defaults_of_the_store_settings(app: Flask) -> None:
    assert app.config["STORE_PAYMENTS_AUTO_CALLBACK"] is True
    assert app.config["STORE_PAYMENTS_CALLBACK_URL"] is None
    assert app.config["STORE_WEBHOOK_MAX_BYTES"] == 64 * 1024
    assert app.config["STORE_WEBHOOK_TOLERANCE"] == 300


def test_a_database_from_the_first_schema_gets_the_new_columns(tmp_path: Path) -> None:
    """The first release created carts/orders/order_items without the columns orders need now:
    start-up adds them and keeps the rows."""
    database = tmp_path / "old.sqlite3"
    conn = sqlite3.connect(database)
    conn.executescript(
        """
        CREATE TABLE carts (id TEXT PRIMARY KEY, email TEXT, status TEXT NOT NULL DEFAULT 'open',
            created_at TEXT NOT NULL, updated_at TEXT NOT NULL);
        CREATE TABLE orders (id TEXT PRIMARY KEY, cart_id TEXT, email TEXT NOT NULL,
            status TEXT NOT NULL DEFAULT 'pending', total_cents INTEGER NOT NULL,
            discount_code TEXT, discount_cents INTEGER NOT NULL DEFAULT 0, address TEXT,
            created_at TEXT NOT NULL, updated_at TEXT NOT NULL);
        CREATE TABLE order_items (id INTEGER PRIMARY KEY AUTOINCREMENT, order_id TEXT NOT NULL,
            product_id TEXT NOT NULL, sku TEXT, name TEXT NOT NULL, quantity INTEGER NOT NULL,
            unit_price_cents INTEGER NOT NULL);
        INSERT INTO carts VALUES ('c1', NULL, 'open', '2026-01-01', '2026-01-01');
        """
    )
    conn.close()
    app = create_app(store_config(tmp_path / "instance", STORE_DATABASE=str(database)))
    with app.app_context():
        db = get_db()
        for table, column, _ in ADDED_COLUMNS:
            names = {row["name"] for row in db.execute(f"PRAGMA table_info({table})")}
            assert column in names, (table, column)
        assert db.execute("SELECT id, revision FROM carts").fetchall()[0][:] == ("c1", 0)
    create_app(store_config(tmp_path / "instance", STORE_DATABASE=str(database)))  # idempotent


def test_json_clients_get_json_errors(client: FlaskClient) -> None:
    missing = client.get("/api/nothing-here")
    assert missing.status_code == 404 and missing.json["error"] == "not_found"
    html = client.get("/nothing-here")
    assert html.status_code == 404 and html.mimetype == "text/html"
    asked = client.get("/nothing-here", headers={"Accept": "application/json"})
    assert asked.json["error"] == "not_found"


def test_cross_site_posts_are_refused_but_the_signed_webhook_is_not_a_browser_form(
    client: FlaskClient,
) -> None:
    evil = {"Origin": "https://evil.example"}
    assert client.post("/cart/add", data={"product_id": PLAIN.id}, headers=evil).status_code == 403
    assert client.post("/api/cart", json={"product_id": PLAIN.id}, headers=evil).status_code == 403
    assert client.post("/checkout", headers=evil).status_code == 403
    webhook = client.post(
        "/webhooks/payments", data=b"{}", headers={**evil, "Content-Type": "application/json"}
    )
    assert webhook.status_code == 400 and webhook.json["error"] == "missing_signature"


def test_the_defaults_of_the_newsletter_and_account_settings(app: Flask) -> None:
    assert app.config["STORE_NEWSLETTER_LIST_ID"] == "NEWSLTR"
    assert app.config["STORE_PASSWORD_RESET_MAX_AGE"] == 3600
    with app.app_context():
        tables = {row[0] for row in get_db().execute("SELECT name FROM sqlite_master")}
    assert {"accounts", "newsletter_signups"} <= tables


def test_a_cart_from_before_variants_keeps_its_lines_and_takes_variants(tmp_path: Path) -> None:
    """Cart lines were one per product (UNIQUE (cart_id, product_id)); start-up widens the key
    to the variant, keeping the lines, which still load (with the product's own SKU)."""
    database = tmp_path / "carts.sqlite3"
    create_app(store_config(tmp_path / "instance", STORE_DATABASE=str(database)))
    conn = sqlite3.connect(database)
    conn.executescript(
        f"""
        DROP TABLE cart_items;
        CREATE TABLE cart_items (id INTEGER PRIMARY KEY AUTOINCREMENT,
            cart_id TEXT NOT NULL REFERENCES carts(id) ON DELETE CASCADE,
            product_id TEXT NOT NULL REFERENCES products(id),
            quantity INTEGER NOT NULL CHECK (quantity > 0),
            unit_price_cents INTEGER NOT NULL, UNIQUE (cart_id, product_id));
        INSERT INTO carts (id, status, created_at, updated_at)
            VALUES ('c1', 'open', '2026-01-01', '2026-01-01');
        INSERT INTO cart_items (cart_id, product_id, quantity, unit_price_cents)
            VALUES ('c1', '{PLAIN.id}', 2, {PLAIN.price_cents});
        """
    )
    conn.commit()
    conn.close()
    app = create_app(store_config(tmp_path / "instance", STORE_DATABASE=str(database)))
    client = app.test_client()
    with client.session_transaction() as stored:
        stored["cart_id"] = "c1"
    [old] = client.get("/api/cart").json["cart"]["items"]
    assert (old["product_id"], old["sku"], old["quantity"]) == (PLAIN.id, PLAIN.sku, 2)
    added = client.post("/api/cart", json={"product_id": PLAIN.id, "quantity": 1})
    assert added.status_code == 200
    assert [i["quantity"] for i in added.json["cart"]["items"]] == [2, 1]  # a line per variant
    create_app(store_config(tmp_path / "instance", STORE_DATABASE=str(database)))  # idempotent
