"""The activation family: the ops, and the one table that says what each activation computes.

ACTIVATIONS maps an activation's name to its torch forms: the functional expression for
generated code, the nn module for a labelled layer, the in-place form where torch has one,
the spec attributes passed on as torch keywords, and whether torch's ONNX exporters write it.
Codegen, fused epilogues and an IR interpreter ask this table (`activation_expr`,
`activation_module`, `activation_fn`) instead of spelling activations out. `relu` is in the
table but is registered with the paper's ops (archc/ir/ops.py).

Every activation is elementwise, keeps its input's shape (maps and vectors alike), has no
parameters and, like every op but conv and linear, no multiply-adds.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from archc.ir.registry import KINDS, OPS, OpProblem, OpSpec, Shape, choice, float_in, register

__all__ = [
    "ACTIVATIONS",
    "Activation",
    "activation_expr",
    "activation_fn",
    "activation_module",
    "torch_kwargs",
]


@dataclass(frozen=True, kw_only=True)
class Activation:
    """What one activation computes, in torch's words.

    Attributes:
        name: the op's name (spec, IR and lowering method).
        function: the functional form in generated code (`F` is torch.nn.functional): "F.hardswish".
        module: the nn module class for a labelled layer: "nn.Hardswish".
        inplace: the in-place expression template ({x}: the tensor, {args}: the keyword text,
            as in `activation_expr`), or None where torch has no in-place form.
        onnx: torch's exporters (dynamo and legacy, at their default opsets) write it to ONNX.
        formula: what it computes, for docs and pictures.
        kwargs: (spec attribute, torch keyword, torch's default) for each attribute passed on to torch.
    """

    name: str
    function: str
    module: str
    inplace: str | None
    onnx: bool
    formula: str
    kwargs: tuple[tuple[str, str, Any], ...] = ()

    @property
    def template(self) -> str:
        """The functional expression template: "F.leaky_relu({x}{args})"."""
        return f"{self.function}({{x}}{{args}})"


ACTIVATIONS: dict[str, Activation] = {
    a.name: a
    for a in (
        Activation(
            name="relu", function="torch.relu", module="nn.ReLU", inplace="torch.relu_({x})", onnx=True,
            formula="max(x, 0)",
        ),
        Activation(
            name="relu6", function="F.relu6", module="nn.ReLU6", inplace="F.relu6({x}, inplace=True)", onnx=True,
            formula="min(max(x, 0), 6)",
        ),
        Activation(
            name="sigmoid", function="torch.sigmoid", module="nn.Sigmoid", inplace="torch.sigmoid_({x})", onnx=True,
            formula="1 / (1 + exp(-x))",
        ),
        Activation(
            name="hardsigmoid", function="F.hardsigmoid", module="nn.Hardsigmoid",
            inplace="F.hardsigmoid({x}, inplace=True)", onnx=True, formula="relu6(x + 3) / 6",
        ),
        Activation(
            name="silu", function="F.silu", module="nn.SiLU", inplace="F.silu({x}, inplace=True)", onnx=True,
            formula="x * sigmoid(x) (swish)",
        ),
        Activation(
            name="hardswish", function="F.hardswish", module="nn.Hardswish",
            inplace="F.hardswish({x}, inplace=True)", onnx=True, formula="x * relu6(x + 3) / 6",
        ),
        Activation(
            name="gelu", function="F.gelu", module="nn.GELU", inplace=None, onnx=True,
            formula="x * Phi(x) (approximate=tanh: x/2 * (1 + tanh(sqrt(2/pi) * (x + 0.044715 x^3))))",
            kwargs=(("approximate", "approximate", "none"),),
        ),
        Activation(
            name="tanh", function="torch.tanh", module="nn.Tanh", inplace="torch.tanh_({x})", onnx=True,
            formula="tanh(x)",
        ),
        Activation(
            name="leaky_relu", function="F.leaky_relu", module="nn.LeakyReLU",
            inplace="F.leaky_relu_({x}{args})", onnx=True, formula="x if x >= 0 else slope * x",
            kwargs=(("slope", "negative_slope", 0.01),),
        ),
    )
}  # fmt: skip


def _entry(name: str) -> Activation:
    if name not in ACTIVATIONS:
        raise KeyError(f"'{name}' is not an activation; activations: {', '.join(ACTIVATIONS)}")
    return ACTIVATIONS[name]


def torch_kwargs(name: str, attrs: Mapping[str, Any]) -> dict[str, Any]:
    """The torch keyword arguments of one application: only those that differ from torch's defaults.

    Each value goes through the op's attribute checker again, so only a checked number or one of
    a fixed list of symbols ever reaches generated code.

    Args:
        name: an activation in ACTIVATIONS.
        attrs: the node's attributes (missing ones take the op's default).

    Returns:
        torch keyword -> value, in the table's order.

    Raises:
        KeyError: not an activation.
        OpProblem: an attribute value the op does not accept.
    """
    spec = OPS[name]
    out: dict[str, Any] = {}
    for attr, keyword, default in _entry(name).kwargs:
        kind, op_default = spec.attrs[attr]
        check = KINDS[kind] if isinstance(kind, str) else kind
        value = check(attrs.get(attr, op_default), attr)
        if value != default:
            out[keyword] = value
    return out


def activation_expr(name: str, x: str, attrs: Mapping[str, Any], inplace: bool = False) -> str:
    """The torch expression text applying an activation to the tensor expression `x`.

    Args:
        name: an activation in ACTIVATIONS.
        x: the input's expression text in generated code.
        attrs: the node's attributes.
        inplace: the in-place form (the caller owns x's buffer); the functional one where torch has none.

    Returns:
        e.g. "F.leaky_relu(x, negative_slope=0.2)", "torch.relu_(y)".

    Raises:
        KeyError: not an activation.
        OpProblem: an attribute value the op does not accept.
    """
    entry = _entry(name)
    args = "".join(f", {k}={v!r}" for k, v in torch_kwargs(name, attrs).items())
    template = entry.inplace if inplace and entry.inplace is not None else entry.template
    return template.format(x=x, args=args)


def activation_module(name: str, attrs: Mapping[str, Any]) -> str:
    """The nn module constructor text for a labelled activation: "nn.LeakyReLU(negative_slope=0.2)".

    Raises:
        KeyError: not an activation.
        OpProblem: an attribute value the op does not accept.
    """
    args = ", ".join(f"{k}={v!r}" for k, v in torch_kwargs(name, attrs).items())
    return f"{_entry(name).module}({args})"


def activation_fn(name: str, attrs: Mapping[str, Any]) -> Callable[[Any], Any]:
    """The activation as a torch callable on a tensor (for interpreters and references; imports torch).

    Raises:
        KeyError: not an activation.
        OpProblem: an attribute value the op does not accept.
    """
    import torch
    import torch.nn.functional as F

    owner, _, fname = _entry(name).function.partition(".")
    fn = getattr({"torch": torch, "F": F}[owner], fname)
    kwargs = torch_kwargs(name, attrs)
    return lambda t: fn(t, **kwargs)


# --- the ops (relu is declared with the paper's ops) ---------------------------------------------
def _same(a: dict, ins: list[Shape]) -> Shape:
    return ins[0]


def _slope(v: Any, name: str) -> float:
    try:
        return float_in(0.0, 1.0)(v, name)
    except OpProblem as e:
        # a negative slope is not leaky (-1 makes abs); above 1 it amplifies the negative side
        raise OpProblem(e.message, hint="give a slope in [0, 1], e.g. leaky_relu(0.1)", attr=name) from None


_OP_ATTRS: dict[str, dict[str, tuple[Callable[[Any, str], Any], Any]]] = {
    "gelu": {"approximate": (choice("none", "tanh"), "none")},
    "leaky_relu": {"slope": (_slope, 0.01)},
}
_POSITIONAL = {"leaky_relu": ("slope",)}
_LABELS: dict[str, Callable[[dict], str]] = {
    "gelu": lambda a: "gelu, tanh" if a.get("approximate") == "tanh" else "gelu",
    "leaky_relu": lambda a: f"leaky_relu, {a.get('slope', 0.01):g}",
}

for _name, _act in ACTIVATIONS.items():
    if _name == "relu":
        continue
    register(
        OpSpec(
            name=_name,
            arity=1,
            attrs=_OP_ATTRS.get(_name, {}),
            positional=_POSITIONAL.get(_name, ()),
            shape=_same,
            label=_LABELS.get(_name),
            elementwise=True,
            family="act",
            doc=_act.formula,
        )
    )
