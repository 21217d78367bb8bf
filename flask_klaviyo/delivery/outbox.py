"""The outbox: events and operations into a Redis Stream in one round trip; drain scheduling.

An event leaves the web process only through :meth:`Outbox.push`, after the response has been
produced; nothing here talks to Klaviyo. ``push`` is one round trip: a script that runs ``XADD``
per event to the outbox stream plus a ``SET NX`` "drain scheduled" flag, atomically, sent on a
connection each thread keeps for pushes (a pool checkout costs more than the round trip). Only
when no drain is scheduled (the first event after a quiet spell) does it enqueue an RQ job,
``flask_klaviyo.jobs.drain``, so RQ stays the job system (retries, failed registry, rq-dashboard)
without costing an enqueue per event. Workers read the stream through a consumer group: each
entry goes to one worker, and the entries of a worker that died are reclaimed by the next drain.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import redis
from rq import Queue, Retry

from .._settings import DEFAULT_RETRY_MAX, DEFAULT_WAIT_TIMEOUT_MS
from ..events import Event
from . import counters, keys, scripts
from .keys import CONSUMER_GROUP
from .operations import Operation
from .pending import PendingPush
from .wire import compact_json, connected, pack, read_answer

if TYPE_CHECKING:
    from ..inspect.journal import Journal

__all__ = ["DRAIN_JOB", "FOLLOW_UP_JOB", "NotReplicated", "Outbox", "PendingPush"]

log = logging.getLogger(__name__)

# RQ job paths (stored in queued jobs: stable; the functions live in flask_klaviyo.jobs)
DRAIN_JOB = "flask_klaviyo.jobs.drain"
FOLLOW_UP_JOB = "flask_klaviyo.jobs.follow_up"
# How long the "drain scheduled" flag lives without a refresh: a drain that died is replaced then.
DRAIN_FLAG_TTL = 30
JOB_TIMEOUT = 600
FAILURE_TTL = 30 * 24 * 3600
# A drain's lease in the set of running drains; drains renew it every batch (and while waiting).
DRAIN_LEASE_SECONDS = 30


class NotReplicated(redis.exceptions.RedisError):
    """Fewer replicas than ``KLAVIYO_REDIS_MIN_REPLICAS`` acknowledged a push in time: the
    caller spools it (a failover now could lose it; a copy in both is harmless)."""


class Outbox:
    """The outbox stream of one queue, and the scheduling of the RQ jobs that drain it."""

    def __init__(
        self,
        connection: redis.Redis,
        *,
        queue_name: str = "klaviyo",
        retry_max: int = DEFAULT_RETRY_MAX,
        min_replicas: int = 0,
        wait_timeout_ms: int = DEFAULT_WAIT_TIMEOUT_MS,
    ) -> None:
        self.connection = connection
        # KLAVIYO_REDIS_MIN_REPLICAS: a WAIT pipelined after each push (WAIT cannot run in Lua)
        self.min_replicas = min_replicas
        self._wait = pack(("WAIT", min_replicas, wait_timeout_ms)) if min_replicas else b""
        self.queue = Queue(queue_name, connection=connection)
        self.retry_max = retry_max
        self.stream = keys.outbox_stream(queue_name)
        self.flag = keys.drain_flag(queue_name)
        self.drains = keys.drains(queue_name)
        self._add_drain = connection.register_script(scripts.ADD_DRAIN)
        self._keep_drain = connection.register_script(scripts.KEEP_DRAIN)
        self._push_script = connection.register_script(scripts.PUSH)
        self._local = threading.local()
        # The inspector's journal (development only): set, pushes also write what they queued.
        self.journal: Journal | None = None
        self.counted = False  # KLAVIYO_METRICS: pushes count what they queued (for Prometheus)

    def push(self, events: Sequence[Event | Operation]) -> int:
        """Append events and operations to the stream (one round trip); returns how many."""
        return self.send(events).confirm()

    def send(
        self,
        events: Sequence[Event | Operation],
        on_failure: Callable[[Exception], None] | None = None,
    ) -> PendingPush:
        """Write the push and return without waiting for Redis's answer.

        The request hooks send once the response exists and read the answer when it is there
        (:mod:`.handoff`). The events are in Redis once it has the bytes; the answer says
        whether it took them, and the next use of this thread's connection reads it first if
        nobody has: a failure then goes to ``on_failure`` (see :meth:`PendingPush.finish`).
        """
        if not events:
            return PendingPush(self, None, (), 0)
        entries = [compact_json(event.to_dict()) for event in events]
        if self.journal is not None:
            command: tuple[Any, ...] = self.journal.push_command(
                self.stream, self.flag, DRAIN_FLAG_TTL, entries, events, counted=self.counted
            )
        elif self.counted:
            command = counters.push_command(self.stream, self.flag, DRAIN_FLAG_TTL, entries, events)
        else:
            command = (
                "EVALSHA",
                self._push_script.sha,
                2,
                self.stream,
                self.flag,
                DRAIN_FLAG_TTL,
                *entries,
            )
        connection = self._push_connection()
        local = self._local
        with local.lock:
            outstanding = local.outstanding
            if outstanding is not None:
                outstanding.finish()  # one answer in flight per connection, read in order
            packed = [pack(command) + self._wait]
            try:
                connected(connection).send_packed_command(packed, False)
            except redis.exceptions.ConnectionError:  # stale (Redis restarted): once more, anew
                connection.disconnect()
                try:
                    connected(connection).send_packed_command(packed, False)
                except BaseException:
                    connection.disconnect()
                    raise
            except BaseException:
                connection.disconnect()
                raise
            pending = PendingPush(self, connection, command, len(events), local.lock, on_failure)
            local.outstanding = pending
        return pending

    def _answer(self, pending: PendingPush) -> Any:
        """Read a sent push's answer. A connection closed under it (Redis restarted) sends it
        once more on a new one: at worst the events are queued twice, and their unique_ids keep
        them once in Klaviyo."""
        if getattr(self._local, "outstanding", None) is pending:  # read by its own thread
            self._local.outstanding = None
        connection = pending.connection
        try:
            answer, replicas = self._read(connection, pending.waits)
        except redis.exceptions.ConnectionError:  # also a primary turned replica (Sentinel)
            connection.disconnect()
            return self._round_trip(pending.command)
        except BaseException:
            connection.disconnect()  # a timeout or an interrupt leaves the answer unread
            raise
        if isinstance(answer, redis.exceptions.NoScriptError):  # restarted or flushed: EVAL
            source = scripts.source_of(pending.command[1])  # plain, journaled or counted
            return self._round_trip(("EVAL", source, *pending.command[2:]))
        return self._checked(connection, answer, replicas)

    def _read(self, connection: Any, waits: bool) -> tuple[Any, Any]:
        """The push's answer (a script error returned, not raised) and WAIT's, if sent."""
        answer = read_answer(connection)  # an error still has WAIT's answer behind it
        return answer, read_answer(connection) if waits else None

    def _checked(self, connection: Any, answer: Any, replicas: Any) -> Any:
        if isinstance(answer, redis.exceptions.ResponseError):
            if "READONLY" in str(answer):  # a demoted primary: the next connect asks Sentinel
                connection.disconnect()
            raise answer
        if isinstance(replicas, redis.exceptions.ResponseError):
            raise replicas
        if replicas is not None and int(replicas) < self.min_replicas:
            raise NotReplicated(
                f"{replicas} of {self.min_replicas} replica(s) acknowledged the push in time"
            )
        return answer

    def _round_trip(self, command: tuple[Any, ...]) -> Any:
        connection = self._push_connection()
        try:
            connected(connection).send_packed_command([pack(command) + self._wait], False)
            answer, replicas = self._read(connection, self.min_replicas > 0)
        except BaseException:
            connection.disconnect()
            raise
        return self._checked(connection, answer, replicas)

    def _push_connection(self) -> Any:
        local = self._local
        pid = os.getpid()
        if getattr(local, "pid", None) != pid:  # new thread, or a forked child: never share
            pool = self.connection.connection_pool
            local.connection = pool.connection_class(**pool.connection_kwargs)
            local.outstanding = None
            local.lock = threading.RLock()  # this thread's pushes and their readers
            local.pid = pid
        return local.connection

    def enqueue_drain(self, *, job_id: str | None = None) -> str:
        """Schedule one drain job (the flag is already ours)."""
        job = self.queue.enqueue(
            DRAIN_JOB,
            self.queue.name,
            retry=Retry(max=self.retry_max) if self.retry_max else None,
            job_timeout=JOB_TIMEOUT,
            failure_ttl=FAILURE_TTL,
            result_ttl=600,
            description=f"drain the klaviyo outbox of {self.queue.name!r}",
            job_id=job_id,
        )
        return job.id

    # ---- several drains at once (a backlog): a set of leases, one per running drain

    def join_drain(self, job_id: str) -> None:
        """A drain starts: it holds a lease (it may already hold the one reserved for it)."""
        self.keep_drain(job_id)

    def keep_drain(self, job_id: str) -> None:
        """Renew a running drain's lease, and the "drain scheduled" flag requests look at."""
        pipe = self.connection.pipeline(transaction=False)
        self._keep_drain(keys=[self.drains], args=[DRAIN_LEASE_SECONDS, job_id], client=pipe)
        pipe.set(self.flag, "1", ex=DRAIN_FLAG_TTL)
        pipe.execute()

    def leave_drain(self, job_id: str, consumer: str | None = None) -> None:
        """A drain ends: drop its lease, and its consumer when it holds no entry any more."""
        self.connection.zrem(self.drains, job_id)
        if consumer is None:
            return
        try:
            held = self.connection.xpending_range(
                self.stream, CONSUMER_GROUP, min="-", max="+", count=1, consumername=consumer
            )
            if not held:
                self.connection.xgroup_delconsumer(self.stream, CONSUMER_GROUP, consumer)
        except redis.ResponseError:  # no group or stream (flushed): nothing to tidy
            pass

    def add_drain(self, concurrency: int) -> str | None:
        """One more drain for a backlog, if fewer than ``concurrency`` run; its job id."""
        job_id = uuid.uuid4().hex
        reserved = self._add_drain(
            keys=[self.drains, self.stream],
            args=[concurrency, DRAIN_LEASE_SECONDS, job_id, CONSUMER_GROUP],
        )
        if not int(reserved):
            return None
        return self.enqueue_drain(job_id=job_id)

    def running_drains(self) -> int:
        """Drains holding a live lease (running, or reserved and about to start)."""
        return int(self.connection.zcount(self.drains, time.time(), "+inf"))

    def ensure_group(self) -> None:
        try:
            self.connection.xgroup_create(self.stream, CONSUMER_GROUP, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def reschedule_if_waiting(self, *, reclaim_after: float = 20.0) -> bool:
        """After a drain: if anything is still waiting, make sure another drain will run.

        New entries get a drain now. Entries only pending (taken by a drain that failed or died)
        get one after ``reclaim_after`` seconds, when they can be reclaimed; the flag stays set
        meanwhile so requests do not schedule drains that would find nothing to take.
        """
        waiting = self.depth()
        if waiting == 0:
            self.connection.delete(self.flag)
            if self.depth() == 0:  # nothing arrived between the check and the delete
                return False
            waiting = self.depth()
        pending = self.pending()
        if waiting > pending:  # hand over to a fresh drain job (the flag is still ours)
            self.refresh_flag()
            self.enqueue_drain()
            return True
        self.connection.set(self.flag, "1", ex=DRAIN_FLAG_TTL)
        if not self.connection.set(
            keys.reclaim_flag(self.queue.name), "1", nx=True, ex=int(reclaim_after)
        ):
            return True  # a reclaiming drain is already on its way
        self.queue.enqueue_in(
            timedelta(seconds=reclaim_after),
            DRAIN_JOB,
            self.queue.name,
            job_timeout=JOB_TIMEOUT,
            failure_ttl=FAILURE_TTL,
            result_ttl=600,
            description=f"reclaim the klaviyo outbox of {self.queue.name!r}",
        )
        return True

    def pending(self) -> int:
        """Entries taken by a drain and not yet acknowledged."""
        try:
            return int(self.connection.xpending(self.stream, CONSUMER_GROUP)["pending"])
        except redis.ResponseError:  # no group yet
            return 0

    def refresh_flag(self) -> None:
        self.connection.set(self.flag, "1", ex=DRAIN_FLAG_TTL)

    def last_id(self) -> bytes | None:
        """The id of the newest entry in the stream (None when it is empty)."""
        newest = self.connection.xrevrange(self.stream, count=1)
        return newest[0][0] if newest else None

    def taken_up_to(self, entry_id: bytes) -> bool:
        """Whether drains have taken every entry up to ``entry_id`` (they read in order)."""
        try:
            groups = self.connection.xinfo_groups(self.stream)
        except redis.ResponseError:  # no stream or group yet
            return False
        for group in groups:
            name = group.get("name")
            if (name.decode() if isinstance(name, bytes) else name) == CONSUMER_GROUP:
                return _stream_id(group.get("last-delivered-id")) >= _stream_id(entry_id)
        return False

    def depth(self) -> int:
        """Events waiting (queued or being delivered): delivered entries are deleted."""
        return int(self.connection.xlen(self.stream))

    def oldest_age(self) -> float | None:
        """Seconds since the oldest waiting event was queued."""
        first = self.connection.xrange(self.stream, count=1)
        if not first:
            return None
        millis = int(first[0][0].decode().split("-", 1)[0])
        return max(0.0, time.time() - millis / 1000)

    def waiting(self, count: int | None = None) -> list[dict[str, Any]]:
        """The waiting entries (``Event.to_dict()`` / ``Operation.to_dict()``), oldest first."""
        return [
            json.loads(fields[b"e"])
            for _, fields in self.connection.xrange(self.stream, count=count)
        ]


def _stream_id(entry_id: bytes | str | None) -> tuple[int, int]:
    """A stream entry id as (milliseconds, sequence), to compare in the stream's order."""
    text = entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id or "0-0")
    milliseconds, _, sequence = text.partition("-")
    return int(milliseconds), int(sequence or 0)
