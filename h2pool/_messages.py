"""What a request and a response are made of, for people: :class:`Headers` and :class:`Request`.

The bottom layer (it imports nothing of h2pool): errors carry a
:class:`Request`, responses carry :class:`Headers`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import overload

__all__ = ["Headers", "Request", "adopt_fields", "fields_of"]


class Headers(Mapping[str, str]):
    """Header (or trailer) fields: a case-insensitive mapping with repeated fields kept.

    ``headers["Content-Type"]`` and ``headers.get("content-type")`` give a
    field's value; a field sent more than once gives its values joined by
    ``", "``, as RFC 9110 section 5.3 allows a recipient to combine them
    (``get_list()`` keeps them apart: ``set-cookie`` must be read that way).
    Iteration gives each name once, lower case, in wire order;
    ``multi_items()`` gives every field as sent. Headers equal a list of the
    same fields in the same order, and a mapping of the same fields in any
    order (names in any case, both ways).
    """

    __slots__ = ("_fields", "_index")

    def __init__(self, fields: Mapping[str, str] | Iterable[tuple[str, str]] | None = None) -> None:
        if fields is None:
            fields = ()
        elif isinstance(fields, Headers):
            fields = fields._fields  # every field, repeated ones apart
        elif isinstance(fields, Mapping):
            fields = fields.items()
        self._fields: list[tuple[str, str]] = [(name, value) for name, value in fields]
        self._index: dict[str, list[str]] | None = None  # built on the first lookup

    def _lookup(self) -> dict[str, list[str]]:
        index = self._index
        if index is None:
            index = self._index = {}
            for name, value in self._fields:
                index.setdefault(name.lower(), []).append(value)
        return index

    def __getitem__(self, name: str) -> str:
        values = self._lookup().get(name.lower()) if isinstance(name, str) else None
        if values is None:
            raise KeyError(name)
        return values[0] if len(values) == 1 else ", ".join(values)

    def __iter__(self) -> Iterator[str]:
        return iter(self._lookup())

    def __len__(self) -> int:
        return len(self._lookup())

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._lookup()

    @overload
    def get_list(self, name: str) -> list[str]: ...
    @overload
    def get_list(self, name: str, default: list[str]) -> list[str]: ...
    def get_list(self, name: str, default: list[str] | None = None) -> list[str]:
        """Every value of field ``name`` (any case), in wire order; ``default`` or [] if none."""
        values = self._lookup().get(name.lower())
        if values is None:
            return [] if default is None else default
        return list(values)

    def multi_items(self) -> list[tuple[str, str]]:
        """Every field as ``(name, value)``, repeated ones included, in wire order."""
        return list(self._fields)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Headers):
            return _lowered(self._fields) == _lowered(other._fields)
        if isinstance(other, list):
            return _lowered(self._fields) == _lowered(other)
        if isinstance(other, Mapping):
            # As fields, any order: names that differ only in case are one field's values.
            return dict(self.items()) == dict(Headers(other).items())
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # mutable-looking, as dict

    def __repr__(self) -> str:
        return f"Headers({self._fields!r})"


def adopt_fields(fields: list[tuple[str, str]]) -> Headers:
    """:class:`Headers` over a list of decoded fields, taken over as it is (not copied).

    For the pool's responses (thousands a second): the caller hands the
    list over and never changes it again.
    """
    headers = Headers.__new__(Headers)
    headers._fields = fields
    headers._index = None
    return headers


def fields_of(headers: Headers) -> list[tuple[str, str]]:
    """The list of fields behind ``headers``, not copied: to read, never to change.

    For the gRPC client, which reads every response's fields as a list;
    ``multi_items()`` is the public way (a copy).
    """
    return headers._fields


def _lowered(fields: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    return [(name.lower(), value) for name, value in fields]


@dataclass(frozen=True, slots=True)
class Request:
    """A request as it was asked for, carried by responses and errors.

    Attributes:
        method: The method, upper case.
        url: The absolute URL: the pool's target, path and query.
        headers: The header fields the caller and the pool added (not the
            pseudo-headers).
    """

    method: str
    url: str
    headers: Headers = field(default_factory=Headers)

    def __str__(self) -> str:
        return f"{self.method} {self.url}"
