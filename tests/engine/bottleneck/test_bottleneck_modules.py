"""CB-AE / CC modules, the concept layout and the logit swap."""

from __future__ import annotations

import pytest
import torch

from engine.bottleneck import CBAE, CC, ConceptSpec, swap_logits
from engine.errors import UsageError

SPEC = ConceptSpec(names=("Smiling", "Male", "Hair"), sizes=(2, 2, 3), unknown=4)


def test_spec_layout_and_forgiving_names():
    assert SPEC.total == 11 and SPEC.concept_dims == 7
    assert [SPEC.group(k) for k in range(3)] == [slice(0, 2), slice(2, 4), slice(4, 7)]
    assert SPEC.index("smiling") == 0 and SPEC.index("MALE") == 1
    with pytest.raises(UsageError, match="did you mean 'Smiling'"):
        SPEC.index("smilin")
    assert SPEC.check_value(2, 2) == 2
    with pytest.raises(UsageError, match=r"0\.\.1"):
        SPEC.check_value(0, 2)
    assert ConceptSpec.from_json(SPEC.to_json()) == SPEC


def test_spec_rejects_bad_layouts():
    with pytest.raises(UsageError):
        ConceptSpec(names=("A", "A"), sizes=(2, 2))
    with pytest.raises(UsageError):
        ConceptSpec(names=("A",), sizes=(1,))
    with pytest.raises(UsageError):
        ConceptSpec(names=(), sizes=())


def test_original_aliases_match():
    spec = ConceptSpec(names=("Smiling", "Male"), sizes=(2, 2), aliases=("smiling", "gender"))
    assert spec.index("gender") == 1


def test_key_layout_is_the_original_one():
    m = CBAE(SPEC, w_dim=16, num_ws=6)
    keys = set(m.state_dict())
    for part in ("encoder", "decoder"):
        for i in (0, 3, 6, 9):
            assert f"{part}.{i}.weight" in keys and f"{part}.{i}.bias" in keys
        for i in (2, 5, 8):
            assert f"{part}.{i}.running_mean" in keys
    assert m.encoder[9].out_features == SPEC.total and m.decoder[0].in_features == SPEC.total
    assert not any(k.startswith("decoder") for k in CC(SPEC, 16, 6).state_dict())
    # initialisation: zero biases, BatchNorm scales near 1
    assert float(m.encoder[0].bias.abs().max()) == 0.0
    assert abs(float(m.encoder[2].weight.mean()) - 1.0) < 0.05


def test_shapes_and_repeat():
    m = CBAE(SPEC, w_dim=16, num_ws=6, hidden=24, depth=2).eval()
    w = torch.randn(5, 6, 16)
    logits = m.enc(w)
    assert logits.shape == (5, SPEC.total)
    out = m.dec(logits)
    assert out.shape == (5, 6, 16)
    assert torch.equal(out[:, 0], out[:, 5])
    # the encoder reads the mean over ws
    assert torch.allclose(m.enc(w), m.enc(w.mean(dim=1, keepdim=True).expand(-1, 6, -1)), atol=1e-6)
    with pytest.raises(ValueError):
        m.enc(torch.randn(5, 7, 16))
    probs = m.concept_probs(logits)
    assert [p.shape[1] for p in probs] == [2, 2, 3]


def test_swap_puts_the_target_on_top_and_keeps_the_values():
    logits = torch.tensor([[3.0, -1.0, 0.5, 0.1, 2.0, 5.0, -2.0, 0, 0, 0, 0],
                           [-1.0, 3.0, 0.5, 0.1, 2.0, 5.0, -2.0, 0, 0, 0, 0]])
    out = swap_logits(logits, SPEC, 0, 1)
    assert out[0, :2].tolist() == [-1.0, 3.0]  # swapped
    assert out[1, :2].tolist() == [-1.0, 3.0]  # already the winner: unchanged
    assert torch.equal(out[:, 2:], logits[:, 2:])
    out = swap_logits(logits, SPEC, 2, 0)  # categorical: 5.0 (value 1) trades with value 0
    assert out[0, 4:7].tolist() == [5.0, 2.0, -2.0]
    per_sample = swap_logits(logits, SPEC, 0, torch.tensor([1, 0]))
    assert per_sample[:, :2].argmax(dim=1).tolist() == [1, 0]
    assert torch.equal(logits[0, :2], torch.tensor([3.0, -1.0]))  # input untouched
