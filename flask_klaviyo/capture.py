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
from .models import Product

__all__ = ["CONTEXT_NAMES", "tracks", "uncaptured"]

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
                mark = _mark(metric, names)
                try:
                    return await view(*args, **kwargs)
                except BaseException:
                    mark.captured = True  # abort(404) or a crash: the error page tracks nothing
                    raise

            return async_wrapper  # type: ignore[return-value]

        @functools.wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            mark = _mark(metric, names)
            try:
                return view(*args, **kwargs)
            except BaseException:
                mark.captured = True  # abort(404) or a crash: the error page tracks nothing
                raise

        return wrapper  # type: ignore[return-value]

    return decorator


def _mark(metric: str, names: dict[str, str]) -> _Tracked:
    mark = _Tracked(metric, names)
    g.setdefault("_klaviyo_tracks", []).append(mark)
    return mark


def on_render(sender: Any, template: Any, context: dict[str, Any], **extra: Any) -> None:
    """``before_render_template`` receiver: build the marked events from the context."""
    marks: list[_Tracked] = g.get("_klaviyo_tracks") or []
    pending = [m for m in marks if not m.captured]
    if not pending or not current_app.config["KLAVIYO_ENABLED"]:
        return
    extension = current_app.extensions["klaviyo"].extension
    for mark in pending:
        if not all(context.get(name) is not None for name in mark.names.values()):
            continue  # another template (a partial, an email body); the page may come later
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
        product = Product.coerce(context[mark.names["product"]])
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


def uncaptured() -> list[str]:
    """Metrics marked by ``@tracks`` in this request that no render could build."""
    return [m.metric for m in g.get("_klaviyo_tracks") or [] if not m.captured]
