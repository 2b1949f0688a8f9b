"""The shipped toyfaces artifacts: present, small, and as accurate as promised on rendered faces."""

from __future__ import annotations

import pytest
import torch

from engine.toyfaces import CONCEPTS, World, render, z_for_indices
from engine.toyfaces.builtin import CLASSIFIER_SETS, WEIGHTS_DIR, builtin_classifier_set


def test_everything_shipped_stays_under_10_mb():
    total = sum(p.stat().st_size for p in WEIGHTS_DIR.rglob("*") if p.is_file())
    assert total < 10 * 2**20, f"{total / 2**20:.1f} MB shipped"


@pytest.mark.parametrize("name", sorted(CLASSIFIER_SETS))
def test_builtin_classifier_sets_are_accurate_on_rendered_test_faces(name):
    from engine.classifiers.concept import predict_proba
    from engine.classifiers.io import load_classifier_set

    cset = load_classifier_set(name)
    assert sorted(cset) == sorted(CONCEPTS)
    world = World()
    z = z_for_indices(range(1_000_000, 1_000_600), world.z_dim)  # the test split's first samples
    concepts, nuisances = world.factors(z)
    images = render(concepts, nuisances, 32)
    for concept, (clf, meta) in cset.items():
        p = predict_proba(clf, images, batch_size=300)
        acc = float(((p > 0.5).long() == concepts[:, CONCEPTS.index(concept)]).float().mean())
        assert acc >= 0.98, f"{name}/{concept}: {acc:.3f}"


def test_unknown_builtin_is_none():
    assert builtin_classifier_set("not-a-set") is None


def test_builtin_toy_generator_draws_its_ground_truth():
    """On 1,000 toy-generator samples the independent oracle reads back each image's ground-truth
    concepts on at least 95% of images, for every concept (the world is sound)."""
    from engine.classifiers.concept import predict_proba
    from engine.classifiers.io import load_classifier_set
    from engine.generators import load_generator
    from engine.generators.stylegan2 import z_from_seeds

    G = load_generator("toyfaces")
    assert (G.z_dim, G.img_resolution) == (32, 32)
    oracle = load_classifier_set("oracle")
    world = World()
    z = z_from_seeds(range(10_000, 11_000), G.z_dim)
    truth = world.factors(z)[0]
    with torch.no_grad():
        images = torch.cat([G(z[i : i + 250], None, noise_mode="const") for i in range(0, 1000, 250)])
    for concept, (clf, _) in oracle.items():
        agree = float(((predict_proba(clf, images, batch_size=500) > 0.5).long() == truth[:, CONCEPTS.index(concept)]).float().mean())
        assert agree >= 0.95, f"{concept}: oracle agrees with ground truth on {agree:.1%}"
