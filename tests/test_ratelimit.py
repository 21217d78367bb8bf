"""The Redis-shared rate limiter: both windows, several workers, Klaviyo's Retry-After."""

from __future__ import annotations

import threading
import time

import pytest
import redis

from flask_klaviyo.ratelimit import DEFAULT_LIMITS, RateLimiter, Window


def test_klaviyos_published_limits_are_the_defaults() -> None:
    assert DEFAULT_LIMITS["bulk_create_events"] == (Window(10, 1.0), Window(150, 60.0))
    assert DEFAULT_LIMITS["create_event"] == (Window(350, 1.0), Window(3500, 60.0))


def test_burst_window_allows_the_limit_at_once_then_makes_you_wait(
    redis_client: redis.Redis,
) -> None:
    limiter = RateLimiter(redis_client, limits={"bulk": (Window(10, 1.0),)})
    assert [limiter.try_acquire("bulk") for _ in range(10)] == [0.0] * 10
    wait = limiter.try_acquire("bulk")
    assert 0.05 < wait <= 0.1


def test_the_steady_window_binds_after_the_burst(redis_client: redis.Redis) -> None:
    # time-scaled Bulk Create Events: 10 per 0.1 s burst, 30 per 3 s steady
    limiter = RateLimiter(redis_client, limits={"bulk": (Window(10, 0.1), Window(30, 3.0))})
    granted = 0
    start = time.monotonic()
    while time.monotonic() - start < 1.0:
        if limiter.try_acquire("bulk") == 0:
            granted += 1
        else:
            time.sleep(0.005)
    # the burst would allow ~100 in a second; the steady window allows 30 + 1 s * 10/s
    assert 30 <= granted <= 41


def test_two_workers_share_one_budget(redis_url: str) -> None:
    limits = {"bulk": (Window(20, 1.0),)}
    counts = [0, 0]
    stop = time.monotonic() + 1.0

    def worker(i: int) -> None:
        limiter = RateLimiter(redis.Redis.from_url(redis_url), limits=limits)
        while time.monotonic() < stop:
            if limiter.try_acquire("bulk") == 0:
                counts[i] += 1
            else:
                time.sleep(0.002)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert counts[0] > 0 and counts[1] > 0
    assert 20 <= sum(counts) <= 41  # one shared budget: 20 at once + ~20 over the second


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


def test_unknown_endpoints_are_not_limited(redis_client: redis.Redis) -> None:
    assert RateLimiter(redis_client).try_acquire("something_else") == 0.0


def test_bad_windows_are_refused() -> None:
    with pytest.raises(ValueError):
        Window(0, 1.0)
    with pytest.raises(ValueError):
        Window(10, 0)
