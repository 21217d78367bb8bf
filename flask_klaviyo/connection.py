"""``KLAVIYO_REDIS_URL`` into a Redis client: one place, for the web side and every worker.

Besides redis-py's own URLs (``redis://``, ``rediss://``, ``unix://``) it reads a Sentinel URL::

    redis+sentinel://[[username]:password@]host1:26379,host2:26379/service/db?socket_timeout=2

The hosts are the sentinels; ``service`` is the master's name in their configuration (``mymaster``
in most guides); ``db`` defaults to 0. The password (and username) are the data nodes'; the
sentinels' own, if they have one, is ``?sentinel_password=``. The client asks the sentinels for
the current primary on every new connection (redis-py's ``SentinelConnectionPool``), so after a
failover a dropped or read-only connection is replaced by one to the new primary: the web side
spools meanwhile, workers retry.

A plain ``rq worker`` gets the same client from :func:`rq_settings` through a settings module
(``rq worker -c flask_klaviyo.rq_settings``). This module imports nothing from the package.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import redis
from redis.sentinel import Sentinel

__all__ = [
    "SENTINEL_SCHEME",
    "SentinelURL",
    "is_sentinel_url",
    "parse_sentinel_url",
    "redis_from_url",
    "rq_settings",
]

log = logging.getLogger(__name__)

SENTINEL_SCHEME = "redis+sentinel"
DEFAULT_SENTINEL_PORT = 26379
# The web side's limits: a page never waits long on Redis (the spool takes over).
SOCKET_TIMEOUT = 2.0
CONNECT_TIMEOUT = 1.0


@dataclass(frozen=True)
class SentinelURL:
    """A parsed ``redis+sentinel://`` URL."""

    sentinels: tuple[tuple[str, int], ...]
    service: str
    db: int = 0
    username: str | None = None
    password: str | None = None
    socket_timeout: float | None = None
    sentinel_password: str | None = None
    extra: dict[str, str] = field(default_factory=dict)


def is_sentinel_url(url: str | None) -> bool:
    return bool(url) and str(url).lower().startswith(SENTINEL_SCHEME + "://")


def _host_port(text: str) -> tuple[str, int]:
    if text.startswith("["):  # [::1]:26379
        host, _, rest = text[1:].partition("]")
        port_text = rest[1:] if rest.startswith(":") else ""
    else:
        host, _, port_text = text.rpartition(":") if ":" in text else (text, "", "")
    if not host:
        raise ValueError(f"a sentinel without a host: {text!r}")
    try:
        port = int(port_text) if port_text else DEFAULT_SENTINEL_PORT
    except ValueError:
        raise ValueError(f"a sentinel port is not a number: {text!r}") from None
    if not 0 < port < 65536:
        raise ValueError(f"a sentinel port out of range: {text!r}")
    return host, port


def parse_sentinel_url(url: str) -> SentinelURL:
    """Read ``redis+sentinel://[user:pass@]h1:p1,h2:p2/service[/db][?options]``; ValueError
    naming what is wrong otherwise."""
    parts = urlsplit(url)
    if parts.scheme.lower() != SENTINEL_SCHEME:
        raise ValueError(f"not a {SENTINEL_SCHEME}:// URL")
    userinfo, _, hostlist = parts.netloc.rpartition("@")
    username = password = None
    if userinfo:
        user, has_password, secret = userinfo.partition(":")
        username = unquote(user) or None
        password = unquote(secret) if has_password else None
        if not has_password:  # redis://secret@host reads the lone part as the password
            username, password = None, unquote(user) or None
    sentinels = tuple(_host_port(item.strip()) for item in hostlist.split(",") if item.strip())
    if not sentinels:
        raise ValueError("no sentinel host: redis+sentinel://host1:26379,host2:26379/service/0")
    path = [unquote(p) for p in parts.path.split("/") if p]
    if not path:
        raise ValueError("no service name: redis+sentinel://host:26379/mymaster/0")
    if len(path) > 2:
        raise ValueError(f"the path must be /service[/db], got {parts.path!r}")
    try:
        db = int(path[1]) if len(path) == 2 else 0
    except ValueError:
        raise ValueError(f"the database must be a number, got {path[1]!r}") from None
    options = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
    timeout = options.pop("socket_timeout", None)
    try:
        socket_timeout = float(timeout) if timeout else None
    except ValueError:
        raise ValueError(f"socket_timeout must be seconds, got {timeout!r}") from None
    return SentinelURL(
        sentinels=sentinels,
        service=path[0],
        db=db,
        username=username,
        password=password,
        socket_timeout=socket_timeout,
        sentinel_password=options.pop("sentinel_password", None) or None,
        extra=options,
    )


def redis_from_url(
    url: str,
    *,
    socket_timeout: float | None = SOCKET_TIMEOUT,
    socket_connect_timeout: float | None = CONNECT_TIMEOUT,
) -> redis.Redis:
    """A client for ``url``: redis-py's ``from_url``, or the primary a set of sentinels names.

    The URL's own ``socket_timeout`` wins over the argument (workers pass None: a blocking
    read may wait as long as it means to).
    """
    if not is_sentinel_url(url):
        return redis.Redis.from_url(
            url, socket_timeout=socket_timeout, socket_connect_timeout=socket_connect_timeout
        )
    target = parse_sentinel_url(url)
    if target.extra:
        log.warning("flask-klaviyo: ignored Sentinel URL options %s", sorted(target.extra))
    timeout = target.socket_timeout if target.socket_timeout is not None else socket_timeout
    sentinel_kwargs: dict[str, Any] = {
        "socket_timeout": timeout,
        "socket_connect_timeout": socket_connect_timeout,
    }
    if target.sentinel_password:
        sentinel_kwargs["password"] = target.sentinel_password
    manager = Sentinel(list(target.sentinels), sentinel_kwargs=sentinel_kwargs)
    return manager.master_for(
        target.service,
        db=target.db,
        username=target.username,
        password=target.password,
        socket_timeout=timeout,
        socket_connect_timeout=socket_connect_timeout,
    )


def rq_settings(url: str | None) -> dict[str, Any]:
    """What RQ's ``-c`` settings module needs for ``url``: ``REDIS_URL``, or its ``SENTINEL``
    dictionary (RQ builds the same Sentinel client from it)."""
    if not url:
        raise ValueError("KLAVIYO_REDIS_URL is not set (a plain rq worker needs it)")
    if not is_sentinel_url(url):
        return {"REDIS_URL": url}
    target = parse_sentinel_url(url)
    sentinel_kwargs: dict[str, Any] = {"socket_connect_timeout": CONNECT_TIMEOUT}
    if target.sentinel_password:
        sentinel_kwargs["password"] = target.sentinel_password
    return {
        "SENTINEL": {
            "INSTANCES": list(target.sentinels),
            "MASTER_NAME": target.service,
            "DB": target.db,
            "USERNAME": target.username,
            "PASSWORD": target.password,
            "SOCKET_TIMEOUT": target.socket_timeout,
            "CONNECTION_KWARGS": {"socket_connect_timeout": CONNECT_TIMEOUT},
            "SENTINEL_KWARGS": sentinel_kwargs,
        }
    }
