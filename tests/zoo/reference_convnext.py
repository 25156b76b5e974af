"""A hand-written ConvNeXt-T in torch.nn, in torchvision's module structure (test-only reference).

The pointwise layers are nn.Linear on a channels-last map, as in torchvision (the spec's
`channel_linear`, with the same weight shapes).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

DEPTHS = (3, 3, 9, 3)
DIMS = (96, 192, 384, 768)


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of an NCHW map."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(0, 2, 3, 1)
        x = F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


class Permute(nn.Module):
    def __init__(self, dims: list[int]) -> None:
        super().__init__()
        self.dims = dims

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.permute(*self.dims)


class StochasticDepth(nn.Module):
    """Row-mode stochastic depth: each sample's branch kept with probability 1-p, scaled by 1/(1-p)."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = 1.0 - self.p
        mask = torch.empty((x.shape[0],) + (1,) * (x.ndim - 1), dtype=x.dtype).bernoulli_(keep)
        return x * mask / keep


class CNBlock(nn.Module):
    def __init__(self, dim: int, p: float) -> None:
        super().__init__()
        self.block = nn.Sequential(
            nn.Conv2d(dim, dim, 7, padding=3, groups=dim, bias=True),
            Permute([0, 2, 3, 1]),
            nn.LayerNorm(dim, eps=1e-6),
            nn.Linear(dim, 4 * dim),
            nn.GELU(),
            nn.Linear(4 * dim, dim),
            Permute([0, 3, 1, 2]),
        )
        self.layer_scale = nn.Parameter(torch.ones(dim, 1, 1) * 1e-6)
        self.stochastic_depth = StochasticDepth(p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.stochastic_depth(self.layer_scale * self.block(x)) + x


class ConvNeXtTiny(nn.Module):
    def __init__(self, num_classes: int = 1000, drop_path_rate: float = 0.1) -> None:
        super().__init__()
        total = sum(DEPTHS)
        layers: list[nn.Module] = [nn.Sequential(nn.Conv2d(3, DIMS[0], 4, stride=4), LayerNorm2d(DIMS[0], eps=1e-6))]
        k = 0
        for s, (depth, dim) in enumerate(zip(DEPTHS, DIMS, strict=True)):
            stage = []
            for _ in range(depth):
                stage.append(CNBlock(dim, drop_path_rate * k / (total - 1.0)))
                k += 1
            layers.append(nn.Sequential(*stage))
            if s + 1 < len(DIMS):
                layers.append(nn.Sequential(LayerNorm2d(dim, eps=1e-6), nn.Conv2d(dim, DIMS[s + 1], 2, stride=2)))
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(
            LayerNorm2d(DIMS[-1], eps=1e-6), nn.Flatten(1), nn.Linear(DIMS[-1], num_classes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.avgpool(self.features(x)))
