"""A hand-written ShuffleNet V2, independent of archc: the oracle of tests/zoo/test_shufflenet.py.

Written from "ShuffleNet V2: Practical Guidelines for Efficient CNN Architecture Design"
(Ma et al. 2018) in the module structure of torchvision's ShuffleNetV2, so its state_dict keys
are torchvision's: conv1.0/1, stageS.U.branch1.0-4 (downsampling units), stageS.U.branch2.0-7,
conv5.0/1, fc. The channel split uses `torch.chunk` and the shuffle a view-transpose-view.
"""

from __future__ import annotations

import torch
from torch import nn


def shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """Interleave `groups` channel groups: (N, g, C/g, H, W) -> transpose -> (N, C, H, W)."""
    n, c, h, w = x.shape
    return x.view(n, groups, c // groups, h, w).transpose(1, 2).reshape(n, c, h, w)


def depthwise(channels: int, stride: int) -> nn.Conv2d:
    """3x3 depthwise conv, padding 1, no bias."""
    return nn.Conv2d(channels, channels, kernel_size=3, stride=stride, padding=1, groups=channels, bias=False)


def pointwise(cin: int, cout: int) -> nn.Conv2d:
    """1x1 conv, no bias."""
    return nn.Conv2d(cin, cout, kernel_size=1, bias=False)


class Unit(nn.Module):
    """torchvision's InvertedResidual: split or duplicate, two branches, concatenate, shuffle."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        half = cout // 2
        self.stride = stride
        if stride > 1:
            self.branch1 = nn.Sequential(
                depthwise(cin, stride), nn.BatchNorm2d(cin), pointwise(cin, half), nn.BatchNorm2d(half), nn.ReLU()
            )
        else:
            self.branch1 = nn.Sequential()
        self.branch2 = nn.Sequential(
            pointwise(cin if stride > 1 else half, half),
            nn.BatchNorm2d(half),
            nn.ReLU(),
            depthwise(half, stride),
            nn.BatchNorm2d(half),
            pointwise(half, half),
            nn.BatchNorm2d(half),
            nn.ReLU(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 1:
            kept, x2 = x.chunk(2, dim=1)
            out = torch.cat((kept, self.branch2(x2)), dim=1)
        else:
            out = torch.cat((self.branch1(x), self.branch2(x)), dim=1)
        return shuffle(out, 2)


class ShuffleNetV2(nn.Module):
    """ShuffleNet V2; the defaults are the 1.0x net."""

    def __init__(
        self,
        repeats: tuple[int, int, int] = (4, 8, 4),
        channels: tuple[int, int, int, int, int] = (24, 116, 232, 464, 1024),
        num_classes: int = 1000,
    ) -> None:
        super().__init__()
        self.conv1 = nn.Sequential(
            nn.Conv2d(3, channels[0], kernel_size=3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(channels[0]),
            nn.ReLU(),
        )
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        cin = channels[0]
        for s, (n, cout) in enumerate(zip(repeats, channels[1:4], strict=True)):
            units = [Unit(cin, cout, 2)] + [Unit(cout, cout, 1) for _ in range(n - 1)]
            setattr(self, f"stage{s + 2}", nn.Sequential(*units))
            cin = cout
        self.conv5 = nn.Sequential(pointwise(cin, channels[4]), nn.BatchNorm2d(channels[4]), nn.ReLU())
        self.fc = nn.Linear(channels[4], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.conv1(x))
        x = self.stage4(self.stage3(self.stage2(x)))
        x = self.conv5(x).mean(dim=(2, 3))
        return self.fc(x)
