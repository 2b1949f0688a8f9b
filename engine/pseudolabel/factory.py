"""Build the pseudo-labeler a training run asks for."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from engine.errors import UsageError
from engine.pseudolabel.base import PseudoLabeler

SOURCES = ("supervised", "clipzs", "tipzs")


@dataclass(frozen=True)
class LabelerConfig:
    source: str = "supervised"  # supervised | clipzs | tipzs
    classifiers: str | None = None  # supervised: classifier set (name or folder)
    clip_model: str = "ViT-B-16"  # clipzs/tipzs: open_clip architecture
    clip_pretrained: str = "openai"  # clipzs/tipzs: pretrained tag (from the store) or a weights file
    prompts: tuple[str, ...] = ()  # clipzs/tipzs: overrides, "Concept=prompt for 0|prompt for 1"
    tip_dataset: str | None = None  # tipzs: labelled dataset for the cache
    tip_data_root: str | None = None  # tipzs: its folder (not needed for toyfaces)
    tip_shots: int = 128  # tipzs: labelled images per concept
    tip_alpha: float = 1.0  # tipzs: weight of the cache logits
    tip_beta: float = 5.5  # tipzs: sharpness of the cache affinities

    def check(self) -> None:
        if self.source not in SOURCES:
            raise UsageError(f"--pseudo-label must be one of {', '.join(SOURCES)} (got {self.source!r})")
        if self.tip_shots < 1:
            raise UsageError(f"--tip-shots must be >= 1 (got {self.tip_shots})")


def build_labeler(cfg: LabelerConfig, concepts: list[str] | None, device: torch.device) -> PseudoLabeler:
    """The labeler for `concepts` (None: every concept a supervised set has)."""
    cfg.check()
    if cfg.source == "supervised":
        if not cfg.classifiers:
            raise UsageError("--pseudo-label supervised needs --classifiers NAME|DIR")
        from engine.pseudolabel.supervised import load_supervised

        return load_supervised(cfg.classifiers, concepts, device)
    if not concepts:
        raise UsageError(f"--pseudo-label {cfg.source} needs the concepts: pass --concepts or --config")
    from engine.pseudolabel.clip import build_clipzs, build_tipzs, parse_prompt_overrides
    from engine.concepts import match_concept

    overrides = parse_prompt_overrides(list(cfg.prompts))
    prompts = {match_concept(k, concepts, what="concept in --prompt"): v for k, v in overrides.items()}
    if cfg.source == "clipzs":
        return build_clipzs(concepts, model_name=cfg.clip_model, pretrained=cfg.clip_pretrained, prompts=prompts, device=device)
    if not cfg.tip_dataset:
        raise UsageError("--pseudo-label tipzs needs --tip-dataset (and --data-root for real datasets)")
    return build_tipzs(concepts, dataset=cfg.tip_dataset, data_root=cfg.tip_data_root, shots=cfg.tip_shots,
                       alpha=cfg.tip_alpha, beta=cfg.tip_beta, model_name=cfg.clip_model, pretrained=cfg.clip_pretrained,
                       prompts=prompts, device=device)
