"""The web process's side of delivery: what a request queued goes to the outbox once the
response exists (outside a request: at once), and to the spool when Redis fails.

After the response the push is written at once and its answer read in the request's teardown,
so Flask finishes the response (headers, session, signals) while Redis answers. Failing either
half, or Redis having failed moments ago (the breaker), spools the items; the next push that
reaches Redis moves the spool back into the outbox.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from flask import g

from .._state import State, current_state, tolerate
from ..events import Event
from .operations import Operation

__all__ = ["confirm_after_response", "push_now", "send_after_response"]

log = logging.getLogger(__name__)

Item = Event | Operation
_INFLIGHT = "_klaviyo_inflight"  # g: (pending push, its items) between the two halves


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
    """Write the push now; :func:`confirm_after_response` reads the answer at teardown."""
    state = current_state()
    if not state.breaker.allows():
        _spool(state, items)
        return
    try:
        setattr(g, _INFLIGHT, (state.outbox.send(items), items))
    except Exception as exc:  # tracking never breaks the page
        _redis_failed(state, items, exc)


def confirm_after_response() -> None:
    """Read this request's push answer (usually there already); spool on failure."""
    inflight = g.pop(_INFLIGHT, None)
    if inflight is None:
        return
    pending, items = inflight
    state = current_state()
    try:
        pending.confirm()
    except Exception as exc:  # tracking never breaks the page
        _redis_failed(state, items, exc)
        return
    if state.spool.may_hold_events():
        _replay_spool(state)


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
