"""Lowering of the tensor ops (concat, mul, chunk, split, channel_shuffle): forward expressions, no modules."""

from __future__ import annotations

from archc.ir import Node
from archc.ir.ops_tensor import channel_range


class TensorLowering:
    """Mixin of Lowering: one method per tensor op; none has parameters, so none makes a module."""

    def concat(self, n: Node, ins: list[str]) -> tuple[str | None, str]:
        return None, f"torch.cat([{', '.join(ins)}], 1)"

    def mul(self, n: Node, ins: list[str]) -> tuple[str | None, str]:
        return None, f"{ins[0]} * {ins[1]}"

    def _slice(self, n: Node, ins: list[str]) -> tuple[str | None, str]:
        lo, hi = channel_range(n.op, n.attrs, self.graph.node(n.inputs[0]).shape[0])  # type: ignore[attr-defined]
        return None, f"{ins[0]}[:, {lo}:{hi}]"

    def chunk(self, n: Node, ins: list[str]) -> tuple[str | None, str]:
        return self._slice(n, ins)

    def split(self, n: Node, ins: list[str]) -> tuple[str | None, str]:
        return self._slice(n, ins)

    def channel_shuffle(self, n: Node, ins: list[str]) -> tuple[str | None, str]:
        g = n.attrs["groups"]
        c = n.shape[0]
        return None, f"{ins[0]}.unflatten(1, ({g}, {c // g})).transpose(1, 2).flatten(1, 2)"
