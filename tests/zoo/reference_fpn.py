"""A hand-written ResNet-50-FPN backbone in torch.nn, in detectron2's FPN layout (test-only reference).

The body is archc.bench.reference's ResNet-50 (torchvision's names) without avgpool and fc; the FPN
follows detectron2's FPN with LastLevelMaxPool: 1x1 laterals and 3x3 outputs with bias, nearest 2x
top-down upsampling added to the laterals, P6 = max_pool2d(P5, kernel 1, stride 2).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from archc.bench.reference import IMAGENET_LAYERS, ResNet

IN_CHANNELS = {2: 256, 3: 512, 4: 1024, 5: 2048}


class ResNet50FPN(ResNet):
    def __init__(self, channels: int = 256, stride_in_1x1: bool = False) -> None:
        block, layers = IMAGENET_LAYERS[50]
        super().__init__(block, layers, stride_in_1x1=stride_in_1x1)
        del self.avgpool, self.fc
        for level, cin in IN_CHANNELS.items():  # detectron2 registers lateral, output per level
            self.add_module(f"fpn_lateral{level}", nn.Conv2d(cin, channels, 1))
            self.add_module(f"fpn_output{level}", nn.Conv2d(channels, channels, 3, padding=1))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        c = {}
        for level in (2, 3, 4, 5):
            x = getattr(self, f"layer{level - 1}")(x)
            c[level] = x
        merged = self.fpn_lateral5(c[5])
        p = {5: self.fpn_output5(merged)}
        for level in (4, 3, 2):
            top_down = F.interpolate(merged, scale_factor=2.0, mode="nearest")
            merged = getattr(self, f"fpn_lateral{level}")(c[level]) + top_down
            p[level] = getattr(self, f"fpn_output{level}")(merged)
        p[6] = F.max_pool2d(p[5], kernel_size=1, stride=2, padding=0)
        return {f"p{level}": p[level] for level in (2, 3, 4, 5, 6)}
