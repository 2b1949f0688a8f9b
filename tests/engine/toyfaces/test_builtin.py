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
