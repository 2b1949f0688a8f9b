"""The interface every pseudo-label source implements.

A pseudo-labeler judges generated images [B, 3, H, W] in [-1, 1] (the generator's range) on a list
of concepts, each with `num_classes[k]` values (2 for a binary concept: value 0 = absent, 1 =
present). `logits` is differentiable (the intervention loss back-propagates through it into the
bottleneck); `label` gives hard labels and the top-1 probability, used with a threshold to decide
which pseudo-labels are trusted (the original's `pl_prob_thresh`).
"""

from __future__ import annotations

import torch
import torch.nn as nn


class PseudoLabeler(nn.Module):
    """Base class: subclasses set `concepts`, `num_classes` and implement `logits`."""

    source: str = ""  # "supervised", "clipzs" or "tipzs"

    def __init__(self, concepts: list[str], num_classes: list[int]):
        super().__init__()
        if len(concepts) != len(num_classes):
            raise ValueError("concepts and num_classes differ in length")
        self.concepts = list(concepts)  # names, in the bottleneck's order
        self.num_classes = [int(n) for n in num_classes]  # values per concept

    def logits(self, images: torch.Tensor) -> list[torch.Tensor]:  # [B, 3, H, W] in [-1, 1] -> K x [B, n_k]
        raise NotImplementedError

    @torch.no_grad()
    def label(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(top-1 probability [B, K] float, label [B, K] int64), without gradients."""
        probs = [lg.float().softmax(dim=-1) for lg in self.logits(images)]
        top = [p.max(dim=-1) for p in probs]
        return torch.stack([t.values for t in top], dim=1), torch.stack([t.indices for t in top], dim=1)

    @torch.no_grad()
    def probabilities(self, images: torch.Tensor) -> list[torch.Tensor]:  # K x [B, n_k]
        return [lg.float().softmax(dim=-1) for lg in self.logits(images)]

    def describe(self) -> str:
        return self.source
