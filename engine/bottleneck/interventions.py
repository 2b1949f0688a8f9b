"""Concept interventions on a latent w ([B, num_ws, w_dim] for StyleGAN2, [B, C, H, W] for a DDPM UNet).

swap (CB-AE only): the original's edit. E(w) -> in each edited concept's logit group the target
    value takes the group's maximum (swap_logits) -> D -> w'. Several concepts compose.
optimize: signed-gradient steps on a perturbation delta of the latent, inside the L-inf ball of
    radius eps, that drive the encoder's prediction to the targets (cross-entropy, summed over
    the edited concepts). Where it acts:
      CC, or CB-AE with on="latent": the edit is w + delta, judged by E(w + delta);
      CB-AE with on="decoder": the edit is D(E(w + delta)), judged by E of that decoded latent.
    The original replaces the perturbation each step (delta = -eps * sign(grad) at the current
    point); here it accumulates, projected gradient descent with step size `step` (default
    2.5 * eps / iters, so the ball's boundary is reachable well before the last step), which
    reaches every point the original can and more. Samples whose encoder already gives every
    target a probability of at least `stop_at` stop moving, so edits stay as small as they need be.
alpha (both): the edited latent is blended with the reference, alpha * w' + (1 - alpha) * w, as the
    original does (alpha 1: the edit alone).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from engine.bottleneck.modules import Bottleneck, swap_logits
from engine.errors import UsageError

METHODS = ("swap", "optimize")
DEFAULT_EPS = 0.1  # the original's radius (CelebA-HQ StyleGAN2 w)
DEFAULT_EPS_DDPM = 1.0  # the original's radius on a DDPM UNet's mid-block latent
DEFAULT_STOP_AT = 0.99  # stop a sample once its targets reach this probability
TARGETS = ("decoder", "latent")


@dataclass(frozen=True)
class EditSettings:
    method: str = "swap"  # swap (CB-AE) | optimize (CB-AE or CC)
    eps: float | None = None  # optimize: L-inf radius of the perturbation, in latent units; None: the bottleneck's recommendation, else 0.1
    iters: int = 50  # optimize: signed-gradient steps
    step: float | None = None  # optimize: step size; None: 2.5 * eps / iters
    stop_at: float | None = None  # optimize: a sample stops once every target has at least this probability (1: never); None: the bottleneck's recommendation, else 0.99
    on: str = "decoder"  # optimize with a CB-AE: "decoder" (edit = D(E(w + delta))) or "latent" (edit = w + delta)
    alpha: float = 1.0  # blend of the edited latent with the original (1: edit only)

    def resolved(self, meta: dict | None, default_eps: float = None) -> "EditSettings":
        """eps / stop_at left at None filled in: what the bottleneck's checkpoint recommends (its
        "intervention" entry, set with train-cbae/train-cc --intervention-eps/--intervention-stop-at:
        latent units differ between generators, and an encoder-only CC is satisfied before the image
        has changed enough, so it should not stop early), else `default_eps` or DEFAULT_EPS (the original's: 0.1 on StyleGAN2 w, 1.0 on DDPM) and
        DEFAULT_STOP_AT."""
        from dataclasses import replace

        rec = (meta or {}).get("intervention") or {}
        eps = self.eps if self.eps is not None else float(rec.get("eps") or default_eps or DEFAULT_EPS)
        stop = self.stop_at if self.stop_at is not None else float(rec.get("stop_at") or DEFAULT_STOP_AT)
        return replace(self, eps=eps, stop_at=stop)

    def check(self, kind: str) -> None:
        if self.method not in METHODS:
            raise UsageError(f"--method must be one of {', '.join(METHODS)} (got {self.method!r})")
        if self.method == "swap" and kind != "cbae":
            raise UsageError("--method swap needs a CB-AE (--cbae); a CC edits with --method optimize")
        if self.on not in TARGETS:
            raise UsageError(f"--optimize-on must be one of {', '.join(TARGETS)} (got {self.on!r})")
        if self.eps is None or not self.eps > 0:
            raise UsageError(f"--eps must be positive (got {self.eps})")
        if self.iters < 1:
            raise UsageError(f"--iters must be at least 1 (got {self.iters})")
        if self.stop_at is not None and not 0.0 < self.stop_at <= 1.0:
            raise UsageError(f"--stop-at must be in (0, 1] (got {self.stop_at})")
        if self.step is not None and not self.step > 0:
            raise UsageError(f"--step must be positive (got {self.step})")
        if not 0.0 <= self.alpha <= 1.0:
            raise UsageError(f"--alpha must be in [0, 1] (got {self.alpha})")


def reference_latent(model: Bottleneck, w: torch.Tensor) -> torch.Tensor:
    """The un-edited latent a method is compared with: D(E(w)) for a CB-AE, w for a CC."""
    with torch.no_grad():
        return model.dec(model.enc(w)) if model.kind == "cbae" else w


def _targets(edits: list[tuple[int, int]], b: int, device) -> list[tuple[int, torch.Tensor]]:
    return [(k, torch.full((b,), int(v), dtype=torch.long, device=device)) for k, v in edits]


def edit_latent(model: Bottleneck, w: torch.Tensor, edits: list[tuple[int, int]], settings: EditSettings) -> torch.Tensor:
    """The edited latent [B, num_ws, w_dim] for (concept index, value) edits."""
    settings.check(model.kind)
    if not edits:
        raise UsageError("no edit given: pass --concept NAME --value V")
    model.eval()
    spec = model.spec
    for k, v in edits:
        spec.check_value(k, v)
    if settings.method == "swap":
        with torch.no_grad():
            logits = model.enc(w)
            for k, v in edits:
                logits = swap_logits(logits, spec, k, v)
            edited = model.dec(logits)
    else:
        edited = _optimize(model, w, edits, settings)
    if settings.alpha < 1.0:
        edited = settings.alpha * edited + (1.0 - settings.alpha) * w
    return edited


def _optimize(model: Bottleneck, w: torch.Tensor, edits: list[tuple[int, int]], s: EditSettings) -> torch.Tensor:
    spec = model.spec
    targets = _targets(edits, w.shape[0], w.device)
    through_decoder = model.kind == "cbae" and s.on == "decoder"
    step = s.step if s.step is not None else 2.5 * s.eps / s.iters
    w = w.detach()
    # ws layout: one perturbation [B, 1, w_dim] shared by all ws (w is one vector repeated); flat: the whole map
    delta = torch.zeros_like(w[:, :1, :]) if getattr(model, "layout", "ws") == "ws" else torch.zeros_like(w)
    per_sample = (-1,) + (1,) * (w.ndim - 1)
    active = torch.ones(w.shape[0], dtype=torch.bool, device=w.device)

    def latent_of(d: torch.Tensor) -> torch.Tensor:
        moved = w + d
        return model.dec(model.enc(moved)) if through_decoder else moved

    for _ in range(s.iters):
        delta.requires_grad_(True)
        logits = model.enc(latent_of(delta))
        losses = sum(F.cross_entropy(logits[:, spec.group(k)], t, reduction="none") for k, t in targets)  # [B]
        (grad,) = torch.autograd.grad(losses.sum(), delta)
        with torch.no_grad():
            probs = torch.stack([logits[:, spec.group(k)].softmax(dim=1).gather(1, t[:, None])[:, 0] for k, t in targets], dim=1)
            active &= ~(probs.min(dim=1).values >= (s.stop_at if s.stop_at is not None else DEFAULT_STOP_AT))
            if not bool(active.any()):
                break
            delta = (delta - step * grad.sign() * active.view(per_sample)).clamp_(-s.eps, s.eps)
    with torch.no_grad():
        return latent_of(delta.detach())
