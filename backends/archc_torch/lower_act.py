"""Lowering of the activation family: each method asks archc.ir.activations' table.

Labelled -> the table's nn module (a named child, as torchvision's `relu`); unlabelled -> its
functional expression in the forward.
"""

from __future__ import annotations

from archc.ir import Node
from archc.ir.activations import activation_expr, activation_module


class ActLowering:
    """Mixin of Lowering: one method per activation op (relu stays with Lowering)."""

    def _act(self, n: Node, ins: list[str]) -> tuple[str | None, str]:
        if n.labelled:
            return activation_module(n.op, n.attrs), f"{{m}}({ins[0]})"
        return None, activation_expr(n.op, ins[0], n.attrs)

    def relu6(self, n: Node, ins: list[str]) -> tuple[str | None, str]:
        return self._act(n, ins)

    def sigmoid(self, n: Node, ins: list[str]) -> tuple[str | None, str]:
        return self._act(n, ins)

    def hardsigmoid(self, n: Node, ins: list[str]) -> tuple[str | None, str]:
        return self._act(n, ins)

    def silu(self, n: Node, ins: list[str]) -> tuple[str | None, str]:
        return self._act(n, ins)

    def hardswish(self, n: Node, ins: list[str]) -> tuple[str | None, str]:
        return self._act(n, ins)

    def gelu(self, n: Node, ins: list[str]) -> tuple[str | None, str]:
        return self._act(n, ins)

    def tanh(self, n: Node, ins: list[str]) -> tuple[str | None, str]:
        return self._act(n, ins)

    def leaky_relu(self, n: Node, ins: list[str]) -> tuple[str | None, str]:
        return self._act(n, ins)
