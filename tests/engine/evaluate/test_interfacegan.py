"""The linear-direction baseline: boundary fitting, edits that cross it, and the boundary cache."""

from __future__ import annotations

import pytest
import torch

from engine.errors import UsageError
from engine.evaluate.interfacegan import fit_boundaries, fit_boundary


def test_fit_recovers_a_planted_direction():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(2000, 12, generator=g) * torch.linspace(0.5, 3, 12)
    true = torch.randn(12, generator=g)
    true /= true.norm()
    y = ((w @ true + 0.3) > 0).long()
    normal, offset, scale, acc = fit_boundary(w, y)
    assert float(normal @ true) > 0.97 and acc > 0.97 and scale > 0
    with pytest.raises(UsageError, match="same label"):
        fit_boundary(w, torch.zeros(2000, dtype=torch.long))


def test_edits_cross_the_boundary_and_the_cache_is_used(tmp_path, monkeypatch):
    monkeypatch.setenv("GENCBM_HOME", str(tmp_path))
    true = torch.tensor([1.0, -1.0, 0.5, 0.0]) / 1.5

    def sample(n, gen):
        return torch.randn(n, 4, generator=gen).unsqueeze(1).repeat(1, 3, 1)  # [n, num_ws 3, w_dim 4]

    def labels_of(w):  # "images" are the latents themselves here
        return (w[:, 0] @ true > 0).long()[:, None]

    kw = dict(sample_latents=sample, g2=lambda w: w, labels_of=labels_of, fit_samples=500, batch_size=100, seed=1,
              cache_key={"generator": "toy"})
    b, cached = fit_boundaries(["A"], **kw)
    assert not cached
    b2, cached = fit_boundaries(["A"], **kw)
    assert cached and torch.allclose(b2.normals, b.normals)
    w = sample(50, torch.Generator().manual_seed(5))
    for v in (0, 1):
        moved = b.edit(w, 0, v)
        assert moved.shape == w.shape
        assert (labels_of(moved)[:, 0] == v).float().mean() > 0.95
        assert torch.equal(moved[:, 0], moved[:, 2])
    # samples already beyond the margin on the target side do not move
    far = b.normals[0] * 10 * b.scales[0] - b.offsets[0] * b.normals[0]
    far = far.view(1, 1, 4).repeat(1, 3, 1)
    assert torch.allclose(b.edit(far, 0, 1), far)
    # a fixed strength moves every sample by the same amount
    moved = b.edit(w, 0, 1, strength=2.0)
    assert torch.allclose((moved - w)[:, 0] @ b.normals[0], torch.full((50,), 2.0 * float(b.scales[0])), atol=1e-4)
