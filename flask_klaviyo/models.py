"""The storefront's nouns as Klaviyo's ecommerce metrics see them: Product, LineItem, Cart, Order.

These are plain dataclasses. They do not validate: a merchant's data is checked once, on the
built event (:func:`flask_klaviyo.events.validate_event`), where an error can name the exact
Klaviyo field. ``coerce`` accepts the shapes storefronts already have (dicts, ORM rows, objects
with a ``to_klaviyo_product()`` method) so views can hand over what they render.

Money may be ``int``, ``float`` or ``Decimal``. A ``str`` price is kept as it is (never parsed):
it must surface as a schema error rather than be guessed at. Totals that cannot be computed
from such values are ``None``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from .exceptions import KlaviyoSchemaError

__all__ = [
    "Address",
    "Cart",
    "LineItem",
    "Money",
    "Order",
    "Product",
    "is_money",
    "sum_money",
]

Money = int | float | Decimal

# The names storefronts commonly use for each field, first match wins.
PRODUCT_ID_NAMES = ("id", "product_id", "ProductID", "productId")
PRODUCT_NAME_NAMES = ("name", "title", "ProductName")
PRODUCT_PRICE_NAMES = ("price", "Price")
PRODUCT_SKU_NAMES = ("sku", "SKU")
PRODUCT_URL_NAMES = ("url", "product_url", "URL", "ProductURL")
PRODUCT_IMAGE_NAMES = ("image_url", "image", "ImageURL")
PRODUCT_CATEGORY_NAMES = ("categories", "category", "Categories")
PRODUCT_BRAND_NAMES = ("brand", "vendor", "Brand")
PRODUCT_COMPARE_NAMES = ("compare_at_price", "CompareAtPrice")

LINE_PRODUCT_NAMES = ("product",)
LINE_QUANTITY_NAMES = ("quantity", "qty", "Quantity")
LINE_PRICE_NAMES = ("unit_price", "item_price", "ItemPrice")
LINE_ID_NAMES = ("line_id", "line_item_id")
LINE_ITEMS_NAMES = ("items", "line_items", "lines", "Items")

CART_ID_NAMES = ("id", "cart_id", "token")
CHECKOUT_URL_NAMES = ("checkout_url", "CheckoutURL")

ORDER_ID_NAMES = ("id", "order_id", "OrderId", "number")
ORDER_CUSTOMER_NAMES = ("customer", "user")
ORDER_TOTAL_NAMES = ("total", "total_price", "grand_total")
ORDER_DISCOUNT_CODE_NAMES = ("discount_code", "DiscountCode")
ORDER_DISCOUNT_VALUE_NAMES = ("discount_value", "discount_total", "discount", "DiscountValue")
ORDER_PLACED_AT_NAMES = ("placed_at", "created_at")

ADDRESS_NAMES: dict[str, tuple[str, ...]] = {
    "first_name": ("first_name", "FirstName"),
    "last_name": ("last_name", "LastName"),
    "company": ("company", "Company"),
    "address1": ("address1", "Address1", "line1"),
    "address2": ("address2", "Address2", "line2"),
    "city": ("city", "City"),
    "region": ("region", "state", "province", "Region"),
    "region_code": ("region_code", "state_code", "province_code", "RegionCode"),
    "country": ("country", "Country"),
    "country_code": ("country_code", "CountryCode"),
    "zip": ("zip", "postal_code", "postcode", "Zip"),
    "phone": ("phone", "Phone"),
}
# Klaviyo's spelling of each Address field inside event properties (seed 001's BillingAddress).
ADDRESS_PROPERTY_NAMES = {
    "first_name": "FirstName",
    "last_name": "LastName",
    "company": "Company",
    "address1": "Address1",
    "address2": "Address2",
    "city": "City",
    "region": "Region",
    "region_code": "RegionCode",
    "country": "Country",
    "country_code": "CountryCode",
    "zip": "Zip",
    "phone": "Phone",
}


def is_money(value: Any) -> bool:
    """True for a number a total can be computed from (bool is an int but never money)."""
    return isinstance(value, int | float | Decimal) and not isinstance(value, bool)


def sum_money(values: Iterable[Any]) -> Money | None:
    """Add amounts without mixing Decimal and float (which raises); None if one is not money."""
    amounts = list(values)
    if not all(is_money(v) for v in amounts):
        return None
    try:
        if any(isinstance(v, float) for v in amounts):
            return sum((float(v) for v in amounts), 0.0)
        return sum(amounts, Decimal(0) if any(isinstance(v, Decimal) for v in amounts) else 0)
    except (ArithmeticError, ValueError):  # Decimal infinities that cancel, a signaling NaN
        return None


def _subtract(total: Money, discount: Money) -> Money:
    if isinstance(total, float) or isinstance(discount, float):
        return float(total) - float(discount)
    if isinstance(total, Decimal) or isinstance(discount, Decimal):
        return Decimal(total) - Decimal(discount)
    return total - discount


def _pick(source: Any, names: Sequence[str]) -> Any:
    """The first non-empty value under any of ``names``; methods are never called."""
    if isinstance(source, (dict, Mapping)):  # dict first: no ABC check for the common case
        for name in names:
            value = source.get(name)
            if value is not None and value != "":
                return value
        return None
    for name in names:
        value = getattr(source, name, None)
        if callable(value) and not isinstance(value, type):
            continue
        if value is not None and value != "":
            return value
    return None


def _identifier(value: Any) -> Any:
    """Database ids are often ints; Klaviyo's examples (and catalog matching) use strings."""
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return value


def _category_list(value: Any) -> list[str]:
    """Categories may come as one string, a list of strings or a list of category objects."""
    if value is None or value == "":
        return []
    if isinstance(value, str) or not isinstance(value, Iterable) or isinstance(value, bytes):
        return [value]  # not a list of categories: validation names it
    names: list[str] = []
    for item in value:
        if isinstance(item, str):
            names.append(item)
        else:
            name = _pick(item, ("name", "title"))
            names.append(str(name if name is not None else item))
    return names


def union(groups: Iterable[Iterable[Any]]) -> list[Any]:
    """Each item once, in first-seen order; an unhashable one (a brand given as a list) is kept
    for validation to name."""
    seen: dict[Any, Any] = {}
    for group in groups:
        for item in group:
            try:
                seen.setdefault((True, item), item)
            except TypeError:
                seen.setdefault((False, repr(item)), item)
    return list(seen.values())


@dataclass
class Product:
    """One catalog product as Viewed Product and the Items arrays describe it."""

    id: str
    name: str
    price: Money | None
    sku: str | None = None
    url: str | None = None
    image_url: str | None = None
    categories: Sequence[str] = ()
    brand: str | None = None
    compare_at_price: Money | None = None

    @classmethod
    def coerce(cls, obj: Any) -> Product:
        """Accept whatever a view renders: Product, mapping, ORM row, ``to_klaviyo_product()``."""
        if isinstance(obj, Product):
            return obj
        convert = getattr(obj, "to_klaviyo_product", None)
        if callable(convert):
            return cls.coerce(convert())
        product_id = _identifier(_pick(obj, PRODUCT_ID_NAMES))
        if product_id is None:
            raise KlaviyoSchemaError("Product", "id", f"no product id in {type(obj).__name__}")
        name = _pick(obj, PRODUCT_NAME_NAMES)
        if name is None:
            raise KlaviyoSchemaError("Product", "name", f"product {product_id!r} has no name")
        return cls(
            id=product_id,
            name=name,
            price=_pick(obj, PRODUCT_PRICE_NAMES),
            sku=_pick(obj, PRODUCT_SKU_NAMES),
            url=_pick(obj, PRODUCT_URL_NAMES),
            image_url=_pick(obj, PRODUCT_IMAGE_NAMES),
            categories=_category_list(_pick(obj, PRODUCT_CATEGORY_NAMES)),
            brand=_pick(obj, PRODUCT_BRAND_NAMES),
            compare_at_price=_pick(obj, PRODUCT_COMPARE_NAMES),
        )


@dataclass
class LineItem:
    """A product in a cart or order; ``price`` is the unit price actually charged."""

    product: Product
    quantity: int = 1
    price: Money | None = None
    id: str | None = None

    def __post_init__(self) -> None:
        if self.price is None:
            self.price = self.product.price

    @property
    def row_total(self) -> Money | None:
        """Unit price times quantity; None when either is not a number (validation says which)."""
        if not is_money(self.price) or not isinstance(self.quantity, int):
            return None
        if isinstance(self.quantity, bool):
            return None
        try:
            return self.price * self.quantity
        except (ArithmeticError, ValueError):  # a signaling NaN, infinity times 0, too large
            return None

    @classmethod
    def coerce(cls, obj: Any) -> LineItem:
        """A line with a nested ``product``, or a flat line that is itself the product."""
        if isinstance(obj, LineItem):
            return obj
        nested = _pick(obj, LINE_PRODUCT_NAMES)
        quantity = _pick(obj, LINE_QUANTITY_NAMES)
        if nested is not None:
            product = Product.coerce(nested)
            price = _pick(obj, (*LINE_PRICE_NAMES, "price"))
            line_id = _pick(obj, (*LINE_ID_NAMES, "id"))
        else:
            # Flat: "id" and "price" belong to the product; only explicit line keys are the line's.
            product = Product.coerce(obj)
            price = _pick(obj, LINE_PRICE_NAMES)
            line_id = _pick(obj, LINE_ID_NAMES)
        return cls(
            product=product,
            quantity=1 if quantity is None else quantity,
            price=price,
            id=_identifier(line_id),
        )


def _line_items(obj: Any, kind: str) -> list[LineItem]:
    lines = _pick(obj, LINE_ITEMS_NAMES)
    if lines is None:
        return []
    if isinstance(lines, str | bytes | Mapping) or not isinstance(lines, Iterable):
        got = type(lines).__name__
        raise KlaviyoSchemaError(kind, "items", f"must be a list of lines, got {got}")
    return [LineItem.coerce(line) for line in lines]


@dataclass
class Cart:
    """A shopper's cart, the subject of Added to Cart and Started Checkout."""

    id: str
    items: list[LineItem] = field(default_factory=list)
    checkout_url: str | None = None

    @property
    def total(self) -> Money | None:
        return sum_money(line.row_total for line in self.items)

    @property
    def item_names(self) -> list[str]:
        return [line.product.name for line in self.items]

    @property
    def categories(self) -> list[str]:
        """Every item's categories once, in first-seen order (Started Checkout's Categories)."""
        return union(line.product.categories for line in self.items)

    @classmethod
    def coerce(cls, obj: Any) -> Cart:
        if isinstance(obj, Cart):
            return obj
        cart_id = _identifier(_pick(obj, CART_ID_NAMES))
        if cart_id is None:
            raise KlaviyoSchemaError("Cart", "id", f"no cart id in {type(obj).__name__}")
        return cls(
            id=cart_id,
            items=_line_items(obj, "Cart"),
            checkout_url=_pick(obj, CHECKOUT_URL_NAMES),
        )


@dataclass
class Address:
    """A billing or shipping address as it appears inside order events."""

    first_name: str | None = None
    last_name: str | None = None
    company: str | None = None
    address1: str | None = None
    address2: str | None = None
    city: str | None = None
    region: str | None = None
    region_code: str | None = None
    country: str | None = None
    country_code: str | None = None
    zip: str | None = None
    phone: str | None = None

    def to_properties(self) -> dict[str, Any]:
        """Klaviyo's key names, known values only (an empty Company says nothing)."""
        return {
            prop: getattr(self, attr)
            for attr, prop in ADDRESS_PROPERTY_NAMES.items()
            if getattr(self, attr) not in (None, "")
        }

    @classmethod
    def coerce(cls, obj: Any) -> Address | None:
        if obj is None or isinstance(obj, Address):
            return obj
        return cls(**{attr: _pick(obj, names) for attr, names in ADDRESS_NAMES.items()})


@dataclass
class Order:
    """A placed order: Placed Order, Ordered Product and the fulfilment metrics describe it."""

    id: str
    items: list[LineItem] = field(default_factory=list)
    email: str | None = None
    phone_number: str | None = None
    first_name: str | None = None
    last_name: str | None = None
    external_id: str | None = None
    total: Money | None = None
    currency: str | None = None
    discount_code: str | None = None
    discount_value: Money | None = None
    billing_address: Address | None = None
    shipping_address: Address | None = None
    placed_at: datetime | None = None

    def __post_init__(self) -> None:
        if self.total is None:
            self.total = self._computed_total()

    def _computed_total(self) -> Money | None:
        subtotal = sum_money(line.row_total for line in self.items)
        if subtotal is None or self.discount_value is None:
            return subtotal
        if not is_money(self.discount_value):
            return None
        try:
            return _subtract(subtotal, self.discount_value)
        except (ArithmeticError, ValueError):
            return None

    @property
    def categories(self) -> list[str]:
        return union(line.product.categories for line in self.items)

    @property
    def brands(self) -> list[str]:
        return union([line.product.brand] for line in self.items if line.product.brand)

    @property
    def item_names(self) -> list[str]:
        return [line.product.name for line in self.items]

    def profile(self) -> dict[str, Any]:
        """The order's own Klaviyo profile: known values only.

        ``external_id`` goes only with an email or phone: on its own it creates a profile that
        never merges with the shopper's (seed 002).
        """
        known = {
            key: value
            for key in ("email", "phone_number", "first_name", "last_name")
            if (value := getattr(self, key)) not in (None, "")
        }
        if self.external_id not in (None, "") and ("email" in known or "phone_number" in known):
            known["external_id"] = self.external_id
        return known

    @classmethod
    def coerce(cls, obj: Any) -> Order:
        """Accept a mapping or ORM row; customer details may sit on a nested ``customer``."""
        if isinstance(obj, Order):
            return obj
        order_id = _identifier(_pick(obj, ORDER_ID_NAMES))
        if order_id is None:
            raise KlaviyoSchemaError("Order", "id", f"no order id in {type(obj).__name__}")
        customer = _pick(obj, ORDER_CUSTOMER_NAMES)

        def person(*names: str) -> Any:
            value = _pick(obj, names)
            if value is None and customer is not None:
                value = _pick(customer, names)
            return value

        return cls(
            id=order_id,
            items=_line_items(obj, "Order"),
            email=person("email", "customer_email"),
            phone_number=person("phone_number", "phone"),
            first_name=person("first_name"),
            last_name=person("last_name"),
            external_id=_identifier(person("external_id")),
            total=_pick(obj, ORDER_TOTAL_NAMES),
            currency=_pick(obj, ("currency",)),
            discount_code=_pick(obj, ORDER_DISCOUNT_CODE_NAMES),
            discount_value=_pick(obj, ORDER_DISCOUNT_VALUE_NAMES),
            billing_address=Address.coerce(_pick(obj, ("billing_address", "BillingAddress"))),
            shipping_address=Address.coerce(_pick(obj, ("shipping_address", "ShippingAddress"))),
            placed_at=_pick(obj, ORDER_PLACED_AT_NAMES),
        )
