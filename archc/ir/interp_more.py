"""Reference semantics of the ops past the paper's (activations, tensor ops, norms, randomness, resampling).

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

    # --- tensor ops
    def concat(self, node: Node, inputs: list[Any]) -> Any:
        import torch

        return torch.cat(inputs, dim=1)

    def mul(self, node: Node, inputs: list[Any]) -> Any:
        return inputs[0] * inputs[1]

    def _channels(self, node: Node, x: Any, parts: list[int]) -> Any:
        import torch

        pieces = torch.split(x, parts, dim=1)
        return pieces[node.attrs["index"]]

    def chunk(self, node: Node, inputs: list[Any]) -> Any:
        x = inputs[0]
        n = node.attrs["chunks"]
        return self._channels(node, x, [x.shape[1] // n] * n)

    def split(self, node: Node, inputs: list[Any]) -> Any:
        x = inputs[0]
        return self._channels(node, x, node.attrs["size"])

    def channel_shuffle(self, node: Node, inputs: list[Any]) -> Any:
        x = inputs[0]
        n, c, h, w = x.shape
        g = node.attrs["groups"]
        return x.reshape(n, g, c // g, h, w).transpose(1, 2).reshape(n, c, h, w)

    # --- norms and scales
    def layer_norm(self, node: Node, inputs: list[Any]) -> Any:
        import torch

        x, eps = inputs[0], node.attrs["eps"]
        w, b = self.param(node, "weight"), self.param(node, "bias")
        if x.dim() == 4:  # over the channels at each position
            w, b = w[:, None, None], b[:, None, None]
        mean = x.mean(1, keepdim=True)
        var = x.var(1, unbiased=False, keepdim=True)
        return (x - mean) * torch.rsqrt(var + eps) * w + b

    def group_norm(self, node: Node, inputs: list[Any]) -> Any:
        import torch.nn.functional as F

        a = node.attrs
        return F.group_norm(inputs[0], a["groups"], self.param(node, "weight"), self.param(node, "bias"), a["eps"])

    def layer_scale(self, node: Node, inputs: list[Any]) -> Any:
        return self.param(node, None) * inputs[0]

    # --- train-only randomness: the same draws from torch's default generator as the torch backend
    def dropout(self, node: Node, inputs: list[Any]) -> Any:
        import torch.nn.functional as F

        return F.dropout(inputs[0], node.attrs["p"], True) if self.train else inputs[0]

    def drop_path(self, node: Node, inputs: list[Any]) -> Any:
        import torch

        x, p = inputs[0], node.attrs["p"]
        if not self.train or p == 0:
            return x
        keep = torch.empty([x.shape[0]] + [1] * (x.dim() - 1), dtype=x.dtype, device=x.device).bernoulli_(1 - p)
        return x * keep / (1 - p)

    # --- resampling
    def upsample(self, node: Node, inputs: list[Any]) -> Any:
        import torch.nn.functional as F

        a = node.attrs
        corners = a["align_corners"] if a["mode"] == "bilinear" else None
        if a["size"] is not None:
            return F.interpolate(inputs[0], size=a["size"], mode=a["mode"], align_corners=corners)
        return F.interpolate(inputs[0], scale_factor=a["scale"], mode=a["mode"], align_corners=corners)

    def adaptive_avgpool(self, node: Node, inputs: list[Any]) -> Any:
        import torch.nn.functional as F

        return F.adaptive_avg_pool2d(inputs[0], node.attrs["size"])

    def adaptive_maxpool(self, node: Node, inputs: list[Any]) -> Any:
        import torch.nn.functional as F

        return F.adaptive_max_pool2d(inputs[0], node.attrs["size"])
