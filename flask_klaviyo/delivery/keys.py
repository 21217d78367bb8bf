"""Every Redis key the extension writes, as templates in one place.

A key that names a queue takes the queue name (``KLAVIYO_QUEUE``); the rest are shared by every
queue of the Redis database. Changing a template strands what is stored under the old one:
treat them as a stored format.
"""

from __future__ import annotations

__all__ = [
    "BACKFILL_PREFIX",
    "CONSUMER_GROUP",
    "DEAD_LETTERS",
    "FORGOTTEN",
    "HANDLED_MINUTE_TTL",
    "JOURNAL",
    "METRICS",
    "PARKED_COUNTS",
    "PARKED_INDEX",
    "PARKED_PREFIX",
    "PARKED_STATS",
    "PROFILE_IDS",
    "RATE_PREFIX",
    "STATS",
    "backfill_checkpoint",
    "backfill_rejected",
    "drain_flag",
    "drains",
    "failing",
    "follow_up_operations",
    "followed_up",
    "handled_minute",
    "journal_minute",
    "outbox_stream",
    "rate_blocked",
    "rate_bulk",
    "rate_last",
    "rate_log",
    "rate_window",
    "reclaim_flag",
]

# -- the outbox of one queue -----------------------------------------------------------------
CONSUMER_GROUP = "klaviyo-workers"  # the stream's consumer group (one entry to one drain)


def outbox_stream(queue: str) -> str:
    """The Redis Stream of waiting operations."""
    return f"klaviyo:outbox:{queue}"


def drain_flag(queue: str) -> str:
    """Set while a drain is scheduled or running, so requests do not enqueue another."""
    return f"klaviyo:drain-scheduled:{queue}"


def reclaim_flag(queue: str) -> str:
    """Set while a delayed drain is on its way to reclaim entries a failed drain held."""
    return f"{drain_flag(queue)}:reclaim"


def drains(queue: str) -> str:
    """Sorted set of running drains' leases (member: job id, score: lease end)."""
    return f"klaviyo:drains:{queue}"


def failing(stream: str) -> str:
    """Hash beside an outbox stream: entry id -> when a drain first gave up on it."""
    return f"{stream}:failing"


def followed_up(job_id: str) -> str:
    """Set (for a day) once a Klaviyo job's outcome was applied: the scheduled follow-up and an
    eager one (a waiting catalog sync) apply it once between them."""
    return f"klaviyo:followed-up:{job_id}"


def looking_at(job_id: str) -> str:
    """Set (briefly) by whoever is looking at a Klaviyo job: the scheduled follow-up and an eager
    one do not spend two of the job endpoint's rate slots on one look."""
    return f"klaviyo:looking-at:{job_id}"


def follow_up_operations(job_id: str) -> str:
    """The operations a Klaviyo job was sent with (JSON), kept until its outcome is applied."""
    return f"klaviyo:follow-up-operations:{job_id}"


# -- shared by every queue ----------------------------------------------------------------------
DEAD_LETTERS = "klaviyo:dead"  # hash: record id -> dead letter JSON
PROFILE_IDS = "klaviyo:profile-ids"  # hash: email (lower case) -> Klaviyo's profile id
FORGOTTEN = "klaviyo:forgotten"  # hash: digest of an identifier -> refused until (unix time)
# hash: handled count, 429s, last Klaviyo error (and when), for `flask klaviyo status`
STATS = "klaviyo:stats"
HANDLED_MINUTE_TTL = 3600  # seconds a per-minute count is kept


def handled_minute(minute: int) -> str:
    """Operations handled (delivered or dead-lettered) in one minute (unix time // 60)."""
    return f"klaviyo:handled:{minute}"


# The Prometheus counters (written only while KLAVIYO_METRICS is on; delivery/counters.py says
# which fields): apart from STATS, which `flask klaviyo status` reads.
METRICS = "klaviyo:metrics"  # hash: "stage|kind|metric", "answer|endpoint|code"... -> count

# The inspector's journal (written only while the inspector is on: dev, the local stand-in).
JOURNAL = "klaviyo:journal"  # list: what the extension did, newest first, bounded, expiring


def journal_minute(minute: int) -> str:
    """Hash of one minute (unix time // 60): ``stage|metric or kind`` -> how many."""
    return f"{JOURNAL}:minute:{minute}"


# Historical backfills (``flask klaviyo backfill``): one checkpoint per backfill, by name.
BACKFILL_PREFIX = "klaviyo:backfill:"


def backfill_checkpoint(name: str) -> str:
    """Hash: ``position`` (records done), counters (sent per metric or kind, rejected)."""
    return f"{BACKFILL_PREFIX}{name}"


def backfill_rejected(name: str) -> str:
    """List beside a checkpoint: the first rejected records, ``{"line", "reason"}`` JSON."""
    return f"{BACKFILL_PREFIX}{name}:rejected"


# Parked events of anonymous visitors (identity's parking).
PARKED_PREFIX = "klaviyo:parked:"  # + anonymous id: list of event JSON, oldest first
PARKED_INDEX = "klaviyo:parked-index"
PARKED_COUNTS = "klaviyo:parked-counts"
PARKED_STATS = "klaviyo:parked-stats"

# The shared rate limiter: one set of keys per endpoint.
RATE_PREFIX = "klaviyo:rate"


def rate_blocked(endpoint: str, prefix: str = RATE_PREFIX) -> str:
    """Until when Klaviyo told every worker to wait (a 429's Retry-After)."""
    return f"{prefix}:{endpoint}:blocked"


def rate_bulk(endpoint: str, prefix: str = RATE_PREFIX) -> str:
    """Set (expiring) while bulk work for the endpoint is queued: a window's worth or more."""
    return f"{prefix}:{endpoint}:bulk"


def rate_last(endpoint: str, prefix: str = RATE_PREFIX) -> str:
    """When the endpoint's last request was let through (for the steady pace)."""
    return f"{prefix}:{endpoint}:last"


def rate_window(endpoint: str, limit: int, period: float, prefix: str = RATE_PREFIX) -> str:
    """The steady fixed window (``limit`` per ``period`` seconds): a hash of its id, end, the
    slots we took and what Klaviyo says others spent."""
    return f"{prefix}:{endpoint}:{limit}/{period:g}:fixed"


def rate_log(endpoint: str, limit: int, period: float, prefix: str = RATE_PREFIX) -> str:
    """A shorter window's (the burst's) log: the times of the last ``limit`` slots."""
    return f"{prefix}:{endpoint}:{limit}/{period:g}:log"
