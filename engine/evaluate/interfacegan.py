"""The usual alternative to a concept bottleneck: one linear direction per concept in w space.

InterFaceGAN (Shen et al., CVPR 2020) labels generated samples with a classifier, fits a linear
boundary in w space per binary concept and edits by moving w along the boundary's unit normal.
Here the boundary is an L2-regularised logistic regression on standardised w (full batch, LBFGS,
deterministic), fitted on `fit_samples` latents labelled by the pseudo-labeler; InterFaceGAN's
linear SVM and this agree on the direction for separable data and differ little otherwise.

An edit moves each sample to signed distance +margin (value 1) or -margin (value 0) from the
boundary, in units of the standard deviation of the projections seen while fitting: just far
enough to cross, never backwards (a sample already beyond the margin on the target side stays).
With a fixed `strength` every sample moves by strength standard deviations instead.

Boundaries are cached in the store (GENCBM_HOME/boundaries) per generator, labeler, concepts,
fitting sample count, seed and truncation.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from engine.errors import UsageError


@dataclass
class Boundaries:
    concepts: list[str]  # one boundary per binary concept
    normals: torch.Tensor  # [K, w_dim] unit normals (pointing to value 1)
    offsets: torch.Tensor  # [K] signed distance = w @ normal + offset
    scales: torch.Tensor  # [K] std of the projections over the fitting samples
    accuracy: list[float]  # training accuracy of each boundary

    def distance(self, w: torch.Tensor, k: int) -> torch.Tensor:  # w [B, w_dim] -> [B]
        return w @ self.normals[k].to(w) + self.offsets[k].to(w)

    def edit(self, w: torch.Tensor, k: int, value: int, margin: float = 1.0, strength: float | None = None) -> torch.Tensor:
        """w [B, num_ws, w_dim] moved along concept k's normal towards `value`."""
        n = self.normals[k].to(w)
        scale = float(self.scales[k])
        sign = 1.0 if value == 1 else -1.0
        if strength is not None:
            step = torch.full(w.shape[:1], sign * strength * scale, dtype=w.dtype, device=w.device)
        else:
            d = self.distance(w[:, 0], k)  # [B]
            step = (sign * margin * scale - d) * sign
            step = step.clamp(min=0.0) * sign
        return w + step[:, None, None] * n

    def to_tensors(self) -> dict[str, torch.Tensor]:
        return {"normals": self.normals.contiguous(), "offsets": self.offsets.contiguous(), "scales": self.scales.contiguous(),
                "accuracy": torch.tensor(self.accuracy)}

    @classmethod
    def from_tensors(cls, concepts: list[str], t: dict[str, torch.Tensor]) -> "Boundaries":
        return cls(concepts, t["normals"], t["offsets"], t["scales"], [float(a) for a in t["accuracy"]])


def fit_boundary(w: torch.Tensor, y: torch.Tensor, l2: float = 1e-3, iters: int = 200) -> tuple[torch.Tensor, torch.Tensor, float, float]:
    """(unit normal [D], offset, projection std, training accuracy) of a logistic boundary, w [N, D], y [N] in {0, 1}."""
    w = w.double()
    y = y.double()
    if y.min() == y.max():
        raise UsageError("every fitting sample has the same label: the concept cannot be separated (more --fit-samples?)")
    mu, sd = w.mean(0), w.std(0).clamp_min(1e-8)
    x = (w - mu) / sd
    coef = torch.zeros(x.shape[1], dtype=torch.float64, requires_grad=True)
    bias = torch.zeros((), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([coef, bias], lr=1.0, max_iter=iters, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(x @ coef + bias, y) + l2 * coef.square().sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        a = coef / sd  # back to raw w: logit = w @ a + (bias - mu @ a)
        b = bias - mu @ a
        norm = a.norm().clamp_min(1e-12)
        normal, offset = a / norm, b / norm
        proj = w @ normal + offset
        acc = float(((proj > 0).double() == y).double().mean())
        return normal.float(), offset.float(), float(proj.std()), acc


def boundary_cache_path(key: dict) -> Path:
    from engine.store.paths import home

    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:24]
    return home() / "boundaries" / f"{digest}.safetensors"


def fit_boundaries(
    concepts: list[str],
    *,
    sample_latents: Callable[[int, torch.Generator], torch.Tensor],  # (n, gen) -> w [n, num_ws, w_dim]
    g2: Callable[[torch.Tensor], torch.Tensor],
    labels_of: Callable[[torch.Tensor], torch.Tensor],  # images -> [B, K] int64 labels for `concepts`
    fit_samples: int,
    batch_size: int,
    seed: int,
    cache_key: dict | None = None,  # None: no caching
    progress: Callable[[int, int], None] | None = None,
) -> tuple[Boundaries, bool]:
    """(boundaries, whether they came from the cache)."""
    from safetensors.torch import load_file

    from engine.store.checkpoint import save_checkpoint

    path = boundary_cache_path({**cache_key, "concepts": concepts, "fit_samples": fit_samples, "seed": seed}) if cache_key else None
    if path is not None and path.exists():
        try:
            return Boundaries.from_tensors(concepts, load_file(str(path))), True
        except Exception:
            path.unlink(missing_ok=True)  # a damaged cache entry is refitted
    gen = torch.Generator().manual_seed(seed)
    ws, ys = [], []
    done = 0
    while done < fit_samples:
        n = min(batch_size, fit_samples - done)
        with torch.no_grad():
            w = sample_latents(n, gen)
            ys.append(labels_of(g2(w)).cpu())
        ws.append(w[:, 0].float().cpu())
        done += n
        if progress is not None:
            progress(done, fit_samples)
    W, Y = torch.cat(ws), torch.cat(ys)
    normals, offsets, scales, accs = [], [], [], []
    for k, name in enumerate(concepts):
        try:
            n, o, s, a = fit_boundary(W, Y[:, k])
        except UsageError as exc:
            raise UsageError(f"{name}: {exc}") from None
        normals.append(n)
        offsets.append(o)
        scales.append(s)
        accs.append(a)
    b = Boundaries(concepts, torch.stack(normals), torch.stack(offsets), torch.tensor(scales), accs)
    if path is not None:
        save_checkpoint(path, b.to_tensors(), {"kind": "interfacegan-boundaries", "concepts": concepts, **(cache_key or {})})
    return b, False
