"""Generate standalone PyTorch source from the IR: a module tree and a straight-line forward.

Each IR op has a lowering method of the same name that returns the module to build
(or None) and the forward expression. A lowering may also ask for a module-level helper
(HELPERS), such as FusedConv2d, the eval-mode conv with its bias/add/ReLU epilogue. The
same text is written by `archc build -o` and executed by `archc.compile`, so what users
read is what runs.
"""

from __future__ import annotations

import keyword
import math
import re
from typing import Any

from archc.backend import source_text
from archc.errors import BackendError
from archc.ir import OPS, Graph, Node
from archc.ir.registry import ALIASING, FRESH
from archc_torch.lower_act import ActLowering

# Module-level helpers of the generated source, emitted only when a lowering asks for them.
HELPERS = {
    "FrozenBatchNorm2d": '''

class FrozenBatchNorm2d(nn.Module):
    """BN as a fixed affine from its running statistics, in train() and eval() alike.

    The buffers have nn.BatchNorm2d's names (weight, bias, running_mean, running_var,
    num_batches_tracked), so its checkpoints load; nothing here is a parameter, so no
    optimiser changes it.
    """

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float = 0.1) -> None:
        super().__init__()
        self.num_features, self.eps, self.momentum = num_features, eps, momentum
        self.register_buffer("weight", torch.ones(num_features))
        self.register_buffer("bias", torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))
        self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long))

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = self.weight * torch.rsqrt(self.running_var + self.eps)
        shift = self.bias - self.running_mean * scale
        return x * scale.to(x.dtype)[None, :, None, None] + shift.to(x.dtype)[None, :, None, None]

''',
    "FusedConv2d": '''
ONEDNN = torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_convolution_pointwise_")


class FusedConv2d(nn.Conv2d):
    """An nn.Conv2d (same parameters) with its epilogue: y = act(conv(x) + bias [+ r]).

    On CPU in float32 without autograd, one oneDNN call does the conv, the bias, the add and
    the ReLU (the CPU kernels torch.compile uses); with `into_r`, the result is written into
    `r`, a buffer nothing reads afterwards. Elsewhere (GPU, float64, autocast, gradients,
    torch.compile tracing): the same maths in eager ops.
    """

    # keep the weight reordered into oneDNN's blocked layout (see _weight_for)
    prepack = ONEDNN and hasattr(torch.ops.mkldnn, "_reorder_convolution_weight")
    packed_shapes = 4  # input shapes whose reordered weight is kept (each is a copy of the weight)

    def __init__(self, *args, act: str = "none", into_r: bool = False, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.act = act
        self.into_r = into_r

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, act={self.act!r}" + (", into_r=True" if self.into_r else "")

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state.pop("_packed", None)  # a cache of the weight (a oneDNN tensor), rebuilt on the next call
        return state

    def _weight_for(self, x: torch.Tensor) -> torch.Tensor:
        """The weight in oneDNN's blocked layout for x's shape, reordered once per weight version and shape.

        Given the plain weight, oneDNN reorders it on every call (a copy of every weight per forward).
        The layout it picks depends on the whole input shape, batch included, so up to the last few
        shapes are kept (packed_shapes). The cache is not state: state_dict and load_state_dict see only `weight`,
        and any change to it (load_state_dict, an in-place edit) moves its version, which clears the cache.
        """
        if not self.prepack:
            return self.weight
        w = self.weight
        version = (w.data_ptr(), w._version)
        cache = self.__dict__.get("_packed")
        if cache is None or cache[0] != version:
            cache = self.__dict__["_packed"] = (version, {})
        shape = tuple(x.shape)
        packed = cache[1].get(shape)
        if packed is None:
            if len(cache[1]) >= self.packed_shapes:
                del cache[1][next(iter(cache[1]))]  # the oldest shape
            packed = cache[1][shape] = torch.ops.mkldnn._reorder_convolution_weight(
                w, self.padding, self.stride, self.dilation, self.groups, list(shape)
            )
        return packed

    def forward(self, x: torch.Tensor, r: torch.Tensor | None = None) -> torch.Tensor:
        w, b, relu = self.weight, self.bias, self.act == "relu"
        if (
            ONEDNN
            and x.device.type == "cpu"
            and x.dtype == w.dtype == torch.float32
            and x.numel() > 0
            and (r is None or (r.device.type == "cpu" and r.dtype == torch.float32))
            and torch.backends.mkldnn.enabled
            and not torch.is_autocast_enabled("cpu")
            and not (torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (x, w, b, r)))
            and not torch.compiler.is_compiling()
        ):
            args = (self._weight_for(x), b, self.padding, self.stride, self.dilation, self.groups)
            if r is None:
                return torch.ops.mkldnn._convolution_pointwise(x, *args, "relu" if relu else "none", [], "")
            unary = "relu" if relu else None
            if self.into_r:
                return torch.ops.mkldnn._convolution_pointwise_.binary(r, x, *args, "add", 1.0, unary, [], "")
            return torch.ops.mkldnn._convolution_pointwise.binary(x, r, *args, "add", 1.0, unary, [], "")
        y = super().forward(x)
        if r is not None:
            y = y.add_(r)
        return torch.relu_(y) if relu else y

''',
}

HEADER = '''\
# Generated by archc from {origin}; do not edit.
# {summary}
import torch
import torch.nn.functional as F
from torch import nn
{imports}

class Scope(nn.Module):
    """A named group of layers: a block, a stage or a repeat of the spec."""


def init_weights(model: nn.Module) -> None:
    """He-normal convs (fan_out), BN weight 1 and bias 0, as torchvision's ResNet."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)

'''


def _pair(v: Any) -> str:
    a, b = v
    return str(a) if a == b else f"({a}, {b})"


def class_name(net: str) -> str:
    """CamelCase class name for a net: resnet50 -> Resnet50, plain_net -> PlainNet."""
    parts = [p for p in re.split(r"[^A-Za-z0-9]+", net) if p]
    name = "".join(p[:1].upper() + p[1:] for p in parts) or "Net"
    return name if name[0].isalpha() else "Net" + name


def _plain_name(name: str) -> bool:
    # ASCII only: Python folds non-ASCII identifiers (NFKC), so `self.ﬁ` would be `self.fi`
    return name.isascii() and name.isidentifier() and not keyword.iskeyword(name)


def _attr(obj: str, name: str) -> str:
    """Attribute access that also works for names like `0` (torchvision's downsample.0)."""
    if _plain_name(name):
        return f"{obj}.{name}"
    return f"getattr({obj}, {name!r})"


def _register(parent: str, leaf: str, value: str) -> str:
    if _plain_name(leaf):
        return f"        {parent}.{leaf} = {value}"
    return f"        {parent}.add_module({leaf!r}, {value})"


class Lowering(ActLowering):
    """Per-op lowering: `op(node, ins) -> (module constructor or None, forward expression)`.

    In the forward expression `{m}` stands for the node's module.
    """

    backend = "torch"  # named in errors

    def __init__(self, graph: Graph) -> None:
        self.graph = graph
        self.helpers: list[str] = []  # names in HELPERS the generated source needs
        self._pos = {n.name: i for i, n in enumerate(graph.nodes())}

    def use_helper(self, name: str) -> str:
        """Ask for a module-level helper of HELPERS in the generated source; returns its name."""
        if name not in self.helpers:
            self.helpers.append(name)
        return name

    def can_overwrite(self, n: Node, i: int) -> bool:
        """May `n` write its result into the buffer of its input `i`?

        Only when that buffer is a fresh tensor (not the net's input, not a view), no output,
        read once by `n`, and `n` is its last reader, with no reader that might alias it.
        """
        src = n.inputs[i]
        users = self.graph.users(src)
        return (
            OPS[self.graph.node(src).op].result == FRESH
            and src not in self.graph.outputs
            and n.inputs.count(src) == 1
            and max(self._pos[u] for u in users) == self._pos[n.name]
            and not any(OPS[self.graph.node(u).op].result == ALIASING for u in users)
        )

    def lower(self, n: Node, ins: list[str]) -> tuple[str | None, str]:
        """Dispatch to the lowering method named after the node's op.

        Raises:
            BackendError: this backend has no lowering for the op (naming the op and the spec line).
        """
        method = getattr(self, n.op, None) if not n.op.startswith("_") else None
        if method is None or not callable(method):
            raise BackendError(
                f"the {self.backend} backend cannot lower op '{n.op}' "
                f"(layer '{n.name}', made at {n.loc or 'an unknown place'})",
                hint=f"give {type(self).__name__} a method `{n.op}(self, n, ins)` (see docs/adding-an-op.md), "
                "or use another backend",
            )
        return method(n, ins)

    def _in(self, node: Node, i: int = 0) -> tuple[int, ...]:
        return self.graph.node(node.inputs[i]).shape

    def _conv_args(self, n: Node) -> str:
        """nn.Conv2d's constructor arguments for a conv or fused_conv node."""
        a = n.attrs
        args = [str(self._in(n)[0]), str(a["out"]), _pair(a["kernel"])]
        for key, default in (("stride", (1, 1)), ("padding", (0, 0)), ("dilation", (1, 1))):
            if tuple(a[key]) != default:
                args.append(f"{key}={_pair(a[key])}")
        if a["groups"] != 1:
            args.append(f"groups={a['groups']}")
        args.append(f"bias={a['bias']}")
        return ", ".join(args)

    def conv(self, n: Node, ins: list[str]) -> tuple[str | None, str]:
        return f"nn.Conv2d({self._conv_args(n)})", f"{{m}}({ins[0]})"

    def _bn_module(self, n: Node) -> str:
        a = n.attrs
        extra = "".join(f", {k}={a[k]!r}" for k, d in (("eps", 1e-5), ("momentum", 0.1)) if a[k] != d)
        if not a["track_running_stats"]:
            extra += ", track_running_stats=False"
        return f"nn.BatchNorm2d({self._in(n)[0]}{extra})"

    def bn(self, n: Node, ins: list[str]) -> tuple[str | None, str]:
        return self._bn_module(n), f"{{m}}({ins[0]})"

    def frozen_bn(self, n: Node, ins: list[str]) -> tuple[str | None, str]:
        a = n.attrs
        extra = "".join(f", {k}={a[k]!r}" for k, d in (("eps", 1e-5), ("momentum", 0.1)) if a[k] != d)
        return f"{self.use_helper('FrozenBatchNorm2d')}({self._in(n)[0]}{extra})", f"{{m}}({ins[0]})"

    def bn_act(self, n: Node, ins: list[str]) -> tuple[str | None, str]:
        # in place on the BN output: BN's backward keeps its input, not its output
        expr = f"{{m}}({ins[0]})" + (f".add_({ins[1]})" if n.attrs["residual"] else "")
        return self._bn_module(n), f"torch.relu_({expr})"

    def fused_conv(self, n: Node, ins: list[str]) -> tuple[str | None, str]:
        # FusedConv2d: one oneDNN conv+bias(+add)(+ReLU) call in CPU inference, eager ops otherwise
        extra = f", act={n.attrs['act']!r}"
        if n.attrs["residual"] and self.can_overwrite(n, 1):
            extra += ", into_r=True"
        ctor = f"{self.use_helper('FusedConv2d')}({self._conv_args(n)}{extra})"
        return ctor, f"{{m}}({', '.join(ins)})"

    def relu(self, n: Node, ins: list[str]) -> tuple[str | None, str]:
        if n.labelled:
            return "nn.ReLU()", f"{{m}}({ins[0]})"
        return None, f"torch.relu({ins[0]})"

    def maxpool(self, n: Node, ins: list[str]) -> tuple[str | None, str]:
        a = n.attrs
        args = f"{_pair(a['kernel'])}, {_pair(a['stride'])}, {_pair(a['padding'])}"
        if tuple(a["dilation"]) != (1, 1):
            args += f", dilation={_pair(a['dilation'])}"
        if a["ceil_mode"]:
            args += ", ceil_mode=True"
        if n.labelled:
            return f"nn.MaxPool2d({args})", f"{{m}}({ins[0]})"
        return None, f"F.max_pool2d({ins[0]}, {args})"

    def avgpool(self, n: Node, ins: list[str]) -> tuple[str | None, str]:
        a = n.attrs
        if a["kernel"] is None:
            if n.labelled:
                return "nn.AdaptiveAvgPool2d(1)", f"{{m}}({ins[0]})"
            return None, f"F.adaptive_avg_pool2d({ins[0]}, 1)"
        args = f"{_pair(a['kernel'])}, {_pair(a['stride'])}, {_pair(a['padding'])}"
        if a["ceil_mode"]:
            args += ", ceil_mode=True"
        if n.labelled:
            return f"nn.AvgPool2d({args})", f"{{m}}({ins[0]})"
        return None, f"F.avg_pool2d({ins[0]}, {args})"

    def linear(self, n: Node, ins: list[str]) -> tuple[str | None, str]:
        bias = "" if n.attrs["bias"] else ", bias=False"
        return f"nn.Linear({self._in(n)[0]}, {n.attrs['out']}{bias})", f"{{m}}({ins[0]})"

    def flatten(self, n: Node, ins: list[str]) -> tuple[str | None, str]:
        if n.labelled:
            return "nn.Flatten()", f"{{m}}({ins[0]})"
        return None, f"torch.flatten({ins[0]}, 1)"

    def identity(self, n: Node, ins: list[str]) -> tuple[str | None, str]:
        if n.labelled:
            return "nn.Identity()", f"{{m}}({ins[0]})"
        return None, ins[0]

    def add(self, n: Node, ins: list[str]) -> tuple[str | None, str]:
        return None, f"{ins[0]} + {ins[1]}"

    def subsample(self, n: Node, ins: list[str]) -> tuple[str | None, str]:
        sh, sw = n.attrs["stride"]
        return None, f"{ins[0]}[:, :, ::{sh}, ::{sw}]"

    def pad(self, n: Node, ins: list[str]) -> tuple[str | None, str]:
        extra = n.attrs["out"] - self._in(n)[0]
        return None, f"F.pad({ins[0]}, (0, 0, 0, 0, 0, {extra}))"


class _Names:
    """Deterministic, unique Python identifiers for dotted IR names."""

    def __init__(self, reserved: set[str]) -> None:
        self.taken = set(reserved)
        self.of: dict[str, str] = {}

    def __call__(self, dotted: str, prefix: str = "") -> str:
        key = prefix + dotted
        if key in self.of:
            return self.of[key]
        base = prefix + re.sub(r"\W", "_", dotted.replace(".", "_"), flags=re.ASCII)
        if not base.isidentifier() or keyword.iskeyword(base):
            base = "v_" + base
        name, k = base, 1
        while name in self.taken:
            k += 1
            name = f"{base}_{k}"
        self.taken.add(name)
        self.of[key] = name
        return name


# the attributes that may hold a string: written with repr (act, approximate) or not at all (folded_bn)
STRING_ATTRS = frozenset({"act", "folded_bn", "approximate"})
# ... and the strings they may hold, like every layer name: dotted paths of letters, digits, underscores
_DOTTED = re.compile(r"[A-Za-z0-9_]+(\.[A-Za-z0-9_]+)*")


def _is_literal(v: Any) -> bool:
    if isinstance(v, float):
        return math.isfinite(v)
    return v is None or isinstance(v, (bool, int)) or (isinstance(v, tuple) and all(map(_is_literal, v)))


def check_graph(graph: Graph) -> None:
    """Refuse layer names and attribute values that the lowerings could not write safely.

    Layer names must be dotted paths of letters, digits and underscores, as the frontend
    makes them. The lowerings write numbers, flags and tuples as they are, so those must
    be finite numbers, booleans and tuples of them; only the attributes in STRING_ATTRS
    may hold a string (or None), and only a dotted name (`act="relu"`,
    `folded_bn="layer1.0.bn1"`). So no name or value, however the graph was built or
    changed, can put code into the generated source.

    Raises:
        BackendError: naming the layer (and the attribute).
    """
    for n in graph.nodes():
        if not _DOTTED.fullmatch(n.name):
            raise BackendError(
                f"layer name '{source_text(n.name)}' is not a dotted path of letters, digits and underscores",
                hint="this graph was not made by the archc frontend; name its layers like `layer1.0.conv1`",
            )
        for key, v in n.attrs.items():
            if key in STRING_ATTRS:
                if v is None or (isinstance(v, str) and _DOTTED.fullmatch(v)):
                    continue
            elif _is_literal(v):
                continue
            raise BackendError(
                f"layer '{n.name}' has attribute {key}={v!r:.60}, which generated code cannot hold",
                hint="this graph was not made by the archc frontend; give the attribute a number, flag or name",
            )


def generate(
    graph: Graph,
    origin: str = "a spec",
    lowering: type[Lowering] = Lowering,
    imports: tuple[str, ...] = (),
) -> tuple[str, str]:
    """Write the module's Python source.

    Args:
        graph: a linted graph.
        origin: where the spec came from, for the header comment.
        lowering: the per-op lowering (other backends subclass Lowering).
        imports: extra import lines the lowering's constructors need.

    Returns:
        (source text, class name).
    """
    check_graph(graph)
    low = lowering(graph)
    cls = class_name(graph.name)
    nodes = graph.nodes()
    names = _Names({"self", "x", "torch", "nn", "F", "Scope", "init_weights", "ONEDNN", cls, *HELPERS})
    init: list[str] = []
    scopes: dict[str, str] = {"": "self"}

    def scope_var(path: str) -> str:
        """The __init__ local holding the container for `path`, creating it (and parents)."""
        if path in scopes:
            return scopes[path]
        parent, _, leaf = path.rpartition(".")
        pvar = scope_var(parent)
        var = names(path, "m_")
        init.append(f"        {var} = Scope()")
        init.append(_register(pvar, leaf, var))
        scopes[path] = var
        return var

    last_use: dict[str, int] = {}
    for i, n in enumerate(nodes):
        for src in n.inputs:
            last_use[src] = i
    outputs = set(graph.outputs)

    fwd: list[str] = []
    value: dict[str, str] = {}
    ctors: dict[str, str] = {}
    for i, n in enumerate(nodes):
        if n.op == "input":
            value[n.name] = "x"
            continue
        ins = [value[s] for s in n.inputs]
        ctor, expr = low.lower(n, ins)
        if ctor is not None:
            ctors[n.name] = ctor
            path = "self"
            for part in n.name.split("."):
                path = _attr(path, part)
            expr = expr.replace("{m}", path)
        var = names(n.name)
        value[n.name] = var
        fwd.append(f"        {var} = {expr}")
        dead = sorted({value[s] for s in n.inputs if last_use[s] == i and s not in outputs and value[s] != var})
        if dead:
            fwd.append(f"        del {', '.join(dead)}")
    if graph.output_names:
        pairs = zip(graph.output_names, graph.outputs, strict=True)
        ret = "{" + ", ".join(f"{k!r}: {value[o]}" for k, o in pairs) + "}"
    else:
        ret = ", ".join(value[o] for o in graph.outputs)
    # modules register in the spec's statement order (fusion can move a node later in the
    # forward's topological order), so state_dict order reads like the spec
    for name in sorted(ctors, key=graph.index):
        parent, _, leaf = name.rpartition(".")
        init.append(_register(scope_var(parent), leaf, ctors[name]))

    shape = "x".join(map(str, graph.input.shape))
    name = source_text(graph.name)  # it lands in a comment and a docstring
    summary = f"{name}: {graph.params():,} parameters, {graph.macs() / 1e9:.2f} GMACs per {shape} input"
    src = HEADER.format(origin=source_text(origin), summary=summary, imports="".join(f"{line}\n" for line in imports))
    src += "".join(HELPERS[h] for h in low.helpers)
    src += f"\nclass {cls}(nn.Module):\n"
    src += f'    """{summary}."""\n\n'
    src += "    def __init__(self) -> None:\n        super().__init__()\n"
    src += "\n".join(init) + "\n" if init else ""
    src += "        init_weights(self)\n"
    channels_last = graph.meta.get("memory_format") == "channels_last"
    if channels_last:
        src += "        self.to(memory_format=torch.channels_last)\n"
    src += "\n    def forward(self, x: torch.Tensor) -> torch.Tensor:\n"
    if channels_last:
        src += "        x = x.contiguous(memory_format=torch.channels_last)  # NCHW in, converted once\n"
    src += "\n".join(fwd) + "\n" if fwd else ""
    src += f"        return {ret}\n"
    return src, cls
