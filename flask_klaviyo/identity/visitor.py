"""Who the visitor is, as a Klaviyo profile; the identity cookies; parked anonymous events.

Order of trust (first found wins):

1. the event's own identity (an order's email, ``profile=``),
2. the merchant's ``identity_loader`` (the logged-in user),
3. what ``klaviyo.identify(...)`` established, now or in an earlier request: the extension's
   signed first-party cookie (or the same token in the ``KLAVIYO_ID_HEADER`` request header),
4. a ``_kx`` from a Klaviyo email link (``?_kx=`` on any landing URL; kept in the signed cookie
   for later visits), else the ``$exchange_id`` of Klaviyo's ``__kla_id`` cookie (or header),
5. anonymous: the event is parked under the visitor's anonymous id (see :class:`Parking`) and
   released, with its original time and unique_id, when the visitor becomes known.

``__kla_id`` is written by klaviyo.js and so by anyone: only its ``$exchange_id`` (an opaque token
that Klaviyo itself resolves) is used, never its ``$email``. Without consent (the
``consent_loader`` says False, or Klaviyo's ``__kla_off`` cookie) the identity cookies are neither
used nor written; the identity loader and ``identify()`` still name the visitor for the request.

Nothing here may break a page: a tampered, truncated, oversized or expired cookie is ignored (and
replaced or deleted), a malformed ``__kla_id`` is ignored.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import json
import logging
import re
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

import redis
from flask import current_app, g, has_request_context, request
from itsdangerous import BadData, SignatureExpired, URLSafeTimedSerializer

from .._state import is_strict
from ..events import Event
from .identifiers import (
    ATTACHING_KEYS,
    EMAIL_PATTERN,
    IDENTIFY_KEYS,
    LEGACY_KEYS,
    LOADER_KEYS,
    PROFILE_KEYS,
    WHO_KEYS,
    mask_email,
    mask_profile,
    normalize_phone,
)

__all__ = [
    "COOKIE_SALT",
    "IDENTIFY_KEYS",
    "KLA_ID_COOKIE",
    "KLA_OFF_COOKIE",
    "PROFILE_KEYS",
    "ConsentLoader",
    "IdentityLoader",
    "Parking",
    "Visit",
    "browse_allowed",
    "current_visit",
    "encode_kla_id",
    "identify",
    "needs_identity",
    "normalize_phone",
    "normalize_profile",
    "parse_kla_id",
    "provisional",
    "resolve_profile",
    "settle",
    "visitor_profile",
]

log = logging.getLogger("flask_klaviyo")

IdentityLoader = Callable[[], Mapping[str, Any] | None]
ConsentLoader = Callable[[], bool | None]

_ABSENT = object()

COOKIE_SALT = "flask-klaviyo.identity"
KLA_ID_COOKIE = "__kla_id"
KLA_OFF_COOKIE = "__kla_off"
MAX_COOKIE_CHARS = 4096  # what browsers keep per cookie; anything longer is not ours
MAX_VALUE_CHARS = 254  # the longest email address; no identity attribute needs more
REFRESH_AFTER = 0.5  # re-sign a cookie older than half its max age (it is being written anyway)
# Placeholder identifier used to validate an anonymous event before it is parked.
_PROVISIONAL_KX = "flask-klaviyo.parked"

_ANONYMOUS_ID = re.compile(r"^[0-9a-f]{32}$")
# An exchange id is opaque (base64 and the company id); refuse whitespace, controls and the
# characters that cannot live in a cookie value.
_EXCHANGE_ID = re.compile(r'^[^\s\x00-\x1f\x7f;,"\\]{1,256}$')


# --------------------------------------------------------------------------------------------
# Profiles
# --------------------------------------------------------------------------------------------


def normalize_profile(raw: Mapping[str, Any] | None) -> dict[str, Any]:
    """Keep only known, non-empty attributes; tolerate the legacy ``$email`` spelling.

    A phone number that is not E.164 is left out rather than sent: Klaviyo would reject the
    whole event for it, and the email alone still identifies the shopper.
    """
    if not raw:
        return {}
    profile: dict[str, Any] = {}
    for key in PROFILE_KEYS:
        value = raw.get(key, _ABSENT)
        if value is _ABSENT:
            value = raw.get(LEGACY_KEYS[key])
        if value is None or value == "":
            continue
        value = str(value).strip()
        if key == "email":
            value = value.lower()
        if key == "phone_number":
            value = normalize_phone(value) or ""
        if value:
            profile[key] = value
    return profile


def _identity(raw: Any, keys: Sequence[str] = IDENTIFY_KEYS) -> dict[str, str]:
    """A visitor's identity from a loader, ``identify()`` or our cookie: only usable values.

    An invalid email is dropped, ``external_id`` is kept only beside an email or phone number
    (alone it would create a permanent duplicate profile), and an identity without an
    identifier Klaviyo can attach events to is no identity: {}.
    """
    if not isinstance(raw, Mapping):
        return {}
    profile = {
        key: value
        for key, value in normalize_profile(raw).items()
        if key in keys and len(value) <= MAX_VALUE_CHARS
    }
    if "email" in profile and not EMAIL_PATTERN.match(profile["email"]):
        del profile["email"]
    if "_kx" in profile and not _EXCHANGE_ID.match(profile["_kx"]):
        del profile["_kx"]
    if "email" not in profile and "phone_number" not in profile:
        profile.pop("external_id", None)
    if "email" not in profile and "phone_number" not in profile and "_kx" not in profile:
        return {}
    return profile


def needs_identity(profile: Mapping[str, Any]) -> bool:
    """True for a profile Klaviyo could only file as an orphan: park it, don't send it."""
    for key in ATTACHING_KEYS:
        value = profile.get(key)
        if value is not None and value != "":
            return False
    return True


def provisional(event: Event) -> Event:
    """``event`` with a placeholder identifier, to validate everything else before parking."""
    return dataclasses.replace(event, profile={**event.profile, "_kx": _PROVISIONAL_KX})


def _with_identity(event: Event, known: Mapping[str, Any], anonymous_id: str | None) -> Event:
    """A parked event under the now-known profile, plus its anonymous id so Klaviyo merges."""
    profile = {k: v for k, v in event.profile.items() if k not in WHO_KEYS}
    profile.update(known)
    if anonymous_id:
        profile["anonymous_id"] = anonymous_id
    return dataclasses.replace(event, profile=profile)


def _same_person(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    for key in ("email", "phone_number"):
        if a.get(key) and b.get(key):
            return bool(a[key] == b[key])
    return False


def _call(loader: Callable[[], Any], what: str, failed: Any) -> Any:
    """Run a merchant callback; outside strict mode a crash is logged and ``failed`` returned."""
    try:
        return loader()
    except Exception:
        if is_strict():
            raise
        log.exception("klaviyo: the %s raised; going on without it", what)
        return failed


# --------------------------------------------------------------------------------------------
# Klaviyo's __kla_id cookie
# --------------------------------------------------------------------------------------------


def parse_kla_id(raw: str | None) -> dict[str, Any] | None:
    """The JSON object klaviyo.js keeps base64-encoded in ``__kla_id``; None when malformed."""
    if not raw or len(raw) > MAX_COOKIE_CHARS:
        return None
    text = raw.strip().strip('"')
    if "%" in text:
        text = unquote(text)
    text = text.replace("-", "+").replace("_", "/")
    text += "=" * (-len(text) % 4)
    try:
        value = json.loads(base64.b64decode(text, validate=True))
    except (binascii.Error, ValueError, RecursionError):  # JSON and UTF-8 errors are ValueErrors
        return None
    return value if isinstance(value, dict) else None


def encode_kla_id(value: Mapping[str, Any]) -> str:
    """The cookie value klaviyo.js reads back: base64 of the JSON object."""
    text = json.dumps(dict(value), separators=(",", ":"), ensure_ascii=False, default=str)
    return base64.b64encode(text.encode()).decode()


def _exchange_id(value: Any) -> str | None:
    """A usable ``_kx`` / ``$exchange_id``: URL-decoded once by the caller; ``+`` repaired."""
    if not isinstance(value, str):
        return None
    # An unencoded ``+`` in a link arrives as a space; an exchange id never holds one.
    text = value.strip().replace(" ", "+")
    return text if _EXCHANGE_ID.match(text) else None


# --------------------------------------------------------------------------------------------
# The visit: what this request knows, read from (and written back to) the cookies
# --------------------------------------------------------------------------------------------


@dataclass
class Visit:
    """The visitor as this request sees it (one per request, in ``g``)."""

    anonymous_id: str | None = None
    kx: str | None = None  # a _kx from a landing URL, now or earlier (signed cookie)
    profile: dict[str, str] = field(default_factory=dict)  # from the signed cookie
    parked: int = 0  # events parked under anonymous_id (a hint: saves a Redis lookup)
    identified: dict[str, str] | None = None  # identify() during this request
    exchange_id: str | None = None  # __kla_id's $exchange_id (cookie or header)
    kla: dict[str, Any] | None = None  # __kla_id as klaviyo.js wrote it (kept when re-set)
    header: bool = False  # the identity came in (or may go back in) KLAVIYO_ID_HEADER
    landed: bool = False  # a new _kx arrived with this request
    changed: bool = False  # the signed token must be written
    stale: bool = False  # our cookie was present but unusable
    kla_changed: bool = False  # __kla_id must be re-set

    def state(self) -> dict[str, Any]:
        """What the signed token holds (short keys: it travels with every request)."""
        data: dict[str, Any] = {}
        if self.anonymous_id:
            data["a"] = self.anonymous_id
        if self.kx:
            data["k"] = self.kx
        profile = self.identified if self.identified is not None else self.profile
        if profile:
            data["p"] = profile
        if self.parked:
            data["n"] = self.parked
        return data


def _serializer(keys: Sequence[Any]) -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(list(keys), salt=COOKIE_SALT)


def _signing_keys() -> list[Any]:
    """Old keys first, the current one last (itsdangerous signs with the last)."""
    config = current_app.config
    fallbacks = [key for key in config.get("SECRET_KEY_FALLBACKS") or () if key]
    return [*fallbacks, config["SECRET_KEY"]]


def sign(state: Mapping[str, Any]) -> str:
    """A signed identity token with the current ``SECRET_KEY`` (for the cookie and the header)."""
    return _serializer([current_app.config["SECRET_KEY"]]).dumps(dict(state))


def _read_token(raw: str) -> Visit | None:
    """The visit a signed token describes; None when it is not one of ours (or has expired)."""
    if len(raw) > MAX_COOKIE_CHARS:
        return None
    max_age = current_app.config["KLAVIYO_COOKIE_MAX_AGE"]
    keys = _signing_keys()
    resign = False
    try:
        data, signed_at = _serializer(keys[-1:]).loads(raw, max_age=max_age, return_timestamp=True)
    except SignatureExpired:
        return None
    except BadData:
        if len(keys) == 1:
            return None
        try:  # signed before a key rotation: read it, then re-sign with the current key
            data, signed_at = _serializer(keys).loads(raw, max_age=max_age, return_timestamp=True)
        except (BadData, ValueError, TypeError):
            return None
        resign = True
    except (ValueError, TypeError):
        return None
    if not isinstance(data, dict):
        return None
    visit = Visit()
    anonymous_id = data.get("a")
    if isinstance(anonymous_id, str) and _ANONYMOUS_ID.match(anonymous_id):
        visit.anonymous_id = anonymous_id
    visit.kx = _exchange_id(data.get("k"))
    visit.profile = _identity(data.get("p"))
    parked = data.get("n")
    if isinstance(parked, int) and not isinstance(parked, bool) and parked > 0:
        visit.parked = parked
    if resign or time.time() - signed_at.timestamp() > max_age * REFRESH_AFTER:
        visit.changed = True
    return visit


def _load_visit() -> Visit:
    config = current_app.config
    header_name = config["KLAVIYO_ID_HEADER"]
    header = request.headers.get(header_name) if header_name else None
    token = request.cookies.get(config["KLAVIYO_COOKIE_NAME"])
    visit: Visit | None = None
    header_is_token = False
    if token is not None:
        visit = _read_token(token) or Visit(stale=True)
    elif header:
        visit = _read_token(header)
        header_is_token = visit is not None
    if visit is None:
        visit = Visit()
    visit.header = header is not None
    kla = parse_kla_id(request.cookies.get(KLA_ID_COOKIE))
    if kla is None and header and not header_is_token:
        kla = parse_kla_id(header)
    if kla is not None:
        visit.kla = kla
        visit.exchange_id = _exchange_id(kla.get("$exchange_id"))
    landing = _exchange_id(request.args.get("_kx"))  # request.args is URL-decoded already
    if landing is not None:
        visit.landed = True
        if landing != visit.kx:
            visit.kx = landing
            visit.changed = True
        if visit.exchange_id != landing:
            visit.kla_changed = True
    return visit


def current_visit() -> Visit:
    """This request's :class:`Visit`, read once from the cookies, header and URL."""
    visit: Visit | None = g.get("_klaviyo_visit")
    if visit is None:
        visit = g._klaviyo_visit = _load_visit()
    return visit


def _has_identity_input() -> bool:
    """Cheap check for the after-request hook: is there anything identity could have to do?"""
    if "_klaviyo_visit" in g:
        return True
    config = current_app.config
    header_name = config["KLAVIYO_ID_HEADER"]
    return (
        config["KLAVIYO_COOKIE_NAME"] in request.cookies
        or "_kx" in request.args
        or bool(header_name and header_name in request.headers)
    )


# --------------------------------------------------------------------------------------------
# Resolution
# --------------------------------------------------------------------------------------------


def browse_allowed(loader: ConsentLoader | None) -> bool:
    """Browse tracking and identity cookies: not when the shopper said no (or ``__kla_off``).

    A consent loader that raises counts as "no" (outside strict mode, where it raises).
    """
    if not has_request_context():
        return True
    if request.cookies.get(KLA_OFF_COOKIE):
        return False
    if loader is None:
        return True
    return _call(loader, "consent_loader", False) is not False


def visitor_profile(
    loader: IdentityLoader | None, consent_loader: ConsentLoader | None = None
) -> dict[str, Any]:
    """Who the current visitor is, as far as the server knows ({} for a stranger).

    Computed once per request (``identify()`` recomputes it). No anonymous id: a stranger is {}.
    """
    if not has_request_context():
        return {}
    cached = g.get("_klaviyo_visitor")
    if cached is not None:
        return dict(cached)
    profile: dict[str, Any] = {}
    if loader is not None:
        profile = _identity(_call(loader, "identity_loader", None), LOADER_KEYS)
    if not profile:
        visit = current_visit()
        if visit.identified:
            profile = dict(visit.identified)
        elif browse_allowed(consent_loader):
            if visit.profile:
                profile = dict(visit.profile)
            elif visit.kx:
                profile = {"_kx": visit.kx}
            elif visit.exchange_id:
                profile = {"_kx": visit.exchange_id}
    g._klaviyo_visitor = profile
    return dict(profile)


def resolve_profile(
    explicit: Mapping[str, Any] | None,
    loader: IdentityLoader | None,
    consent_loader: ConsentLoader | None = None,
) -> dict[str, Any]:
    """The profile an event belongs to: its own identity first, then the visitor's."""
    profile = normalize_profile(explicit) if explicit else {}
    if "email" in profile or "phone_number" in profile or "_kx" in profile:
        return profile
    if has_request_context():
        visitor = visitor_profile(loader, consent_loader)
        for key, value in visitor.items():
            profile.setdefault(key, value)
    return profile


def identify(
    attributes: Mapping[str, Any], consent_loader: ConsentLoader | None = None
) -> dict[str, Any]:
    """The visitor is now known: for the rest of this request and, with consent, later ones.

    Returns the identity kept ({} when it holds no valid email or E.164 phone number).
    """
    unknown = sorted(set(attributes) - set(IDENTIFY_KEYS))
    if unknown:
        raise TypeError(
            f"identify() got unknown attribute(s) {', '.join(unknown)}; "
            f"known: {', '.join(IDENTIFY_KEYS)}"
        )
    profile = _identity(attributes)
    if not profile:
        log.warning(
            "klaviyo: identify() without a valid email or E.164 phone_number ignored (%s)",
            mask_profile(normalize_profile(attributes)),
        )
        return {}
    email = profile.get("email", "")
    if email.rpartition("@")[2] == "example.com":
        log.warning(
            "klaviyo: %s identified, but Klaviyo drops @example.com addresses: its events "
            "will not show up in Klaviyo",
            mask_email(email),
        )
    if not has_request_context():
        return profile
    visit = current_visit()
    before = visit.identified
    if before is None:
        before = visit.profile if browse_allowed(consent_loader) else {}
    if _same_person(before, profile):
        profile = {**before, **profile}
    if "email" not in profile and "phone_number" not in profile:
        profile.pop("external_id", None)
    visit.identified = profile
    if profile != visit.profile:
        visit.changed = True
    visit.kla_changed = True  # re-set __kla_id: it outlives Safari's cap on script cookies
    g.pop("_klaviyo_visitor", None)
    return dict(profile)


# --------------------------------------------------------------------------------------------
# Parking: anonymous events wait in Redis until their visitor is known
# --------------------------------------------------------------------------------------------

# KEYS: list, index (zset anonymous id -> expiry), counts (hash), stats (hash)
# ARGV: anonymous id, max events, ttl seconds, now, key prefix, events...
_PARK = """
local now = tonumber(ARGV[4])
local expired = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, 100)
for _, anon in ipairs(expired) do
  if redis.call('EXISTS', ARGV[5] .. anon) == 0 then
    local n = tonumber(redis.call('HGET', KEYS[3], anon) or '0')
    if n > 0 then redis.call('HINCRBY', KEYS[4], 'expired', n) end
    redis.call('HDEL', KEYS[3], anon)
    redis.call('ZREM', KEYS[2], anon)
  end
end
local added = #ARGV - 5
for i = 6, #ARGV do redis.call('RPUSH', KEYS[1], ARGV[i]) end
local len = redis.call('LLEN', KEYS[1])
local limit = tonumber(ARGV[2])
if len > limit then
  redis.call('LTRIM', KEYS[1], len - limit, -1)
  redis.call('HINCRBY', KEYS[4], 'dropped', len - limit)
  len = limit
end
local ttl = tonumber(ARGV[3])
redis.call('EXPIRE', KEYS[1], ttl)
redis.call('ZADD', KEYS[2], now + ttl, ARGV[1])
redis.call('HSET', KEYS[3], ARGV[1], len)
redis.call('HINCRBY', KEYS[4], 'parked', added)
return len
"""

# KEYS: list, index, counts, stats; ARGV: anonymous id
_TAKE = """
local items = redis.call('LRANGE', KEYS[1], 0, -1)
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('HDEL', KEYS[3], ARGV[1])
if #items > 0 then redis.call('HINCRBY', KEYS[4], 'released', #items) end
return items
"""

# KEYS: index, counts, stats; ARGV: now, key prefix
_SWEEP = """
local expired = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', tonumber(ARGV[1]), 'LIMIT', 0, 1000)
for _, anon in ipairs(expired) do
  if redis.call('EXISTS', ARGV[2] .. anon) == 0 then
    local n = tonumber(redis.call('HGET', KEYS[2], anon) or '0')
    if n > 0 then redis.call('HINCRBY', KEYS[3], 'expired', n) end
    redis.call('HDEL', KEYS[2], anon)
    redis.call('ZREM', KEYS[1], anon)
  end
end
return #expired
"""


class Parking:
    """Per-visitor lists of anonymous events in Redis: bounded, expiring, counted.

    ``klaviyo:parked:<anonymous id>`` holds a visitor's events (JSON, oldest first), at most
    ``max_events`` (the oldest are dropped and counted) and expiring ``ttl`` seconds after the
    last write. ``klaviyo:parked:stats`` counts ``parked``, ``released``, ``dropped`` (over the
    cap) and ``expired`` (reached the TTL unreleased; counted lazily, by the next park or
    :meth:`stats`, through an index of expiry times). Each call is one atomic Lua script: one
    round trip. The scripts name keys built from the prefix, so they need a single Redis (not
    Redis Cluster).
    """

    PREFIX = "klaviyo:parked:"
    INDEX_KEY = "klaviyo:parked-index"
    COUNTS_KEY = "klaviyo:parked-counts"
    STATS_KEY = "klaviyo:parked-stats"

    def __init__(self, connection: redis.Redis, *, max_events: int = 50, ttl: int = 2592000):
        self.connection = connection
        self.max_events = max_events
        self.ttl = ttl

    def key(self, anonymous_id: str) -> str:
        return self.PREFIX + anonymous_id

    def park(self, anonymous_id: str, events: Sequence[Mapping[str, Any]]) -> int:
        """Append ``events`` (``Event.to_dict()`` forms); returns how many the visitor has."""
        if not events:
            return self.count(anonymous_id)
        payloads = [json.dumps(dict(e), default=str, separators=(",", ":")) for e in events]
        script = self.connection.register_script(_PARK)
        keys = [self.key(anonymous_id), self.INDEX_KEY, self.COUNTS_KEY, self.STATS_KEY]
        args = [anonymous_id, self.max_events, self.ttl, int(time.time()), self.PREFIX]
        return int(script(keys=keys, args=[*args, *payloads]))

    def take(self, anonymous_id: str) -> list[dict[str, Any]]:
        """Remove and return the visitor's parked events (atomically: one request gets them)."""
        script = self.connection.register_script(_TAKE)
        keys = [self.key(anonymous_id), self.INDEX_KEY, self.COUNTS_KEY, self.STATS_KEY]
        events = []
        for raw in script(keys=keys, args=[anonymous_id]):
            try:
                events.append(json.loads(raw))
            except ValueError:
                log.error("klaviyo: a parked event of %s was not JSON; dropped", anonymous_id)
        return events

    def count(self, anonymous_id: str) -> int:
        return int(self.connection.llen(self.key(anonymous_id)))

    def stats(self, *, now: float | None = None) -> dict[str, int]:
        """Counters, after accounting for visitors whose events expired; ``waiting`` is now."""
        sweep = self.connection.register_script(_SWEEP)
        when = int(time.time() if now is None else now)
        sweep(keys=[self.INDEX_KEY, self.COUNTS_KEY, self.STATS_KEY], args=[when, self.PREFIX])
        raw = self.connection.hgetall(self.STATS_KEY)
        stats = {name: 0 for name in ("parked", "released", "dropped", "expired")}
        stats.update({k.decode(): int(v) for k, v in raw.items()})
        stats["visitors"] = int(self.connection.hlen(self.COUNTS_KEY))
        stats["waiting"] = sum(int(v) for v in self.connection.hvals(self.COUNTS_KEY))
        return stats


def _parking(connection: redis.Redis) -> Parking:
    config = current_app.config
    return Parking(
        connection,
        max_events=config["KLAVIYO_PARK_MAX_EVENTS"],
        ttl=config["KLAVIYO_PARK_TTL"],
    )


# --------------------------------------------------------------------------------------------
# After the response: park, release, write the cookies
# --------------------------------------------------------------------------------------------


def settle(
    response: Any,
    pending: Sequence[Event],
    *,
    loader: IdentityLoader | None,
    consent_loader: ConsentLoader | None,
    connection: Callable[[], redis.Redis],
    check: Callable[[Event], bool],
) -> list[Event]:
    """Identity's part of the after-request hook; returns the events to queue now.

    Events with an identity pass through. Anonymous ones get the visitor's profile if the
    request made the visitor known (``identify()`` after the track), else are parked (one
    round trip) under the anonymous id, created on first need. When the visitor is known and
    has parked events, they are taken back and returned under the profile plus the anonymous
    id, each checked by ``check`` (validation). Cookies are written last, only with consent.
    """
    waiting: list[Event] = []
    ready: list[Event] = []
    for event in pending:
        (waiting if needs_identity(event.profile) else ready).append(event)
    if not waiting and not _has_identity_input():
        return ready
    visit = current_visit()
    consent = browse_allowed(consent_loader)
    moment = visit.identified is not None or visit.landed  # the visitor just became known
    if waiting or (visit.anonymous_id and (visit.parked or moment)):
        g.pop("_klaviyo_visitor", None)  # the view may have logged someone in
        known = visitor_profile(loader, consent_loader)
    else:
        known = {}
    anonymous_id = visit.anonymous_id if consent else None

    if waiting and known:
        with_identity = (_with_identity(event, known, anonymous_id) for event in waiting)
        ready.extend(event for event in with_identity if check(event))
    elif waiting:
        limit = current_app.config["KLAVIYO_PARK_MAX_EVENTS"]
        if not consent or limit == 0:
            log.debug(
                "klaviyo: %d anonymous event(s) not kept (%s)",
                len(waiting),
                "no consent" if not consent else "KLAVIYO_PARK_MAX_EVENTS is 0",
            )
        else:
            if not visit.anonymous_id:
                visit.anonymous_id = uuid.uuid4().hex
            visit.parked = _parking(connection()).park(
                visit.anonymous_id, [event.to_dict() for event in waiting]
            )
            visit.changed = True
    if known and anonymous_id and (visit.parked or moment):
        taken = _parking(connection()).take(anonymous_id)
        released = [_with_identity(Event.from_dict(data), known, anonymous_id) for data in taken]
        ready.extend(event for event in released if check(event))
        if taken:
            log.info("klaviyo: %d parked event(s) released for %s", len(taken), mask_profile(known))
        if visit.parked:
            visit.parked = 0
            visit.changed = True
    if consent:
        _write_cookies(response, visit)
    return ready


def _write_cookies(response: Any, visit: Visit) -> None:
    config = current_app.config
    name = config["KLAVIYO_COOKIE_NAME"]
    options = {
        "max_age": config["KLAVIYO_COOKIE_MAX_AGE"],
        "domain": config["KLAVIYO_COOKIE_DOMAIN"],
        "secure": bool(config["KLAVIYO_COOKIE_SECURE"]),
        "samesite": "Lax",
        "path": "/",
    }
    state = visit.state()
    if state and (visit.changed or visit.stale):
        token = sign(state)
        if len(token) > MAX_COOKIE_CHARS - len(name) - 100 and "p" in state:
            # Absurdly long names: keep the identifiers, which is what matters.
            state["p"] = {
                k: v for k, v in state["p"].items() if k not in ("first_name", "last_name")
            }
            token = sign(state)
        response.set_cookie(name, token, httponly=True, **options)
        response.vary.add("Cookie")
        header_name = config["KLAVIYO_ID_HEADER"]
        if visit.header and header_name:
            response.headers[header_name] = token  # a headless front end keeps it for us
            response.vary.add(header_name)
    elif visit.stale:
        response.delete_cookie(
            name,
            domain=options["domain"],
            path="/",
            secure=options["secure"],
            httponly=True,
            samesite="Lax",
        )
    if visit.kla_changed:
        kla = dict(visit.kla or {})
        if visit.kx:
            kla["$exchange_id"] = visit.kx
        value = encode_kla_id(kla) if kla else ""
        if value and len(value) <= MAX_COOKIE_CHARS - 100:
            # Not HttpOnly: klaviyo.js reads it. Server-set, so Safari keeps it past 7 days.
            response.set_cookie(KLA_ID_COOKIE, value, httponly=False, **options)
