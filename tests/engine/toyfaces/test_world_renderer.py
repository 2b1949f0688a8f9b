"""The toyfaces world: deterministic factors, configured priors and correlations, visible concepts."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from engine.toyfaces import CONCEPTS, NUISANCES, World, WorldConfig, render, z_for_indices

N = 4000


@pytest.fixture(scope="module")
def world():
    return World()


@pytest.fixture(scope="module")
def sample(world):
    z = torch.from_numpy(np.random.RandomState(123).randn(N, world.z_dim)).float()
    return z, *world.factors(z)


def test_factors_shapes_and_ranges(sample):
    z, c, n = sample
    assert c.shape == (N, len(CONCEPTS)) and c.dtype == torch.int64
    assert set(c.unique().tolist()) <= {0, 1}
    assert n.shape == (N, len(NUISANCES))
    assert float(n.min()) > 0 and float(n.max()) < 1


def test_priors_match_config(sample):
    _, c, _ = sample
    priors = WorldConfig().prior_vector()
    freq = c.float().mean(0).numpy()
    assert np.abs(freq - priors).max() < 0.035, dict(zip(CONCEPTS, freq.round(3)))


def test_default_correlations_resemble_celeba(sample):
    _, c, _ = sample
    corr = np.corrcoef(c.float().numpy().T)
    i = {k: j for j, k in enumerate(CONCEPTS)}
    assert corr[i["Male"], i["Wearing_Lipstick"]] < -0.5
    assert corr[i["Male"], i["Heavy_Makeup"]] < -0.4
    assert corr[i["Smiling"], i["Mouth_Slightly_Open"]] > 0.25
    assert abs(corr[i["Eyeglasses"], i["Smiling"]]) < 0.08  # unrelated pairs stay independent


def test_priors_and_correlations_are_configurable():
    cfg = WorldConfig(priors=tuple((k, 0.5) for k in CONCEPTS), correlations=(("Smiling", "Eyeglasses", 0.8),))
    w = World(cfg)
    z = torch.from_numpy(np.random.RandomState(7).randn(N, w.z_dim)).float()
    c, _ = w.factors(z)
    assert np.abs(c.float().mean(0).numpy() - 0.5).max() < 0.04
    corr = np.corrcoef(c.float().numpy().T)
    assert corr[CONCEPTS.index("Smiling"), CONCEPTS.index("Eyeglasses")] > 0.45
    with pytest.raises(ValueError):
        WorldConfig(priors=(("Smiling", 1.5),)).prior_vector()


def test_concepts_are_not_axis_aligned_in_z(sample):
    z, c, _ = sample
    # No single z coordinate predicts a concept well: the hidden map rotates before thresholding.
    for k in range(len(CONCEPTS)):
        best = max(abs(np.corrcoef(z[:, j].numpy(), c[:, k].float().numpy())[0, 1]) for j in range(z.shape[1]))
        assert best < 0.75


def test_factors_ignore_the_norm_of_z(world):
    z = torch.randn(64, world.z_dim)
    c1, n1 = world.factors(z)
    c2, n2 = world.factors(z * 1.7)
    assert torch.equal(c1, c2)
    assert torch.allclose(n1, n2, atol=1e-5)


def test_z_for_indices_follows_the_seed_convention():
    z = z_for_indices([0, 5], 32)
    assert torch.allclose(z[1], torch.from_numpy(np.random.RandomState(5).randn(1, 32)[0]).float())


def test_render_is_deterministic_and_in_range(sample):
    _, c, n = sample
    a = render(c[:16], n[:16], 32)
    b = render(c[:16], n[:16], 32)
    assert a.shape == (16, 3, 32, 32)
    assert torch.equal(a, b)
    assert float(a.min()) >= -1 and float(a.max()) <= 1


@pytest.mark.parametrize("concept", CONCEPTS)
def test_each_concept_changes_the_image_visibly(sample, concept):
    _, c, n = sample
    k = CONCEPTS.index(concept)
    c0 = c[:32].clone()
    c1 = c[:32].clone()
    c0[:, k] = 0
    c1[:, k] = 1
    diff = (render(c1, n[:32], 32) - render(c0, n[:32], 32)).abs()
    changed = (diff.amax(dim=1) > 0.25).float().sum(dim=(1, 2))  # pixels that changed clearly
    assert float(changed.min()) >= 6, f"{concept}: some faces change in fewer than 6 pixels"


def test_nuisances_change_the_image(sample):
    _, c, n = sample
    for j, name in enumerate(NUISANCES):
        lo, hi = n[:8].clone(), n[:8].clone()
        lo[:, j], hi[:, j] = 0.05, 0.95
        assert (render(c[:8], hi, 32) - render(c[:8], lo, 32)).abs().max() > 0.1, name


def test_render_rejects_bad_shapes():
    with pytest.raises(ValueError):
        render(torch.zeros(2, 3), torch.zeros(2, len(NUISANCES)))
    with pytest.raises(ValueError):
        render(torch.zeros(2, len(CONCEPTS)), torch.zeros(3, len(NUISANCES)))
