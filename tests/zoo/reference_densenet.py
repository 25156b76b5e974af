"""A hand-written DenseNet-BC, independent of archc: the oracle of tests/zoo/test_densenet.py.

Written from "Densely Connected Convolutional Networks" (Huang et al. 2017) in the module
structure of torchvision's DenseNet, so its state_dict keys are torchvision's:
features.conv0/norm0/relu0/pool0, features.denseblockB.denselayerL.norm1/relu1/conv1/norm2/relu2/conv2,
features.transitionB.norm/relu/conv/pool, features.norm5, classifier. Unlike archc's spec, which
appends each layer's output to one growing tensor, a dense layer here concatenates the list of
every earlier output itself (torchvision's way), so the two compute the same thing differently.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn


class DenseLayer(nn.Module):
    """BN-ReLU-conv1x1(bn_size * growth)-BN-ReLU-conv3x3(growth) on the concatenated inputs."""

    def __init__(self, cin: int, growth: int, bn_size: int) -> None:
        super().__init__()
        self.norm1 = nn.BatchNorm2d(cin)
        self.relu1 = nn.ReLU()
        self.conv1 = nn.Conv2d(cin, bn_size * growth, kernel_size=1, bias=False)
        self.norm2 = nn.BatchNorm2d(bn_size * growth)
        self.relu2 = nn.ReLU()
        self.conv2 = nn.Conv2d(bn_size * growth, growth, kernel_size=3, padding=1, bias=False)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        x = torch.cat(features, dim=1)
        return self.conv2(self.relu2(self.norm2(self.conv1(self.relu1(self.norm1(x))))))


class DenseBlock(nn.ModuleDict):
    """`layers` dense layers; each sees every earlier output, and the block returns them all."""

    def __init__(self, layers: int, cin: int, growth: int, bn_size: int) -> None:
        super().__init__()
        for i in range(layers):
            self[f"denselayer{i + 1}"] = DenseLayer(cin + i * growth, growth, bn_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = [x]
        for layer in self.values():
            features.append(layer(features))
        return torch.cat(features, dim=1)


def transition(cin: int, cout: int) -> nn.Sequential:
    """BN-ReLU-conv1x1 then 2x2 average pooling with stride 2."""
    return nn.Sequential(
        OrderedDict(
            norm=nn.BatchNorm2d(cin),
            relu=nn.ReLU(),
            conv=nn.Conv2d(cin, cout, kernel_size=1, bias=False),
            pool=nn.AvgPool2d(kernel_size=2, stride=2),
        )
    )


class DenseNet(nn.Module):
    """DenseNet-BC; the defaults are DenseNet-121."""

    def __init__(
        self,
        growth: int = 32,
        blocks: tuple[int, ...] = (6, 12, 24, 16),
        init_features: int = 64,
        bn_size: int = 4,
        num_classes: int = 1000,
    ) -> None:
        super().__init__()
        layers: OrderedDict[str, nn.Module] = OrderedDict(
            conv0=nn.Conv2d(3, init_features, kernel_size=7, stride=2, padding=3, bias=False),
            norm0=nn.BatchNorm2d(init_features),
            relu0=nn.ReLU(),
            pool0=nn.MaxPool2d(kernel_size=3, stride=2, padding=1),
        )
        channels = init_features
        for b, n in enumerate(blocks):
            layers[f"denseblock{b + 1}"] = DenseBlock(n, channels, growth, bn_size)
            channels += n * growth
            if b != len(blocks) - 1:
                layers[f"transition{b + 1}"] = transition(channels, channels // 2)
                channels //= 2
        layers["norm5"] = nn.BatchNorm2d(channels)
        self.features = nn.Sequential(layers)
        self.classifier = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.features(x))
        x = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
        return self.classifier(x)
