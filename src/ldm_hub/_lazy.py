"""Lazy attribute exports, so ``import ldm_hub`` (and ``ldm-hub --help``) stays fast."""

from __future__ import annotations

import importlib


def lazy_exports(package: str, table: dict[str, str]):
    """Return a module ``__getattr__`` that imports ``table[name]`` (a submodule path) on first access."""

    def __getattr__(name: str):
        if name not in table:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(table[name], package), name)

    return __getattr__
