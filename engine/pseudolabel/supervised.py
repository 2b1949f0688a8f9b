"""Supervised pseudo-labels: one trained binary classifier per concept.

Classifier sets come from `gencbm train-classifier` (ours, safetensors with metadata), the original
project's `{dataset}_{Concept}_{arch}_conclsf.pth` files, a stored set (`classifiers-celebahq-rn18`)
or a built-in toyfaces set (`toyfaces-pseudo`, `oracle`); see engine.classifiers.io.
"""

from __future__ import annotations

import os

import torch
import torch.nn as nn

from engine.errors import UsageError
from engine.pseudolabel.base import PseudoLabeler


class SupervisedLabeler(PseudoLabeler):
    source = "supervised"

    def __init__(self, classifiers: dict[str, nn.Module], name: str = ""):
        concepts = list(classifiers)
        super().__init__(concepts, [len(getattr(c, "class_names", [0, 1])) for c in classifiers.values()])
        self.classifiers = nn.ModuleList(classifiers.values())
        self.set_name = name
        self.requires_grad_(False).eval()

    def logits(self, images: torch.Tensor) -> list[torch.Tensor]:  # [B, 3, H, W] in [-1, 1] -> K x [B, n_k]
        return [clf(images) for clf in self.classifiers]

    def train(self, mode: bool = True):  # always in eval mode: BatchNorm statistics stay frozen
        return super().train(False)

    def describe(self) -> str:
        return f"supervised {self.set_name}".strip()


def load_supervised(set_name: str | os.PathLike, concepts: list[str] | None, device: str | torch.device = "cpu") -> SupervisedLabeler:
    """Classifiers for `concepts` (matched forgivingly against the set's concepts), in that order;
    None: every concept in the set."""
    from engine.classifiers.io import load_classifier_set

    found = load_classifier_set(set_name, device=device, concepts=concepts)
    if not found:
        raise UsageError(f"no classifiers in {set_name}")
    return SupervisedLabeler({c: clf for c, (clf, _) in found.items()}, name=str(set_name))
