"""Product, LineItem, Cart, Address, Order: plain dataclasses with ``coerce`` from the shapes
storefronts already have (see the package docstring)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ..exceptions import KlaviyoSchemaError
from .coerce import (
    ADDRESS_NAMES,
    ADDRESS_PROPERTY_NAMES,
    CART_ID_NAMES,
    CHECKOUT_URL_NAMES,
    LINE_ID_NAMES,
    LINE_ITEMS_NAMES,
    LINE_PRICE_NAMES,
    LINE_PRODUCT_NAMES,
    LINE_QUANTITY_NAMES,
    ORDER_CUSTOMER_NAMES,
    ORDER_DISCOUNT_CODE_NAMES,
    ORDER_DISCOUNT_VALUE_NAMES,
    ORDER_ID_NAMES,
    ORDER_PLACED_AT_NAMES,
    ORDER_TOTAL_NAMES,
    PRODUCT_BRAND_NAMES,
    PRODUCT_CATEGORY_NAMES,
    PRODUCT_COMPARE_NAMES,
    PRODUCT_ID_NAMES,
    PRODUCT_IMAGE_NAMES,
    PRODUCT_NAME_NAMES,
    PRODUCT_PRICE_NAMES,
    PRODUCT_SKU_NAMES,
    PRODUCT_URL_NAMES,
    Money,
    _category_list,
    _identifier,
    _pick,
    _subtract,
    is_money,
    sum_money,
    union,
)

__all__ = ["Address", "Cart", "LineItem", "Order", "Product"]


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
