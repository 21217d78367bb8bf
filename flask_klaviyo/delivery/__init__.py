"""Operations on their way to Klaviyo: the kinds registry, the outbox (one Redis round trip per
request), the spool (Redis down), dead letters, the drain (group by kind, send, retry, reclaim)
and the follow-up of Klaviyo's asynchronous jobs.

The package itself imports nothing, so the layers above (identity's parking, the rate limiter)
can read ``keys`` and ``scripts`` without loading the drain.
"""
