"""A binary concept classifier: a network plus the input conventions it was trained with.

`ConceptClassifier(images)` takes images in [-1, 1] (what generators produce and gencbm datasets
yield after `to_unit_range`), maps them to [0, 1], resizes to the network's input size when they
differ, normalises with the training mean/std (ImageNet's for torchvision networks, as the original
project) and returns logits [B, 2] for ("not X", "X"). `predict_proba` gives P(X) [B].

Resizing follows the original project: bicubic for ResNets (its supervised pseudo-labeler),
bilinear for ViT-L/16 (its evaluation classifier), antialiased when shrinking.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from engine.errors import UsageError


class ConceptClassifier(nn.Module):
    """Wraps `net` (state-dict layout of the original project: its keys are `net.`-free when saved)."""

    def __init__(
        self,
        net: nn.Module,  # the network: normalised images [B, 3, S, S] -> logits [B, num_outputs]
        *,
        arch: str,  # resnet18, resnet50, vit_l_16 or small-cnn
        input_size: int,  # S, the side the network was trained at
        mean: Sequence[float],  # per-channel mean of the [0, 1] input normalisation
        std: Sequence[float],  # per-channel std of the [0, 1] input normalisation
        resize_mode: str = "bilinear",  # interpolation when images are not S x S
        concept: str = "",  # the concept's name
        class_names: Sequence[str] = (),  # names of the logits, ["not X", "X"]
    ):
        super().__init__()
        self.net = net
        self.arch = arch
        self.input_size = int(input_size)
        self.resize_mode = resize_mode
        self.concept = concept
        self.class_names = list(class_names) or [f"not {concept}", concept]
        self.register_buffer("mean", torch.tensor(list(mean), dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32).view(1, 3, 1, 1), persistent=False)

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:  # [B, 3, H, W] in [-1, 1] -> [B, 3, S, S] normalised
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be [B, 3, H, W] (got {tuple(images.shape)})")
        x = images.to(device=self.mean.device, dtype=torch.float32)
        s = self.input_size
        if x.shape[-2:] != (s, s):
            shrink = x.shape[-1] > s or x.shape[-2] > s
            mode = self.resize_mode if self.resize_mode in ("bilinear", "bicubic") else "bilinear"
            x = F.interpolate(x, size=(s, s), mode=mode, align_corners=False, antialias=shrink)
            if mode == "bicubic":
                x = x.clamp(-1, 1)
        x = (x + 1) * 0.5  # [0, 1]
        return (x - self.mean) / self.std

    def forward(self, images: torch.Tensor) -> torch.Tensor:  # [B, 3, H, W] in [-1, 1] -> logits [B, num_outputs]
        return self.net(self.preprocess(images))

    def predict_proba(self, images: torch.Tensor) -> torch.Tensor:  # [B, 3, H, W] in [-1, 1] -> P(concept) [B]
        """Probability of the concept ("X", logit 1). Gradients flow; wrap in torch.no_grad() when not needed."""
        logits = self(images)
        if logits.shape[-1] != 2:
            raise UsageError(f"{self.concept}: predict_proba needs a binary classifier (this one has {logits.shape[-1]} classes)")
        return logits.softmax(dim=-1)[:, 1]

    def extra_repr(self) -> str:
        return f"concept={self.concept!r}, arch={self.arch}, input_size={self.input_size}"


def predict_proba(classifier: ConceptClassifier, images: torch.Tensor, batch_size: int | None = None) -> torch.Tensor:
    """P(concept) [B] for images [B, 3, H, W] in [-1, 1], without gradients, in batches if asked."""
    classifier.eval()
    with torch.no_grad():
        if batch_size is None or images.shape[0] <= batch_size:
            return classifier.predict_proba(images).float().cpu()
        return torch.cat([classifier.predict_proba(images[i : i + batch_size]).float().cpu()
                          for i in range(0, images.shape[0], batch_size)])


def classifier_from_meta(net: nn.Module, meta: dict[str, Any]) -> ConceptClassifier:
    norm = meta.get("normalize") or {}
    return ConceptClassifier(
        net, arch=str(meta["arch"]), input_size=int(meta["input_size"]), mean=norm.get("mean", (0.485, 0.456, 0.406)),
        std=norm.get("std", (0.229, 0.224, 0.225)), resize_mode=str(meta.get("resize_mode", "bilinear")),
        concept=str(meta.get("concept", "")), class_names=meta.get("class_names") or (),
    )
