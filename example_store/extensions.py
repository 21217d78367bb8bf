"""The store's Flask extensions, created once and bound to each app in ``create_app``."""

from __future__ import annotations

from typing import Any

from flask import session

from flask_klaviyo import Klaviyo

__all__ = ["current_shopper", "klaviyo"]

klaviyo = Klaviyo()


@klaviyo.identity_loader
def current_shopper() -> dict[str, Any] | None:
    """The logged-in shopper as Klaviyo should know them; None for a visitor we don't know."""
    email = session.get("email")
    return {"email": email} if email else None
