"""Running the queue's jobs in the calling process, for commands that wait for their own work
(``catalog sync``, ``backfill``) when no worker is running, and for tests."""

from __future__ import annotations

import logging

from rq import Queue, SimpleWorker

__all__ = ["InProcessWorker", "work_burst"]

log = logging.getLogger(__name__)


class InProcessWorker(SimpleWorker):
    """A SimpleWorker without RQ's command listener. The listener blocks up to 60 s in one read
    and the worker's teardown waits for that read, so a burst run that lives a second now and
    then took a whole minute. A worker that lives for one burst takes no remote commands."""

    def subscribe(self) -> None:
        self.pubsub_thread = None


def work_burst(queue: Queue, *, with_scheduler: bool = False) -> InProcessWorker:
    """Run what waits in ``queue`` here, then return the worker (to ask how it ended)."""
    worker = InProcessWorker([queue], connection=queue.connection)
    worker.work(burst=True, with_scheduler=with_scheduler, logging_level="WARNING")
    return worker
