"""The RQ worker classes the project runs. RQ's command listener (``rq suspend``, stop-job) is a
thread blocked up to 60 s in one read, and a stopping worker waits for it: a burst run that
lived a second, or a deploy's SIGTERM to a long-running worker, now and then took a whole extra
minute. Burst workers go without the listener (one pass takes no remote commands); long-running
ones keep it, reading every second.

``InProcessWorker`` runs jobs in the calling process: for commands that wait for their own work
(``catalog sync``, ``backfill``) when no worker is running, and for tests."""

from __future__ import annotations

import logging
from typing import Any

from rq import Queue, SimpleWorker, Worker

from ..client import ready_to_fork

__all__ = [
    "BurstWorker",
    "InProcessWorker",
    "LongRunningSimpleWorker",
    "LongRunningWorker",
    "work_burst",
]

log = logging.getLogger(__name__)

LISTEN_POLL = 1.0  # seconds: how long a stopping worker may wait for its command listener


class _NoCommandListener:
    pubsub_thread: Any

    def subscribe(self) -> None:
        self.pubsub_thread = None


class _PromptCommandListener:
    """RQ's listener, reading in ``LISTEN_POLL`` steps instead of 60 s ones."""

    connection: Any
    pubsub: Any
    pubsub_thread: Any
    pubsub_channel_name: str
    handle_payload: Any
    _pubsub_exception_handler: Any

    def subscribe(self) -> None:
        self.pubsub = self.connection.pubsub()
        self.pubsub.subscribe(**{self.pubsub_channel_name: self.handle_payload})
        self.pubsub_thread = self.pubsub.run_in_thread(
            sleep_time=LISTEN_POLL, daemon=True, exception_handler=self._pubsub_exception_handler
        )


class InProcessWorker(_NoCommandListener, SimpleWorker):
    """A burst worker that runs each job in this process."""


class _ReadyBeforeFork:
    """What every work horse would build again, built once in the worker it forks from."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        ready_to_fork()


class BurstWorker(_NoCommandListener, _ReadyBeforeFork, Worker):
    """A burst worker that forks a work horse per job, as RQ's own does."""


class LongRunningWorker(_PromptCommandListener, _ReadyBeforeFork, Worker):
    """RQ's forking worker, stopping promptly."""


class LongRunningSimpleWorker(_PromptCommandListener, SimpleWorker):
    """RQ's in-process worker, stopping promptly."""


def work_burst(queue: Queue, *, with_scheduler: bool = False) -> InProcessWorker:
    """Run what waits in ``queue`` here, then return the worker (to ask how it ended)."""
    worker = InProcessWorker([queue], connection=queue.connection)
    worker.work(burst=True, with_scheduler=with_scheduler, logging_level="WARNING")
    return worker
