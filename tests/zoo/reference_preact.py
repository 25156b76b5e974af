"""A hand-written pre-activation ResNet for CIFAR, independent of archc: the oracle of
tests/zoo/test_preact.py.

Written from "Identity Mappings in Deep Residual Networks" (He et al. 2016): full
pre-activation bottleneck units (Fig. 4 e) whose projection shortcut, where the shape
changes, is a 1x1 conv (no BN) on the BN-ReLU output; a final BN-ReLU after the last unit.
Module names: conv1, layerS.U.bn1/conv1/bn2/conv2/bn3/conv3/downsample, bn, fc.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class PreActBottleneck(nn.Module):
    """BN-ReLU-conv1x1, BN-ReLU-conv3x3 (strided), BN-ReLU-conv1x1 to 4x width, plus the shortcut."""

    def __init__(self, cin: int, width: int, stride: int) -> None:
        super().__init__()
        cout = 4 * width
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv1 = nn.Conv2d(cin, width, kernel_size=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, cout, kernel_size=1, bias=False)
        project = stride != 1 or cin != cout
        self.downsample = nn.Conv2d(cin, cout, kernel_size=1, stride=stride, bias=False) if project else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = F.relu(self.bn1(x))
        shortcut = self.downsample(pre) if self.downsample is not None else x
        out = self.conv1(pre)
        out = self.conv2(F.relu(self.bn2(out)))
        out = self.conv3(F.relu(self.bn3(out)))
        return out + shortcut


class PreActResNet(nn.Module):
    """The CIFAR pre-activation ResNet with `units` bottleneck units per stage (9 * units + 2 layers)."""

    def __init__(self, units: int = 18, num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, kernel_size=3, padding=1, bias=False)
        cin = 16
        for s, width in enumerate((16, 32, 64)):
            stage = []
            for u in range(units):
                stage.append(PreActBottleneck(cin, width, 2 if s > 0 and u == 0 else 1))
                cin = 4 * width
            setattr(self, f"layer{s + 1}", nn.Sequential(*stage))
        self.bn = nn.BatchNorm2d(cin)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer3(self.layer2(self.layer1(self.conv1(x))))
        x = F.relu(self.bn(x))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))
