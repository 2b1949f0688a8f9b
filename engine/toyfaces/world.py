"""The toyfaces world: how a latent z decides a face's concepts and nuisance factors.

A fixed hidden map, so that concepts are not axis-aligned in z:
1. u = R z with R a fixed random rotation (seeded);
2. concepts: c = L u[:8] is Gaussian with correlation matrix S = L L^T (a Gaussian copula);
   concept k is present when c_k < Phi^-1(prior_k), so P(concept k) = prior_k and concepts correlate
   as configured (defaults resemble CelebA: Male against Wearing_Lipstick and Heavy_Makeup,
   Smiling with Mouth_Slightly_Open);
3. nuisances: Phi(u[8 + j]) in (0, 1), monotone maps of further rotated coordinates.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch

CONCEPTS: tuple[str, ...] = (
    "Smiling",
    "Mouth_Slightly_Open",
    "Male",
    "Arched_Eyebrows",
    "Wearing_Lipstick",
    "Heavy_Makeup",
    "Eyeglasses",
    "Blond_Hair",
)

NUISANCES: tuple[str, ...] = (
    "skin_tone",  # light .. dark
    "face_width",  # narrow .. wide
    "face_height",  # short .. long
    "hair_colour",  # black .. brown .. auburn .. grey (non-blond)
    "hair_style",  # long .. bob (women); crew .. side part (men)
    "background_hue",  # hue of the background
    "background_light",  # brightness of the background
    "head_x",  # horizontal position
    "head_y",  # vertical position
    "head_scale",  # size
    "eye_colour",  # brown .. green .. blue
    "mouth_width",  # narrow .. wide mouth
)

# Marginal priors, close to CelebA's attribute frequencies (Eyeglasses raised from 6.5%: rare
# concepts would otherwise have too few samples in a 20k world).
DEFAULT_PRIORS: dict[str, float] = {
    "Smiling": 0.48,
    "Mouth_Slightly_Open": 0.48,
    "Male": 0.42,
    "Arched_Eyebrows": 0.27,
    "Wearing_Lipstick": 0.47,
    "Heavy_Makeup": 0.38,
    "Eyeglasses": 0.12,
    "Blond_Hair": 0.15,
}

# Correlations of the latent Gaussians behind the concepts (pairs not listed: 0).
DEFAULT_CORRELATIONS: dict[tuple[str, str], float] = {
    ("Male", "Wearing_Lipstick"): -0.85,
    ("Male", "Heavy_Makeup"): -0.75,
    ("Wearing_Lipstick", "Heavy_Makeup"): 0.7,
    ("Smiling", "Mouth_Slightly_Open"): 0.55,
    ("Male", "Arched_Eyebrows"): -0.45,
    ("Arched_Eyebrows", "Heavy_Makeup"): 0.3,
    ("Male", "Blond_Hair"): -0.3,
    ("Male", "Eyeglasses"): 0.15,
}


@dataclass(frozen=True)
class WorldConfig:
    z_dim: int = 32  # width of z (>= concepts + nuisances)
    seed: int = 20250611  # seed of the hidden rotation
    priors: tuple[tuple[str, float], ...] = tuple(DEFAULT_PRIORS.items())  # P(concept present)
    correlations: tuple[tuple[str, str, float], ...] = tuple((a, b, r) for (a, b), r in DEFAULT_CORRELATIONS.items())  # latent correlations

    def to_json(self) -> dict:
        return {"z_dim": self.z_dim, "seed": self.seed, "priors": [list(p) for p in self.priors], "correlations": [list(c) for c in self.correlations]}

    @classmethod
    def from_json(cls, data: dict) -> "WorldConfig":
        return cls(
            z_dim=int(data["z_dim"]), seed=int(data["seed"]),
            priors=tuple((str(k), float(v)) for k, v in data["priors"]),
            correlations=tuple((str(a), str(b), float(r)) for a, b, r in data["correlations"]),
        )

    def prior_vector(self) -> np.ndarray:
        p = dict(self.priors)
        missing = [c for c in CONCEPTS if c not in p]
        if missing:
            raise ValueError(f"priors missing for {', '.join(missing)}")
        v = np.array([p[c] for c in CONCEPTS], dtype=np.float64)
        if ((v <= 0) | (v >= 1)).any():
            raise ValueError("priors must be strictly between 0 and 1")
        return v

    def correlation_matrix(self) -> np.ndarray:
        idx = {c: i for i, c in enumerate(CONCEPTS)}
        s = np.eye(len(CONCEPTS))
        for a, b, r in self.correlations:
            if a not in idx or b not in idx or a == b:
                raise ValueError(f"bad correlation pair ({a}, {b})")
            if not -1 < r < 1:
                raise ValueError(f"correlation of ({a}, {b}) must be in (-1, 1)")
            s[idx[a], idx[b]] = s[idx[b], idx[a]] = r
        # Nearest positive-definite correlation matrix if the pairs are inconsistent.
        w, v = np.linalg.eigh(s)
        if w.min() < 1e-3:
            s = v @ np.diag(np.maximum(w, 1e-3)) @ v.T
            d = np.sqrt(np.diag(s))
            s = s / np.outer(d, d)
        return s


def _norm_ppf(p: np.ndarray) -> np.ndarray:
    """Inverse standard normal CDF, elementwise."""
    from statistics import NormalDist

    nd = NormalDist()
    return np.array([nd.inv_cdf(float(x)) for x in np.ravel(p)]).reshape(np.shape(p))


class World:
    """Maps z [B, z_dim] to concept labels [B, 8] (0/1) and nuisances [B, 12] in (0, 1)."""

    def __init__(self, config: WorldConfig = WorldConfig()):
        n_needed = len(CONCEPTS) + len(NUISANCES)
        if config.z_dim < n_needed:
            raise ValueError(f"z_dim must be at least {n_needed} (got {config.z_dim})")
        self.config = config
        rng = np.random.RandomState(config.seed)
        q, r = np.linalg.qr(rng.randn(config.z_dim, config.z_dim))
        q = q * np.sign(np.diag(r))[None, :]  # a uniformly random rotation
        self.rotation = torch.from_numpy(q).to(torch.float32)  # [z_dim, z_dim]
        self.chol = torch.from_numpy(np.linalg.cholesky(config.correlation_matrix())).to(torch.float32)  # [8, 8]
        self.thresholds = torch.from_numpy(_norm_ppf(config.prior_vector())).to(torch.float32)  # [8]

    @property
    def z_dim(self) -> int:
        return self.config.z_dim

    def rotated(self, z: torch.Tensor) -> torch.Tensor:  # [B, z_dim] -> [B, z_dim]
        """u = R z', z' = z scaled to unit root-mean-square, as StyleGAN2's mapping network sees it
        (its first step discards |z|, so the world must not depend on it)."""
        z = z.to(torch.float32)
        z = z * (z.square().mean(dim=1, keepdim=True) + 1e-8).rsqrt()
        return z @ self.rotation.T

    def concept_margins(self, z: torch.Tensor) -> torch.Tensor:  # [B, z_dim] -> [B, 8]
        """Signed distance of each concept's latent from its threshold; > 0 means present."""
        u = self.rotated(z)
        c = u[:, : len(CONCEPTS)] @ self.chol.T
        return self.thresholds - c

    def factors(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(concepts [B, 8] int64 in {0, 1}, nuisances [B, 12] float in (0, 1))."""
        if z.ndim != 2 or z.shape[1] != self.z_dim:
            raise ValueError(f"z must be [B, {self.z_dim}] (got {tuple(z.shape)})")
        u = self.rotated(z)
        concepts = (self.concept_margins(z) > 0).to(torch.int64)
        k = len(CONCEPTS)
        nuis = 0.5 * (1 + torch.erf(u[:, k : k + len(NUISANCES)] / math.sqrt(2)))
        return concepts, nuis


def z_for_indices(indices: Sequence[int], z_dim: int) -> torch.Tensor:
    """z for sample indices, as NVIDIA's seed convention: RandomState(index).randn(1, z_dim)."""
    rows = [np.random.RandomState(int(i)).randn(1, z_dim) for i in indices]
    return torch.from_numpy(np.concatenate(rows)).to(torch.float32) if rows else torch.zeros([0, z_dim])
