"""FID: the Fréchet distance, streaming statistics, the FID Inception-v3, real-image statistics and
`evaluate_fid` end to end on a tiny generator (offline: random weights, an injected feature net)."""

from __future__ import annotations

import os
import types

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from engine.errors import ArtifactMissingError, CorruptFileError, GencbmError, UsageError
from engine.evaluate.fid import (
    FeatureStats,
    FidConfig,
    FIDInceptionV3,
    evaluate_fid,
    frechet_distance,
    generated_batches,
    list_images,
    load_fid_inception,
    real_stats,
)


def _reference_fid(mu1, s1, mu2, s2):
    """Direct formula with a general-matrix square root: eig of s1 @ s2 in complex128, V sqrt(L) V^-1."""
    vals, vecs = np.linalg.eig((s1 @ s2).astype(np.complex128))
    root = vecs @ np.diag(np.sqrt(vals)) @ np.linalg.inv(vecs)
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2 * np.trace(root).real)


def _random_cov(rng, d, n):
    x = rng.standard_normal((n, d)) * rng.uniform(0.2, 3.0, size=d)
    return np.cov(x, rowvar=False)


# ------------------------------------------------------------------------------------------------
# The distance.


def test_frechet_distance_matches_direct_computation():
    rng = np.random.default_rng(0)
    for d, n in ((3, 10), (7, 40), (12, 100)):
        mu1, mu2 = rng.standard_normal(d), rng.standard_normal(d)
        s1, s2 = _random_cov(rng, d, n), _random_cov(rng, d, n)
        ref = _reference_fid(mu1, s1, mu2, s2)
        assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(ref, rel=1e-6)
        # tensors are accepted too
        assert frechet_distance(torch.tensor(mu1), torch.tensor(s1), mu2, s2) == pytest.approx(ref, rel=1e-6)


def test_frechet_distance_identical_is_zero_and_mean_shift_is_squared_norm():
    rng = np.random.default_rng(1)
    d = 16
    mu, s = rng.standard_normal(d), _random_cov(rng, d, 50)
    assert frechet_distance(mu, s, mu, s) == pytest.approx(0.0, abs=1e-9 * np.trace(s))
    shift = rng.standard_normal(d)
    assert frechet_distance(mu + shift, s, mu, s) == pytest.approx(float(shift @ shift), rel=1e-8)
    # rank-deficient covariances (fewer samples than dimensions) stay finite and consistent
    s_low = _random_cov(rng, d, 5)
    assert frechet_distance(mu, s_low, mu, s_low) == pytest.approx(0.0, abs=1e-6 * np.trace(s_low))
    assert frechet_distance(mu, s_low, mu, s) == pytest.approx(_reference_fid(mu, s_low, mu, s), rel=1e-5)
    with pytest.raises(GencbmError):
        frechet_distance(mu, s, mu[:3], s[:3, :3])


# ------------------------------------------------------------------------------------------------
# Streaming statistics.


def test_feature_stats_streams_like_numpy(tmp_path):
    rng = np.random.default_rng(2)
    feats = rng.standard_normal((37, 5)) * [1.0, 0.1, 5.0, 2.0, 0.01] + 100.0  # a large mean, small spreads
    stats = FeatureStats()
    for chunk in np.split(feats, [1, 9, 20, 32]):  # uneven batches, one of a single row
        stats.update(torch.tensor(chunk, dtype=torch.float64))
    assert stats.n == 37 and stats.dim == 5
    np.testing.assert_allclose(stats.mean(), feats.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(stats.cov(), np.cov(feats, rowvar=False), rtol=1e-9, atol=1e-12)

    path = stats.to_npz(tmp_path / "s.npz")
    assert sorted(os.listdir(tmp_path)) == ["s.npz"]  # no temporary file left beside it
    back = FeatureStats.from_npz(path)
    assert back.n == 37
    np.testing.assert_array_equal(back.mean(), stats.mean())
    np.testing.assert_array_equal(back.cov(), stats.cov())
    with np.load(path) as data:  # pytorch-fid's keys
        assert {"mu", "sigma"} <= set(data.files)

    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(CorruptFileError, match="bad.npz"):
        FeatureStats.from_npz(tmp_path / "bad.npz")
    with pytest.raises(GencbmError):
        FeatureStats().cov()


# ------------------------------------------------------------------------------------------------
# The FID Inception-v3.


@pytest.fixture(scope="module")
def inception():
    torch.manual_seed(0)
    net = FIDInceptionV3().eval()
    with torch.no_grad():  # non-trivial batch norm statistics, so the comparisons below mean something
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.1, 0.1)
    return net


def test_inception_gives_pool3_features_and_pytorch_fid_preprocessing(inception):
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        y = inception(x)
    assert y.shape == (2, 2048) and torch.isfinite(y).all()
    expected = F.interpolate((x + 1) / 2, size=(299, 299), mode="bilinear", align_corners=False) * 2 - 1
    assert torch.equal(FIDInceptionV3.preprocess(x), expected)


def test_inception_layout_and_blocks_match_torchvision_with_fid_patches(inception, monkeypatch):
    """The state dict loads strictly into torchvision's Inception3(1008 classes, no aux) - the layout of
    pytorch-fid's weight file - and the features equal torchvision's blocks run the way pytorch-fid
    patches them (padding-free average pools; max pool in Mixed_7c's pool branch)."""
    import torchvision.models.inception as tvi

    tv = tvi.Inception3(num_classes=1008, aux_logits=False, init_weights=False).eval()
    tv.load_state_dict(inception.state_dict(), strict=True)

    real_f = tvi.F
    shim = types.SimpleNamespace(mode="tf-avg")

    def avg_pool2d(x, kernel_size, stride=None, padding=0, **_):
        if shim.mode == "max":
            return real_f.max_pool2d(x, kernel_size, stride, padding)
        return real_f.avg_pool2d(x, kernel_size, stride, padding, count_include_pad=shim.mode == "plain")

    patched = types.SimpleNamespace(**{k: getattr(real_f, k) for k in dir(real_f) if not k.startswith("__")})
    patched.avg_pool2d = avg_pool2d
    monkeypatch.setattr(tvi, "F", patched)

    x = torch.rand(2, 3, 96, 96) * 2 - 1  # prepared input; 96 px keeps it quick

    def torchvision_features(fid_patches: bool) -> torch.Tensor:  # [2, 2048]
        h = x
        for name in _TV_ORDER:
            shim.mode = ("max" if name == "Mixed_7c" else "tf-avg") if fid_patches else "plain"
            h = getattr(tv, name)(h)
        return h.mean(dim=(2, 3))

    with torch.no_grad():
        ours = inception.trunk(x)
        theirs = torchvision_features(True)
        plain = torchvision_features(False)
    assert ours.shape == theirs.shape == (2, 2048)
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-5 * float(theirs.abs().max()))
    assert not torch.allclose(plain, ours, rtol=1e-3)  # and the patches matter


_TV_ORDER = ("Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "maxpool1", "Conv2d_3b_1x1", "Conv2d_4a_3x3", "maxpool2", "Mixed_5b",
             "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b", "Mixed_6c", "Mixed_6d", "Mixed_6e", "Mixed_7a", "Mixed_7b", "Mixed_7c")


def test_load_fid_inception_strict(inception, tmp_path):
    good = tmp_path / "pt_inception.pth"
    # like pytorch-fid's file: PyTorch's legacy (pre-zip) format, no num_batches_tracked entries
    state = {k: v for k, v in inception.state_dict().items() if not k.endswith("num_batches_tracked")}
    torch.save(state, good, _use_new_zipfile_serialization=False)
    net = load_fid_inception("cpu", path=good)
    assert not net.training and not any(p.requires_grad for p in net.parameters())
    for k, v in inception.state_dict().items():
        assert torch.equal(net.state_dict()[k], v), k
    assert net.identity and net.identity.startswith("pytorch-fid-inception:")

    wrong = tmp_path / "resnet.pth"
    torch.save({"fc.weight": torch.zeros(1000, 2048), "fc.bias": torch.zeros(1000)}, wrong)
    with pytest.raises(CorruptFileError, match="resnet.pth"):
        load_fid_inception("cpu", path=wrong)
    reshaped = tmp_path / "fc1000.pth"
    state = dict(inception.state_dict())
    state["fc.weight"], state["fc.bias"] = torch.zeros(1000, 2048), torch.zeros(1000)
    torch.save(state, reshaped)
    with pytest.raises(CorruptFileError, match="fc1000.pth.*fc.weight"):
        load_fid_inception("cpu", path=reshaped)
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"\x00" * 100)
    with pytest.raises(CorruptFileError, match="garbage.pth"):
        load_fid_inception("cpu", path=garbage)


def test_load_fid_inception_from_an_empty_store_names_the_download():
    with pytest.raises(ArtifactMissingError, match="gencbm download inception-fid"):
        load_fid_inception("cpu")


# ------------------------------------------------------------------------------------------------
# Real-image statistics.


class TinyNet(nn.Module):
    """A stand-in feature network: [-1, 1] images -> [B, 6]."""

    def __init__(self, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.conv = nn.Conv2d(3, 6, 3, padding=1)

    def forward(self, x):
        return torch.tanh(self.conv(x)).mean(dim=(2, 3)) + x.mean(dim=(1, 2, 3))[:, None]


def _write_png(path, array):
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def _folder(tmp_path, n=6, seed=0):
    rng = np.random.default_rng(seed)
    root = tmp_path / "real"
    for i in range(n):
        size = 12 if i % 3 else 16  # mixed sizes are fine
        sub = root / "sub" if i == 4 else root
        _write_png(sub / f"{i:03d}.png", rng.integers(0, 256, (size, size, 3), dtype=np.uint8))
    (root / "notes.txt").write_text("not an image")
    return root


def test_real_stats_folder_matches_direct_features_and_caches(tmp_path):
    from PIL import Image

    root = _folder(tmp_path)
    files = list_images(root)
    assert [f.relative_to(root).as_posix() for f in files] == ["000.png", "001.png", "002.png", "003.png", "005.png", "sub/004.png"]
    net = TinyNet()
    calls = []
    first = real_stats(root, inception=net, batch_size=4, progress=lambda d, t: calls.append((d, t)))
    assert not first.cached and first.images == 6 and calls[-1] == (6, 6)
    with torch.no_grad():
        direct = torch.cat([net(torch.from_numpy(np.array(Image.open(f).convert("RGB"))).permute(2, 0, 1)[None].float() / 127.5 - 1)
                            for f in files]).double().numpy()
    np.testing.assert_allclose(first.stats.mean(), direct.mean(axis=0), rtol=1e-5)
    np.testing.assert_allclose(first.stats.cov(), np.cov(direct, rowvar=False), rtol=1e-4, atol=1e-9)

    second = real_stats(root, inception=net, batch_size=2)
    assert second.cached and second.images == 6
    np.testing.assert_array_equal(second.stats.mean(), first.stats.mean())
    np.testing.assert_array_equal(second.stats.cov(), first.stats.cov())
    assert not real_stats(root, inception=TinyNet(seed=1)).cached  # another network: its own entry
    assert not real_stats(root, inception=net, limit=4).cached  # another limit: its own entry

    _write_png(root / "001.png", np.zeros((12, 12, 3), dtype=np.uint8))  # a changed file invalidates
    third = real_stats(root, inception=net)
    assert not third.cached
    assert not np.allclose(third.stats.mean(), first.stats.mean())
    assert real_stats(root, inception=net).cached


def test_real_stats_names_an_unreadable_image_and_rejects_bad_sources(tmp_path):
    root = _folder(tmp_path, n=3)
    (root / "broken.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(GencbmError, match="broken.png"):
        real_stats(root, inception=TinyNet())
    with pytest.raises(UsageError):
        real_stats(tmp_path / "nowhere", inception=TinyNet())
    with pytest.raises(UsageError):
        real_stats(root, dataset="toyfaces", inception=TinyNet())
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UsageError, match="at least 2"):
        real_stats(empty, inception=TinyNet())


def test_real_stats_of_a_dataset_is_cached(tmp_path):
    first = real_stats(dataset="toyfaces", split="test", limit=8, inception=TinyNet(), batch_size=3)
    assert first.images == 8 and not first.cached and "toyfaces" in first.source
    again = real_stats(dataset="toyfaces", split="test", limit=8, inception=TinyNet(), batch_size=5)
    assert again.cached
    np.testing.assert_array_equal(again.stats.mean(), first.stats.mean())


# ------------------------------------------------------------------------------------------------
# evaluate_fid end to end.


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    from engine.generators import save_generator
    from engine.generators.latent import open_generator
    from engine.generators.stylegan2 import Generator
    from engine.images import save_png
    from engine.pseudolabel.factory import LabelerConfig
    from engine.toyfaces.world import WorldConfig
    from engine.train.bottleneck import TrainBottleneckConfig, train_bottleneck

    base = tmp_path_factory.mktemp("fid")
    torch.manual_seed(0)
    G = Generator(z_dim=32, c_dim=0, w_dim=16, img_resolution=8, img_channels=3, mapping_kwargs=dict(num_layers=2),
                  channel_base=64, channel_max=16, num_fp16_res=0)
    gen = str(save_generator(G, base / "toy.safetensors", extra={"world": WorldConfig().to_json()}))
    cbae = base / "cbae.safetensors"
    train_bottleneck(TrainBottleneckConfig(kind="cbae", gen=gen, out=str(cbae), steps=2, batch_size=4, device="cpu", sample_every=0,
                                           hidden=12, depth=1, labeler=LabelerConfig(classifiers="toyfaces-pseudo"),
                                           concepts=("Smiling", "Male")))
    # "real" images: the generator's own samples for seed 0, written as PNGs
    lg = open_generator(gen, device="cpu")
    real = base / "real"
    i = 0
    for batch in generated_batches(lg, 24, 7, seed=0):
        for img in batch:
            save_png(img.permute(1, 2, 0).numpy(), real / f"{i:05d}.png")
            i += 1
    return types.SimpleNamespace(gen=gen, cbae=str(cbae), real=str(real))


def _cfg(toy, **kw):
    base = dict(gen=toy.gen, real=toy.real, samples=24, batch_size=8, seed=0, device="cpu")
    base.update(kw)
    return FidConfig(**base)


def test_fid_against_its_own_samples_is_zero_and_other_seeds_differ(toy):
    calls = []
    same = evaluate_fid(_cfg(toy), progress=lambda d, t: calls.append((d, t)), inception=TinyNet())
    assert same["fid"] == pytest.approx(0.0, abs=1e-7)
    assert same["kind"] == "base" and same["samples"] == 24 and same["bottleneck"] is None
    assert same["real"]["images"] == 24 and same["real"]["cached"] is False and same["feature_dim"] == 6
    assert calls[-1] == (48, 48) and [d for d, _ in calls] == sorted(d for d, _ in calls)  # real images, then samples
    other = evaluate_fid(_cfg(toy, seed=1, batch_size=5), inception=TinyNet())
    assert other["real"]["cached"] is True and other["fid"] > 1e-4
    again = evaluate_fid(_cfg(toy, seed=1, batch_size=24), inception=TinyNet())  # same seed: same samples, any batch size
    assert again["fid"] == pytest.approx(other["fid"], rel=1e-9)


def test_fid_of_reconstructions_and_edits(toy):
    recon = evaluate_fid(_cfg(toy, kind="recon", cbae=toy.cbae), inception=TinyNet())
    assert recon["kind"] == "recon" and recon["bottleneck"] == toy.cbae and np.isfinite(recon["fid"])
    edit = evaluate_fid(_cfg(toy, kind="edit", cbae=toy.cbae, concept="smiling", value=1), inception=TinyNet())
    assert edit["edit"]["concept"] == "Smiling" and edit["edit"]["value"] == 1 and np.isfinite(edit["fid"])
    opt = evaluate_fid(_cfg(toy, kind="edit", cbae=toy.cbae, concept="Male", value=0, method="optimize", iters=2, samples=8),
                       inception=TinyNet())
    assert opt["edit"]["method"] == "optimize" and np.isfinite(opt["fid"])


def test_fid_reads_saved_statistics(toy, tmp_path):
    stats = real_stats(toy.real, inception=TinyNet()).stats
    stats.to_npz(tmp_path / "real.npz")
    r = evaluate_fid(_cfg(toy, real=str(tmp_path / "real.npz")), inception=TinyNet())
    assert r["fid"] == pytest.approx(0.0, abs=1e-7) and r["real"]["images"] == 24
    with pytest.raises(ArtifactMissingError, match="missing.npz"):
        evaluate_fid(_cfg(toy, real=str(tmp_path / "missing.npz")), inception=TinyNet())


@pytest.mark.parametrize("kw, match", [
    (dict(kind="recon"), "--cbae"),
    (dict(kind="edit", cbae="x.safetensors"), "--concept"),
    (dict(concept="Smiling", value=1), "--kind edit"),
    (dict(cbae="x.safetensors"), "--kind recon"),
    (dict(kind="nope"), "--kind"),
    (dict(samples=1), "--samples"),
    (dict(real=None), "exactly one"),
    (dict(dataset="toyfaces"), "exactly one"),
])
def test_fid_usage_errors(toy, kw, match):
    with pytest.raises(UsageError, match=match):
        evaluate_fid(_cfg(toy, **kw), inception=TinyNet())


def test_fid_without_weights_names_the_download(toy):
    with pytest.raises(ArtifactMissingError, match="gencbm download inception-fid"):
        evaluate_fid(_cfg(toy))
