"""A faithful local Klaviyo stand-in for tests, browser journeys and the demo store.

``FakeKlaviyo`` is a real HTTP server (standard library only) on a loopback port, or an
in-process httpx transport (``fake.transport()``), that answers the Klaviyo endpoints the
project uses the way Klaviyo does: Create Event, Bulk Create Events, the two client endpoints,
Create or Update Profile, Update Profile, Bulk Subscribe / Unsubscribe Profiles, Request
Profile Deletion, Bulk Import Profiles, the catalog (Bulk Create / Update / Delete Catalog
Items, Variants and Categories: asynchronous jobs with their GETs; Get Catalog Items, Variants
and Categories, paginated), Create Back In Stock Subscription, and the metric mapping (Get
Metrics, Get Mapped Metrics, Update Mapped Metric). It checks the private key,
the ``revision`` header, the content type, the size and the JSON:API body (with
``source.pointer`` on every 400), keeps the first event per (profile, metric, unique_id),
resolves and merges profiles, keeps consent per profile, list and channel, deletes profiles on
request, keeps a catalog, and can be told to throttle, fail, hang or slow down. Tests in this
process use its Python API; other processes use ``/_fake/*`` and the HTML inspector at ``/``.

Run standalone: ``python -m flask_klaviyo.testing --port 5001 --api-key pk_test``.

The package, by concern (data walks one way, top to bottom)::

    _config.py            defaults and Klaviyo's documented limits
    jsonapi.py            request/answer types, error objects, pointers, the body checker
    ratewindows.py        the one rate-window engine (burst + steady fixed windows)
    profile_checks.py     the profile resource check (its own email / E.164 rules)
    profiles.py           the profile store: resolution, merges, upserts, deletion
    subscriptions.py      the consent store: per profile, list and channel; global unsubscribes
    jobs.py               asynchronous bulk jobs (status, counts, errors, delay)
    state.py              everything remembered, behind one lock; the handler's Call
    events.py             Create Event, Bulk Create Events, client events
    profile_import.py     Create or Update Profile
    profile_update.py     Update Profile (PATCH /api/profiles/{id})
    subscription_checks.py  the bulk subscribe / unsubscribe body checks
    subscribe.py          Bulk Subscribe Profiles;  unsubscribe.py: Bulk Unsubscribe Profiles
    deletion.py           Request Profile Deletion
    mapped_metrics.py     Get Metrics (of the events received), Get / Update Mapped Metrics
    catalog_store.py      the catalog: items, variants, categories, cascades, resources
    catalog_jobs.py       the one model of the catalog bulk jobs and their GETs
    catalog_items.py      Bulk Create / Update / Delete Catalog Items;  catalog_variants.py,
                          catalog_categories.py: the same for variants and categories
    catalog_read.py       Get Catalog Items / Variants / Categories (pagination, include)
    back_in_stock.py      Create Back In Stock Subscription
    profile_bulk_import.py  Bulk Import Profiles + its job GET and import errors
    registry.py           one entry per endpoint: method, path, handler, rate windows
    control.py            /_fake/* routes;  inspector.py: the HTML page at / (its catalog
                          tables: inspector_catalog.py)
    dispatch.py           the request pipeline shared by the server and the transport
    server.py             HTTP framing over a socket;  transport.py: the in-process transport
    fake.py               FakeKlaviyo: lifecycle and the Python API (driving.py,
                          catalog_api.py: its other halves);  cli.py: main()
"""

from __future__ import annotations

from .cli import main
from .fake import FakeKlaviyo
from .registry import KLAVIYO_RATE_LIMITS, Endpoint
from .transport import FakeTransport

__all__ = ["KLAVIYO_RATE_LIMITS", "Endpoint", "FakeKlaviyo", "FakeTransport", "main"]
