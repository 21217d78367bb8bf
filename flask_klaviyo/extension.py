"""The ``Klaviyo`` extension: configuration, per-app state, request hooks, the tracking API."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

from flask import Blueprint, Flask, current_app, g, has_request_context, request
from flask.signals import before_render_template
from markupsafe import Markup

from . import _settings, bridge, capture, onsite, queueing
from ._state import EXTENSION_KEY, State, current_state, enabled, tolerate
from .backfill_api import BackfillAPI
from .catalog.feed import feed_blueprint
from .catalog_api import CatalogAPI
from .cli import klaviyo_cli
from .customer_api import CustomerAPI
from .delivery import (
    klaviyo_kinds,  # noqa: F401 - importing it registers Klaviyo's kinds
)
from .delivery.handoff import confirm_after_response, send_after_response
from .delivery.operations import Operation
from .events import (
    CANCELED_ORDER,
    FULFILLED_ORDER,
    PLACED_ORDER,
    REFUNDED_ORDER,
    Event,
    canceled_order,
    custom_event,
    fulfilled_order,
    ordered_products,
    placed_order,
    refunded_order,
)
from .identity.resolve import (
    ConsentLoader,
    IdentityLoader,
    browse_allowed,
    resolve_profile,
    visitor_profile,
)
from .identity.rules import needs_identity
from .identity.settle import identify as identify_visitor
from .identity.settle import settle
from .inspect.journal import is_loopback_url
from .inspect.views import BLUEPRINT as INSPECTOR_BLUEPRINT
from .inspect.views import PREFIX as INSPECTOR_PREFIX
from .inspect.views import inspector_blueprint
from .lifecycle_api import LifecycleAPI
from .models import Order
from .profiles import location_of

__all__ = ["EXTENSION_KEY", "Klaviyo"]

log = logging.getLogger(__name__)

STATIC_FOLDER_CANDIDATES = (
    Path(__file__).parent / "static",  # installed wheel
    Path(__file__).parent.parent / "static",  # source checkout / editable install
)

F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")


def _set_defaults(app: Flask) -> None:
    """Every ``KLAVIYO_*`` default, from the one settings table."""
    _settings.apply_defaults(app.config)


def _check_config(app: Flask) -> None:
    """Fail at init, naming the key, rather than losing events later (strings from the
    environment become the values they spell)."""
    _settings.check(app.config)


class Klaviyo(CustomerAPI, CatalogAPI, LifecycleAPI, BackfillAPI):
    """Server-side Klaviyo tracking for a Flask app.

    ``Klaviyo(app)`` or ``Klaviyo()`` then ``init_app(app)``; one instance may serve several apps.
    """

    def __init__(self, app: Flask | None = None) -> None:
        self._identity_loader: IdentityLoader | None = None
        self._consent_loader: ConsentLoader | None = None
        if app is not None:
            self.init_app(app)

    # -- setup -----------------------------------------------------------------------------
    def init_app(self, app: Flask) -> None:
        if EXTENSION_KEY in app.extensions:
            raise RuntimeError(
                "flask-klaviyo is already initialized on this app; init_app(app) was called "
                "twice (create one Klaviyo() per app factory, or call init_app once)"
            )
        _set_defaults(app)
        _check_config(app)
        app.extensions[EXTENSION_KEY] = State(self, app)

        static = next((p for p in STATIC_FOLDER_CANDIDATES if p.is_dir()), None)
        blueprint = Blueprint(
            "klaviyo",
            __name__,
            static_folder=str(static) if static else None,
            static_url_path="/_klaviyo/static",
        )
        app.register_blueprint(blueprint)
        if app.config["KLAVIYO_CATALOG_MODE"] == "feed":
            app.register_blueprint(
                feed_blueprint(app.config["KLAVIYO_CATALOG_FEED_PATH"], self.catalog_entries)
            )
        if app.config["KLAVIYO_ENABLED"] and app.extensions[EXTENSION_KEY].inspector:
            app.register_blueprint(inspector_blueprint())  # development only (auto: stand-in)
            app.jinja_env.globals["klaviyo_inspector_url"] = INSPECTOR_PREFIX + "/"
            if not is_loopback_url(app.config["KLAVIYO_API_URL"]):
                log.warning(
                    "klaviyo: KLAVIYO_INSPECTOR is on against %s: /_klaviyo/inspector shows "
                    "shoppers' emails and orders; never turn it on in production",
                    app.config["KLAVIYO_API_URL"],
                )
        app.jinja_env.globals["klaviyo_bridge"] = self.bridge
        app.after_request(self._after_request)
        app.teardown_request(lambda error: confirm_after_response())
        before_render_template.connect(capture.on_render, app)

        app.cli.add_command(klaviyo_cli)

    def identity_loader(self, func: F) -> F:
        """Register the function that returns who the server knows (or None)."""
        self._identity_loader = func
        return func

    def consent_loader(self, func: F) -> F:
        """Register the function that says whether browse tracking is allowed."""
        self._consent_loader = func
        return func

    # -- tracking API ------------------------------------------------------------------------
    def track(
        self,
        metric: str,
        properties: Mapping[str, Any] | None = None,
        *,
        value: float | None = None,
        unique_id: str | None = None,
        profile: Mapping[str, Any] | None = None,
        time: datetime | None = None,
        currency: str | None = None,
    ) -> Event | None:
        """Track any metric; queued after the response (in a request) or at once (outside)."""
        if not enabled():
            return None
        event = queueing.build(
            metric,
            lambda: custom_event(
                metric,
                dict(properties or {}),
                profile=self.resolve_profile(profile),
                value=value,
                unique_id=unique_id,
                time=time,
                currency=currency
                or (current_app.config["KLAVIYO_CURRENCY"] if value is not None else None),
            ),
        )
        return None if event is None else self.submit(event)

    def order_placed(self, order: Any, *, profile: Mapping[str, Any] | None = None) -> list[Event]:
        """Placed Order plus one Ordered Product per line."""
        if not enabled():
            return []

        def build() -> list[Event]:
            built = self._order(order)
            who = self.resolve_profile(profile or built.profile())
            return [placed_order(built, profile=who), *ordered_products(built, profile=who)]

        events = queueing.build(PLACED_ORDER, build)
        if not events:
            return []
        placed = self._submit_all(events)
        who = events[0].profile
        location = location_of(self._order(order).billing_address)
        if location and (who.get("email") or who.get("phone_number")):  # where they live
            self.update_profile(
                email=who.get("email"), phone_number=who.get("phone_number"), location=location
            )
        return placed

    def order_fulfilled(
        self, order: Any, *, profile: Mapping[str, Any] | None = None, **properties: Any
    ) -> Event | None:
        """Fulfilled Order; extra properties (e.g. ``TrackingNumber="1Z..."``) are added."""
        return self._order_event(fulfilled_order, order, profile, **properties)

    def order_canceled(
        self,
        order: Any,
        *,
        reason: str | None = None,
        profile: Mapping[str, Any] | None = None,
        **properties: Any,
    ) -> Event | None:
        """Canceled Order, with the same unique_id as its Placed Order (so CLV nets it out);
        partial: ``items=``, ``amount=``, ``sequence=`` (:mod:`.events.orders`)."""
        return self._order_event(canceled_order, order, profile, reason=reason, **properties)

    def order_refunded(
        self,
        order: Any,
        *,
        reason: str | None = None,
        profile: Mapping[str, Any] | None = None,
        **properties: Any,
    ) -> Event | None:
        """Refunded Order, with the same unique_id as its Placed Order (so CLV nets it out);
        partial: ``items=``, ``amount=``, ``sequence=`` (:mod:`.events.orders`)."""
        return self._order_event(refunded_order, order, profile, reason=reason, **properties)

    def enqueue(
        self, kind: str, payload: Mapping[str, Any], *, key: str | None = None
    ) -> Operation | None:
        """Queue one operation of a registered kind (:mod:`flask_klaviyo.delivery.kinds`):
        after the response in a request, at once outside one. ``key`` names what it is about;
        a coalescing kind merges operations with the same key that wait together.

        An unknown kind or a payload that is not JSON raises in strict mode; otherwise it is
        logged and nothing is queued.
        """
        if not enabled():
            return None
        return queueing.enqueue(kind, payload, key)

    def context(self, **values: Any) -> None:
        """Hand ``@tracks`` what it needs when the view renders no template (JSON routes)."""
        capture.remember_context(values)

    def identify(self, **attributes: Any) -> dict[str, Any]:
        """The visitor is now known: email, phone_number, external_id, first_name, last_name.

        For the rest of this request and (signed cookie, with consent) later visits; their
        parked anonymous events are released after the response. Returns the identity kept
        ({} without a valid email or E.164 phone number).
        """
        if not enabled():
            return {}
        kept = identify_visitor(attributes, self._consent_loader)
        if kept and ("first_name" in kept or "last_name" in kept):  # what the store learnt
            names = ("email", "phone_number", "external_id", "first_name", "last_name")
            self.update_profile(**{key: kept[key] for key in names if key in kept})
        return kept

    # -- internals shared with capture/bridge -------------------------------------------------
    def resolve_profile(self, explicit: Mapping[str, Any] | None = None) -> dict[str, Any]:
        return resolve_profile(explicit, self._identity_loader, self._consent_loader)

    def visitor(self) -> dict[str, Any]:
        """Who the current visitor is, as far as the server knows (empty: a stranger)."""
        return visitor_profile(self._identity_loader, self._consent_loader)

    def browse_allowed(self) -> bool:
        """Whether browse events and identity cookies are allowed for this visitor."""
        return browse_allowed(self._consent_loader)

    def submit(self, event: Event) -> Event | None:
        """Validate, then queue (after the response in a request; at once outside one).

        An invalid event raises in strict mode; otherwise it is logged and dead-lettered. In a
        request, an event of a visitor nobody knows yet (no email, phone or ``_kx``) is checked
        with a placeholder identity and parked after the response until the visitor is known.
        """
        return queueing.submit(event)

    def _submit_all(self, events: list[Event]) -> list[Event]:
        return [e for e in (queueing.submit(event) for event in events) if e is not None]

    def _order(self, order: Any) -> Order:
        return order if isinstance(order, Order) else Order.coerce(order)

    def _order_event(
        self,
        builder: Callable[..., Event],
        order: Any,
        profile: Mapping[str, Any] | None,
        **options: Any,
    ) -> Event | None:
        if not enabled():
            return None

        def build() -> Event:
            built = self._order(order)
            who = self.resolve_profile(profile or built.profile())
            return builder(built, profile=who, **options)

        metric = {
            fulfilled_order: FULFILLED_ORDER,
            canceled_order: CANCELED_ORDER,
            refunded_order: REFUNDED_ORDER,
        }.get(builder, builder.__name__)
        event = queueing.build(metric, build)
        return None if event is None else self.submit(event)

    def _after_request(self, response: Any) -> Any:
        """Queue what this request tracked, once the response exists and only if it succeeded."""
        if request.blueprint == INSPECTOR_BLUEPRINT:
            return response  # looking at the inspector is no visit to the store
        if not current_app.config["KLAVIYO_ENABLED"]:
            g.pop(queueing.PENDING_EVENTS, None)
            g.pop(queueing.PENDING_OPERATIONS, None)
            return response
        if g.pop("_klaviyo_personal_page", False):
            bridge.keep_private(response)  # the bridge put the visitor's identity in this page
        try:
            capture.finish(response)  # JSON routes: events from the return value / context()
        except Exception:
            tolerate("capture after the view failed")
        try:
            onsite.after_page(response, self)  # Active on Site, once per visit
        except Exception:
            tolerate("Active on Site after the page failed")
        pending = g.pop(queueing.PENDING_EVENTS, None)
        operations = g.pop(queueing.PENDING_OPERATIONS, None)
        if (pending or operations) and response.status_code >= 400:
            dropped = len(pending or ()) + len(operations or ())
            log.debug("klaviyo: %d item(s) dropped: response %s", dropped, response.status)
            pending = operations = None
        ready: list[Event | Operation] = [*self._settle_identity(response, pending or [])]
        ready.extend(operations or ())
        if ready:
            send_after_response(ready)
        return response

    def _settle_identity(self, response: Any, pending: list[Event]) -> list[Event]:
        """Park anonymous events, release a now-known visitor's, write the identity cookies.

        Returns what to queue. A failure here never breaks the page (except in strict mode):
        the events that have an identity still go.
        """
        try:
            return settle(
                response,
                pending,
                loader=self._identity_loader,
                consent_loader=self._consent_loader,
                connection=lambda: current_state().redis,
                check=queueing.valid,
                journal=lambda: current_state().journal,
            )
        except Exception:
            tolerate("identity step failed; anonymous events of this request lost")
            return [event for event in pending if not needs_identity(event.profile)]

    def page_events(self) -> list[Event]:
        """Events tracked so far in this request (what the bridge tells the page)."""
        return list(g.get(queueing.PENDING_EVENTS, ())) if has_request_context() else []

    def render_id(self) -> str:
        """One id per request, so Viewed Product is once per page view and stable within it."""
        rid = g.get("_klaviyo_render_id")
        if rid is None:
            rid = g._klaviyo_render_id = os.urandom(16).hex()
        return rid

    def bridge(self) -> Markup:
        """``{{ klaviyo_bridge() }}``: never raises into the template outside strict mode."""
        try:
            return bridge.render(self)
        except Exception:
            tolerate("bridge failed to render")
            return Markup("")
