"""Reference semantics of the ops past the paper's (activations, tensor ops): a mixin of archc.ir.Interpreter.

Each method is written with torch's own functions, independently of the backends' lowerings
and of the activation table (archc.ir.activations), so the interpreter stays an oracle for both.
"""

from __future__ import annotations

from typing import Any

from archc.ir.graph import Node


class MoreOps:
    """Interpreter methods named after the ops they run."""

    # --- activations
    def relu6(self, node: Node, inputs: list[Any]) -> Any:
        import torch

        return torch.clamp(inputs[0], 0.0, 6.0)

    def sigmoid(self, node: Node, inputs: list[Any]) -> Any:
        import torch

        return torch.sigmoid(inputs[0])

    def hardsigmoid(self, node: Node, inputs: list[Any]) -> Any:
        import torch

        return torch.clamp(inputs[0] / 6.0 + 0.5, 0.0, 1.0)

    def silu(self, node: Node, inputs: list[Any]) -> Any:
        import torch

        return inputs[0] * torch.sigmoid(inputs[0])

    def hardswish(self, node: Node, inputs: list[Any]) -> Any:
        import torch

        x = inputs[0]
        return x * torch.clamp(x + 3.0, 0.0, 6.0) / 6.0

    def gelu(self, node: Node, inputs: list[Any]) -> Any:
        import torch.nn.functional as F

        return F.gelu(inputs[0], approximate=node.attrs["approximate"])

    def tanh(self, node: Node, inputs: list[Any]) -> Any:
        import torch

        return torch.tanh(inputs[0])

    def leaky_relu(self, node: Node, inputs: list[Any]) -> Any:
        import torch

        x = inputs[0]
        return torch.where(x >= 0, x, x * node.attrs["slope"])
