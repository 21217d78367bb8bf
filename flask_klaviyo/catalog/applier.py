"""Working the queue in the process that waits for it (a catalog sync, ``wait_applied``):
every operation sent and every Klaviyo job followed up, and a sync's chunks queued a few jobs
ahead of the drains.

A drain takes what waits in the outbox in one read (up to a batch) and sends it in order: the
100 item chunks of a sync queued at once would all go to the first drain, one request after
another, and their follow-ups would wait for the rest of its batch. Fed a few at a time, each
of the running drains takes some, and a helper drain is asked for while fewer than
``KLAVIYO_DRAIN_CONCURRENCY`` run. A sync is bulk work (:mod:`..delivery.bulkwork`): while it
feeds and waits, the endpoints of its chunks take each rate window's budget at the burst rate.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence

from flask import current_app
from rq import Queue, Worker
from rq.scheduler import RQScheduler

from .._state import current_state
from ..delivery import keys
from ..delivery.bulkwork import BulkWork
from ..delivery.follower import Follower
from ..delivery.klaviyo_kinds import CATALOG_CHUNK
from ..delivery.operations import Operation
from ..delivery.settings import DeliverySettings
from ..delivery.workers import work_burst

__all__ = ["Applier", "idle", "wait_applied"]

log = logging.getLogger(__name__)

AHEAD = 8  # chunks (Klaviyo jobs) left waiting unclaimed for the drains while feeding
FEED_POLL = 0.01  # seconds between looks at the outbox while feeding


def idle(queue: Queue) -> bool:
    """Nothing of the queue left: no waiting entry, job, scheduled follow-up or running job."""
    outbox = current_state().outbox
    if outbox.depth() or queue.count or queue.started_job_registry.count:
        return False
    # A drain that ended while another held entries schedules a reclaiming drain (after
    # KLAVIYO_RECLAIM_AFTER); with the outbox empty it has nothing to do: not worth waiting for.
    reclaiming = 1 if outbox.connection.exists(keys.reclaim_flag(queue.name)) else 0
    return queue.scheduled_job_registry.count <= reclaiming


def _follow(follower: Follower, stop: threading.Event) -> None:
    """The follower's thread: look at catalog jobs as they become due, until told to stop."""
    while not stop.is_set():
        try:
            wait = follower.step()
        except Exception:  # the scheduled follow-ups remain: nothing is lost, only time
            log.exception("klaviyo: looking at catalog jobs early failed; left to the workers")
            wait = 1.0
        stop.wait(max(wait, 0.002))


class Applier:
    """Works the queue in this process until it is idle: every operation sent and every
    Klaviyo job followed up.

    While open, a thread looks at the catalog jobs as soon as Klaviyo should have finished them
    (a :class:`Follower`), so the next step (a new item's variants) is queued without waiting
    for RQ's scheduler. :meth:`wait` runs queued jobs in a burst worker here when no worker is
    running, when a job has waited ``help_after`` seconds (the running ones are busy), or when
    a scheduled job is due and no running worker's scheduler is there to move it."""

    help_after = 2.0  # seconds a queued job waits for a running worker before this one runs it

    def __init__(self, *, timeout: float = 3600.0, poll: float = 0.05) -> None:
        self.connection = current_state().redis
        self.queue = Queue(current_app.config["KLAVIYO_QUEUE"], connection=self.connection)
        self.timeout = timeout
        self.poll = poll
        settings = DeliverySettings.load()
        self.concurrency = settings.drain_concurrency
        self.follower = Follower(
            self.connection, settings, self.queue.name, lambda kind: kind.startswith("catalog_")
        )
        self.bulk = BulkWork(self.connection)  # a sync's chunks mark their endpoints
        self.fed_up_to: bytes | None = None  # the newest stream entry when this last fed
        self.stop = threading.Event()
        self.thread = threading.Thread(target=_follow, args=(self.follower, self.stop))
        self.thread.name = "klaviyo-follow"
        self.thread.daemon = True

    def __enter__(self) -> Applier:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=30)
        self.follower.close()
        log.info("klaviyo: %d early look(s) at catalog jobs, %d applied", self.follower.looks,
                 self.follower.applied)  # fmt: skip

    def mark(self, chunks: Sequence[Operation]) -> None:
        """``chunks`` are a sync's: their endpoints, and those of the variants their items'
        follow-ups will queue, are bulk work while this waits."""
        for chunk in chunks:
            self.bulk.add(chunk)  # sent as its resources' kind, followed up as their jobs
            self.bulk.add(Operation(chunk.kind.removesuffix(CATALOG_CHUNK), {}))
            for resource in chunk.payload.get("resources") or ():
                for then in resource["payload"].get("then") or ():
                    self.bulk.add(Operation(then["op"], {}, then.get("key")))

    def _feed(self, left: deque[Operation]) -> None:
        """Queue some of ``left`` when fewer than half of ``AHEAD`` wait unclaimed, or when the
        drains have taken all this fed before: other entries waiting (the variants that
        follow-ups queue, whose endpoint may be waiting for its window) do not hold the
        sync's own chunks back."""
        outbox = current_state().outbox
        unclaimed = outbox.depth() - outbox.pending()
        if unclaimed < AHEAD // 2:
            count = AHEAD - unclaimed
        elif self.fed_up_to is None or outbox.taken_up_to(self.fed_up_to):
            count = AHEAD // 2
        else:
            return
        outbox.push([left.popleft() for _ in range(min(len(left), count))])
        self.fed_up_to = outbox.last_id()
        if self.concurrency > 1:  # more drains share them, if fewer run than allowed
            outbox.add_drain(self.concurrency)

    def wait(
        self,
        tick: Callable[[], None] | None = None,
        feed: Sequence[Operation] = (),
        *,
        fed: bool = False,
    ) -> None:
        """Until the queue is idle (``fed``: until ``feed`` is all queued), with ``feed`` (a
        sync's chunks) queued along the way, a few ahead of the drains (module docstring)."""
        queue, connection = self.queue, self.connection
        deadline = time.monotonic() + self.timeout
        waiting_since: float | None = None
        left = deque(feed)
        while left or (not fed and not idle(queue)):
            self.bulk.renew()
            if left:
                self._feed(left)
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"catalog sync: the queue was still busy after {self.timeout:g}s"
                )
            # Scheduled jobs due and no scheduler of a running worker to move them: ours does.
            due = bool(
                queue.scheduled_job_registry.get_jobs_to_schedule(int(time.time()), 1)
            ) and not connection.exists(RQScheduler.get_locking_key(queue.name))
            if queue.count and waiting_since is None:
                waiting_since = time.monotonic()
            elif not queue.count:
                waiting_since = None
            # Running workers take the queue's jobs; this process does when there are none,
            # or when a job has waited long (they are all busy), or for the scheduler's part.
            stuck = waiting_since is not None and time.monotonic() - waiting_since > self.help_after
            if due or stuck or (queue.count and not Worker.count(queue=queue)):
                work_burst(queue, with_scheduler=due)
                waiting_since = None
            if tick is not None:
                tick()
            time.sleep(FEED_POLL if left else self.poll)
        if tick is not None:
            tick()


def wait_applied(
    *, timeout: float = 3600.0, tick: Callable[[], None] | None = None, poll: float = 0.05
) -> None:
    """Work the queue in this process until it is idle (see :class:`Applier`)."""
    with Applier(timeout=timeout, poll=poll) as applier:
        applier.wait(tick)
