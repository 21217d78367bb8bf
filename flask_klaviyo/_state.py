"""Per-app state in ``app.extensions["klaviyo"]`` and the one rule for errors inside the
integration.

The rule: in strict mode (``KLAVIYO_STRICT``, default ``app.debug or app.testing``) an error
raises, so a developer sees it at once; otherwise it is logged, counted and, when there is
something to keep, kept as a dead letter, and the page goes on. Tracking never breaks a page.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import redis
from flask import Flask, current_app

from .connection import redis_from_url
from .delivery.deadletters import DeadLetters
from .delivery.outbox import Outbox
from .delivery.spool import Breaker, Spool
from .embedded import embedded_redis_url
from .inspect.journal import Journal, inspector_on

if TYPE_CHECKING:
    from .extension import Klaviyo

__all__ = ["EXTENSION_KEY", "State", "current_state", "enabled", "is_strict", "tolerate"]

log = logging.getLogger(__name__)

EXTENSION_KEY = "klaviyo"
SPOOL_REDIS_COOLDOWN = 5.0  # seconds to go straight to the spool after Redis failed


class State:
    """What one app's extension holds: its connections, outbox, spool and error counts."""

    def __init__(self, extension: Klaviyo, app: Flask) -> None:
        self.extension = extension
        self.instance_path = app.instance_path
        self._redis: redis.Redis | None = None
        self._outbox: Outbox | None = None
        self.spool = Spool(app.instance_path, max_bytes=app.config["KLAVIYO_SPOOL_MAX_BYTES"])
        self.breaker = Breaker(cooldown=SPOOL_REDIS_COOLDOWN)
        self.tolerated: Counter[str] = Counter()  # errors kept from the page, by what failed
        self.inspector = inspector_on(app.config)  # KLAVIYO_INSPECTOR: journal and views

    @property
    def redis_url(self) -> str:
        url = current_app.config["KLAVIYO_REDIS_URL"]
        return url or embedded_redis_url(self.instance_path)

    @property
    def redis(self) -> redis.Redis:
        if self._redis is None:
            self._redis = redis_from_url(self.redis_url)  # redis+sentinel:// too
        return self._redis

    @property
    def outbox(self) -> Outbox:
        if self._outbox is None:
            config = current_app.config
            self._outbox = Outbox(
                self.redis,
                queue_name=config["KLAVIYO_QUEUE"],
                retry_max=config["KLAVIYO_RETRY_MAX"],
                min_replicas=config["KLAVIYO_REDIS_MIN_REPLICAS"],
                wait_timeout_ms=config["KLAVIYO_REDIS_WAIT_TIMEOUT"],
            )
            self._outbox.journal = self.journal
            self._outbox.counted = bool(config["KLAVIYO_METRICS"])  # Prometheus counters
        return self._outbox

    @property
    def journal(self) -> Journal | None:
        """The inspector's journal while it is on; None (nothing written) otherwise."""
        return Journal(self.redis) if self.inspector else None

    @property
    def dead_letters(self) -> DeadLetters:
        return DeadLetters(self.redis)


def current_state() -> State:
    """This app's state, or a clear error naming the fix when ``init_app`` was never called."""
    try:
        return current_app.extensions[EXTENSION_KEY]  # type: ignore[no-any-return]
    except KeyError:
        raise RuntimeError(
            "flask-klaviyo is not initialized on this app; did you forget init_app? "
            "Call klaviyo.init_app(app) (or Klaviyo(app)) in your app factory."
        ) from None


def enabled() -> bool:
    """The ``KLAVIYO_ENABLED`` switch (and a clear error when init_app was never called)."""
    current_state()
    return bool(current_app.config["KLAVIYO_ENABLED"])


def is_strict() -> bool:
    """``KLAVIYO_STRICT``; unset (None) means ``app.debug or app.testing``."""
    strict = current_app.config.get("KLAVIYO_STRICT")
    if strict is None:
        return bool(current_app.debug or current_app.testing)
    return bool(strict)


def tolerate(
    what: str,
    *args: Any,
    record: Mapping[str, Any] | None = None,
    errors: Sequence[Mapping[str, Any]] | None = None,
    reason: str = "invalid",
    traceback: bool = True,
) -> None:
    """Apply the rule to the exception being handled; call it only inside ``except``.

    Strict: re-raise it. Lenient: log ``what`` (a %-format with ``args``), count it and, given a
    ``record``, keep that as a dead letter with ``errors``. Keeping the dead letter may fail
    too (Redis down): that is logged, never raised.
    """
    if is_strict():
        raise  # re-raises the exception the caller is handling
    message = "klaviyo: " + what
    if traceback:
        log.exception(message, *args)
    else:
        log.error(message, *args)
    state = current_app.extensions.get(EXTENSION_KEY)
    if state is None:
        return
    state.tolerated[what] += 1
    if record is None:
        return
    try:
        state.dead_letters.add(record, reason=reason, errors=list(errors or ()))
    except Exception:  # tracking never breaks the page
        log.exception("klaviyo: could not keep a dead letter for: " + what, *args)
