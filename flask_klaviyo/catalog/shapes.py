"""Reading a catalog source's plain dicts quickly: which key each field is under is found once
per shape (the same keys in the same order, as the rows of one source usually are), instead of
trying every name a storefront may use for every field of every product.

The answer is the one ``_pick`` gives: the first non-empty value under any of a field's names
(a shape holding two of them, ``id`` and ``sku``, looks at the second only when the first is
empty in that row).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = ["Shapes"]

_ABSENT = object()  # a key no dict holds: get() answers None
# per shape: each field's first key present, and (field, the other keys present) where several
_Shape = tuple[tuple[Any, ...], tuple[tuple[int, tuple[str, ...]], ...]]


class Shapes:
    """The keys of ``fields`` (each a tuple of names, first match wins) per dict shape."""

    MAX_SHAPES = 64  # a source of ever-new shapes is read the slow way past this

    def __init__(self, fields: Sequence[tuple[str, ...]]) -> None:
        self.fields = tuple(fields)
        self.known: dict[tuple[Any, ...], _Shape] = {}

    def _resolve(self, shape: tuple[Any, ...]) -> _Shape:
        present = set(shape)
        first: list[Any] = []
        others: list[tuple[int, tuple[str, ...]]] = []
        for index, names in enumerate(self.fields):
            there = tuple(name for name in names if name in present)
            first.append(there[0] if there else _ABSENT)
            if len(there) > 1:
                others.append((index, there[1:]))
        return tuple(first), tuple(others)

    def values(self, obj: Any) -> list[Any] | None:
        """Each field's value in ``obj`` (None when absent or empty), or None when ``obj`` is
        not a plain dict (read it with ``_pick``)."""
        if type(obj) is not dict:
            return None
        shape = tuple(obj)
        known = self.known.get(shape)
        if known is None:
            known = self._resolve(shape)
            if len(self.known) < self.MAX_SHAPES:
                self.known[shape] = known
        first, others = known
        get = obj.get
        found = [None if (value := get(key)) == "" else value for key in first]
        for index, names in others:
            if found[index] is None:  # the first name was empty here: the next non-empty
                found[index] = next(
                    (v for name in names if (v := get(name)) is not None and v != ""), None
                )
        return found
