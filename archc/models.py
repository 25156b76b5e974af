"""The catalogue's networks with their size: `archc.list_models`, as `timm.list_models` lists timm's.

Parameters and multiply-adds come from elaborating each spec (no passes, no lowering, no torch), only
when asked for, and once per process: `archc list` on every shipped net, ResNet-1202 included, costs
one elaboration of each.
"""

from __future__ import annotations

import fnmatch
import functools
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from archc.frontend import catalog


@dataclass(frozen=True)
class _Size:
    net: str
    params: int
    macs: int
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]


@functools.cache
def _size(path: Path) -> _Size:
    from archc.frontend import elaborate, load

    graph = elaborate(load(path), None)
    return _Size(graph.name, graph.params(), graph.macs(), tuple(graph.input.shape), tuple(graph.output.shape))


@dataclass(frozen=True)
class ModelInfo:
    """One catalogue entry; its size is computed on first access and cached for the process.

    Attributes:
        name: the catalogue name, for `archc build NAME` and `archc.compile(NAME)`.
        path: the installed spec file.
    """

    name: str
    path: Path

    @property
    def description(self) -> str:
        """The spec's first comment line (its title), or ""."""
        for line in self.path.read_text(encoding="utf-8").splitlines():
            if line.startswith("#"):
                return line.lstrip("#").strip()
            if line.strip():
                break
        return ""

    @property
    def title(self) -> str:
        """The description up to its first parenthesis or colon, e.g. "ResNet-50"."""
        return re.split(r" \(|: ", self.description, maxsplit=1)[0]

    @property
    def net(self) -> str:
        """The net's name inside the spec."""
        return _size(self.path).net

    @property
    def params(self) -> int:
        """Learned parameters of the whole net (default net parameters)."""
        return _size(self.path).params

    @property
    def macs(self) -> int:
        """Multiply-adds of one forward pass on one input of `input_shape`."""
        return _size(self.path).macs

    @property
    def input_shape(self) -> tuple[int, ...]:
        """The input's shape without the batch dimension, e.g. (3, 224, 224)."""
        return _size(self.path).input_shape

    @property
    def output_shape(self) -> tuple[int, ...]:
        """The output's shape without the batch dimension."""
        return _size(self.path).output_shape

    def as_dict(self) -> dict[str, Any]:
        """Everything about the entry, JSON-ready (computes the size)."""
        return {
            "name": self.name,
            "net": self.net,
            "title": self.title,
            "description": self.description,
            "params": self.params,
            "macs": self.macs,
            "input_shape": list(self.input_shape),
            "output_shape": list(self.output_shape),
            "path": str(self.path),
        }


def _patterns(value: str | Iterable[str]) -> list[str]:
    return [value] if isinstance(value, str) else list(value)


def list_models(filter: str | Iterable[str] = "", exclude_filters: str | Iterable[str] = "") -> list[ModelInfo]:
    """The catalogue's networks (top-level names first, resnet18 before resnet101), like `timm.list_models`.

    Args:
        filter: shell-style wildcard(s) (fnmatch) a name must match, e.g. "resnet*" or "cifar/*";
            several: any of them. "" keeps every entry.
        exclude_filters: wildcard(s) whose matches are dropped afterwards.

    Returns:
        One ModelInfo per entry; `.params` and `.macs` are computed when first read.
    """
    keep = [p for p in _patterns(filter) if p]
    drop = [p for p in _patterns(exclude_filters) if p]
    return [
        ModelInfo(name, path)
        for name, path in catalog.entries().items()
        if (not keep or any(fnmatch.fnmatchcase(name, p) for p in keep))
        and not any(fnmatch.fnmatchcase(name, p) for p in drop)
    ]


__all__ = ["ModelInfo", "list_models"]
