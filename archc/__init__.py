"""archc: a declarative architecture compiler for deep networks.

`import archc` stays light: the compiler loads on first use, torch only when a
module is lowered.
"""

from __future__ import annotations

from typing import Any

from archc.errors import ArchcError

__version__ = "0.1.0"
__all__ = ["ArchcError", "__version__", "build", "compile", "list_models", "load_weights"]


def __getattr__(name: str) -> Any:
    if name in ("build", "compile", "load_weights"):
        from archc import api

        return getattr(api, name)
    if name == "list_models":
        from archc.models import list_models

        return list_models
    raise AttributeError(f"module 'archc' has no attribute {name!r}")
