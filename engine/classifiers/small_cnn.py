"""A small convolutional classifier for low-resolution images (toyfaces, 32-64 px)."""

from __future__ import annotations

import torch
import torch.nn as nn


class SmallCNN(nn.Module):
    """conv-BN-ReLU stages that halve the resolution, global average pooling, then a linear head."""

    def __init__(
        self,
        num_outputs: int = 2,  # logits: 2 for one binary concept, or one per concept (multi-label)
        width: int = 32,  # channels of the first stage (doubles per stage, capped at 4x)
        stages: int = 3,  # number of stride-2 stages
        in_channels: int = 3,  # image channels
    ):
        super().__init__()
        layers: list[nn.Module] = []
        ch = in_channels
        for i in range(stages):
            out = width * min(2**i, 4)
            layers += [
                nn.Conv2d(ch, out, 3, padding=1, bias=False), nn.BatchNorm2d(out), nn.ReLU(inplace=True),
                nn.Conv2d(out, out, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(out), nn.ReLU(inplace=True),
            ]
            ch = out
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(ch, num_outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, C, H, W] in [-1, 1] -> [B, num_outputs]
        return self.head(self.features(x).mean(dim=(2, 3)))
