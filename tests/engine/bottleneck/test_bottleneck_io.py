"""Our bottleneck checkpoints and the original project's .pt files with their YAML configs."""

from __future__ import annotations

import pickle

import pytest
import torch
import torch.nn.functional as F

from engine.bottleneck import CBAE, CC, ConceptSpec, swap_logits
from engine.bottleneck.io import load_bottleneck, read_original_config, save_bottleneck
from engine.errors import CorruptFileError, UsageError
from engine.store.checkpoint import GeneratorIdentity

ORIG_NAMES = ["attractive", "lipstick", "mouth-closed", "smiling", "cheekbones", "makeup", "gender", "eyebrows"]


def _yaml(path, *, kind="cbae", unknown=10, w_dim=32, num_ws=6):
    names = ORIG_NAMES + (["unknown"] if unknown else [])
    outputs = [2] * 8 + ([unknown] if unknown else [])
    path.write_text(f"""dataset:
  name: celebahq
  batch_size: 32
model:
  pretrained: models/checkpoints/stylegan2-celebahq-256x256.pkl
  type: {kind}_stygan2
  latent_noise_dim: {w_dim}
  input_latent_dim: 10
  has_concepts: True
  num_ws: {num_ws}
  concepts:
      concept_bins: {outputs}
      concept_names: {names}
      concept_output: {outputs}
      types: {["bin"] * 8 + (["cat"] if unknown else [])}
      emb_size: 16
train_config:
  epochs: 50
  conc_lr: 0.0002
  betas: (.5, .99)
  steps_per_epoch: 1000
  pl_prob_thresh: 0.9
""")
    return path


def _original_like(kind, total, w_dim=32, seed=0):
    """A module with the original's layout and random weights/statistics, as its training saves it."""
    torch.manual_seed(seed)
    spec = ConceptSpec(names=tuple(f"c{i}" for i in range(8)), sizes=(2,) * 8, unknown=total - 16)
    m = (CBAE if kind == "cbae" else CC)(spec, w_dim, 6)
    with torch.no_grad():
        for name, t in m.state_dict().items():
            if "running_var" in name:
                t.copy_(torch.rand_like(t) + 0.5)
            elif "running_mean" in name:
                t.copy_(torch.randn_like(t) * 0.1)
    return m.state_dict()


def _reference_original(state, w, k, v):
    """The original code's computation, written out from its description: mean over ws, Linear,
    LeakyReLU(0.1), BatchNorm1d (eval) blocks, a swap in concept k's group, the mirrored decoder,
    the result repeated num_ws times."""
    def mlp(prefix, x, n_blocks):
        for b in range(n_blocks):
            i = 3 * b
            x = F.linear(x, state[f"{prefix}.{i}.weight"], state[f"{prefix}.{i}.bias"])
            x = F.leaky_relu(x, 0.1)
            x = F.batch_norm(x, state[f"{prefix}.{i + 2}.running_mean"], state[f"{prefix}.{i + 2}.running_var"],
                             state[f"{prefix}.{i + 2}.weight"], state[f"{prefix}.{i + 2}.bias"], False, 0.0, 1e-5)
        i = 3 * n_blocks
        return F.linear(x, state[f"{prefix}.{i}.weight"], state[f"{prefix}.{i}.bias"])

    logits = mlp("encoder", w.mean(dim=1), 3)
    probs = [logits[:, 2 * j : 2 * j + 2].softmax(dim=1) for j in range(8)]
    c = logits.clone()
    grp = c[:, 2 * k : 2 * k + 2]
    for i in range(c.shape[0]):
        old = grp[i, v].clone()
        mx, idx = grp[i].max(dim=0)
        grp[i, v] = mx
        grp[i, idx] = old if int(idx) != v else mx
    if "decoder.0.weight" not in state:
        return probs, None
    out = mlp("decoder", c, 3).unsqueeze(1).repeat(1, w.shape[1], 1)
    return probs, out


def test_read_original_config_maps_names(tmp_path):
    cfg = read_original_config(_yaml(tmp_path / "celebahq.yaml"))
    assert cfg.spec.names == ("Attractive", "Wearing_Lipstick", "Mouth_Slightly_Open", "Smiling", "High_Cheekbones",
                              "Heavy_Makeup", "Male", "Arched_Eyebrows")
    assert cfg.spec.unknown == 10 and cfg.spec.total == 26
    assert cfg.betas == (0.5, 0.99) and cfg.pl_prob_thresh == 0.9 and cfg.num_ws == 6 and cfg.kind == "cbae"
    assert cfg.steps == 50_000
    assert cfg.spec.index("gender") == cfg.spec.index("Male") == 6


def test_bad_config_is_a_usage_error(tmp_path):
    (tmp_path / "x.yaml").write_text("model: {}\n")
    with pytest.raises(UsageError, match="x.yaml"):
        read_original_config(tmp_path / "x.yaml")
    with pytest.raises(UsageError, match="no such config"):
        read_original_config(tmp_path / "missing.yaml")


@pytest.mark.parametrize("kind", ["cbae", "cc"])
def test_original_checkpoint_with_yaml_reproduces_the_original_computation(tmp_path, kind):
    state = _original_like(kind, total=26)
    ckpt = tmp_path / f"celebahq_{kind}_stygan2_thr90_sup_pl_cls8_{kind}_custom.pt"
    torch.save(state, ckpt)
    model, meta = load_bottleneck(ckpt, config=_yaml(tmp_path / "c.yaml", kind=kind), kind=kind)
    assert meta["format"] == "original" and model.kind == kind
    w = torch.randn(4, 1, 32).repeat(1, 6, 1)
    k = model.spec.index("Smiling")
    ref_probs, ref_edit = _reference_original(state, w, k, 1)
    with torch.no_grad():
        logits = model.enc(w)
        for j, p in enumerate(model.concept_probs(logits)):
            assert torch.allclose(p, ref_probs[j], atol=1e-5)
        if kind == "cbae":
            edit = model.dec(swap_logits(logits, model.spec, k, 1))
            assert torch.allclose(edit, ref_edit, atol=1e-5)


def test_published_file_name_needs_no_yaml(tmp_path):
    """The registry knows the published CB-AE's concepts (8 x 2 logits + 40 unknown)."""
    state = _original_like("cbae", total=56, w_dim=32)
    ckpt = tmp_path / "celebahq_cbae_stygan2_thr90_sup_pl_cls8_cbae.pt"
    torch.save(state, ckpt)
    model, meta = load_bottleneck(ckpt, num_ws=6)
    assert model.spec.unknown == 40 and model.spec.names[3] == "Smiling"
    assert model.spec.index("lipstick") == 1


def test_original_checkpoint_errors(tmp_path):
    state = _original_like("cbae", total=26)
    ckpt = tmp_path / "mine_cbae.pt"
    torch.save(state, ckpt)
    with pytest.raises(UsageError, match="--config"):
        load_bottleneck(ckpt, num_ws=6)
    with pytest.raises(UsageError, match="30"):  # the config says 8 x 2 + 14 = 30 logits
        load_bottleneck(ckpt, config=_yaml(tmp_path / "c.yaml", unknown=14))
    with pytest.raises(UsageError, match="not a cc"):
        load_bottleneck(ckpt, config=_yaml(tmp_path / "c2.yaml"), kind="cc")
    junk = tmp_path / "junk_cbae.pt"
    junk.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CorruptFileError):
        load_bottleneck(junk, config=_yaml(tmp_path / "c3.yaml"))
    evil = tmp_path / "evil_cbae.pt"

    class Boom:
        def __reduce__(self):
            return (print, ("executed",))

    with open(evil, "wb") as f:
        pickle.dump({"encoder.0.weight": Boom()}, f)
    with pytest.raises(CorruptFileError):
        load_bottleneck(evil, config=_yaml(tmp_path / "c4.yaml"))
    wrong = tmp_path / "wrong_cbae.pt"
    torch.save({"foo.weight": torch.zeros(2)}, wrong)
    with pytest.raises(CorruptFileError, match="not a CB-AE/CC"):
        load_bottleneck(wrong, config=_yaml(tmp_path / "c5.yaml"))


def test_our_checkpoint_round_trips_and_checks_the_generator(tmp_path):
    spec = ConceptSpec.binary(["Smiling", "Male"], unknown=3)
    m = CBAE(spec, 16, 4, hidden=20, depth=2).eval()
    ident = GeneratorIdentity("toy", "ab" * 32)
    path = save_bottleneck(tmp_path / "m.safetensors", m, generator=ident, training={"steps": 3})
    loaded, meta = load_bottleneck(path, generator=ident)
    assert meta["kind"] == "cbae" and meta["training"] == {"steps": 3}
    w = torch.randn(3, 4, 16)
    with torch.no_grad():
        assert torch.equal(loaded(w), m(w))
    other = GeneratorIdentity("other", "cd" * 32)
    from engine.store.checkpoint import GeneratorMismatchError

    with pytest.raises(GeneratorMismatchError, match="--force"):
        load_bottleneck(path, generator=other)
    with pytest.warns(UserWarning):
        load_bottleneck(path, generator=other, force=True)


# ------------------------------------------------------------------------------------------------
# The original DDPM CB-AE (cbae_unet2d): latent [512, 8, 8] flattened, hidden 512, 8 concepts + 40 unknown.


def _ddpm_yaml(path, *, unknown=40, hidden=512, shape=(512, 8, 8)):
    names = ORIG_NAMES + ["unknown"]
    outputs = [2] * 8 + [unknown]
    path.write_text(f"""dataset:
  name: celebahq
  batch_size: 64
model:
  pretrained: google/ddpm-celebahq-256
  type: cbae_ddpm
  latent_shape: {list(shape)}
  latent_noise_dim: {hidden}
  max_timestep: 400
  concepts:
      concept_bins: {outputs}
      concept_names: {names}
      concept_output: {outputs}
      types: {["bin"] * 8 + ["cat"]}
train_config:
  epochs: 50
  recon_lr: 0.0002
  conc_lr: 0.0002
  betas: (.5, .99)
  pl_prob_thresh: 0.9
""")
    return path


def _original_ddpm_state(seed=0, shape=(512, 8, 8), hidden=512, total=56):
    """A state dict in the original's DDPM CB-AE layout (Linear/LeakyReLU/BatchNorm1d x3, both ways), random statistics."""
    torch.manual_seed(seed)
    n = shape[0] * shape[1] * shape[2]
    state = {}
    for part, widths in (("encoder", [n, hidden, hidden, hidden, total]), ("decoder", [total, hidden, hidden, hidden, n])):
        for i in range(4):
            state[f"{part}.{3 * i}.weight"] = torch.randn(widths[i + 1], widths[i]) / widths[i] ** 0.5
            state[f"{part}.{3 * i}.bias"] = torch.randn(widths[i + 1]) * 0.01
            if i < 3:
                state[f"{part}.{3 * i + 2}.weight"] = torch.rand(hidden) + 0.5
                state[f"{part}.{3 * i + 2}.bias"] = torch.randn(hidden) * 0.1
                state[f"{part}.{3 * i + 2}.running_mean"] = torch.randn(hidden) * 0.1
                state[f"{part}.{3 * i + 2}.running_var"] = torch.rand(hidden) + 0.5
                state[f"{part}.{3 * i + 2}.num_batches_tracked"] = torch.tensor(1000)
    return state


def _by_hand(state, part, x):
    for i in range(4):
        x = F.linear(x, state[f"{part}.{3 * i}.weight"], state[f"{part}.{3 * i}.bias"])
        if i < 3:
            x = F.leaky_relu(x, 0.1)
            p = f"{part}.{3 * i + 2}"
            x = F.batch_norm(x, state[p + ".running_mean"], state[p + ".running_var"], state[p + ".weight"], state[p + ".bias"], False)
    return x


def test_original_ddpm_cbae_loads_with_its_yaml_and_computes_as_the_original(tmp_path):
    state = _original_ddpm_state()
    ckpt = tmp_path / "celebahq_cbae_ddpm_mine_cbae.pt"
    torch.save(state, ckpt)
    model, meta = load_bottleneck(ckpt, config=_ddpm_yaml(tmp_path / "celebahq.yaml"), kind="cbae")
    assert model.layout == "flat" and model.latent_shape == (512, 8, 8) and model.hidden == 512
    assert model.spec.unknown == 40 and model.spec.names[3] == "Smiling" and model.spec.total == 56
    h = torch.randn(3, 512, 8, 8)
    with torch.no_grad():
        logits = model.enc(h)
        torch.testing.assert_close(logits, _by_hand(state, "encoder", h.reshape(3, -1)), rtol=1e-4, atol=1e-4)
        swapped = swap_logits(logits, model.spec, 3, 1)
        back = model.dec(swapped)
        torch.testing.assert_close(back, _by_hand(state, "decoder", swapped).reshape(3, 512, 8, 8), rtol=1e-4, atol=1e-4)
    assert meta["format"] == "original" and meta["architecture"]["latent_shape"] == [512, 8, 8]


def test_published_ddpm_file_name_needs_no_yaml(tmp_path):
    ckpt = tmp_path / "celebahq_cbae_ddpm_sup_pl_cls8_cbae.pt"
    torch.save(_original_ddpm_state(seed=1), ckpt)
    model, _ = load_bottleneck(ckpt)
    assert model.latent_shape == (512, 8, 8) and model.spec.unknown == 40 and model.spec.names[0] == "Attractive"


def test_original_ddpm_cbae_for_another_latent_is_refused(tmp_path):
    ckpt = tmp_path / "x_cbae.pt"
    torch.save(_original_ddpm_state(shape=(64, 4, 4), hidden=32), ckpt)
    with pytest.raises(UsageError, match="1024 latent values"):
        load_bottleneck(ckpt, config=_ddpm_yaml(tmp_path / "c.yaml", hidden=32))
    model, _ = load_bottleneck(ckpt, config=_ddpm_yaml(tmp_path / "d.yaml", hidden=32, shape=(64, 4, 4)))
    assert model.latent_shape == (64, 4, 4)


def test_our_flat_checkpoint_round_trips(tmp_path):
    from engine.bottleneck.io import build_for

    spec = ConceptSpec(names=("Smiling", "Male"), sizes=(2, 2), unknown=4)
    for kind in ("cbae", "cc"):
        m = build_for(kind, spec, (16, 4, 4), hidden=24, depth=2)
        path = save_bottleneck(tmp_path / f"{kind}.safetensors", m, generator=GeneratorIdentity("unet", "ab" * 32))
        back, meta = load_bottleneck(path, kind=kind)
        assert back.latent_shape == (16, 4, 4) and back.hidden == 24 and back.depth == 2
        assert meta["latent"] == {"kind": "unet-mid", "shape": [16, 4, 4]}
        h = torch.randn(2, 16, 4, 4)
        with torch.no_grad():
            torch.testing.assert_close(back.eval().enc(h), m.eval().enc(h))
