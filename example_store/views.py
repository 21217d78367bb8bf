"""The storefront's pages: catalog, product pages, login, cart, checkout and order confirmation.

What each funnel step hands flask-klaviyo:

- ``GET /products/<id>``: ``@tracks("Viewed Product")`` reads ``product`` from the template.
- ``POST /cart/add`` (form, then a redirect) and ``POST /api/cart`` (JSON): ``@tracks("Added to
  Cart")`` with the whole cart and the line just added, through ``klaviyo.context(...)`` on the
  form route and from the returned JSON on the API route. A refused add answers 400: no event.
- ``GET /checkout`` and ``POST /checkout/email``: Started Checkout, once per cart contents (a
  reload, or the page after the email form, does not start a second checkout). An anonymous
  shopper's is parked by the extension and released when they give their email.
- ``POST /checkout`` places the order (``pending_payment``) and hands it to the payment provider;
  Placed Order comes later, from the provider's webhook (``webhook.py``), never from the
  confirmation page. Its "email me offers" box (``newsletter=yes``, never pre-ticked)
  subscribes the order's email through ``newsletter.subscribe``.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from flask import (
    Blueprint,
    abort,
    current_app,
    flash,
    redirect,
    render_template,
    request,
    send_from_directory,
    session,
    url_for,
)
from werkzeug.wrappers import Response

from flask_klaviyo import tracks

from . import carts, catalog, newsletter, payments, variants
from .accounts import SESSION_KEY as ACCOUNT_SESSION_KEY
from .admin import is_admin
from .carts import Cart, CartError
from .db import transaction
from .extensions import klaviyo
from .http import back, json_error, request_data, wants_json
from .orders import COUNTRIES, clean_address, create_order, get_order
from .validation import is_yes, valid_email

__all__ = ["bp"]

bp = Blueprint("store", __name__)

CHECKOUT_EMAIL = "checkout_email"  # session key: the email given at checkout
SESSION_ORDERS = "orders"  # session key: the orders this browser placed (may see them)
MAX_SESSION_ORDERS = 20
CHECKOUT_SOURCE = "Checkout"  # the newsletter signup source of the box at checkout
EMAIL_FIELD = "field:email"  # a flash category: the checkout shows it beside its email field


@bp.before_app_request
def same_origin_posts_only() -> None:
    """Refuse a form post from another site (browsers send Origin with every cross-site POST).

    The payment webhook is exempt: it is not a browser form, and its signature is its proof.
    """
    if request.method in ("GET", "HEAD", "OPTIONS") or request.blueprint == "webhooks":
        return
    origin = request.headers.get("Origin")
    if origin is not None and urlsplit(origin).netloc != request.host:
        abort(403)


@bp.get("/")
def index() -> str:
    category = request.args.get("category") or None
    categories = catalog.list_categories()
    if category is not None and category not in categories:
        abort(404, description=f"We don't have a {category!r} category.")
    return render_template(
        "index.html",
        products=catalog.list_products(category),
        categories=categories,
        category=category,
    )


@bp.get("/products/<product_id>")
@tracks("Viewed Product")
def product(product_id: str) -> str:
    found = catalog.get_product(product_id)
    if found is None:
        abort(404, description="That product isn't in our catalog (any more).")
    return product_page(found, request.args.get("variant"))


def product_page(
    found: catalog.Product,
    variant_id: str | None = None,
    *,
    notify_error: str | None = None,
    notify_email: str | None = None,
) -> str:
    """The product page; ``variant_id`` preselects a variant (Klaviyo's emails link to one).

    Out-of-stock variants get a "Notify me" form (``back_in_stock.py``), which renders this
    page again with ``notify_error`` when it refuses."""
    choices = variants.list_variants(found.id)
    selected = next((v for v in choices if v.id == variant_id), None)
    selected = selected or variants.choose_for_cart(choices) or (choices[0] if choices else None)
    return render_template(
        "product.html",
        product=found,
        variants=choices,
        selected=selected,
        sold_out=[v for v in choices if not v.in_stock],
        notify_error=notify_error,
        notify_email=notify_email or session.get(CHECKOUT_EMAIL) or session.get("email") or "",
    )


@bp.post("/login")
def login() -> Response:
    email = valid_email(request.form.get("email"))
    if email is None:
        flash("Please enter a valid email address, like you@example.com.", "error")
        return redirect(back(), code=303)
    session.pop(ACCOUNT_SESSION_KEY, None)  # the email login is not an account's login
    session["email"] = email
    klaviyo.identify(email=email)
    flash(f"Signed in as {email}.", "info")
    return redirect(back(), code=303)


@bp.app_context_processor
def cart_badge() -> dict[str, Any]:
    """The header's cart count. Named ``cart_count``, never ``cart``: a ``cart`` in every
    template would hand ``@tracks`` a cart on pages that are not about one."""
    try:
        return {"cart_count": carts.current_cart().count}
    except Exception:  # an error page must render even if the database is the error
        return {"cart_count": 0}


# -- cart -----------------------------------------------------------------------------------


@bp.get("/cart")
def cart() -> str:
    return render_template("cart.html", cart=carts.current_cart())


@bp.post("/cart/add")
@tracks("Added to Cart")
def cart_add() -> Response:
    try:
        cart, added = carts.add_item(
            request.form.get("product_id"),
            request.form.get("quantity"),
            request.form.get("variant"),
        )
    except CartError as exc:
        abort(400, description=exc.message)
    klaviyo.context(cart=cart, added_item=added)  # the redirect renders no template
    flash(f"Added {added.quantity} x {added.product.name} to your cart.", "info")
    return redirect(url_for("store.cart"), code=303)


@bp.post("/cart/update")
def cart_update() -> Response:
    """Change a quantity (0 removes the line). Not a funnel event."""
    try:
        carts.set_quantity(
            request.form.get("product_id"),
            request.form.get("quantity"),
            request.form.get("variant") or None,
        )
    except CartError as exc:
        abort(400, description=exc.message)
    return redirect(url_for("store.cart"), code=303)


@bp.get("/api/cart")
def api_cart() -> dict[str, Any]:
    return {"cart": carts.current_cart().to_dict()}


@bp.post("/api/cart")
@tracks("Added to Cart")
def api_cart_add() -> Response | dict[str, Any]:
    """A headless storefront's add to cart: ``{"product_id": ..., "quantity": ...}`` (and
    optionally ``"variant"``: the variant's id; without it, the first one in stock).

    ``@tracks`` reads ``cart`` and ``added_item`` from the returned JSON itself.
    """
    data = request.get_json(silent=True) if request.is_json else None
    if not isinstance(data, dict):
        return json_error(
            400,
            "invalid_json",
            'send Content-Type: application/json and an object like {"product_id": '
            '"house-blend", "quantity": 1}',
        )
    try:
        cart, added = carts.add_item(
            data.get("product_id"), data.get("quantity", 1), data.get("variant")
        )
    except CartError as exc:
        return json_error(400, exc.code, exc.message)
    return {"cart": cart.to_dict(), "added_item": added.to_dict()}


# -- checkout -------------------------------------------------------------------------------


def _checkout_email() -> str | None:
    return session.get(CHECKOUT_EMAIL) or session.get("email")


def _checkout_page(cart: Cart) -> str:
    return render_template(
        "checkout.html",
        cart=cart,
        checkout_email=_checkout_email(),
        countries=COUNTRIES,
    )


# The same page, marked for Started Checkout: used when this cart's checkout starts now.
_checkout_page_starting = tracks("Started Checkout")(_checkout_page)


@tracks("Started Checkout")
def _start_checkout(cart: Cart) -> None:
    """Started Checkout from a route that redirects (no template to read the cart from)."""
    klaviyo.context(cart=cart)


@bp.get("/checkout")
def checkout() -> str | Response:
    cart = carts.current_cart()
    if not cart.lines:
        flash("Your cart is empty: add something first.", "info")
        return redirect(url_for("store.cart"), code=303)
    if carts.mark_checkout_started(cart):
        return _checkout_page_starting(cart)
    return _checkout_page(cart)


@bp.post("/checkout/email")
def checkout_email() -> Response | tuple[dict[str, Any], int]:
    """The shopper gives their email: Klaviyo now knows who this visitor is."""
    email = valid_email(request_data().get("email"))
    if email is None:
        message = "Please enter a valid email address, like you@example.com."
        if wants_json():
            return json_error(400, "invalid_email", message)
        flash(message, EMAIL_FIELD)
        return redirect(url_for("store.checkout"), code=303)
    session[CHECKOUT_EMAIL] = email
    klaviyo.identify(email=email)
    cart = carts.current_cart()
    if cart.lines and carts.mark_checkout_started(cart):
        _start_checkout(cart)
    if wants_json():
        return {"email": email}, 200
    return redirect(url_for("store.checkout"), code=303)


def _checkout_refused(code: str, message: str, back: str, category: str = "error") -> Response:
    if wants_json():
        return json_error(400, code, message)
    flash(message, category)
    return redirect(url_for(back), code=303)


@bp.post("/checkout")
def place_order() -> Response | tuple[dict[str, Any], int, dict[str, str]]:
    """Place the order (``pending_payment``) and hand it to the payment provider.

    No Placed Order here: it goes out when the provider's webhook says the order is paid.
    """
    data = request_data()
    cart = carts.current_cart()
    if not cart.lines:
        return _checkout_refused("empty_cart", "Your cart is empty.", "store.cart")
    email = _checkout_email()
    if data.get("email"):
        email = valid_email(data["email"])
        if email is None:
            return _checkout_refused(
                "invalid_email",
                "Please enter a valid email address.",
                "store.checkout",
                EMAIL_FIELD,
            )
        session[CHECKOUT_EMAIL] = email
        klaviyo.identify(email=email)
    if not email:
        return _checkout_refused(
            "email_required",
            "Please give us your email address first.",
            "store.checkout",
            EMAIL_FIELD,
        )
    address_fields = data.get("shipping_address") if request.is_json else data
    address = clean_address(address_fields if isinstance(address_fields, dict) else None)
    currency = current_app.config["KLAVIYO_CURRENCY"]
    payment_id = payments.new_payment_id()
    with transaction() as db:
        order_id = create_order(
            db,
            cart,
            email=email,
            currency=currency,
            shipping_address=address,
            payment_id=payment_id,
        )
    session.pop(carts.SESSION_KEY, None)
    placed = [o for o in session.get(SESSION_ORDERS, []) if isinstance(o, str)]
    session[SESSION_ORDERS] = [*placed, order_id][-MAX_SESSION_ORDERS:]
    payments.charge(
        order_id=order_id,
        amount=cart.total_cents,
        currency=currency,
        email=email,
        payment_id=payment_id,
        callback_url=url_for("webhooks.payments", _external=True),
    )
    location = url_for("store.order", order_id=order_id)
    body = {"order_id": order_id, "status": "pending_payment", "url": location}
    if is_yes(data.get("newsletter")):
        # The "email me offers" box: never ticked for the shopper, so ticked means consent.
        signup = newsletter.Signup(email=email)
        status = newsletter.subscribe(signup, source=CHECKOUT_SOURCE)
        body["newsletter"] = status
        if not wants_json():
            flash(newsletter.status_message(status, signup), "info")
    if wants_json():
        return body, 201, {"Location": location}
    return redirect(location, code=303)


@bp.get("/orders/<order_id>")
def order(order_id: str) -> str | dict[str, Any]:
    """The confirmation page: the shopper who placed it (or the admin) may see it. Tracks
    nothing: Placed Order comes from the payment webhook, whether or not this page loads."""
    mine = order_id in session.get(SESSION_ORDERS, [])
    found = get_order(order_id) if mine or is_admin() else None
    if found is None:
        abort(404, description="We couldn't find that order.")
    if wants_json():
        return found.to_dict()
    return render_template("order.html", order=found)


@bp.post("/logout")
def logout() -> Response:
    session.pop(ACCOUNT_SESSION_KEY, None)
    session.pop("email", None)
    session.pop(CHECKOUT_EMAIL, None)
    flash("Signed out.", "info")
    return redirect(back(), code=303)


@bp.get("/favicon.ico")
def favicon() -> Response:
    """Pages name ``static/favicon.svg``; browsers still ask for /favicon.ico on JSON and plain
    text answers: the same icon, so no request of theirs ends in a 404."""
    static = current_app.static_folder
    assert static is not None
    return send_from_directory(static, "favicon.svg", mimetype="image/svg+xml", max_age=86400)
