"""Test-only hand-written references for the ResNet family of the zoo (ResNeXt, Wide ResNet, ResNet-D, SE-ResNet).

Written with torch.nn modules in the module structure of torchvision's ResNet (and, for the D stem, the
average-pool shortcut and the SE gate, timm's resnet50d / seresnet50), so their state_dict keys are the
ones a checkpoint of those libraries has. Only facts (structure, names, widths) come from there.
"""

from __future__ import annotations

import torch
from torch import nn

STAGES = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}


class SqueezeExcite(nn.Module):
    """x * sigmoid(fc2(relu(fc1(mean(x))))), with biased 1x1 convs fc1 and fc2."""

    def __init__(self, channels: int, reduced: int) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(channels, reduced, 1, bias=True)
        self.fc2 = nn.Conv2d(reduced, channels, 1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = x.mean((2, 3), keepdim=True)
        return x * torch.sigmoid(self.fc2(torch.relu(self.fc1(gate))))


def shortcut(cin: int, cout: int, stride: int, avg_down: bool) -> nn.Sequential:
    """The projection: 1x1 conv (strided) + BN, or for ResNet-D a 2x2 average pool, 1x1 conv, BN."""
    if not avg_down:
        return nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout))
    pool = nn.AvgPool2d(2, stride, ceil_mode=True, count_include_pad=False) if stride != 1 else nn.Identity()
    return nn.Sequential(pool, nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout))


class Bottleneck(nn.Module):
    """1x1, grouped 3x3 (strided), 1x1; an optional SE gate before the add; ReLU after it."""

    def __init__(
        self, cin: int, planes: int, stride: int, groups: int, width_per_group: int, se: int, avg_down: bool
    ) -> None:
        super().__init__()
        width = int(planes * (width_per_group / 64.0)) * groups
        cout = 4 * planes
        self.conv1 = nn.Conv2d(cin, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride=stride, padding=1, groups=groups, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, cout, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(cout)
        self.se = SqueezeExcite(cout, cout // se) if se else None
        self.downsample = shortcut(cin, cout, stride, avg_down) if stride != 1 or cin != cout else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = torch.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.se is not None:
            out = self.se(out)
        identity = x if self.downsample is None else self.downsample(x)
        return torch.relu(out + identity)


class ResNetFamily(nn.Module):
    """A bottleneck ResNet: torchvision's layout; `deep_stem` and `avg_down` make ResNet-D, `se` SE-ResNet."""

    def __init__(
        self,
        depth: int = 50,
        groups: int = 1,
        width_per_group: int = 64,
        se: int = 0,
        deep_stem: bool = False,
        avg_down: bool = False,
        num_classes: int = 1000,
    ) -> None:
        super().__init__()
        if deep_stem:
            self.conv1 = nn.Sequential(
                nn.Conv2d(3, 32, 3, stride=2, padding=1, bias=False),
                nn.BatchNorm2d(32),
                nn.ReLU(),
                nn.Conv2d(32, 32, 3, padding=1, bias=False),
                nn.BatchNorm2d(32),
                nn.ReLU(),
                nn.Conv2d(32, 64, 3, padding=1, bias=False),
            )
        else:
            self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        cin = 64
        for index, (planes, blocks) in enumerate(zip((64, 128, 256, 512), STAGES[depth])):
            layer = []
            for i in range(blocks):
                stride = 2 if i == 0 and index > 0 else 1
                layer.append(Bottleneck(cin, planes, stride, groups, width_per_group, se, avg_down))
                cin = 4 * planes
            setattr(self, f"layer{index + 1}", nn.Sequential(*layer))
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(torch.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(x.mean((2, 3)), 1))


def resnext50_32x4d(num_classes: int = 1000) -> ResNetFamily:
    """torchvision's resnext50_32x4d."""
    return ResNetFamily(50, groups=32, width_per_group=4, num_classes=num_classes)


def resnext101_32x8d(num_classes: int = 1000) -> ResNetFamily:
    """torchvision's resnext101_32x8d."""
    return ResNetFamily(101, groups=32, width_per_group=8, num_classes=num_classes)


def wide_resnet50_2(num_classes: int = 1000) -> ResNetFamily:
    """torchvision's wide_resnet50_2."""
    return ResNetFamily(50, width_per_group=128, num_classes=num_classes)


def resnet50d(num_classes: int = 1000) -> ResNetFamily:
    """timm's resnet50d: deep stem (32, 32, 64) and average-pool shortcuts."""
    return ResNetFamily(50, deep_stem=True, avg_down=True, num_classes=num_classes)


def seresnet50(num_classes: int = 1000) -> ResNetFamily:
    """timm's seresnet50: an SE gate with reduction 16 in every bottleneck."""
    return ResNetFamily(50, se=16, num_classes=num_classes)
