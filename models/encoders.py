"""3D encoder candidates: input (N, C, X, Y, Z) float32 -> (embedding (N, D), logit (N,)).

Three families: a 3D ResNet (10 or 18 layers, basic blocks), a 3D DenseNet (dense blocks
with transitions) and a compact plain CNN. A base class owns the projection and the
response head; each family only builds ``features`` (-> (N, F, ...)) and ``out_features``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from dltr.core.exceptions import ModelError


def _cbr(cin: int, cout: int, stride: int = 1, k: int = 3) -> nn.Sequential:
    return nn.Sequential(nn.Conv3d(cin, cout, k, stride=stride, padding=k // 2, bias=False),
                         nn.BatchNorm3d(cout), nn.ReLU(inplace=True))


class Encoder3d(nn.Module):
    """Base: ``features`` -> global average pool -> linear embedding (ReLU) -> linear logit."""

    family = ""

    def __init__(self, in_channels: int, embed_dim: int = 256, width: int = 16):
        super().__init__()
        self.arch = {"name": self.family, "in_channels": in_channels, "embed_dim": embed_dim, "width": width}
        self.features, feat = self.build(in_channels, width)
        self.pool = nn.AdaptiveAvgPool3d(1)
        self.embed = nn.Sequential(nn.Flatten(), nn.Linear(feat, embed_dim), nn.ReLU(inplace=True))
        self.head = nn.Linear(embed_dim, 1)

    def build(self, in_channels: int, width: int) -> tuple[nn.Module, int]:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        e = self.embed(self.pool(self.features(x)))
        return e, self.head(e).squeeze(1)


class _Basic(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.body = nn.Sequential(_cbr(cin, cout, stride), nn.Conv3d(cout, cout, 3, padding=1, bias=False),
                                  nn.BatchNorm3d(cout))
        self.skip = (nn.Identity() if stride == 1 and cin == cout else
                     nn.Sequential(nn.Conv3d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm3d(cout)))
        self.act = nn.ReLU(inplace=True)

    def forward(self, x):
        return self.act(self.body(x) + self.skip(x))


class ResNet3d(Encoder3d):
    family, blocks = "resnet10", (1, 1, 1, 1)

    def build(self, in_channels, width):
        # Stride-2 stem, as in the 2D ResNet: the full-resolution stage dominated CPU training time 10:1.
        layers, cin = [_cbr(in_channels, width, stride=2)], width
        for i, n in enumerate(self.blocks):
            cout = width * 2**i
            for j in range(n):
                layers.append(_Basic(cin, cout, 2 if (j == 0 and i > 0) else 1))
                cin = cout
        return nn.Sequential(*layers), cin


class ResNet18_3d(ResNet3d):
    family, blocks = "resnet18", (2, 2, 2, 2)


class _DenseLayer(nn.Module):
    def __init__(self, cin: int, growth: int):
        super().__init__()
        self.body = nn.Sequential(nn.BatchNorm3d(cin), nn.ReLU(inplace=True),
                                  nn.Conv3d(cin, growth, 3, padding=1, bias=False))

    def forward(self, x):
        return torch.cat([x, self.body(x)], 1)


class DenseNet3d(Encoder3d):
    family, layers_per_block = "densenet", (3, 3, 3)

    def build(self, in_channels, width):
        growth, mods, c = max(4, width // 2), [_cbr(in_channels, width, stride=2)], width  # stride-2 stem
        for b, n in enumerate(self.layers_per_block):
            for _ in range(n):
                mods.append(_DenseLayer(c, growth))
                c += growth
            if b < len(self.layers_per_block) - 1:
                mods += [nn.BatchNorm3d(c), nn.ReLU(inplace=True), nn.Conv3d(c, c // 2, 1, bias=False),
                         nn.AvgPool3d(2, ceil_mode=True)]
                c //= 2
        mods += [nn.BatchNorm3d(c), nn.ReLU(inplace=True)]
        return nn.Sequential(*mods), c


class PlainCNN3d(Encoder3d):
    family = "plain"

    def build(self, in_channels, width):
        mods, cin = [], in_channels
        for i in range(4):
            cout = width * 2**i
            mods += [_cbr(cin, cout), nn.MaxPool3d(2, ceil_mode=True)] if i < 3 else [_cbr(cin, cout)]
            cin = cout
        return nn.Sequential(*mods), cin


ENCODERS: dict[str, type[Encoder3d]] = {
    "resnet10": ResNet3d, "resnet18": ResNet18_3d, "densenet": DenseNet3d, "plain": PlainCNN3d,
}


def build_encoder(name: str, in_channels: int, embed_dim: int = 256, width: int = 16) -> Encoder3d:
    """A freshly initialised encoder of family ``name`` (one of ``ENCODERS``)."""
    if name not in ENCODERS:
        raise ModelError(f"encoder {name!r} is unknown; choose one of {sorted(ENCODERS)}")
    if in_channels < 1 or embed_dim < 1 or width < 1:
        raise ModelError(f"encoder {name!r}: in_channels={in_channels}, embed_dim={embed_dim}, width={width} "
                         "must all be >= 1")
    return ENCODERS[name](in_channels, embed_dim=embed_dim, width=width)


def build_from_arch(arch: dict[str, Any]) -> Encoder3d:
    return build_encoder(arch["name"], arch["in_channels"], arch["embed_dim"], arch["width"])
