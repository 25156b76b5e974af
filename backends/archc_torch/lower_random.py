"""Torch lowering of the train-only randomness: dropout and drop_path."""

from __future__ import annotations

from archc.ir import Node


class RandomLowering:
    """Lowering methods for ops_random; mixed into codegen.Lowering (whose `use_helper` asks for a helper)."""

    def dropout(self, n: Node, ins: list[str]) -> tuple[str | None, str]:
        p = n.attrs["p"]
        if n.labelled:
            return f"nn.Dropout({p!r})", f"{{m}}({ins[0]})"
        return None, f"F.dropout({ins[0]}, {p!r}, self.training)"

    def drop_path(self, n: Node, ins: list[str]) -> tuple[str | None, str]:
        # StochasticDepth (HELPERS): torchvision's StochasticDepth(p, mode="row") in a few lines
        helper = self.use_helper("StochasticDepth")  # type: ignore[attr-defined]
        p = n.attrs["p"]
        if n.labelled:
            return f"{helper}({p!r})", f"{{m}}({ins[0]})"
        return None, f"{helper}.drop({ins[0]}, {p!r}, self.training)"
