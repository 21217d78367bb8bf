"""Historical backfill: the store's past orders and customers into Klaviyo, resumable.

    reader      JSON Lines read line by line with their numbers; any iterable numbered
    orders      an order record -> its events (live tracking's builders, backfill: true)
    profiles    a customer record -> bulk profile import + historical subscriptions
    checkpoint  the position and counts in Redis, moved atomically with each chunk
    runner      the run: check, build, queue in chunks paced to the workers, wait, report
    report      progress and the summary for the CLI
    commands    ``flask klaviyo backfill orders|profiles FILE``

``klaviyo.backfill_orders(...)`` / ``klaviyo.backfill_profiles(...)`` are the Python entry
points (:mod:`flask_klaviyo.backfill_api`).
"""

from __future__ import annotations

from .runner import BackfillReport

__all__ = ["BackfillReport"]
