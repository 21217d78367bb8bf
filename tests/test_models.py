"""Models: coercion from the shapes storefronts already have, totals, addresses, order profiles."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from types import SimpleNamespace
from typing import Any

import pytest

from flask_klaviyo.exceptions import KlaviyoSchemaError
from flask_klaviyo.models import Address, Cart, LineItem, Order, Product, sum_money

WINNIE = Product(
    id="1111",
    name="Winnie the Pooh",
    price=9.99,
    sku="WINNIEPOOH",
    categories=["Fiction", "Children"],
    brand="Kids Books",
)
TALE = Product(
    id="1112",
    name="A Tale of Two Cities",
    price=19.99,
    sku="TALEOFTWO",
    categories=["Fiction", "Classics"],
    brand="Harcourt Classics",
)


# -- Product ---------------------------------------------------------------------------------


def test_product_coerce_from_dict_with_alternative_names() -> None:
    product = Product.coerce(
        {
            "product_id": 1111,
            "title": "Winnie the Pooh",
            "Price": Decimal("9.99"),
            "SKU": "WINNIEPOOH",
            "product_url": "https://shop.test/p/1111",
            "image": "https://shop.test/i/1111.png",
            "category": "Children",
            "vendor": "Kids Books",
            "compare_at_price": 14.99,
        }
    )
    assert product == Product(
        id="1111",  # database ints become the string ids Klaviyo's examples use
        name="Winnie the Pooh",
        price=Decimal("9.99"),
        sku="WINNIEPOOH",
        url="https://shop.test/p/1111",
        image_url="https://shop.test/i/1111.png",
        categories=["Children"],  # a single category string becomes a list
        brand="Kids Books",
        compare_at_price=14.99,
    )


def test_product_coerce_from_klaviyo_spelling() -> None:
    product = Product.coerce(
        {"ProductID": "9", "ProductName": "Pen", "Price": 2, "ImageURL": "https://i.test/9"}
    )
    assert (product.id, product.name, product.price, product.image_url) == (
        "9",
        "Pen",
        2,
        "https://i.test/9",
    )


def test_product_coerce_from_object_attributes() -> None:
    class Row:
        """An ORM-like row whose ``url`` is a method: methods are never called."""

        id = 7
        name = "Mug"
        price = Decimal("12.50")
        sku = "MUG-1"
        categories = (SimpleNamespace(name="Kitchen"), "Gifts")
        brand = None
        vendor = "Acme"

        def url(self) -> str:  # pragma: no cover - must not be called
            raise AssertionError("called")

    product = Product.coerce(Row())
    assert product.id == "7"
    assert product.price == Decimal("12.50")
    assert product.categories == ["Kitchen", "Gifts"]
    assert product.brand == "Acme"  # brand missing, vendor used
    assert product.url is None


@pytest.mark.parametrize(
    "converted",
    [
        Product(id="5", name="Lamp", price=30),
        {"id": "5", "name": "Lamp", "price": 30},
    ],
)
def test_product_coerce_uses_to_klaviyo_product(converted: Any) -> None:
    class Model:
        id = "not-this-one"

        def to_klaviyo_product(self) -> Any:
            return converted

    product = Product.coerce(Model())
    assert (product.id, product.name, product.price) == ("5", "Lamp", 30)


def test_product_coerce_returns_a_product_unchanged() -> None:
    assert Product.coerce(WINNIE) is WINNIE


@pytest.mark.parametrize(
    ("raw", "field"),
    [({"name": "No id"}, "id"), ({"id": "1"}, "name"), ({"id": "1", "title": ""}, "name")],
)
def test_product_coerce_missing_id_or_name(raw: dict[str, Any], field: str) -> None:
    with pytest.raises(KlaviyoSchemaError) as caught:
        Product.coerce(raw)
    assert caught.value.metric == "Product"
    assert caught.value.field == field


def test_product_coerce_keeps_a_string_price_unconverted() -> None:
    # A str price is a caller bug that validation must report, not a value to guess at.
    assert Product.coerce({"id": "1", "name": "x", "price": "9.99"}).price == "9.99"


# -- LineItem --------------------------------------------------------------------------------


def test_line_item_price_defaults_to_product_price_and_row_total() -> None:
    line = LineItem(TALE, quantity=3)
    assert line.price == 19.99
    assert line.row_total == pytest.approx(59.97)
    assert LineItem(TALE, quantity=2, price=15).row_total == 30


def test_line_item_row_total_with_decimal() -> None:
    product = Product(id="1", name="x", price=Decimal("0.10"))
    assert LineItem(product, quantity=3).row_total == Decimal("0.30")


@pytest.mark.parametrize(("price", "quantity"), [("9.99", 1), (None, 1), (9.99, "2"), (9.99, True)])
def test_line_item_row_total_is_none_when_not_computable(price: Any, quantity: Any) -> None:
    product = Product(id="1", name="x", price=price)
    assert LineItem(product, quantity=quantity).row_total is None


def test_line_item_coerce_nested_and_flat() -> None:
    nested = LineItem.coerce(
        {"id": 55, "product": {"id": "1111", "name": "Winnie"}, "qty": 2, "unit_price": 8}
    )
    assert (nested.id, nested.product.id, nested.quantity, nested.price) == ("55", "1111", 2, 8)

    flat = LineItem.coerce({"id": "1111", "name": "Winnie", "price": 9.99, "quantity": 4})
    # In a flat line "id" and "price" are the product's; the line price defaults to it.
    assert (flat.id, flat.product.id, flat.quantity, flat.price) == (None, "1111", 4, 9.99)

    obj = LineItem.coerce(SimpleNamespace(product=TALE, quantity=1, line_id="L1"))
    assert obj.product is TALE
    assert obj.id == "L1"


# -- Cart ------------------------------------------------------------------------------------


def test_cart_total_names_and_categories() -> None:
    cart = Cart(id="c1", items=[LineItem(WINNIE), LineItem(TALE, quantity=2)])
    assert cart.total == pytest.approx(9.99 + 2 * 19.99)
    assert cart.item_names == ["Winnie the Pooh", "A Tale of Two Cities"]
    assert cart.categories == ["Fiction", "Children", "Classics"]  # union, first-seen order


def test_cart_total_mixes_decimal_and_float_without_error() -> None:
    decimal_line = LineItem(Product(id="1", name="a", price=Decimal("1.10")), quantity=2)
    float_line = LineItem(Product(id="2", name="b", price=0.5))
    assert Cart(id="c", items=[decimal_line]).total == Decimal("2.20")
    assert Cart(id="c", items=[decimal_line, float_line]).total == pytest.approx(2.7)


def test_cart_total_is_none_when_a_price_is_a_string() -> None:
    bad = LineItem(Product(id="1", name="a", price="9.99"))
    assert Cart(id="c", items=[LineItem(WINNIE), bad]).total is None


def test_cart_coerce_from_dict_and_object() -> None:
    cart = Cart.coerce(
        {
            "cart_id": 42,
            "line_items": [{"product": {"id": "1111", "name": "Winnie", "price": 9.99}}],
            "checkout_url": "https://shop.test/checkout",
        }
    )
    assert cart.id == "42"
    assert cart.items[0].product.name == "Winnie"
    assert cart.checkout_url == "https://shop.test/checkout"
    cart2 = Cart.coerce(SimpleNamespace(token="t1", items=[LineItem(WINNIE)], checkout_url=None))
    assert (cart2.id, cart2.total) == ("t1", 9.99)


def test_cart_coerce_without_id() -> None:
    with pytest.raises(KlaviyoSchemaError) as caught:
        Cart.coerce({"items": []})
    assert (caught.value.metric, caught.value.field) == ("Cart", "id")


def test_sum_money_rejects_non_money() -> None:
    assert sum_money([1, 2]) == 3
    assert sum_money([]) == 0
    assert sum_money([1, "2"]) is None
    assert sum_money([1, True]) is None


# -- Address ---------------------------------------------------------------------------------


def test_address_to_properties_only_known_values_with_klaviyo_names() -> None:
    address = Address(
        first_name="John",
        last_name="Smith",
        company="",
        address1="123 Abc St",
        city="Boston",
        region_code="MA",
        country_code="US",
        zip="02110",
        phone="+15551234567",
    )
    assert address.to_properties() == {
        "FirstName": "John",
        "LastName": "Smith",
        "Address1": "123 Abc St",
        "City": "Boston",
        "RegionCode": "MA",
        "CountryCode": "US",
        "Zip": "02110",
        "Phone": "+15551234567",
    }
    assert Address().to_properties() == {}


def test_address_to_properties_every_field() -> None:
    names = [
        "first_name",
        "last_name",
        "company",
        "address1",
        "address2",
        "city",
        "region",
        "region_code",
        "country",
        "country_code",
        "zip",
        "phone",
    ]
    properties = Address(**{name: name.upper() for name in names}).to_properties()
    assert sorted(properties) == sorted(
        [
            "FirstName",
            "LastName",
            "Company",
            "Address1",
            "Address2",
            "City",
            "Region",
            "RegionCode",
            "Country",
            "CountryCode",
            "Zip",
            "Phone",
        ]
    )
    assert properties["RegionCode"] == "REGION_CODE"


def test_address_coerce_from_dict_with_common_names() -> None:
    address = Address.coerce({"line1": "1 Main St", "state": "MA", "postal_code": "02110"})
    assert address == Address(address1="1 Main St", region="MA", zip="02110")
    assert Address.coerce(None) is None


# -- Order -----------------------------------------------------------------------------------


def test_order_total_defaults_to_rows_minus_discount() -> None:
    order = Order(id="1", items=[LineItem(WINNIE), LineItem(TALE)], discount_value=5)
    assert order.total == pytest.approx(24.98)
    explicit = Order(id="1", items=[LineItem(WINNIE), LineItem(TALE)], total=29.98)
    assert explicit.total == 29.98
    decimal = Order(
        id="1",
        items=[LineItem(Product(id="1", name="a", price=Decimal("10.00")))],
        discount_value=Decimal("2.50"),
    )
    assert decimal.total == Decimal("7.50")


def test_order_total_is_none_when_uncomputable() -> None:
    bad = LineItem(Product(id="1", name="a", price="9.99"))
    assert Order(id="1", items=[bad]).total is None
    assert Order(id="1", items=[LineItem(WINNIE)], discount_value="5").total is None


def test_order_categories_brands_names() -> None:
    order = Order(id="1", items=[LineItem(WINNIE), LineItem(TALE), LineItem(WINNIE)])
    assert order.categories == ["Fiction", "Children", "Classics"]
    assert order.brands == ["Kids Books", "Harcourt Classics"]
    assert order.item_names == ["Winnie the Pooh", "A Tale of Two Cities", "Winnie the Pooh"]


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        (
            {"email": "a@shop.test", "first_name": "Ann", "external_id": "u1"},
            {"email": "a@shop.test", "first_name": "Ann", "external_id": "u1"},
        ),
        (
            {"phone_number": "+15551234567", "external_id": "u1"},
            {"phone_number": "+15551234567", "external_id": "u1"},
        ),
        # external_id alone would create a profile that never merges (seed 002): left out.
        ({"external_id": "u1", "first_name": "Ann"}, {"first_name": "Ann"}),
        ({"email": "", "last_name": None}, {}),
    ],
)
def test_order_profile_rules(fields: dict[str, Any], expected: dict[str, Any]) -> None:
    assert Order(id="1", **fields).profile() == expected


def test_order_coerce_from_dict_with_nested_customer_and_addresses() -> None:
    placed = datetime(2022, 11, 8, tzinfo=UTC)
    order = Order.coerce(
        {
            "order_id": 1234,
            "customer": {"email": "sarah@shop.test", "first_name": "Sarah", "external_id": 77},
            "line_items": [{"product": WINNIE, "quantity": 2}],
            "currency": "EUR",
            "discount_code": "SAVE",
            "discount": 1,
            "billing_address": {"first_name": "Sarah", "city": "Boston"},
            "shipping_address": Address(address1="1 Main St"),
            "created_at": placed,
        }
    )
    assert order.id == "1234"
    assert order.profile() == {
        "email": "sarah@shop.test",
        "first_name": "Sarah",
        "external_id": "77",
    }
    assert order.total == pytest.approx(2 * 9.99 - 1)
    assert order.currency == "EUR"
    assert order.billing_address == Address(first_name="Sarah", city="Boston")
    assert order.shipping_address == Address(address1="1 Main St")
    assert order.placed_at == placed


def test_order_coerce_from_object() -> None:
    @dataclass
    class ShopOrder:
        number: str
        email: str
        lines: list[Any]
        total_price: Decimal

    order = Order.coerce(ShopOrder("A-1", "b@shop.test", [LineItem(TALE)], Decimal("19.99")))
    assert (order.id, order.email, order.total, len(order.items)) == (
        "A-1",
        "b@shop.test",
        Decimal("19.99"),
        1,
    )


def test_order_coerce_without_id() -> None:
    with pytest.raises(KlaviyoSchemaError) as caught:
        Order.coerce({"email": "a@shop.test"})
    assert (caught.value.metric, caught.value.field) == ("Order", "id")
