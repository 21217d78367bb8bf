"""Who the visitor is: profile identifiers (one table), the signed cookie and ``__kla_id``, the
visit, resolution and ``identify()``.

The package itself imports only the leaf table, so the layers below (events, delivery) can read
the identifier table without importing the request side.
"""
