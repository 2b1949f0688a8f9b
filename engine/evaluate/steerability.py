"""Steerability of concept edits, by the original project's protocol, plus side effects.

For each row (concept c, target value v) and N generated samples:
  reference image = the reconstruction g2(D(E(w))) for a CB-AE, the original g2(w) for a CC or a
                    latent-direction baseline; edited image = g2(edit(w));
  eligible        = the evaluator judges the reference NOT to have value v;
  steerability    = eligible samples whose edited image the evaluator judges to have v / eligible;
  negative rate   = samples whose reference had v and whose edit lost it / samples whose reference had v;
  side effects    = per other concept, the share of samples whose evaluator prediction flipped;
  mean pixel change = mean |edit - reference| over pixels, images in [0, 1].
Samples are drawn from a torch.Generator seeded by (seed, row), so every row and every method sees
the same latents for a given seed; memory stays constant in N (batches are reduced to counts).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from engine.errors import UsageError


@dataclass
class RowResult:
    concept: str
    value: int
    steerability: float | None  # None when no sample was eligible
    negative_rate: float | None  # None when no reference had the value
    eligible: int
    had_value: int
    samples: int
    side_effects: dict[str, float] = field(default_factory=dict)
    mean_side_effect: float = 0.0
    mean_pixel_change: float = 0.0

    def to_json(self) -> dict[str, Any]:
        r = lambda x: None if x is None else round(float(x), 4)  # noqa: E731
        return {"concept": self.concept, "value": self.value, "steerability": r(self.steerability), "negative_rate": r(self.negative_rate),
                "eligible": self.eligible, "had_value": self.had_value, "samples": self.samples,
                "side_effects": {k: r(v) for k, v in self.side_effects.items()}, "mean_side_effect": r(self.mean_side_effect),
                "mean_pixel_change": r(self.mean_pixel_change)}


def evaluator_predictions(evaluator: dict[str, Any], images: torch.Tensor) -> dict[str, torch.Tensor]:
    """{concept: predicted value [B] int64} from a classifier set {concept: (classifier, meta)}."""
    out = {}
    with torch.no_grad():
        for concept, (clf, _) in evaluator.items():
            out[concept] = clf(images).argmax(dim=1).cpu()
    return out


def evaluate_row(
    concept: str,  # the evaluator's and the editor's name of the concept
    value: int,
    *,
    sample_latents: Callable[[int, torch.Generator], torch.Tensor],  # (n, generator) -> w [n, num_ws, w_dim]
    reference: Callable[[torch.Tensor], torch.Tensor],  # w -> reference latent
    edit: Callable[[torch.Tensor], torch.Tensor],  # w -> edited latent
    g2: Callable[[torch.Tensor], torch.Tensor],  # latent -> image [B, C, H, W] in [-1, 1]
    evaluator: dict[str, Any],  # {concept: (classifier, meta)}
    samples: int,
    batch_size: int,
    generator: torch.Generator,
    on_batch: Callable[[int], None] | None = None,  # called with the samples done after each batch
    keep_examples: int = 0,  # keep this many (reference, edited, success) image pairs for grids
) -> tuple[RowResult, list[tuple[torch.Tensor, torch.Tensor, bool]]]:
    if concept not in evaluator:
        raise UsageError(f"the evaluator has no classifier for {concept} (it has {', '.join(evaluator)})")
    others = [c for c in evaluator if c != concept]
    eligible = success = had = lost = done = 0
    flips = {c: 0 for c in others}
    pixel_sum = 0.0
    examples: list[tuple[torch.Tensor, torch.Tensor, bool]] = []
    while done < samples:
        n = min(batch_size, samples - done)
        w = sample_latents(n, generator)
        ref_latent = reference(w)
        edit_latent = edit(w)
        with torch.no_grad():
            ref_img = g2(ref_latent)
            edit_img = g2(edit_latent)
        pr = evaluator_predictions(evaluator, ref_img)
        pe = evaluator_predictions(evaluator, edit_img)
        is_eligible = pr[concept] != value
        ok = is_eligible & (pe[concept] == value)
        eligible += int(is_eligible.sum())
        success += int(ok.sum())
        had_it = ~is_eligible
        had += int(had_it.sum())
        lost += int((had_it & (pe[concept] != value)).sum())
        for c in others:
            flips[c] += int((pr[c] != pe[c]).sum())
        pixel_sum += float(((edit_img - ref_img).abs() * 0.5).float().mean(dim=(1, 2, 3)).sum())
        for i in range(n):
            if len(examples) < keep_examples and bool(is_eligible[i]):
                examples.append((ref_img[i].cpu(), edit_img[i].cpu(), bool(ok[i])))
        done += n
        if on_batch is not None:
            on_batch(done)
    side = {c: flips[c] / samples for c in others}
    row = RowResult(
        concept=concept, value=int(value), steerability=success / eligible if eligible else None,
        negative_rate=lost / had if had else None, eligible=eligible, had_value=had, samples=samples, side_effects=side,
        mean_side_effect=sum(side.values()) / len(side) if side else 0.0, mean_pixel_change=pixel_sum / samples,
    )
    return row, examples
