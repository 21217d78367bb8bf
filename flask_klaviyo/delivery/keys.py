"""Every Redis key the extension writes, as templates in one place.

A key that names a queue takes the queue name (``KLAVIYO_QUEUE``); the rest are shared by every
queue of the Redis database. Changing a template strands what is stored under the old one:
treat them as a stored format.
"""

from __future__ import annotations

__all__ = [
    "CONSUMER_GROUP",
    "DEAD_LETTERS",
    "FORGOTTEN",
    "PARKED_COUNTS",
    "PARKED_INDEX",
    "PARKED_PREFIX",
    "PARKED_STATS",
    "PROFILE_IDS",
    "RATE_PREFIX",
    "STATS",
    "drain_flag",
    "drains",
    "failing",
    "outbox_stream",
    "rate_blocked",
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


# -- shared by every queue ----------------------------------------------------------------------
DEAD_LETTERS = "klaviyo:dead"  # hash: record id -> dead letter JSON
PROFILE_IDS = "klaviyo:profile-ids"  # hash: email (lower case) -> Klaviyo's profile id
FORGOTTEN = "klaviyo:forgotten"  # hash: digest of an identifier -> refused until (unix time)
STATS = "klaviyo:stats"  # hash: handled count, last Klaviyo error, for `flask klaviyo status`

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
