"""gencbm engine: the library behind the `gencbm` command line.

Importing `engine` is cheap: torch and the models load on first use of an attribute
(so the CLI's `--help` and shell completion never import torch).
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["load_generator", "errors"]

_LAZY = {
    "load_generator": ("engine.generators", "load_generator"),
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    if name == "errors":
        return importlib.import_module("engine.errors")
    raise AttributeError(f"module 'engine' has no attribute {name!r}")
