"""The stand-in's defaults and Klaviyo's documented limits, in one place (like httpx's _config).

Every figure here is Klaviyo's (OpenAPI revision 2026-07-15) or a stand-in default; the modules
that enforce them import them from here so a limit is never written twice.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

DEFAULT_API_KEY = "pk_test"
DEFAULT_COMPANY_ID = "PUBKEY"
DEFAULT_HOST = "127.0.0.1"

# Klaviyo's documented limits.
MAX_BODY_BYTES = 5 * 1024 * 1024
MAX_STRING_BYTES = 100 * 1024
MAX_BULK_EVENTS = 1000
MAX_PROPERTIES = 400
MAX_METRIC_NAME_CHARS = 127  # "must be less than 128 characters"
EARLIEST_EVENT_TIME = datetime(1990, 1, 1, tzinfo=UTC)  # "must be after the year 1990"
MAX_FUTURE = timedelta(days=365)  # "can only be up to 1 year in the future"
MAX_PROFILE_BYTES = 100 * 1024  # Create or Update Profile, and one profile of a bulk import
MAX_CATALOG_ITEMS = 100  # Bulk Create Catalog Items: "up to 100 catalog items per request"
MAX_IMPORT_PROFILES = 10_000  # Bulk Import Profiles: "up to 10,000 profiles per request"
MAX_SUBSCRIBE_PROFILES = 1000  # Bulk Subscribe: "Maximum number of profiles ...: 1000"
MAX_UNSUBSCRIBE_PROFILES = 100  # Bulk Unsubscribe: "Maximum number of profiles per call: 100"

DEFAULT_RETRY_AFTER = 1.0
DEFAULT_TIMEOUT_HOLD = 5.0
DRAIN_LIMIT_BYTES = 4 * MAX_BODY_BYTES  # an oversized body is read this far so the 413 arrives
MAX_RECORDED_REQUESTS = 2000  # the request log is bounded; accepted events are not
MAX_ERRORS = 100  # errors reported in one 400
INSPECTOR_ROWS = 500
CONNECTION_IDLE_TIMEOUT = 120.0
POLL_INTERVAL = 0.05
DEFAULT_ERROR_POINTER = "/data/"  # Klaviyo's pointer when no single field is at fault
JOB_EXPIRY = timedelta(days=7)  # bulk jobs report an expires_at; the stand-in never expires one

JSON_API = "application/vnd.api+json"
ACCEPTED_MEDIA_TYPES = (JSON_API, "application/json")
AUTH_SCHEME = "Klaviyo-API-Key"
