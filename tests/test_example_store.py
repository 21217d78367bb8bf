"""The demo storefront: catalog, product pages, login, configuration, database.

Tracking is off here (``KLAVIYO_ENABLED=False``) so nothing needs Redis: what the store hands the
extension is checked through ``to_klaviyo_product()`` and ``flask_klaviyo.models.Product``; the
tracking itself is tested in the extension's own tests and the journeys.
"""

from __future__ import annotations

import os
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
from example_store.db import TABLES, get_db
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
        assert 'id="login-email"' in html  # the full store layout, not a bare error

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
            assert 'id="login-email"' not in html

            response = self.client.post("/logout", data={"next": "/"})
            self.assertStatus(response, 303)
            assert "email" not in session
            assert 'id="login-email"' in page(self.client.get("/"))

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
