"""Torch lowering of the resampling ops: upsample, adaptive_avgpool, adaptive_maxpool."""

from __future__ import annotations

from archc.errors import BackendError
from archc.ir import Node


def _dims(v: tuple[int, int]) -> str:
    """A size or scale as torch takes it: 7 for 7x7, (7, 5) otherwise."""
    from archc_torch.codegen import _pair  # codegen imports this module first

    return _pair(v)


class ResampleLowering:
    """Lowering methods for ops_resample; mixed into codegen.Lowering."""

    def upsample(self, n: Node, ins: list[str]) -> tuple[str | None, str]:
        a = n.attrs
        args = f"scale_factor={_dims(a['scale'])}" if a["scale"] is not None else f"size={_dims(a['size'])}"
        args += f", mode={a['mode']!r}"
        if a["mode"] == "bilinear":  # torch refuses align_corners for nearest
            args += f", align_corners={a['align_corners']}"
        if n.labelled:
            return f"nn.Upsample({args})", f"{{m}}({ins[0]})"
        return None, f"F.interpolate({ins[0]}, {args})"

    def _adaptive(self, n: Node, ins: list[str], kind: str) -> tuple[str | None, str]:
        size = _dims(n.attrs["size"])
        if n.labelled:
            return f"nn.Adaptive{kind.capitalize()}Pool2d({size})", f"{{m}}({ins[0]})"
        return None, f"F.adaptive_{kind}_pool2d({ins[0]}, {size})"

    def adaptive_avgpool(self, n: Node, ins: list[str]) -> tuple[str | None, str]:
        return self._adaptive(n, ins, "avg")

    def adaptive_maxpool(self, n: Node, ins: list[str]) -> tuple[str | None, str]:
        return self._adaptive(n, ins, "max")


def check_exportable(n: Node, in_shape: tuple[int, ...]) -> None:
    """Refuse an adaptive_maxpool that torch's ONNX exporters cannot write (measured with torch 2.13).

    ONNX has no adaptive max pooling: the exporters write a MaxPool, which needs an output size that
    divides the input size.

    Raises:
        BackendError: naming the layer, where the spec made it, and the sizes.
    """
    (h, w), (oh, ow) = in_shape[1:], n.attrs["size"]
    if h % oh or w % ow:
        raise BackendError(
            f"adaptive_maxpool '{n.name}' (at {n.loc or 'an unknown place'}) pools {h}x{w} to {oh}x{ow}, "
            "which ONNX cannot express: the output size must divide the input size",
            hint="choose an input size or output size that divides it, or use adaptive_avgpool",
        )
