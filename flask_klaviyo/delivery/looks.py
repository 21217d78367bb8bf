"""Who looks at a Klaviyo job, and who applies its outcome: one looker at a time (a job's GET
endpoint has its POST's limits, so a second look costs a slot a job needs), and one applier.

Lookers: a waiting sync's follower, a drain's scheduled batch of looks, a single job's scheduled
look (:mod:`.followup`, :mod:`.follower`).
"""

from __future__ import annotations

from typing import Any

from . import keys

__all__ = ["FOLLOWED_TTL", "LOOK_LEASE", "claim", "done_looking", "may_look"]

FOLLOWED_TTL = 86400  # the applied-once marker outlives any follow-up of its job
LOOK_LEASE = 5.0  # seconds one looker has a job to itself (a look waits for its rate slot)


def may_look(connection: Any, job_id: str) -> bool | None:
    """Whether to look at a Klaviyo job now, in one round trip: None when its outcome was
    applied already (nothing to do), False while someone else is looking (look later), True
    (and it is ours to look, for LOOK_LEASE seconds) otherwise."""
    pipe = connection.pipeline(transaction=False)
    pipe.exists(keys.followed_up(job_id))
    pipe.set(keys.looking_at(job_id), "1", nx=True, px=round(LOOK_LEASE * 1000))
    followed, ours = pipe.execute()
    if followed:
        return None
    return bool(ours)


def done_looking(connection: Any, job_id: str) -> None:
    """The look :func:`may_look` allowed is over: the next may be anyone's."""
    connection.delete(keys.looking_at(job_id))


def claim(connection: Any, job_id: str) -> bool:
    """True for the one caller that applies a finished job's outcome."""
    return bool(connection.set(keys.followed_up(job_id), "1", nx=True, ex=FOLLOWED_TTL))
