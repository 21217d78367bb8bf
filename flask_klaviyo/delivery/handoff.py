"""The web process's side of delivery: what a request queued goes to the outbox once the
response exists (outside a request: at once), and to the spool when Redis fails.

After the response the push is written at once; its answer is read in the request's teardown
if Redis has answered by then, else later without the request waiting (:mod:`.confirmer`),
unless ``KLAVIYO_REDIS_MIN_REPLICAS`` asks for the replicas' word within the request. Failing
either half, or Redis having failed moments ago (the breaker), spools the items; the next push
that reaches Redis moves the spool back into the outbox.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from functools import partial

from flask import Flask, current_app, g

from .._state import State, current_state, tolerate
from ..events import Event
from . import confirmer
from .operations import Operation

__all__ = ["confirm_after_response", "push_now", "send_after_response"]

log = logging.getLogger(__name__)

Item = Event | Operation
_INFLIGHT = "_klaviyo_inflight"  # g: the pending push between the two halves


def push_now(items: Sequence[Item]) -> None:
    """Into the outbox now, one round trip (outside a request: scripts, jobs)."""
    state = current_state()
    if state.breaker.allows():
        try:
            state.outbox.push(items)
        except Exception as exc:  # tracking never breaks the page
            _redis_failed(state, items, exc)
        else:
            if state.spool.may_hold_events():
                _replay_spool(state)
            return
    _spool(state, items)


def send_after_response(items: Sequence[Item]) -> None:
    """Write the push now; :func:`confirm_after_response` sees to its answer at teardown."""
    state = current_state()
    if not state.breaker.allows():
        _spool(state, items)
        return
    try:
        app = current_app._get_current_object()  # type: ignore[attr-defined]
        setattr(g, _INFLIGHT, state.outbox.send(items, partial(_failed_later, app, state, items)))
    except Exception as exc:  # tracking never breaks the page
        _redis_failed(state, items, exc)


def confirm_after_response() -> None:
    """Read this request's push answer if Redis has given it (or replicas must have), else
    leave it to the confirmer; a failure spools the push's items either way."""
    pending = g.pop(_INFLIGHT, None)
    if pending is None:
        return
    if pending.waits or pending.answered():
        if not pending.finish():
            return  # spooled: Redis is failing, the spool stays where it is
    else:
        confirmer.defer(pending)
    state = current_state()
    if state.spool.may_hold_events():  # Redis took (or is taking) this push: the spool goes too
        _replay_spool(state)


def _failed_later(app: Flask, state: State, items: Sequence[Item], exc: Exception) -> None:
    """A push whose answer was read after its request (maybe on the confirmer's thread)."""
    with app.app_context():
        _redis_failed(state, items, exc)


def _redis_failed(state: State, items: Sequence[Item], exc: Exception) -> None:
    state.breaker.trip()
    log.warning(
        "klaviyo: Redis unreachable (%s); spooling %d event(s) to %s for %.0fs",
        type(exc).__name__,
        len(items),
        state.spool.path,
        state.breaker.cooldown,
    )
    _spool(state, items)


def _spool(state: State, items: Sequence[Item]) -> None:
    try:
        state.spool.append(items)
    except Exception:
        tolerate("could not spool %d event(s)", len(items))


def _replay_spool(state: State) -> None:
    try:
        state.spool.replay(state.outbox.push)
    except Exception:
        state.breaker.trip()
        log.exception("klaviyo: moving spooled events to Redis failed; will retry")
