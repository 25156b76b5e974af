"""Test-only hand-written MobileNetV2, MobileNetV3-Large and EfficientNet-B0 in torchvision's module tree.

Written from the papers' tables and torchvision's published module structure (names and nesting only),
so a spec's state_dict can be compared key for key and its outputs number for number.
"""

from __future__ import annotations

import torch
from torch import nn

# (t, c, n, s) rows of MobileNetV2's Table 2
V2_SETTING = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]
# (expand, kernel, stride, in, out, layers) rows of EfficientNet-B0's Table 1
B0_SETTING = [
    (1, 3, 1, 32, 16, 1),
    (6, 3, 2, 16, 24, 2),
    (6, 5, 2, 24, 40, 2),
    (6, 3, 2, 40, 80, 3),
    (6, 5, 1, 80, 112, 3),
    (6, 5, 2, 112, 192, 4),
    (6, 3, 1, 192, 320, 1),
]
# (in, kernel, expanded, out, se, hardswish, stride) rows of MobileNetV3-Large's Table 1
V3_LARGE_SETTING = [
    (16, 3, 16, 16, False, False, 1),
    (16, 3, 64, 24, False, False, 2),
    (24, 3, 72, 24, False, False, 1),
    (24, 5, 72, 40, True, False, 2),
    (40, 5, 120, 40, True, False, 1),
    (40, 5, 120, 40, True, False, 1),
    (40, 3, 240, 80, False, True, 2),
    (80, 3, 200, 80, False, True, 1),
    (80, 3, 184, 80, False, True, 1),
    (80, 3, 184, 80, False, True, 1),
    (80, 3, 480, 112, True, True, 1),
    (112, 3, 672, 112, True, True, 1),
    (112, 5, 672, 160, True, True, 2),
    (160, 5, 960, 160, True, True, 1),
    (160, 5, 960, 160, True, True, 1),
]


def make_divisible(v: float, divisor: int = 8) -> int:
    """The nearest multiple of `divisor` to v, never below 90% of v (MobileNet's channel rounding)."""
    new = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new + divisor if new < 0.9 * v else new


class ConvBNAct(nn.Sequential):
    """conv `0`, BN `1`, activation `2` (torchvision's Conv2dNormActivation layout)."""

    def __init__(self, cin, cout, k=1, stride=1, groups=1, act=nn.ReLU6, eps=1e-5, momentum=0.1):
        layers = [
            nn.Conv2d(cin, cout, k, stride, (k - 1) // 2, groups=groups, bias=False),
            nn.BatchNorm2d(cout, eps=eps, momentum=momentum),
        ]
        if act is not None:
            layers.append(act())
        super().__init__(*layers)


class SqueezeExcitation(nn.Module):
    """Global pool, fc1, activation, fc2, gate; scales the input."""

    def __init__(self, channels, squeeze, act=nn.SiLU, gate=nn.Sigmoid):
        super().__init__()
        self.fc1 = nn.Conv2d(channels, squeeze, 1)
        self.fc2 = nn.Conv2d(squeeze, channels, 1)
        self.act, self.gate = act(), gate()

    def forward(self, x):
        s = self.gate(self.fc2(self.act(self.fc1(x.mean((2, 3), keepdim=True)))))
        return s * x


class V2Block(nn.Module):
    """MobileNetV2's inverted residual, its layers in `conv`."""

    def __init__(self, cin, cout, stride, t):
        super().__init__()
        hidden = cin * t
        layers = [ConvBNAct(cin, hidden)] if t != 1 else []
        layers += [
            ConvBNAct(hidden, hidden, 3, stride, hidden),
            nn.Conv2d(hidden, cout, 1, bias=False),
            nn.BatchNorm2d(cout),
        ]
        self.conv = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x):
        return x + self.conv(x) if self.residual else self.conv(x)


class MobileNetV2(nn.Module):
    """MobileNetV2 1.0."""

    def __init__(self, num_classes=1000, dropout=0.2):
        super().__init__()
        layers, cin = [ConvBNAct(3, 32, 3, 2)], 32
        for t, c, n, s in V2_SETTING:
            for i in range(n):
                layers.append(V2Block(cin, c, s if i == 0 else 1, t))
                cin = c
        layers.append(ConvBNAct(cin, 1280))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(1280, num_classes))

    def forward(self, x):
        return self.classifier(torch.flatten(self.features(x).mean((2, 3), keepdim=True), 1))


def drop_path(x, p, training):
    """Stochastic depth, row mode: zero whole samples with probability p, scale the rest by 1/(1-p)."""
    if not training or p == 0.0:
        return x
    keep = torch.empty((x.shape[0],) + (1,) * (x.dim() - 1), dtype=x.dtype).bernoulli_(1 - p)
    return x * keep / (1 - p)


class MBConv(nn.Module):
    """EfficientNet's MBConv with SE (SiLU, sigmoid gate, squeeze = input channels // 4), layers in `block`."""

    def __init__(self, cin, cout, k, stride, t, p):
        super().__init__()
        hidden = cin * t
        layers = [ConvBNAct(cin, hidden, act=nn.SiLU)] if t != 1 else []
        layers += [
            ConvBNAct(hidden, hidden, k, stride, hidden, act=nn.SiLU),
            SqueezeExcitation(hidden, max(1, cin // 4)),
            ConvBNAct(hidden, cout, act=None),
        ]
        self.block = nn.Sequential(*layers)
        self.residual, self.p = stride == 1 and cin == cout, p

    def forward(self, x):
        y = self.block(x)
        return x + drop_path(y, self.p, self.training) if self.residual else y


class EfficientNetB0(nn.Module):
    """EfficientNet-B0; stochastic depth rises linearly from 0 to `drop_path` * 15/16 over the 16 blocks."""

    def __init__(self, num_classes=1000, dropout=0.2, drop_path=0.2):
        super().__init__()
        total = sum(row[-1] for row in B0_SETTING)
        layers, k = [ConvBNAct(3, 32, 3, 2, act=nn.SiLU)], 0
        for t, kernel, s, cin, cout, n in B0_SETTING:
            stage = []
            for i in range(n):
                stage.append(
                    MBConv(cin if i == 0 else cout, cout, kernel, s if i == 0 else 1, t, drop_path * k / total)
                )
                k += 1
            layers.append(nn.Sequential(*stage))
        layers.append(ConvBNAct(320, 1280, act=nn.SiLU))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(1280, num_classes))

    def forward(self, x):
        return self.classifier(torch.flatten(self.features(x).mean((2, 3), keepdim=True), 1))


class V3Block(nn.Module):
    """MobileNetV3's bneck: expand (when the width changes), depthwise, optional SE, project; in `block`."""

    def __init__(self, cin, k, hidden, cout, se, hs, stride):
        super().__init__()
        act = nn.Hardswish if hs else nn.ReLU
        bn = {"eps": 1e-3, "momentum": 0.01}
        layers = [ConvBNAct(cin, hidden, act=act, **bn)] if hidden != cin else []
        layers.append(ConvBNAct(hidden, hidden, k, stride, hidden, act=act, **bn))
        if se:
            layers.append(SqueezeExcitation(hidden, make_divisible(hidden // 4), act=nn.ReLU, gate=nn.Hardsigmoid))
        layers.append(ConvBNAct(hidden, cout, act=None, **bn))
        self.block = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x):
        return x + self.block(x) if self.residual else self.block(x)


class MobileNetV3Large(nn.Module):
    """MobileNetV3-Large 1.0."""

    def __init__(self, num_classes=1000, dropout=0.2):
        super().__init__()
        bn = {"eps": 1e-3, "momentum": 0.01}
        layers = [ConvBNAct(3, 16, 3, 2, act=nn.Hardswish, **bn)]
        layers += [V3Block(*row) for row in V3_LARGE_SETTING]
        layers.append(ConvBNAct(160, 960, act=nn.Hardswish, **bn))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(
            nn.Linear(960, 1280), nn.Hardswish(), nn.Dropout(dropout), nn.Linear(1280, num_classes)
        )

    def forward(self, x):
        return self.classifier(torch.flatten(self.features(x).mean((2, 3), keepdim=True), 1))
