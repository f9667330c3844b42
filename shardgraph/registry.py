"""Name -> class registries for the extension points (operators, comparators, losses, orders, writers)."""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from shardgraph.errors import ConfigError

T = TypeVar("T")


def did_you_mean(name: str, known: list[str]) -> str:
    """A ' Did you mean ...?' suffix listing the known names closest to `name`, or ''."""
    close = difflib.get_close_matches(name, known, n=3, cutoff=0.6)
    if not close:
        return ""
    return " Did you mean " + " or ".join(repr(c) for c in close) + "?"


class Registry(Generic[T]):
    """Maps names to implementations; an unknown name lists the known ones."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def decorate(obj: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._entries[name] = obj
            return obj

        return decorate

    def get(self, name: str) -> T:
        try:
            return self._entries[name]
        except KeyError:
            known = sorted(self._entries)
            raise ConfigError(
                f"Unknown {self.kind} {name!r}. Known: {', '.join(known)}.{did_you_mean(name, known)}"
            ) from None

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._entries))
