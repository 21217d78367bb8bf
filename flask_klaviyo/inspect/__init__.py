"""The inspector: what the extension did, per visitor and per order (development only).

``journal`` records it in Redis, piggybacked on round trips delivery already makes, and only
while the inspector is on; ``views`` is the blueprint at ``/_klaviyo/inspector``; ``standin``
reads what the local Klaviyo stand-in holds; ``chart`` draws operations per minute.

The package itself imports nothing, so delivery can load ``journal`` without the views.
"""
