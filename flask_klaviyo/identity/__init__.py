"""Who the visitor is: profile identifiers (one table), the signed cookie and ``__kla_id``, the
visit, resolution and ``identify()``.

Modules, bottom to top (each imports only those above it):

- ``identifiers``  the one table of profile identifiers and their normalisation (a leaf)
- ``rules``        what a profile keeps, when it names someone, when an event must wait
- ``cookies``      the signed token (salt, sign, read) and Klaviyo's ``__kla_id``, exchange ids
- ``visit``        this request's :class:`~.visit.Visit`, read once from cookies, header, URL
- ``resolve``      the order of trust: which profile an event belongs to; consent
- ``settle``       ``identify()``; after the response: park, release, write the cookies

The package itself imports only ``Parking`` (now ``flask_klaviyo.delivery.parking``, a leaf
of the delivery package, re-exported because the README documented it here), so the layers
below (events, delivery) can read the identifier table without importing the request side;
importers name the submodule.
"""

# Documented here before parking moved to the delivery package (README: "Identity").
from ..delivery.parking import Parking

__all__ = ["Parking"]
