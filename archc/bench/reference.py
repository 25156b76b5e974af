"""A hand-written reference ResNet, independent of archc: the second baseline of `archc bench`
for the paper's nets and the oracle of the equivalence and acceptance tests.

Written from "Deep Residual Learning for Image Recognition" (He et al. 2015) with the
module names of torchvision's ResNet (conv1, bn1, relu, maxpool, layer1.0.conv1,
layer1.0.downsample.0/1, avgpool, fc), so its state_dict keys are torchvision's.

Shortcut options (Sec 3.3):
    "A": parameter-free; where the shape changes, subsample by the stride
         (x[:, :, ::s, ::s]) and zero-pad the extra channels at the end of the channel dim.
    "B": 1x1 conv (no bias) + BN projection where the stride or channel count changes,
         identity elsewhere.
    "C": 1x1 conv + BN projection on every block.
    "none": a plain net, no shortcut and no add.
The ReLU comes after the add. Convs have no bias, the fc has one, BN uses eps 1e-5 and
momentum 0.1 (the torch defaults).

`reference_for(graph)` finds the hand-written net that computes the same function as a
graph built by archc (train or eval pipeline), or says why there is none.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from archc.errors import ArchcError

if TYPE_CHECKING:
    from archc.ir import Graph

SHORTCUTS = ("A", "B", "C", "none")


def conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    """3x3 conv with padding 1 and no bias."""
    return nn.Conv2d(cin, cout, kernel_size=3, stride=stride, padding=1, bias=False)


def conv1x1(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    """1x1 conv with no bias."""
    return nn.Conv2d(cin, cout, kernel_size=1, stride=stride, bias=False)


class _Residual(nn.Module):
    """The shortcut half of a residual block; subclasses build `self.residual(x)`."""

    def _init_shortcut(self, cin: int, cout: int, stride: int, shortcut: str) -> None:
        if shortcut not in SHORTCUTS:
            raise ValueError(f"unknown shortcut option {shortcut!r}")
        self.shortcut = shortcut
        self.stride = stride
        self.cin = cin
        self.cout = cout
        project = shortcut == "C" or (shortcut == "B" and (stride != 1 or cin != cout))
        self.downsample = nn.Sequential(conv1x1(cin, cout, stride), nn.BatchNorm2d(cout)) if project else None

    def _shortcut(self, x: torch.Tensor) -> torch.Tensor:
        if self.downsample is not None:
            return self.downsample(x)
        if self.shortcut == "A":
            if self.stride != 1:
                x = x[:, :, :: self.stride, :: self.stride]
            if self.cout != self.cin:
                x = F.pad(x, (0, 0, 0, 0, 0, self.cout - self.cin))
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.residual(x)
        if self.shortcut != "none":
            out = out + self._shortcut(x)
        return self.relu(out)


class BasicBlock(_Residual):
    """Fig. 5 left: 3x3 conv (strided) - BN - ReLU - 3x3 conv - BN, add, ReLU."""

    expansion = 1

    def __init__(self, cin: int, width: int, stride: int = 1, shortcut: str = "B") -> None:
        super().__init__()
        self.conv1 = conv3x3(cin, width, stride)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU()
        self.conv2 = conv3x3(width, width)
        self.bn2 = nn.BatchNorm2d(width)
        self._init_shortcut(cin, width, stride, shortcut)

    def residual(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        return self.bn2(self.conv2(out))


class Bottleneck(_Residual):
    """Fig. 5 right: 1x1 reduce - 3x3 - 1x1 expand (4x width), each followed by BN.

    stride_in_1x1=True puts the stride on the first 1x1 conv (the paper and the original
    MSRA Caffe models); False puts it on the 3x3 conv (torchvision, "ResNet v1.5").
    """

    expansion = 4

    def __init__(self, cin: int, width: int, stride: int = 1, shortcut: str = "B", stride_in_1x1: bool = True) -> None:
        super().__init__()
        s1, s3 = (stride, 1) if stride_in_1x1 else (1, stride)
        self.conv1 = conv1x1(cin, width, s1)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = conv3x3(width, width, s3)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = conv1x1(width, width * self.expansion)
        self.bn3 = nn.BatchNorm2d(width * self.expansion)
        self.relu = nn.ReLU()
        self._init_shortcut(cin, width * self.expansion, stride, shortcut)

    def residual(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        return self.bn3(self.conv3(out))


class ResNet(nn.Module):
    """The ImageNet ResNets of Table 1.

    Args:
        block: BasicBlock or Bottleneck.
        layers: blocks per stage (conv2_x .. conv5_x), e.g. [2, 2, 2, 2] for ResNet-18.
        shortcut: "A", "B", "C" or "none" (plain net).
        num_classes: fc outputs.
        stride_in_1x1: for Bottleneck only, see there.
    """

    def __init__(
        self,
        block: type[BasicBlock] | type[Bottleneck],
        layers: list[int],
        shortcut: str = "B",
        num_classes: int = 1000,
        stride_in_1x1: bool = True,
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU()
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        cin = 64
        for i, (width, blocks) in enumerate(zip((64, 128, 256, 512), layers)):
            stage = []
            for j in range(blocks):
                stride = 2 if (i > 0 and j == 0) else 1
                kwargs = {"stride_in_1x1": stride_in_1x1} if block is Bottleneck else {}
                stage.append(block(cin, width, stride, shortcut, **kwargs))
                cin = width * block.expansion
            self.add_module(f"layer{i + 1}", nn.Sequential(*stage))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


class CifarResNet(nn.Module):
    """The CIFAR-10 nets of Sec 4.2: 6n+2 weighted layers.

    3x3 conv with 16 filters, then three stages of n basic blocks with 16, 32, 64 filters
    on 32x32, 16x16, 8x8 maps (the first block of stages 2 and 3 strides by 2), global
    average pooling and a 10-way fc. The paper uses option A shortcuts.
    """

    def __init__(self, n: int, shortcut: str = "A", num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = conv3x3(3, 16)
        self.bn1 = nn.BatchNorm2d(16)
        self.relu = nn.ReLU()
        cin = 16
        for i, width in enumerate((16, 32, 64)):
            stage = []
            for j in range(n):
                stride = 2 if (i > 0 and j == 0) else 1
                stage.append(BasicBlock(cin, width, stride, shortcut))
                cin = width
            self.add_module(f"layer{i + 1}", nn.Sequential(*stage))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(torch.flatten(self.avgpool(x), 1))


IMAGENET_LAYERS = {
    18: (BasicBlock, [2, 2, 2, 2]),
    34: (BasicBlock, [3, 4, 6, 3]),
    50: (Bottleneck, [3, 4, 6, 3]),
    101: (Bottleneck, [3, 4, 23, 3]),
    152: (Bottleneck, [3, 8, 36, 3]),
}


def resnet(depth: int, shortcut: str = "B", stride_in_1x1: bool = True, num_classes: int = 1000) -> ResNet:
    """The Table 1 net of this depth (18, 34, 50, 101, 152); shortcut="none" gives the plain net."""
    block, layers = IMAGENET_LAYERS[depth]
    return ResNet(block, layers, shortcut=shortcut, num_classes=num_classes, stride_in_1x1=stride_in_1x1)


def cifar_resnet(n: int, shortcut: str = "A", num_classes: int = 10) -> CifarResNet:
    """The 6n+2-layer CIFAR-10 net; shortcut="none" gives the plain net."""
    return CifarResNet(n, shortcut=shortcut, num_classes=num_classes)


def randomise(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give every conv, BN and fc random values, BN running statistics included, in place.

    He-scaled weights keep activations O(1); random BN statistics make BN folding and
    train/eval differences show. Values are computed in float32 and then cast to each
    tensor's dtype, so a float32 copy of a float64 model holds exactly the same numbers.

    Returns:
        The same module.
    """
    g = torch.Generator().manual_seed(seed)

    def draw(fn: Any, like: torch.Tensor) -> torch.Tensor:
        return fn(tuple(like.shape), generator=g, dtype=torch.float32)  # copy_ casts afterwards

    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Conv2d):
                m.weight.copy_(draw(torch.randn, m.weight) / m.weight[0].numel() ** 0.5)
                if m.bias is not None:
                    m.bias.copy_(0.2 * draw(torch.randn, m.bias))
            elif isinstance(m, nn.BatchNorm2d):
                m.weight.copy_(0.5 + draw(torch.rand, m.weight))
                m.bias.copy_(0.2 * draw(torch.randn, m.bias))
                if m.track_running_stats:
                    m.running_mean.copy_(0.2 * draw(torch.randn, m.running_mean))
                    m.running_var.copy_(0.5 + draw(torch.rand, m.running_var))
                    m.num_batches_tracked.fill_(int(torch.randint(1, 1000, (1,), generator=g)))
            elif isinstance(m, nn.Linear):
                m.weight.copy_(draw(torch.randn, m.weight) / m.in_features**0.5)
                if m.bias is not None:
                    m.bias.copy_(0.1 * draw(torch.randn, m.bias))
    return model


# --- matching a built graph to its hand-written counterpart ----------------------------------

_HINT = (
    "the hand-written nets of archc/bench/reference.py are the ImageNet ResNets of Table 1 "
    "(18/34/50/101/152, shortcut A/B/C, stride_in_1x1 either way), the plain nets (shortcut=none) "
    "and the CIFAR-10 6n+2 nets of Sec 4.2; archc bench measures every other spec against its "
    "unoptimised build (the eager baseline) alone"
)
# Ops the reference nets can be built from (after either pass pipeline).
_OPS = {
    "input",
    "conv",
    "bn",
    "bn_act",
    "fused_conv",
    "relu",
    "maxpool",
    "avgpool",
    "flatten",
    "linear",
    "add",
    "subsample",
    "pad",
    "identity",
}
_PARAM_OPS = {"conv", "fused_conv", "bn", "bn_act", "linear"}


@dataclass(frozen=True)
class Reference:
    """A hand-written net of this module, as picked by `reference_for`.

    Attributes:
        family: "imagenet" (Table 1) or "cifar" (Sec 4.2).
        block: "basic" or "bottleneck".
        layers: blocks per stage.
        shortcut: "A", "B", "C" or "none" (a plain net).
        stride_in_1x1: where a bottleneck strides (see Bottleneck); True for basic blocks.
        num_classes: fc outputs.
    """

    family: str
    block: str
    layers: tuple[int, ...]
    shortcut: str
    stride_in_1x1: bool
    num_classes: int

    @property
    def depth(self) -> int:
        """Weighted layers: 2 or 3 per block, plus the first conv and the fc."""
        return sum(self.layers) * (3 if self.block == "bottleneck" else 2) + 2

    @property
    def n(self) -> int:
        """The CIFAR nets' n (6n+2 layers)."""
        return self.layers[0]

    @property
    def name(self) -> str:
        """resnet50, plain34, resnet56 (CIFAR), ..."""
        return f"{'plain' if self.shortcut == 'none' else 'resnet'}{self.depth}"

    def describe(self) -> str:
        """One line for reports, naming the factory call that builds it."""
        if self.family == "cifar":
            call = f"cifar_resnet({self.n}, shortcut={self.shortcut!r}, num_classes={self.num_classes})"
        else:
            block = "Bottleneck" if self.block == "bottleneck" else "BasicBlock"
            call = f"ResNet({block}, {list(self.layers)}, shortcut={self.shortcut!r}, num_classes={self.num_classes}"
            call += f", stride_in_1x1={self.stride_in_1x1})" if self.block == "bottleneck" else ")"
        return f"archc.bench.reference.{call}"

    def make(self) -> nn.Module:
        """A fresh instance (torch's default init)."""
        if self.family == "cifar":
            return cifar_resnet(self.n, shortcut=self.shortcut, num_classes=self.num_classes)
        block = Bottleneck if self.block == "bottleneck" else BasicBlock
        return ResNet(
            block, list(self.layers), self.shortcut, num_classes=self.num_classes, stride_in_1x1=self.stride_in_1x1
        )


def _no_reference(graph: Graph, why: str) -> ArchcError:
    return ArchcError(f"no hand-written reference net matches '{graph.name}': {why}", hint=_HINT)


def reference_for(graph: Graph) -> Reference:
    """Pick the hand-written net that computes the same function as `graph`.

    The candidate is read off the graph's structure (stem, blocks per stage, bottleneck
    or basic blocks, which shortcut, where bottlenecks stride, fc width) and then checked
    layer by layer against an instance of the candidate built on the meta device: every
    conv, BN and fc must exist under the same name with the same hyper-parameters, and
    nothing else may carry parameters. Works on graphs of both pass pipelines (a BN
    folded into a fused_conv counts as present).

    Args:
        graph: a graph from `archc.api.build` (any mode, lowered or not).

    Returns:
        The matching Reference.

    Raises:
        ArchcError: no hand-written net has this structure; the message says what differs.
    """
    nodes = {n.name: n for n in graph.nodes()}
    odd = sorted({n.op for n in nodes.values()} - _OPS)
    if odd:
        raise _no_reference(graph, f"it uses op(s) {', '.join(odd)}, which the ResNets do not have")
    stem = nodes.get("conv1")
    if stem is None or stem.op not in ("conv", "fused_conv"):
        raise _no_reference(graph, "it has no first conv named 'conv1'")
    if stem.attrs["kernel"] == (7, 7):
        family = "imagenet"
    elif stem.attrs["kernel"] == (3, 3):
        family = "cifar"
    else:
        kh, kw = stem.attrs["kernel"]
        raise _no_reference(graph, f"its first conv is {kh}x{kw}, not 7x7 or 3x3")

    stages: dict[int, set[int]] = {}
    for name in nodes:
        m = re.fullmatch(r"layer(\d+)\.(\d+)\.conv1", name)
        if m:
            stages.setdefault(int(m.group(1)), set()).add(int(m.group(2)))
    if not stages:
        raise _no_reference(graph, "it has no residual stages (no node named layerK.J.conv1)")
    if sorted(stages) != list(range(1, len(stages) + 1)) or any(
        sorted(b) != list(range(len(b))) for b in stages.values()
    ):
        raise _no_reference(graph, "its stages or blocks are not numbered layer1.0, layer1.1, ... without gaps")
    layers = tuple(len(stages[i]) for i in sorted(stages))
    block = "bottleneck" if "layer1.0.conv3" in nodes else "basic"

    residual = any(n.op == "add" or n.attrs.get("residual") for n in nodes.values())
    projections = [n for n in nodes if re.fullmatch(r"layer\d+\.\d+\.downsample\.0", n)]
    if not residual:
        shortcut = "none"
    elif projections:
        shortcut = "C" if len(projections) == sum(layers) else "B"
    else:
        shortcut = "A"
    stride_in_1x1 = True
    if block == "bottleneck" and "layer2.0.conv1" in nodes:
        stride_in_1x1 = nodes["layer2.0.conv1"].attrs["stride"] != (1, 1)
    fc = nodes.get("fc")
    if fc is None or fc.op != "linear":
        raise _no_reference(graph, "it has no final linear layer named 'fc'")

    if family == "imagenet" and len(layers) != 4:
        raise _no_reference(graph, f"it has a 7x7 stem but {len(layers)} stages, not 4")
    if family == "cifar" and (len(layers) != 3 or block != "basic" or len(set(layers)) != 1):
        raise _no_reference(
            graph, f"it has a 3x3 stem but not 3 stages of n basic blocks each ({block} blocks {list(layers)})"
        )
    ref = Reference(family, block, layers, shortcut, stride_in_1x1, fc.attrs["out"])
    problems = _compare(graph, nodes, ref)
    if problems:
        more = f" (and {len(problems) - 2} more)" if len(problems) > 2 else ""
        raise _no_reference(graph, f"closest is {ref.name}, but " + "; ".join(problems[:2]) + more)
    return ref


def _show(v: Any) -> str:
    return "x".join(map(str, v)) if isinstance(v, tuple) else str(v)


def _compare(graph: Graph, nodes: dict[str, Any], ref: Reference) -> list[str]:
    """Differences between the graph and the reference's layers (empty: they match)."""
    with torch.device("meta"):
        model = ref.make()
    problems: list[str] = []
    folded = {n.attrs["folded_bn"]: n for n in nodes.values() if n.op == "fused_conv" and n.attrs["folded_bn"]}
    seen: set[str] = set()

    def in_channels(node: Any) -> int:
        return nodes[node.inputs[0]].shape[0]

    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d):
            node = nodes.get(name)
            if node is None or node.op not in ("conv", "fused_conv"):
                problems.append(f"'{name}' is not a conv")
                continue
            a = node.attrs
            fields = {
                "in": (in_channels(node), m.in_channels),
                "out": (a["out"], m.out_channels),
                "kernel": (a["kernel"], m.kernel_size),
                "stride": (a["stride"], m.stride),
                "padding": (a["padding"], m.padding),
                "dilation": (a["dilation"], m.dilation),
                "groups": (a["groups"], m.groups),
                "bias": (a["conv_bias"] if node.op == "fused_conv" else a["bias"], m.bias is not None),
            }
            diff = [f"{k} {_show(g)} (reference {_show(w)})" for k, (g, w) in fields.items() if g != w]
            if diff:
                problems.append(f"conv '{name}' has {', '.join(diff)}")
            seen.add(name)
        elif isinstance(m, nn.BatchNorm2d):
            node = nodes.get(name)
            if node is not None and node.op in ("bn", "bn_act"):
                ok = in_channels(node) == m.num_features and node.attrs["eps"] == m.eps
                ok = ok and node.attrs["track_running_stats"]
                seen.add(name)
            elif name in folded:
                ok = folded[name].attrs["out"] == m.num_features and folded[name].attrs["bn_eps"] == m.eps
            else:
                problems.append(f"'{name}' is not a BN")
                continue
            if not ok:
                problems.append(f"BN '{name}' differs in channels, eps or running stats")
        elif isinstance(m, nn.Linear):
            node = nodes.get(name)
            if node is None or node.op != "linear":
                problems.append(f"'{name}' is not a linear layer")
                continue
            if (in_channels(node), node.attrs["out"], node.attrs["bias"]) != (m.in_features, m.out_features, True):
                problems.append(f"linear '{name}' differs in shape or bias")
            seen.add(name)
    extra = sorted(n for n, node in nodes.items() if node.op in _PARAM_OPS and n not in seen)
    if extra:
        problems.append(f"it has layer(s) the reference lacks: {', '.join(extra[:5])}")
    pools = [n for n in nodes.values() if n.op == "maxpool"]
    if ref.family == "imagenet":
        if [(p.name, p.attrs["kernel"], p.attrs["stride"], p.attrs["padding"]) for p in pools] != [
            ("maxpool", (3, 3), (2, 2), (1, 1))
        ]:
            problems.append("its max pooling is not one 3x3/2 'maxpool' after the stem")
    elif pools:
        problems.append("a CIFAR net has no max pooling")
    gap = [n for n in nodes.values() if n.op == "avgpool"]
    if len(gap) != 1 or gap[0].attrs["kernel"] is not None:
        problems.append("it does not end in one global average pool")
    return problems
