"""``@tracks(metric)``: capture a funnel event from what the view rendered or returned.

The decorator only marks the request. On an HTML route the event is built when the view renders
its template (Flask's ``before_render_template`` signal), from the template context — so the page
and the server event describe the same product, and ``{{ klaviyo_bridge() }}`` in that very
template already knows the event's ``unique_id``. On a JSON route (a headless storefront's API)
it is built after the view, from the mapping the view returned or from ``klaviyo.context(...)``.
Either way the event is queued after the response, and only if the response succeeded: a 404,
a 4xx form error or an exception tracks nothing.
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from flask import current_app, g, request

from ._state import tolerate
from .events import Event, added_to_cart, started_checkout, viewed_product
from .models import Cart, LineItem, Product

__all__ = ["CONTEXT_NAMES", "finish", "remember_context", "tracks", "uncaptured"]

log = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Any])

# metric -> what its builder needs -> the default context name it is read from
CONTEXT_NAMES: dict[str, dict[str, str]] = {
    "Viewed Product": {"product": "product"},
    "Added to Cart": {"cart": "cart", "added_item": "added_item"},
    "Started Checkout": {"cart": "cart"},
}


class _Tracked:
    """One ``@tracks`` marker on the current request."""

    __slots__ = ("captured", "metric", "names", "returned")

    def __init__(self, metric: str, names: dict[str, str]) -> None:
        self.metric = metric
        self.names = names
        self.captured = False
        self.returned: Mapping[str, Any] = {}


def tracks(metric: str, **context_names: str) -> Callable[[F], F]:
    """Track ``metric`` when the decorated view succeeds.

    ``context_names`` maps what the builder needs to your own names, e.g.
    ``@tracks("Viewed Product", product="item")`` or
    ``@tracks("Added to Cart", cart="basket", added_item="line")``.
    """
    if metric not in CONTEXT_NAMES:
        raise ValueError(
            f"@tracks does not know how to build {metric!r}; known: {', '.join(CONTEXT_NAMES)}. "
            "Use klaviyo.track(...) for other metrics."
        )
    unknown = set(context_names) - set(CONTEXT_NAMES[metric])
    if unknown:
        raise ValueError(
            f"@tracks({metric!r}) takes {', '.join(CONTEXT_NAMES[metric])}=..., "
            f"not {', '.join(sorted(unknown))}"
        )
    names = {**CONTEXT_NAMES[metric], **context_names}

    def decorator(view: F) -> F:
        if inspect.iscoroutinefunction(view):

            @functools.wraps(view)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                mark = _mark(metric, names)
                try:
                    result = await view(*args, **kwargs)
                except BaseException:
                    mark.captured = True  # abort(404) or a crash: the error page tracks nothing
                    raise
                mark.returned = _returned_mapping(result)
                return result

            return async_wrapper  # type: ignore[return-value]

        @functools.wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            mark = _mark(metric, names)
            try:
                result = view(*args, **kwargs)
            except BaseException:
                mark.captured = True  # abort(404) or a crash: the error page tracks nothing
                raise
            mark.returned = _returned_mapping(result)
            return result

        return wrapper  # type: ignore[return-value]

    return decorator


def _mark(metric: str, names: dict[str, str]) -> _Tracked:
    mark = _Tracked(metric, names)
    g.setdefault("_klaviyo_tracks", []).append(mark)
    return mark


def _returned_mapping(result: Any) -> Mapping[str, Any]:
    """A JSON view's ``dict`` (or ``(dict, status)``): the context of a headless route."""
    if isinstance(result, tuple) and result:
        result = result[0]
    return result if isinstance(result, Mapping) else {}


def remember_context(values: Mapping[str, Any]) -> None:
    """``klaviyo.context(cart=..., added_item=...)``: context for views that render nothing."""
    g.setdefault("_klaviyo_context", {}).update(values)


def _capture_pending(context: Mapping[str, Any], marks: list[_Tracked]) -> None:
    extension = current_app.extensions["klaviyo"].extension
    if not extension.browse_allowed():
        for mark in marks:
            mark.captured = True  # no consent (or __kla_off): no browse events, nothing to warn
        return
    for mark in marks:
        if not all(context.get(name) is not None for name in mark.names.values()):
            continue  # another template (a partial, an email body); the page may come later
        mark.captured = True  # one event per mark, even if the view renders twice
        try:
            event = _build(extension, mark, context)
            extension.submit(event)
        except Exception:  # tracking never breaks the page, except in strict mode
            tolerate("could not capture %s", mark.metric)


def _pending_marks() -> list[_Tracked]:
    return [m for m in g.get("_klaviyo_tracks") or [] if not m.captured]


def on_render(sender: Any, template: Any, context: dict[str, Any], **extra: Any) -> None:
    """``before_render_template`` receiver: build the marked events from the context."""
    pending = _pending_marks()
    if not pending or not current_app.config["KLAVIYO_ENABLED"]:
        return
    _capture_pending({**g.get("_klaviyo_context", {}), **context}, pending)


def finish(response: Any) -> None:
    """After the view: build what no template did, from its return value or ``context()``."""
    pending = _pending_marks()
    if not pending:
        return
    if response.status_code >= 400:
        for mark in pending:
            mark.captured = True
        return
    explicit = g.get("_klaviyo_context", {})
    for mark in pending:
        _capture_pending({**mark.returned, **explicit}, [mark])
    missed = uncaptured()
    if missed:
        log.warning(
            "klaviyo: @tracks(%s) on %s, but neither a template nor the view's return value "
            "had its context; map your names, e.g. @tracks('Viewed Product', product='item'), "
            "or call klaviyo.context(...)",
            ", ".join(map(repr, missed)),
            request.endpoint,
        )


def _build(extension: Any, mark: _Tracked, context: Mapping[str, Any]) -> Event:
    names = mark.names
    currency = current_app.config["KLAVIYO_CURRENCY"]
    profile = extension.resolve_profile()
    if mark.metric == "Viewed Product":
        visitor = (
            profile.get("email")
            or profile.get("phone_number")
            or profile.get("_kx")
            or profile.get("anonymous_id", "")
        )
        return viewed_product(
            Product.coerce(context[names["product"]]),
            profile=profile,
            render_id=extension.render_id(),
            visitor=visitor,
            currency=currency,
        )
    cart = Cart.coerce(context[names["cart"]])
    if mark.metric == "Added to Cart":
        added = LineItem.coerce(context[names["added_item"]])
        return added_to_cart(cart, added, profile=profile, currency=currency)
    return started_checkout(cart, profile=profile, currency=currency)


def uncaptured() -> list[str]:
    """Metrics marked by ``@tracks`` in this request that nothing could build."""
    return [m.metric for m in _pending_marks()]
