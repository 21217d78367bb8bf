"""FakeKlaviyo: the stand-in's lifecycle and its Python API.

Tests in this process start it, point the code under test at ``fake.url`` (or hand
``fake.transport()`` to httpx) and assert on what it recorded; they can also make it throttle,
fail, hang, reset or slow down. Other processes reach the same API at ``/_fake/*``.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import hmac
import ipaddress
import logging
import secrets
import threading
import time
from types import TracebackType
from typing import Any

from ._config import (
    DEFAULT_API_KEY,
    DEFAULT_COMPANY_ID,
    DEFAULT_HOST,
    POLL_INTERVAL,
)
from .catalog_api import CatalogView
from .dispatch import answer
from .driving import Driving
from .jsonapi import Answer, Request
from .profile_checks import EMAIL_PATTERN
from .server import Server
from .state import State
from .transport import FakeTransport

log = logging.getLogger(__name__)

UNSTARTED_URL = "http://klaviyo.fake"  # the links' base when only the transport is used


def _loopback_host(host: str) -> str:
    """The stand-in has no real security: refuse to listen anywhere but loopback."""
    if host == "localhost":
        return "127.0.0.1"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        address = None
    if address is None or address.version != 4 or not address.is_loopback:
        raise ValueError(f"FakeKlaviyo only listens on an IPv4 loopback address, not {host!r}")
    return host


class FakeKlaviyo(Driving, CatalogView):
    """A local Klaviyo: events, client events, profiles (import, update, bulk jobs), consent
    (bulk subscribe / unsubscribe), deletion requests, the catalog (items, variants,
    categories: bulk jobs and paginated reads) and back-in-stock subscriptions.

    Start it (``with FakeKlaviyo() as fake`` or ``.start()``), point the code under test at
    ``fake.url`` and assert on ``fake.events``. Everything is thread-safe.
    """

    def __init__(
        self,
        *,
        api_key: str = DEFAULT_API_KEY,
        company_id: str = DEFAULT_COMPANY_ID,
        host: str = DEFAULT_HOST,
        port: int = 0,
        rate_limits: Any = None,
        time_scale: float = 1.0,
        keep_events: bool = True,
        job_delay: float = 0.0,
    ) -> None:
        """``rate_limits``: ``{endpoint: [(limit, seconds), ...]}`` enforced in fixed windows like
        Klaviyo (429 with Retry-After past any of them), or ``"klaviyo"`` for the published
        limits; None (the default) enforces nothing. ``time_scale`` runs those windows (and the
        Retry-After / RateLimit-Reset answers) that many times faster. ``keep_events=False``
        counts and dedups accepted events without keeping them, for long benchmarks.
        ``job_delay``: seconds before a bulk job completes (0: on the first look at it)."""
        if not api_key:
            raise ValueError("api_key must not be empty")
        self.api_key = api_key
        self.company_id = company_id
        self.host = _loopback_host(host)
        self.port = port
        self.state = State(keep_events=bool(keep_events))
        self.stopping = threading.Event()
        self._server: Server | None = None
        self._thread: threading.Thread | None = None
        self._secret = secrets.token_bytes(32)
        self.set_rate_limits(rate_limits, time_scale=time_scale)
        self.job_delay = job_delay

    @property
    def keep_events(self) -> bool:
        return self.state.keep_events

    # ---- lifecycle

    def start(self) -> FakeKlaviyo:
        """Bind (port 0 picks a free port) and serve from a daemon thread."""
        if self._server is not None:
            return self
        self.stopping.clear()
        server = Server((self.host, self.port), self)
        thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": POLL_INTERVAL},
            name=f"FakeKlaviyo:{server.server_address[1]}",
            daemon=True,
        )
        self._server, self._thread = server, thread
        thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and cut open connections, so nothing keeps answering after a test."""
        server, thread = self._server, self._thread
        if server is None:
            return
        self.stopping.set()
        server.shutdown()
        server.close_connections()
        server.server_close()
        if thread is not None:
            thread.join(timeout=5)
        self._server = self._thread = None

    def __enter__(self) -> FakeKlaviyo:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        where = self.url if self._server is not None or self.port else "not started"
        return f"<FakeKlaviyo {where} events={len(self.state.events)}>"

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT`` (no trailing slash)."""
        if self._server is not None:
            return f"http://{self.host}:{self._server.server_address[1]}"
        if self.port:
            return f"http://{self.host}:{self.port}"
        raise RuntimeError("FakeKlaviyo(port=0) has no URL until start()")

    @property
    def link_base(self) -> str:
        """The base of the ``links`` in answers: the URL, or a placeholder before start()."""
        return self.url if self._server is not None or self.port else UNSTARTED_URL

    def transport(self) -> FakeTransport:
        """An httpx transport answering through the same dispatcher, with no socket at all."""
        return FakeTransport(self)

    def _dispatch(self, request: Request) -> Answer:
        return answer(self, request)

    # ---- inspection

    @property
    def events(self) -> list[dict[str, Any]]:
        """Accepted events, deduplicated, in arrival order (a copy)."""
        with self.state.lock:
            return copy.deepcopy(self.state.events)

    @property
    def requests(self) -> list[dict[str, Any]]:
        """Every API request received (not control or inspector ones), with the status answered."""
        with self.state.lock:
            return copy.deepcopy(list(self.state.requests))

    @property
    def duplicates(self) -> int:
        """Events answered 202 but dropped because (profile, metric, unique_id) was known."""
        with self.state.lock:
            return self.state.duplicates

    def events_for(
        self, metric: str | None = None, *, email: str | None = None
    ) -> list[dict[str, Any]]:
        """Accepted events of one metric and/or of the profile that (now) has this email."""
        wanted = email.strip().lower() if email is not None else None
        state = self.state
        with state.lock:
            found = [
                event
                for event in state.events
                if (metric is None or event["metric"] == metric)
                and (wanted is None or state.profiles.profiles[event["profile_id"]].email == wanted)
            ]
            return copy.deepcopy(found)

    def profile_of(self, event: dict[str, Any]) -> dict[str, Any]:
        """The merged profile an accepted event belongs to, with every identifier known."""
        with self.state.lock:
            profile = self.state.profiles.current(event["profile_id"])
            if profile is None:
                raise LookupError(f"no profile {event['profile_id']!r} (was the fake reset?)")
            return self.state.profiles.as_dict(profile)

    def profiles(self) -> list[dict[str, Any]]:
        """Every profile the stand-in knows (from events, imports and bulk imports), oldest
        first."""
        with self.state.lock:
            self.state.jobs.settle_due()
            store = self.state.profiles
            return [store.as_dict(profile) for profile in store.ordered()]

    def subscriptions(self, list_id: str | None = None) -> list[dict[str, Any]]:
        """Consent records from Bulk Subscribe / Unsubscribe: one row per (profile, list,
        channel) with ``email``, ``phone_number``, ``profile_id``, ``list_id`` (None: no list),
        ``channel`` (``"email"`` / ``"sms"``), ``consent`` (``"SUBSCRIBED"`` /
        ``"UNSUBSCRIBED"``), ``consented_at``, ``historical_import``, ``custom_source``,
        ``global`` (a global unsubscribe) and ``updated``, oldest first. ``list_id`` keeps that
        list's rows and the rows of no list, which apply to every list."""
        state = self.state
        with state.lock:
            store = state.profiles

            def identifiers(profile_id: str) -> dict[str, Any]:
                profile = store.profiles.get(profile_id)
                return {
                    "email": profile.email if profile else None,
                    "phone_number": profile.phone_number if profile else None,
                }

            return state.subscriptions.rows(identifiers, list_id)

    def deletions(self) -> list[dict[str, Any]]:
        """Every accepted Request Profile Deletion, oldest first: the identifier asked for
        (``id``, ``email`` or ``phone_number``; the others None), ``deleted_profile_ids``,
        ``deleted_events`` and ``received_at``."""
        with self.state.lock:
            return copy.deepcopy(self.state.deletions)

    def exchange_id_for(self, email: str) -> str:
        """A ``_kx`` token that resolves to this email's profile, like Klaviyo's exchange id.

        Opaque, stable per email for this stand-in, and (like the real one) full of characters
        that must be URL-encoded in a link: ``base64.COMPANYID``.
        """
        normalized = email.strip().lower()
        if not EMAIL_PATTERN.match(normalized):
            raise ValueError(f"not an email address: {email!r}")
        digest = hmac.new(self._secret, normalized.encode(), hashlib.sha256).digest()[:16]
        token = f"{base64.b64encode(digest).decode()}.{self.company_id}"
        with self.state.lock:
            self.state.profiles.exchange[token] = normalized
            self.state.profiles.resolve([("email", normalized)], {})
        return token

    def stats(self) -> dict[str, int]:
        """The inspector's counters, also at ``GET /_fake/stats`` for other processes."""
        state = self.state
        with state.lock:
            return {
                "accepted": state.accepted,
                "duplicates": state.duplicates,
                "rejected": state.rejected,
                "requests": state.request_count,
            }

    def wait_for(
        self, count: int, *, metric: str | None = None, timeout: float = 10.0
    ) -> list[dict[str, Any]]:
        """Block until ``count`` accepted events (of ``metric``) exist; return them all."""
        deadline = time.monotonic() + timeout
        state = self.state
        with state.changed:
            while True:
                found = [e for e in state.events if metric is None or e["metric"] == metric]
                if len(found) >= count:
                    return copy.deepcopy(found)
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    have = [(e["metric"], e["unique_id"]) for e in state.events]
                    what = f" {metric!r}" if metric else ""
                    raise AssertionError(
                        f"waited {timeout}s for {count}{what} event(s), have {len(found)}; "
                        f"all accepted (metric, unique_id): {have}; duplicates: "
                        f"{state.duplicates}; rejected requests: {state.rejected}"
                    )
                state.changed.wait(remaining)

    def jobs(self) -> list[dict[str, Any]]:
        """Every bulk job given (type, id, status, counts, errors), oldest first."""
        with self.state.lock:
            self.state.jobs.settle_due()
            return copy.deepcopy(self.state.jobs.summary())

    def reset(self) -> None:
        """Forget events, profiles, consent, deletions, catalog, back-in-stock subscriptions,
        jobs, requests (and their counts), faults and latency (minted _kx tokens stay valid)."""
        with self.state.lock:
            self.state.clear()
            self.state.latency = 0.0
            self.state.changed.notify_all()
