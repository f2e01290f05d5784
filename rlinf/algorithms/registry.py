"""A tiny name -> function registry with helpful errors for unknown names.

Each algorithm family (advantage estimators, policy losses, KL estimators) owns one `Registry`.
`get` of an unknown name raises `ConfigError` naming the config key, the closest known name
(difflib) and the full list, so a typo in YAML fails before any worker starts.
"""

from __future__ import annotations

import difflib
from typing import Callable, Dict, Generic, List, TypeVar

from rlinf.errors import ConfigError

F = TypeVar("F", bound=Callable)


class Registry(Generic[F]):
    """Maps names to callables.

    Args:
        kind: human name of what is registered, e.g. "advantage estimator" (used in errors).
        key: the config key that selects an entry, e.g. "algorithm.adv_estimator".
    """

    def __init__(self, kind: str, key: str | None = None):
        self.kind = kind
        self.key = key
        self._items: Dict[str, F] = {}

    def register(self, name: str, *aliases: str) -> Callable[[F], F]:
        """Decorator: register the function under `name` (and any `aliases`); returns it unchanged."""

        def deco(fn: F) -> F:
            for n in (name, *aliases):
                if n in self._items:
                    raise ValueError(f"{self.kind} '{n}' is already registered")
                self._items[n] = fn
            return fn

        return deco

    def get(self, name: str) -> F:
        """The callable registered as `name`; `ConfigError` with a close-match suggestion if unknown."""
        try:
            return self._items[name]
        except KeyError:
            known = self.names()
            close = difflib.get_close_matches(str(name), known, n=1)
            hint = f"; did you mean '{close[0]}'? " if close else "; "
            raise ConfigError(
                f"unknown {self.kind} '{name}'{hint}known: {', '.join(known)}", key=self.key
            ) from None

    def names(self) -> List[str]:
        """Registered names, sorted."""
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {self.names()})"
