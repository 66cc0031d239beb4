"""Named registries of the extension points: encoder heads and backbones, fusion variants, loss terms, datasets.

Each registry maps a config string to an entry (a class, a builder function or a small spec) and is filled
by a decorator next to the implementation, the pattern of :data:`wagi.metrics.METRICS`::

    ENCODER_HEADS = Registry("encoder head", "encoder.kind")

    @ENCODER_HEADS.register("psp", iterative=False, progressive=False)
    def build_psp(trunk, **common): ...

``registry[name]`` is the entry, ``registry.info(name)`` its keyword metadata, ``name in registry`` and
iteration work on names (in registration order), so a config schema takes its choices from the registry
(:func:`wagi.config.choice_field`) and a new variant registered anywhere is accepted by the config at once.
``docs/extending.md`` shows every extension point.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, Generic, Iterator, Mapping, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """Entries by name, with keyword metadata per entry. ``what`` names the kind in error messages and
    ``key`` is the config key that selects an entry (may be empty)."""

    def __init__(self, what: str, key: str = ""):
        self.what = what
        self.key = key
        self._entries: Dict[str, T] = {}
        self._info: Dict[str, Dict[str, Any]] = {}

    def register(self, name: str, **info: Any) -> Callable[[T], T]:
        """Decorator: ``@registry.register(name, **info)`` stores the decorated object under ``name``."""
        if not isinstance(name, str) or not name or name != name.strip():
            raise ValueError(f"a {self.what} name must be a non-empty string without surrounding spaces, got {name!r}")

        def add(entry: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.what} {name!r} is already registered")
            self._entries[name] = entry
            self._info[name] = dict(info)
            return entry

        return add

    def unregister(self, name: str) -> None:
        """Remove ``name`` (tests register temporary entries and remove them afterwards)."""
        if name not in self._entries:
            raise KeyError(f"{self.what} {name!r} is not registered")
        del self._entries[name]
        del self._info[name]

    def __getitem__(self, name: str) -> T:
        try:
            return self._entries[name]
        except (KeyError, TypeError):
            where = f" ({self.key})" if self.key else ""
            raise ValueError(f"unknown {self.what} {name!r}{where}; registered: {', '.join(self._entries)}") from None

    def info(self, name: str) -> Mapping[str, Any]:
        """The keyword metadata given at registration."""
        self[name]  # the error for an unknown name
        return self._info[name]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._entries))

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.what!r}: {', '.join(self._entries)})"
