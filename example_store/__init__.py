"""Switchback Provisions: a small Flask storefront that tracks its funnel with flask-klaviyo.

``create_app(config)`` takes its settings from ``config`` when given (tests, embedding), else from
the environment, which is how the web process and ``flask --app example_store klaviyo worker``
share one configuration.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from flask import Flask, render_template
from werkzeug.exceptions import HTTPException
from werkzeug.wrappers import Response

from . import catalog, db, history, klaviyo_catalog, payments, shipping, variants, webhook
from .accounts import DEFAULT_RESET_MAX_AGE
from .extensions import klaviyo
from .http import json_error, refuse_unreadable_json, wants_json
from .newsletter import DEFAULT_LIST_ID
from .settings import (
    derived_webhook_secret,
    load_or_create_secret_key,
    normalize,
    settings_from_environ,
)

__all__ = ["create_app", "klaviyo"]

STORE_NAME = "Switchback Provisions"


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    """Build the store.

    ``config`` (when given, the environment is not read): any Flask/``KLAVIYO_*``/``STORE_*``
    setting, plus ``instance_path`` for the instance folder (secret key, database, embedded
    Redis). Without it: ``KLAVIYO_*``, ``SECRET_KEY`` and the ``STORE_*`` settings
    (``settings.STORE_KEYS``) from the environment.
    """
    settings = normalize(config) if config is not None else settings_from_environ()
    instance_path = settings.pop("instance_path", None)
    app = Flask(
        __name__,
        instance_path=os.path.abspath(instance_path) if instance_path else None,
    )
    os.makedirs(app.instance_path, exist_ok=True)

    app.config.update(
        STORE_NAME=STORE_NAME,
        STORE_DATABASE=os.path.join(app.instance_path, "store.sqlite3"),
        STORE_ADMIN_PASSWORD=None,  # no admin pages until a password is set
        # Where the store lives, for absolute URLs made outside a request (the catalog sync).
        STORE_BASE_URL=klaviyo_catalog.DEFAULT_BASE_URL,
        STORE_NEWSLETTER_LIST_ID=DEFAULT_LIST_ID,  # the Klaviyo list the signup forms fill
        STORE_PASSWORD_RESET_MAX_AGE=DEFAULT_RESET_MAX_AGE,  # seconds a reset link works
        SESSION_COOKIE_SAMESITE="Lax",
    )
    app.config.update(settings)
    if not app.config.get("SECRET_KEY"):
        # Persisted, so the web process and its workers sign and verify with the same key.
        app.config["SECRET_KEY"] = load_or_create_secret_key(app.instance_path)
    if not app.config.get("KLAVIYO_WEBHOOK_SECRET"):
        # The store's setting, not flask-klaviyo's (the extension gives it no default): the
        # simulated provider and the webhook endpoint share it; a real provider gives you one.
        app.config["KLAVIYO_WEBHOOK_SECRET"] = derived_webhook_secret(app.config["SECRET_KEY"])

    db.init_app(app)
    catalog.init_app(app)
    variants.init_app(app)
    klaviyo.init_app(app)
    payments.init_app(app)
    webhook.init_app(app)
    shipping.init_app(app)
    history.init_app(app)

    from .account_views import bp as account_bp
    from .admin import bp as admin_bp
    from .admin_stock import bp as admin_stock_bp
    from .back_in_stock import bp as stock_bp
    from .carrier import bp as shipping_bp
    from .newsletter import bp as newsletter_bp
    from .password_reset import bp as password_bp
    from .payment_page import admin_bp as admin_payments_bp
    from .payment_page import bp as payment_page_bp
    from .provider import bp as provider_bp
    from .views import bp

    app.register_blueprint(bp)
    app.register_blueprint(stock_bp)
    app.register_blueprint(admin_bp)
    app.register_blueprint(admin_stock_bp)
    app.register_blueprint(admin_payments_bp)
    app.register_blueprint(shipping_bp)
    app.register_blueprint(payment_page_bp)
    app.register_blueprint(newsletter_bp)
    app.register_blueprint(account_bp)
    app.register_blueprint(password_bp)
    app.register_blueprint(provider_bp)
    app.before_request(refuse_unreadable_json)  # one rule for every JSON body
    app.register_error_handler(HTTPException, _http_error)
    app.add_template_filter(money)
    return app


def money(cents: int | None) -> str:
    """``{{ 5400|money }}`` → ``$54.00``."""
    if cents is None:
        return ""
    return f"${cents / 100:,.2f}"


def _http_error(error: HTTPException) -> tuple[str, int] | HTTPException | Response:
    """Friendly pages for client errors (JSON for JSON clients); the rest keeps Werkzeug's."""
    if error.code is None or not 400 <= error.code < 500:
        return error
    if wants_json():
        code = (error.name or "error").lower().replace(" ", "_").replace("'", "")
        return json_error(error.code, code, error.description or error.name)
    return render_template("error.html", error=error), error.code
