"""The catalog half of the ``Klaviyo`` facade: the merchant's catalog source, incremental
changes, a full sync, and back-in-stock subscriptions (the work is in :mod:`.catalog`).

Input is checked before anything is queued: bad input raises
:class:`~flask_klaviyo.exceptions.KlaviyoSchemaError` naming the item and field in strict mode,
else it is logged and kept as a dead letter (``None`` is returned).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from flask import current_app

from . import queueing
from ._state import current_state, enabled
from .catalog.model import CatalogItem, compound_id
from .catalog.plan import item_operations, membership
from .catalog.remote import MEMBERSHIP_KEY, VARIANTS_KEY
from .catalog.sync import SyncReport, ensure_api_mode, run_sync
from .delivery.operations import Operation
from .exceptions import KlaviyoSchemaError
from .profiles import email_of, phone_of
from .progress import ProgressCallback

__all__ = ["CatalogAPI"]

F = TypeVar("F", bound=Callable[..., Iterable[Any]])
CHANNELS = ("EMAIL", "SMS")


class CatalogAPI:
    """Mixed into :class:`flask_klaviyo.Klaviyo`."""

    _catalog_source: Callable[[], Iterable[Any]] | None = None

    def catalog_source(self, func: F) -> F:
        """Register the function yielding the store's products (and, optionally, categories:
        ``CatalogCategory`` or ``{"type": "category", "id", "name"}``). It is iterated once per
        sync or feed request, so a generator never holds the catalog in memory."""
        self._catalog_source = func
        return func

    def catalog_entries(self) -> Iterable[Any]:
        if self._catalog_source is None:
            raise RuntimeError(
                "no catalog source: register one with @klaviyo.catalog_source (a function "
                "yielding the store's products)"
            )
        return self._catalog_source()

    def catalog_sync(
        self, *, dry_run: bool = False, wait: bool = True, progress: ProgressCallback | None = None
    ) -> SyncReport:
        """Reconcile Klaviyo's catalog with the source (``flask klaviyo catalog sync``)."""
        return run_sync(self.catalog_entries, dry_run=dry_run, wait=wait, progress=progress)

    def catalog_changed(self, product: Any) -> list[Operation]:
        """Queue one product's change (price, stock, anything): created in Klaviyo if this
        installation never sent it, else updated. Changes of one item waiting together are one
        (the catalog kinds coalesce by id); an inventory back above 0 is just such a change."""
        if not enabled():
            return []
        ensure_api_mode()
        item = queueing.build("catalog item", lambda: CatalogItem.coerce(product).validate())
        if item is None:
            return []
        redis = current_state().redis
        pipe = redis.pipeline(transaction=False)
        pipe.hexists(MEMBERSHIP_KEY, item.id)
        pipe.hmget(VARIANTS_KEY, [v.id for v in item.variants] or ["-"])
        exists, owners = pipe.execute()
        known = {v.id for v, owner in zip(item.variants, owners, strict=False) if owner}
        operations = item_operations(item, exists=bool(exists), known_variants=known)
        pipe = redis.pipeline(transaction=False)
        pipe.hset(MEMBERSHIP_KEY, item.id, membership(item))
        if item.variants:
            pipe.hset(VARIANTS_KEY, mapping={v.id: item.id for v in item.variants})
        pipe.execute()
        queued = [queueing.enqueue(op.kind, op.payload, op.key) for op in operations]
        return [op for op in queued if op is not None]

    def catalog_removed(self, product_id: str | int) -> Operation | None:
        """Queue the deletion of an item (its variants go with it in Klaviyo)."""
        if not enabled():
            return None
        ensure_api_mode()
        external = str(product_id)
        current_state().redis.hdel(MEMBERSHIP_KEY, external)
        return queueing.enqueue("catalog_item_delete", {"id": compound_id(external)}, external)

    def notify_back_in_stock(
        self,
        *,
        email: str | None = None,
        phone_number: str | None = None,
        variant: str | int,
        channels: Iterable[str] = ("EMAIL",),
    ) -> Operation | None:
        """Subscribe a person to a variant's back-in-stock notification (Klaviyo sends it when
        the catalog's inventory for the variant goes above 0). ``variant``: the store's variant
        id, as the catalog has it."""
        if not enabled():
            return None
        return queueing.build_and_enqueue(
            "back in stock",
            "back_in_stock",
            lambda: _back_in_stock(email, phone_number, variant, tuple(channels)),
        )

    def catalog_mode(self) -> str:
        return str(current_app.config["KLAVIYO_CATALOG_MODE"])


def _back_in_stock(
    email: Any, phone_number: Any, variant: Any, channels: tuple[str, ...]
) -> tuple[dict[str, Any], str]:
    subject = "back in stock"
    chosen = tuple(str(c).upper() for c in channels)
    if not chosen or any(c not in CHANNELS for c in chosen):
        raise KlaviyoSchemaError(subject, "channels", f"must be EMAIL and/or SMS, got {channels!r}")
    profile: dict[str, Any] = {}
    if email is not None:
        profile["email"] = email_of(email)
    if phone_number is not None:
        profile["phone_number"] = phone_of(phone_number)
    if "EMAIL" in chosen and "email" not in profile:
        raise KlaviyoSchemaError(subject, "email", "the EMAIL channel needs an email address")
    if "SMS" in chosen and "phone_number" not in profile:
        raise KlaviyoSchemaError(subject, "phone_number", "the SMS channel needs a phone number")
    if isinstance(variant, bool) or not isinstance(variant, str | int) or not str(variant).strip():
        raise KlaviyoSchemaError(subject, "variant", f"must be the variant's id, got {variant!r}")
    external = str(variant).strip().removeprefix("$custom:::$default:::")
    payload = {"channels": list(chosen), "profile": profile, "variant_id": compound_id(external)}
    return payload, f"{external}:{profile.get('email') or profile.get('phone_number')}"
