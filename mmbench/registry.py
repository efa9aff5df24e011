"""Name lookups for registered components: did-you-mean errors, duplicates refused, provenance."""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Generic, Iterator, TypeVar

from .errors import MMBenchError, PluginError

T = TypeVar("T")


@dataclass(frozen=True)
class Provenance:
    """Where a registered component came from."""

    plugin: str
    distribution: str | None = None
    version: str | None = None

    def __str__(self) -> str:
        if self.distribution:
            return f"plugin '{self.plugin}' ({self.distribution} {self.version or ''})".replace(" )", ")")
        return f"plugin '{self.plugin}'"


class Registry(Generic[T]):
    """Components of one kind (datasets, posteriors or metrics), looked up by name."""

    def __init__(self, kind: str, base: type):
        self.kind = kind
        self.base = base
        self._items: dict[str, T] = {}
        self._provenance: dict[str, Provenance] = {}

    def add(self, item: T, provenance: Provenance) -> None:
        if not isinstance(item, self.base):
            raise PluginError(
                f"{provenance} registered {item!r} as a {self.kind[:-1]}, but it is not a "
                f"{self.base.__module__}.{self.base.__name__}; subclass it"
            )
        name = getattr(item, "name", None)
        if not isinstance(name, str) or not name:
            raise PluginError(f"{provenance} registered a {self.kind[:-1]} without a `name`")
        if name in self._items:
            raise PluginError(
                f"{self.kind[:-1]} '{name}' is registered twice: by {self._provenance[name]} "
                f"and by {provenance}; uninstall one or exclude it with MMBENCH_LOAD_PLUGINS"
            )
        self._items[name] = item
        self._provenance[name] = provenance

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            raise MMBenchError(self.unknown_message(name)) from None

    def unknown_message(self, name: str) -> str:
        close = difflib.get_close_matches(name, list(self._items), n=3, cutoff=0.5)
        hint = f"did you mean {' or '.join(repr(c) for c in close)}? " if close else ""
        available = ", ".join(sorted(self._items)) or "none (no plugin provides any)"
        return f"unknown {self.kind[:-1]} '{name}'; {hint}available: {available}"

    def provenance(self, name: str) -> Provenance:
        return self._provenance[name]

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: str) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[T]:
        return iter(self._items[n] for n in self.names())

    def __len__(self) -> int:
        return len(self._items)
