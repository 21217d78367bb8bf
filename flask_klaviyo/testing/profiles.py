"""The profile store: who each identifier belongs to, merges, and profile-import upserts.

Events resolve their identifiers here (find, create, or merge the profiles they name, oldest
profile surviving, two different emails never merged); Create or Update Profile and bulk
imports upsert here. Callers hold the stand-in's lock; the store itself has none.
"""

from __future__ import annotations

import copy
import itertools
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .jsonapi import iso
from .profile_checks import IDENTIFIER_PRIORITY

log = logging.getLogger(__name__)

SINGLE_VALUED = ("email", "phone_number", "external_id")  # a profile has at most one of each


@dataclass
class Profile:
    """The stand-in's idea of a Klaviyo profile: identifiers, attributes, dedup keys."""

    id: str
    seq: int
    email: str | None = None
    phone_number: str | None = None
    external_id: str | None = None
    anonymous_ids: list[str] = field(default_factory=list)
    exchange_ids: list[str] = field(default_factory=list)
    attributes: dict[str, Any] = field(default_factory=dict)
    merged_from: list[str] = field(default_factory=list)
    seen: set[tuple[str, str]] = field(default_factory=set)
    created: float = field(default_factory=time.time)
    updated: float = field(default_factory=time.time)

    def singles(self) -> dict[str, str]:
        return {k: v for k in SINGLE_VALUED if (v := getattr(self, k)) is not None}

    def conflicts_with(self, singles: dict[str, str]) -> bool:
        """Two different emails (or phones, external ids) are two people: never merge them."""
        return any(
            (mine := getattr(self, kind)) is not None and kind in singles and singles[kind] != mine
            for kind in SINGLE_VALUED
        )


class ProfileConflict(Exception):
    """An upsert names identifiers that belong to two different profiles."""

    def __init__(self, kind: str, owner: str) -> None:
        super().__init__(f"A profile already exists with this {kind}.")
        self.kind, self.owner = kind, owner


def mint_profile_id() -> str:
    """A ULID-like id (26 Crockford base32 characters), the shape Klaviyo's profile ids have."""
    alphabet = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
    number = (int(time.time() * 1000) << 80) | secrets.randbits(80)
    chars = []
    for _ in range(26):
        number, digit = divmod(number, 32)
        chars.append(alphabet[digit])
    return "".join(reversed(chars))


class ProfileStore:
    """Profiles by id, an index of (kind, value) -> id, and redirects left by merges.

    ``exchange`` (minted ``_kx`` token -> email) survives :meth:`clear`, like a real token.
    ``on_merge(gone, keep)`` lets the owner of the events re-point them.
    """

    def __init__(self, on_merge: Callable[[str, str], None]) -> None:
        self.exchange: dict[str, str] = {}
        self._on_merge = on_merge
        self.clear()

    def clear(self) -> None:
        self.profiles: dict[str, Profile] = {}
        self.index: dict[tuple[str, str], str] = {}
        self.redirects: dict[str, str] = {}
        self._sequence = itertools.count()

    # ---- lookups

    def current(self, profile_id: str) -> Profile | None:
        """The profile an id names now (a merged-away id leads to the survivor)."""
        while profile_id in self.redirects:
            profile_id = self.redirects[profile_id]
        return self.profiles.get(profile_id)

    def ordered(self) -> list[Profile]:
        return sorted(self.profiles.values(), key=lambda p: p.seq)

    def as_dict(self, profile: Profile) -> dict[str, Any]:
        minted = [token for token, email in self.exchange.items() if email == profile.email]
        return {
            "id": profile.id,
            "email": profile.email,
            "phone_number": profile.phone_number,
            "external_id": profile.external_id,
            "anonymous_ids": list(profile.anonymous_ids),
            "exchange_ids": [*minted, *profile.exchange_ids],
            "attributes": copy.deepcopy(profile.attributes),
            "merged_from": list(profile.merged_from),
            "created": iso(profile.created),
            "updated": iso(profile.updated),
        }

    def label(self, profile: Profile | None, sent: dict[str, Any]) -> str:
        """Who to show in the inspector: the best identifier known, else what the event sent."""
        if profile is not None:
            for value in (profile.email, profile.phone_number, profile.external_id):
                if value:
                    return value
            if profile.anonymous_ids:
                return f"anonymous {profile.anonymous_ids[0]}"
        return str(next((sent[k] for k in IDENTIFIER_PRIORITY if sent.get(k)), ""))

    def find(self, kind: str, value: str) -> Profile | None:
        """The profile an id, email, phone number or external id names now, if any."""
        if kind == "id":
            return self.current(value)
        owner = self.index.get((kind, value.strip().lower() if kind == "email" else value))
        return None if owner is None else self.profiles.get(owner)

    def remove(self, profile_id: str) -> None:
        """Forget a profile (a deletion): its identifiers, the ids merged into it, its _kx."""
        profile = self.profiles.pop(profile_id, None)
        if profile is None:
            return
        for key in [key for key, owner in self.index.items() if owner == profile_id]:
            del self.index[key]
        for old in [old for old, new in self.redirects.items() if new == profile_id]:
            del self.redirects[old]
        for token in [t for t, email in self.exchange.items() if email == profile.email]:
            del self.exchange[token]

    # ---- events: resolve and merge

    def translate(self, identifiers: list[tuple[str, str]]) -> list[tuple[str, str]]:
        """A minted ``_kx`` stands for its email (unless the event names an email itself)."""
        has_email = any(kind == "email" for kind, _ in identifiers)
        result: list[tuple[str, str]] = []
        for kind, value in identifiers:
            if kind == "_kx" and value in self.exchange:
                if not has_email:
                    result.append(("email", self.exchange[value]))
                continue
            result.append((kind, value))
        result.sort(key=lambda item: IDENTIFIER_PRIORITY.index(item[0]))
        return result

    def peek(self, identifiers: list[tuple[str, str]]) -> Any:
        """Who these identifiers are now, without changing anything (for bulk repeat checks)."""
        for key in identifiers:
            if key in self.index:
                return self.index[key]
        return identifiers[0]

    def resolve(self, identifiers: list[tuple[str, str]], sent: dict[str, Any]) -> Profile:
        """Find, create or merge the profile these identifiers name (oldest profile survives)."""
        wanted = {kind: value for kind, value in identifiers if kind in SINGLE_VALUED}
        target: Profile | None = None
        for key in identifiers:
            owner = self.index.get(key)
            if owner is None:
                continue
            candidate = self.profiles[owner]
            if candidate is target or candidate.conflicts_with(wanted):
                continue
            if target is None:
                target = candidate
            elif not candidate.conflicts_with(target.singles()):
                target = self._merge(target, candidate)
        if target is None:
            explicit = next((value for kind, value in identifiers if kind == "id"), None)
            target = self._create(explicit)
        for kind, value in identifiers:
            if (kind, value) in self.index or kind == "id":
                continue
            if kind in SINGLE_VALUED:
                if getattr(target, kind) not in (None, value):
                    continue
                setattr(target, kind, value)
            elif kind == "anonymous_id":
                target.anonymous_ids.append(value)
            else:
                target.exchange_ids.append(value)
            self.index[(kind, value)] = target.id
        for key, value in sent.items():
            if key not in IDENTIFIER_PRIORITY and value is not None:
                target.attributes[key] = copy.deepcopy(value)
        return target

    def _create(self, explicit: str | None) -> Profile:
        usable = explicit and explicit not in self.profiles and explicit not in self.redirects
        profile = Profile(explicit if usable else mint_profile_id(), next(self._sequence))
        self.profiles[profile.id] = profile
        self.index[("id", profile.id)] = profile.id
        return profile

    def _merge(self, first: Profile, second: Profile) -> Profile:
        """Fold the younger profile into the older one, with its identifiers and events."""
        keep, gone = (first, second) if first.seq <= second.seq else (second, first)
        for kind in SINGLE_VALUED:
            if getattr(keep, kind) is None:
                setattr(keep, kind, getattr(gone, kind))
        keep.anonymous_ids.extend(x for x in gone.anonymous_ids if x not in keep.anonymous_ids)
        keep.exchange_ids.extend(x for x in gone.exchange_ids if x not in keep.exchange_ids)
        for key, value in gone.attributes.items():
            keep.attributes.setdefault(key, value)
        keep.seen |= gone.seen
        keep.merged_from.extend([gone.id, *gone.merged_from])
        for key, owner in list(self.index.items()):
            if owner == gone.id:
                self.index[key] = keep.id
        self._on_merge(gone.id, keep.id)
        for old, new in list(self.redirects.items()):
            if new == gone.id:
                self.redirects[old] = keep.id
        self.redirects[gone.id] = keep.id
        del self.profiles[gone.id]
        return keep

    # ---- Create or Update Profile

    def upsert(
        self, profile_id: str | None, attributes: dict[str, Any], meta: dict[str, Any] | None
    ) -> tuple[Profile, bool]:
        """Klaviyo's profile-import: match by id, else email, phone, external id; create when
        nothing matches. A field sent as null is cleared, a field left out is left alone.

        Returns (the profile, created). Raises LookupError for an unknown id and
        :class:`ProfileConflict` when the identifiers belong to another profile.
        """
        target: Profile | None = None
        if profile_id is not None:
            target = self.current(profile_id)
            if target is None:
                raise LookupError(profile_id)
        singles = {
            kind: value.strip().lower() if kind == "email" else value
            for kind in SINGLE_VALUED
            if isinstance(value := attributes.get(kind), str) and value.strip()
        }
        for kind, value in singles.items():
            owner = self.index.get((kind, value))
            if owner is None:
                continue
            if target is None:
                target = self.profiles[owner]
            elif owner != target.id:
                raise ProfileConflict(kind, owner)
        created = target is None
        if target is None:
            target = self._create(None)
        for kind in SINGLE_VALUED:
            if kind not in attributes:
                continue
            old = getattr(target, kind)
            new = singles.get(kind)
            if old == new:
                continue
            if old is not None:
                self.index.pop((kind, old), None)
            setattr(target, kind, new)
            if new is not None:
                self.index[(kind, new)] = target.id
        for key, value in attributes.items():
            if key in SINGLE_VALUED or key in ("anonymous_id", "_kx"):
                continue
            if key in ("properties", "location") and isinstance(value, dict):
                merged = dict(target.attributes.get(key) or {})
                for name, item in value.items():
                    if item is None:
                        merged.pop(name, None)
                    else:
                        merged[name] = copy.deepcopy(item)
                target.attributes[key] = merged
            elif value is None:
                target.attributes.pop(key, None)
            else:
                target.attributes[key] = copy.deepcopy(value)
        _patch_properties(target, (meta or {}).get("patch_properties") or {})
        target.updated = time.time()
        return target, created


def _patch_properties(profile: Profile, patch: dict[str, Any]) -> None:
    """``meta.patch_properties``: append / unappend values of list properties, unset keys."""
    properties = dict(profile.attributes.get("properties") or {})
    for name, value in (patch.get("append") or {}).items():
        current = properties.get(name)
        items = current if isinstance(current, list) else ([] if current is None else [current])
        items = [*items, *(value if isinstance(value, list) else [value])]
        properties[name] = items
    for name, value in (patch.get("unappend") or {}).items():
        current = properties.get(name)
        if isinstance(current, list):
            drop = value if isinstance(value, list) else [value]
            properties[name] = [item for item in current if item not in drop]
    unset = patch.get("unset")
    for name in [unset] if isinstance(unset, str) else unset or []:
        properties.pop(name, None)
    if patch:
        profile.attributes["properties"] = properties
