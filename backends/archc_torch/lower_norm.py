"""Torch lowering of the norms and scales: layer_norm, group_norm, layer_scale."""

from __future__ import annotations

import keyword

from archc.errors import BackendError
from archc.ir import Node


def _eps(n: Node, default: float) -> str:
    """`, eps=...` when the node's eps differs from the torch module's default."""
    return "" if n.attrs["eps"] == default else f", eps={n.attrs['eps']!r}"


class NormLowering:
    """Lowering methods for ops_norm; mixed into codegen.Lowering (whose `_in` gives an input's shape)."""

    def layer_norm(self, n: Node, ins: list[str]) -> tuple[str | None, str]:
        # nn.LayerNorm normalises the last dimension: a map goes channels-last and back, as
        # torchvision's LayerNorm2d does, so the keys are the same (weight, bias)
        shape = self._in(n)  # type: ignore[attr-defined]
        ctor = f"nn.LayerNorm({shape[0]}{_eps(n, 1e-5)})"
        if len(shape) == 1:
            return ctor, f"{{m}}({ins[0]})"
        return ctor, f"{{m}}({ins[0]}.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)"

    def group_norm(self, n: Node, ins: list[str]) -> tuple[str | None, str]:
        # NCHW in: torch 2.13's CPU GroupNorm backward crashes (SIGSEGV) on a channels-last input
        # that needs no gradient (the net's input, a frozen stem); CUDA's GroupNorm makes it NCHW anyway
        c = self._in(n)[0]  # type: ignore[attr-defined]
        return f"nn.GroupNorm({n.attrs['groups']}, {c}{_eps(n, 1e-5)})", f"{{m}}({ins[0]}.contiguous())"

    def layer_scale(self, n: Node, ins: list[str]) -> tuple[str | None, str]:
        # a bare nn.Parameter assigned to the enclosing scope, like torchvision's CNBlock.layer_scale:
        # its state_dict key is `<scope>.<name>`, not `<scope>.<name>.weight`
        leaf = n.name.rpartition(".")[2]
        if not (leaf.isascii() and leaf.isidentifier()) or keyword.iskeyword(leaf):
            raise BackendError(
                f"layer_scale '{n.name}' (at {n.loc or 'an unknown place'}) needs a name that is a Python "
                f"identifier: it becomes a parameter of its scope, and '{leaf}' cannot name one",
                hint="label it with a name such as `layer_scale:` instead of an integer",
            )
        shape = self._in(n)  # type: ignore[attr-defined]
        dims = f"({shape[0]}, 1, 1)" if len(shape) == 3 else f"({shape[0]},)"
        return f"nn.Parameter(torch.full({dims}, {n.attrs['init']!r}))", f"{{m}} * {ins[0]}"
