"""The triton backend: Triton kernels for fused BN(+add)+activation (train) and conv epilogues (eval).

Everything the kernels do not cover lowers exactly as in the torch backend; only
`bn_act` and `fused_conv` nodes become Triton-backed modules, which keep the
parameter and buffer names of nn.BatchNorm2d / nn.Conv2d so checkpoints move
freely between backends. A `bn_act` without residual whose only reader is a conv runs
together with that conv as the BN-act-conv unit (`bn_act_conv_unit`), which keeps the BN
input instead of the activation for backward (archc_triton.bn_act_conv). The kernels apply
every activation of archc.ir.activations' table (KERNEL_ACTS below, in the BN and the
conv epilogue kernels alike, through archc_triton.act_kernels); an activation outside that
list (one added to the table later) lowers to the torch form: nn.BatchNorm2d and the
activation's expression for a `bn_act`, FusedConv with no activation followed by the
expression for a `fused_conv`.
"""

from __future__ import annotations

import os
from typing import Any

from archc.errors import BackendError
from archc.ir import Graph, Node
from archc.ir.activations import torch_kwargs
from archc.ir.fused import epilogue_act
from archc.ir.registry import OpProblem
from archc_torch import Lowering, check_names, generate, instantiate
from archc_torch.codegen import _attr, epilogue_expr

# The activations the kernels apply, each with its constexpr ACT code in archc_triton.act_kernels'
# helpers (gelu's tanh form is GELU_TANH_CODE). The one map from names to codes; it lives here, not
# there, so the lowering can ask it without importing triton (`import archc_triton` stays light).
ACT_CODES: dict[str, int] = {
    "none": 0, "relu": 1, "relu6": 2, "sigmoid": 3, "hardsigmoid": 4, "silu": 5, "hardswish": 6, "gelu": 7,
    "tanh": 9, "leaky_relu": 10,
}  # fmt: skip
GELU_TANH_CODE = 8
KERNEL_ACTS: tuple[str, ...] = tuple(ACT_CODES)

__version__ = "0.1.0"
__all__ = ["TritonBackend", "TritonLowering", "BNAct", "FusedConv", "bn_act_conv_unit"]


def _pair(v: Any) -> str:
    a, b = v
    return str(a) if a == b else f"({a}, {b})"


def act_args(n: Node) -> str:
    """The constructor keywords of a fused node's activation: ", act='leaky_relu', negative_slope=0.2".

    Raises:
        BackendError: an act_<attr> value the activation table refuses (a graph changed after the passes).
    """
    act, attrs = epilogue_act(n.attrs)
    if act == "none":
        return ", act='none'"
    try:
        keywords = torch_kwargs(act, attrs)
    except (KeyError, OpProblem) as e:
        raise BackendError(
            f"layer '{n.name}' has activation {act!r:.40} with {attrs!r:.60}, which the activation table refuses",
            hint="this graph was not made by the archc passes",
        ) from e
    return f", act={act!r}" + "".join(f", {k}={v!r}" for k, v in keywords.items())


class TritonLowering(Lowering):
    """Lower the fused ops to the Triton-backed modules of this package."""

    backend = "triton"

    def bn_act(self, n: Node, ins: list[str]) -> tuple[str | None, str]:
        a = n.attrs
        if a["act"] not in KERNEL_ACTS:
            return super().bn_act(n, ins)  # an activation BNAct's kernels do not apply: the torch form
        # BNAct's activation defaults to ReLU, so a ReLU net's generated code reads as before
        act = "" if a["act"] == "relu" else act_args(n)
        ctor = (
            f"archc_triton.BNAct({self._in(n)[0]}, eps={a['eps']!r}, momentum={a['momentum']!r}, "
            f"track_running_stats={a['track_running_stats']}, residual={a['residual']}{act})"
        )
        if self.recompute_unit(n):
            return ctor, ins[0]  # its value is the BN input; the conv reading it normalises (bn_act_conv_unit)
        return ctor, f"{{m}}({', '.join(ins)})"

    def recompute_unit(self, n: Node) -> bool:
        """Whether `n` is a bn_act that runs inside its reader conv: no residual, a kernel activation,
        one conv reads it."""
        if n.op != "bn_act" or n.attrs["residual"] or n.attrs["act"] not in KERNEL_ACTS:
            return False
        if n.name in self.graph.outputs:
            return False
        users = set(self.graph.users(n.name))
        return len(users) == 1 and self.graph.node(users.pop()).op == "conv"

    def conv(self, n: Node, ins: list[str]) -> tuple[str | None, str]:
        ctor, expr = super().conv(n, ins)
        src = self.graph.node(n.inputs[0])
        if not self.recompute_unit(src):
            return ctor, expr
        bn = "self"
        for part in src.name.split("."):
            bn = _attr(bn, part)
        return ctor, f"archc_triton.bn_act_conv_unit({ins[0]}, {bn}, {{m}})"

    def fused_conv(self, n: Node, ins: list[str]) -> tuple[str | None, str]:
        a = n.attrs
        covered = a["act"] in KERNEL_ACTS
        act = act_args(n) if covered else ", act='none'"
        ctor = (
            f"archc_triton.FusedConv({self._in(n)[0]}, {a['out']}, {_pair(a['kernel'])}, "
            f"stride={_pair(a['stride'])}, padding={_pair(a['padding'])}, dilation={_pair(a['dilation'])}, "
            f"groups={a['groups']}{act}, residual={a['residual']})"
        )
        expr = f"{{m}}({', '.join(ins)})"
        # an activation the kernels do not apply is the table's torch expression on the output
        return ctor, expr if covered else epilogue_expr(n, expr)


def require_device() -> None:
    """Refuse to run without a GPU, unless Triton's CPU interpreter is switched on.

    Raises:
        BackendError: no CUDA device and TRITON_INTERPRET is not 1, or triton is missing.
    """
    try:
        import triton  # noqa: F401
    except ImportError:
        raise BackendError(
            "the triton backend needs the triton package",
            hint="pip install triton (or use --backend torch)",
        ) from None
    import torch

    if not torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET") != "1":
        raise BackendError(
            "the triton backend needs a CUDA GPU, and this machine has none",
            hint="use --backend torch on CPU; set TRITON_INTERPRET=1 to run the kernels "
            "in Triton's (slow) CPU interpreter for testing",
        )


class TritonBackend:
    """Lower a graph with Triton kernels for the fused ops (GPU, or the CPU interpreter)."""

    name = "triton"
    version = __version__

    def available(self) -> str | None:
        """None when lower() can run here; otherwise why not, in a few words (for `archc backends`)."""
        try:
            require_device()
        except BackendError as err:
            if "package" in err.message:
                return "needs the triton package (pip install triton)"
            return "needs a GPU (TRITON_INTERPRET=1 for the CPU interpreter)"
        return None

    def source(self, graph: Graph, origin: str = "a spec") -> str:
        """Python source of the module; it imports torch and archc_triton."""
        return generate(graph, origin, TritonLowering, ("import archc_triton",))[0]

    def lower(self, graph: Graph, origin: str = "a spec", **options: Any) -> Any:
        """Build the module with Triton-backed fused ops.

        Raises:
            BackendError: no GPU (and no interpreter), triton missing, or a reserved name.
        """
        if options:
            raise BackendError(f"the triton backend has no option(s) {', '.join(sorted(options))}")
        require_device()
        check_names(graph)
        src, cls = generate(graph, origin, TritonLowering, ("import archc_triton",))
        return instantiate(src, cls, graph.name)


def __getattr__(name: str) -> Any:
    # the modules import triton; load them only when a generated module needs them
    if name == "BNAct":
        from archc_triton.bn_act import BNAct

        return BNAct
    if name == "bn_act_conv_unit":
        from archc_triton.bn_act_conv import bn_act_conv_unit

        return bn_act_conv_unit
    if name == "FusedConv":
        from archc_triton.conv import FusedConv

        return FusedConv
    raise AttributeError(f"module 'archc_triton' has no attribute {name!r}")
