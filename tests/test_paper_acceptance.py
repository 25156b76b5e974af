"""Acceptance: the shipped specs reproduce the numbers of He et al. 2015.

Parameter counts, multiply-adds, layer counts and feature-map shapes are computed by
`archc.api.build(spec, lower=False)` (the IR alone, no torch) and compared with exact
integers that this file derives independently (small closed formulas, or the hand-written
reference module in tests/reference_resnet.py) and with the paper's rounded figures.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from archc.api import build

SPECS = Path(__file__).resolve().parent.parent / "specs"

# Table 1 stage configurations: (block kind, blocks per stage conv2_x..conv5_x)
IMAGENET = {
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
    101: ("bottleneck", (3, 4, 23, 3)),
    152: ("bottleneck", (3, 8, 36, 3)),
}
# CIFAR-10 nets of Sec 4.2: depth 6n+2 -> n
CIFAR = {20: 3, 32: 5, 44: 7, 56: 9, 110: 18, 1202: 200}


def graph(spec: str, **overrides: object):
    return build(SPECS / spec, lower=False, overrides=overrides or None).graph


# --- independent closed-form counts --------------------------------------------------------


def _conv(k: int, cin: int, cout: int, hout: int) -> tuple[int, int]:
    """(params, multiply-adds) of a bias-free k x k conv producing a square hout map."""
    return k * k * cin * cout, k * k * cin * cout * hout * hout


def imagenet_counts(
    depth: int, shortcut: str = "B", stride_in_1x1: bool = True, size: int = 224, classes: int = 1000
) -> tuple[int, int]:
    """(params, multiply-adds per image) of a Table 1 net with option B / "none" shortcuts.

    Convs count k*k*cin*cout params and k*k*cin*cout*Hout*Wout multiply-adds, BN counts
    2*channels params and no multiply-adds, the fc in*out(+out) and in*out.
    """
    kind, layers = IMAGENET[depth]
    params = macs = 0

    def add_conv(k: int, cin: int, cout: int, hout: int, bn: bool = True) -> None:
        nonlocal params, macs
        p, m = _conv(k, cin, cout, hout)
        params += p + (2 * cout if bn else 0)
        macs += m

    h = (size + 2 * 3 - 7) // 2 + 1  # conv1 7x7/2, padding 3
    add_conv(7, 3, 64, h)
    h = (h + 2 * 1 - 3) // 2 + 1  # maxpool 3x3/2, padding 1
    cin = 64
    for stage, (width, blocks) in enumerate(zip((64, 128, 256, 512), layers)):
        for b in range(blocks):
            stride = 2 if (stage > 0 and b == 0) else 1
            hin, h = h, (h - 1) // stride + 1
            cout = width if kind == "basic" else 4 * width
            if kind == "basic":
                add_conv(3, cin, width, h)
                add_conv(3, width, width, h)
            else:
                add_conv(1, cin, width, h if stride_in_1x1 else hin)
                add_conv(3, width, width, h)
                add_conv(1, width, cout, h)
            if shortcut == "B" and (stride != 1 or cin != cout):
                add_conv(1, cin, cout, h)  # projection shortcut (1x1 conv + BN)
            cin = cout
    params += cin * classes + classes
    macs += cin * classes
    return params, macs


def cifar_counts(n: int, classes: int = 10) -> tuple[int, int]:
    """(params, multiply-adds per 32x32 image) of the 6n+2 CIFAR net, option A or plain.

    Option A shortcuts are parameter-free, so the residual and the plain net agree.
    """
    p, m = _conv(3, 3, 16, 32)
    params, macs = p + 2 * 16, m
    cin, h = 16, 32
    for stage, width in enumerate((16, 32, 64)):
        for b in range(n):
            if stage > 0 and b == 0:
                h //= 2
            for c_in in (cin, width):
                p, m = _conv(3, c_in, width, h)
                params += p + 2 * width
                macs += m
            cin = width
    return params + 64 * classes + classes, macs + 64 * classes


# --- parameter counts --------------------------------------------------------------------------

RESNET_PARAMS = {18: 11_689_512, 34: 21_797_672, 50: 25_557_032, 101: 44_549_160, 152: 60_192_808}
CIFAR_PARAMS = {20: 269_722, 32: 464_154, 44: 658_586, 56: 853_018, 110: 1_727_962, 1202: 19_421_274}
# Table 6 "# params" column, in millions, as printed
CIFAR_PAPER_M = {20: "0.27", 32: "0.46", 44: "0.66", 56: "0.85", 110: "1.7", 1202: "19.4"}


@pytest.mark.parametrize("depth", sorted(RESNET_PARAMS))
def test_imagenet_resnet_params(depth: int) -> None:
    g = graph(f"resnet{depth}.arch")
    assert g.params() == RESNET_PARAMS[depth]
    assert imagenet_counts(depth)[0] == RESNET_PARAMS[depth]


@pytest.mark.parametrize("depth", sorted(CIFAR_PARAMS))
def test_cifar_resnet_params(depth: int) -> None:
    g = graph(f"cifar/resnet{depth}.arch")
    assert g.params() == CIFAR_PARAMS[depth]
    assert cifar_counts(CIFAR[depth])[0] == CIFAR_PARAMS[depth]
    paper = CIFAR_PAPER_M[depth]
    decimals = len(paper.split(".")[1])
    assert f"{g.params() / 1e6:.{decimals}f}" == paper


@pytest.mark.parametrize("depth", [18, 34])
def test_imagenet_plain_params(depth: int) -> None:
    """The plain nets: the reference module's count, and the formula without projections."""
    from tests.reference_resnet import resnet

    want = sum(p.numel() for p in resnet(depth, shortcut="none").parameters())
    assert want == imagenet_counts(depth, shortcut="none")[0]
    assert graph(f"plain{depth}.arch").params() == want
    # the residual net only adds the three projection shortcuts of option B
    projections = sum(c * 2 * c + 2 * 2 * c for c in (64, 128, 256))
    assert RESNET_PARAMS[depth] - want == projections


@pytest.mark.parametrize("depth", [20, 32, 44, 56, 110])
def test_cifar_plain_params(depth: int) -> None:
    """Option A is parameter-free: plain and residual CIFAR nets have the same count."""
    g = graph(f"cifar/plain{depth}.arch")
    assert g.params() == cifar_counts(CIFAR[depth])[0] == CIFAR_PARAMS[depth]


# --- multiply-adds per 224x224 image (Table 1 "FLOPs") -------------------------------------------

# Table 1 prints 1.8, 3.6, 3.8, 7.6 and 11.3 x10^9. The exact counts are 1.814, 3.664, 3.858,
# 7.570 and 11.282 x10^9: the paper rounds some (7.570 -> 7.6, 11.282 -> 11.3) and truncates
# others (3.664 -> 3.6, 3.858 -> 3.8), so a figure matches if it is either the rounded or
# the truncated value to one decimal.
PAPER_GMACS = {18: 1.8, 34: 3.6, 50: 3.8, 101: 7.6, 152: 11.3}
EXACT_GMACS = {18: 1.814, 34: 3.664, 50: 3.858, 101: 7.570, 152: 11.282}


def matches_paper(macs: int, figure: float) -> bool:
    x = macs / 1e9
    return figure in (round(x, 1), math.floor(x * 10) / 10)


@pytest.mark.parametrize("depth", sorted(PAPER_GMACS))
def test_imagenet_macs(depth: int) -> None:
    macs = graph(f"resnet{depth}.arch").macs()
    assert macs == imagenet_counts(depth)[1]
    assert round(macs / 1e9, 3) == EXACT_GMACS[depth]
    assert matches_paper(macs, PAPER_GMACS[depth])


def test_plain34_macs() -> None:
    """Sec 3.3: "Our 34-layer baseline has 3.6 billion FLOPs (multiply-adds)"."""
    macs = graph("plain34.arch").macs()
    assert macs == imagenet_counts(34, shortcut="none")[1]
    assert matches_paper(macs, 3.6)
    assert graph("plain18.arch").macs() == imagenet_counts(18, shortcut="none")[1]


def test_resnet50_stride_on_3x3_macs() -> None:
    """Striding the 3x3 instead of the first 1x1 ("ResNet v1.5") costs 4.09e9 multiply-adds."""
    macs = graph("resnet50.arch", stride_in_1x1="false").macs()
    assert macs == imagenet_counts(50, stride_in_1x1=False)[1]
    assert round(macs / 1e9, 2) == 4.09
    # the parameters do not depend on where the stride is
    assert graph("resnet50.arch", stride_in_1x1="false").params() == RESNET_PARAMS[50]


@pytest.mark.parametrize("depth", [20, 56])
def test_cifar_macs(depth: int) -> None:
    assert graph(f"cifar/resnet{depth}.arch").macs() == cifar_counts(CIFAR[depth])[1]


# --- layer counts and shapes ---------------------------------------------------------------------


def weighted_layers(g) -> int:
    return sum(1 for node in g.nodes() if node.op in ("conv", "linear"))


@pytest.mark.parametrize("depth", sorted(CIFAR))
def test_cifar_layer_count(depth: int) -> None:
    n = CIFAR[depth]
    g = graph(f"cifar/resnet{depth}.arch")
    assert weighted_layers(g) == 6 * n + 2 == depth
    assert g.output.shape == (10,)


@pytest.mark.parametrize("n", [3, 5, 7, 9, 18, 200])
def test_cifar_plain_layer_count(n: int) -> None:
    g = graph("cifar/plain20.arch", n=n)
    assert weighted_layers(g) == 6 * n + 2
    assert g.output.shape == (10,)
    assert g.params() == cifar_counts(n)[0]


@pytest.mark.parametrize("depth", sorted(IMAGENET))
def test_imagenet_layer_count_and_output(depth: int) -> None:
    g = graph(f"resnet{depth}.arch")
    kind, layers = IMAGENET[depth]
    projections = 4  # option B: the first block of every stage (layer1 too for bottlenecks: 64 -> 256)
    if kind == "basic":
        projections = 3  # layer1 keeps 64 channels at stride 1
    assert weighted_layers(g) == depth + projections
    assert g.output.shape == (1000,)


def test_resnet50_stage_shapes() -> None:
    stages = {row["name"]: tuple(row["output_shape"]) for row in graph("resnet50.arch").stages()}
    assert stages["conv1"] == (64, 112, 112)
    assert stages["maxpool"] == (64, 56, 56)
    assert stages["layer1"] == (256, 56, 56)
    assert stages["layer2"] == (512, 28, 28)
    assert stages["layer3"] == (1024, 14, 14)
    assert stages["layer4"] == (2048, 7, 7)
    assert stages["fc"] == (1000,)


def test_resnet50_stage_costs_add_up() -> None:
    g = graph("resnet50.arch")
    rows = g.stages()
    assert sum(r["params"] for r in rows) == g.params()
    assert sum(r["macs"] for r in rows) == g.macs()


def test_cifar_stage_shapes() -> None:
    stages = {row["name"]: tuple(row["output_shape"]) for row in graph("cifar/resnet20.arch").stages()}
    assert stages["layer1"] == (16, 32, 32)
    assert stages["layer2"] == (32, 16, 16)
    assert stages["layer3"] == (64, 8, 8)
    assert stages["fc"] == (10,)
