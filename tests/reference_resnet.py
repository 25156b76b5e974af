"""A hand-written reference ResNet, independent of archc, for equivalence and acceptance tests.

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
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

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
