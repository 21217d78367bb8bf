"""``@tracks(metric)``: capture a funnel event from what the view rendered.

The decorator only marks the request; the event is built when the view renders its template
(Flask's ``before_render_template`` signal), from the template context — so the page and the
server event describe the same product, and ``{{ klaviyo_bridge() }}`` in that very template
already knows the event's ``unique_id``. The event is queued after the response, and only if the
response succeeded (a 404 or an exception tracks nothing).
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Callable
from typing import Any, TypeVar

from flask import current_app, g

from .events import viewed_product
from .exceptions import KlaviyoSchemaError
from .models import Product

__all__ = ["CONTEXT_NAMES", "tracks"]

log = logging.getLogger("flask_klaviyo")

F = TypeVar("F", bound=Callable[..., Any])

# metric -> the template context variable(s) it is built from, unless the view says otherwise
CONTEXT_NAMES: dict[str, dict[str, str]] = {
    "Viewed Product": {"product": "product"},
}


class _Tracked:
    """One ``@tracks`` marker on the current request."""

    __slots__ = ("captured", "metric", "names")

    def __init__(self, metric: str, names: dict[str, str]) -> None:
        self.metric = metric
        self.names = names
        self.captured = False


def tracks(metric: str, **context_names: str) -> Callable[[F], F]:
    """Track ``metric`` when the decorated view renders.

    ``context_names`` maps what the builder needs to your template variable names, e.g.
    ``@tracks("Viewed Product", product="item")``.
    """
    if metric not in CONTEXT_NAMES:
        raise ValueError(
            f"@tracks does not know how to build {metric!r}; known: {', '.join(CONTEXT_NAMES)}. "
            "Use klaviyo.track(...) for other metrics."
        )
    names = {**CONTEXT_NAMES[metric], **context_names}

    def decorator(view: F) -> F:
        if inspect.iscoroutinefunction(view):

            @functools.wraps(view)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                _mark(metric, names)
                return await view(*args, **kwargs)

            return async_wrapper  # type: ignore[return-value]

        @functools.wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            _mark(metric, names)
            return view(*args, **kwargs)

        return wrapper  # type: ignore[return-value]

    return decorator


def _mark(metric: str, names: dict[str, str]) -> None:
    g.setdefault("_klaviyo_tracks", []).append(_Tracked(metric, names))


def on_render(sender: Any, template: Any, context: dict[str, Any], **extra: Any) -> None:
    """``before_render_template`` receiver: build the marked events from the context."""
    marks: list[_Tracked] = g.get("_klaviyo_tracks") or []
    pending = [m for m in marks if not m.captured]
    if not pending or not current_app.config["KLAVIYO_ENABLED"]:
        return
    extension = current_app.extensions["klaviyo"].extension
    for mark in pending:
        mark.captured = True  # one event per mark, even if the view renders twice
        try:
            _capture(extension, mark, context)
        except Exception:
            # Tracking never breaks the page, except in strict mode (debug/testing).
            strict = current_app.config["KLAVIYO_STRICT"]
            if strict or (strict is None and (current_app.debug or current_app.testing)):
                raise
            log.exception("klaviyo: could not capture %s", mark.metric)


def _capture(extension: Any, mark: _Tracked, context: dict[str, Any]) -> None:
    if mark.metric == "Viewed Product":
        name = mark.names["product"]
        if context.get(name) is None:
            raise KlaviyoSchemaError(
                mark.metric, name, f"the template context has no {name!r} to track"
            )
        product = Product.coerce(context[name])
        profile = extension.resolve_profile()
        visitor = profile.get("email") or profile.get("phone_number") or profile.get("_kx", "")
        event = viewed_product(
            product,
            profile=profile,
            render_id=extension.render_id(),
            visitor=visitor,
            currency=current_app.config["KLAVIYO_CURRENCY"],
        )
        extension.submit(event)
