"""The storefront's pages: the catalog, product pages and a minimal email login."""

from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit

from flask import (
    Blueprint,
    abort,
    flash,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from werkzeug.wrappers import Response

from flask_klaviyo import tracks

from . import catalog
from .extensions import klaviyo

__all__ = ["bp"]

bp = Blueprint("store", __name__)

# Deliberately simple: one @, no spaces, a dot in the domain. The mail server has the last word.
EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s.]+")
MAX_EMAIL_LENGTH = 254


@bp.before_request
def same_origin_posts_only() -> None:
    """Refuse a form post from another site (browsers send Origin with every cross-site POST)."""
    if request.method in ("GET", "HEAD", "OPTIONS"):
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
    return render_template("product.html", product=found)


@bp.post("/login")
def login() -> Response:
    email = request.form.get("email", "").strip().lower()
    if len(email) > MAX_EMAIL_LENGTH or not EMAIL.fullmatch(email):
        flash("Please enter a valid email address, like you@example.com.", "error")
        return redirect(_back(), code=303)
    session["email"] = email
    klaviyo.identify(email=email)
    flash(f"Signed in as {email}.", "info")
    return redirect(_back(), code=303)


@bp.post("/logout")
def logout() -> Response:
    session.pop("email", None)
    flash("Signed out.", "info")
    return redirect(_back(), code=303)


def _back() -> str:
    """Where the form was posted from: ``next`` or the Referer, if it is on this site."""
    for target in (request.form.get("next"), request.referrer):
        local = _local_path(target)
        if local is not None:
            return local
    return url_for("store.index")


def _local_path(target: str | None) -> str | None:
    """``target`` as a path on this site, or None (no open redirects)."""
    if not target or "\\" in target:
        return None
    parts = urlsplit(target)
    off_site = parts.scheme not in ("http", "https") or parts.netloc != request.host
    if (parts.scheme or parts.netloc) and off_site:
        return None
    path = urlunsplit(("", "", parts.path, parts.query, ""))
    if not path.startswith("/") or path.startswith("//"):
        return None
    return path
