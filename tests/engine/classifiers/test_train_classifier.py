"""train_classifiers: determinism, best-epoch files, interruption, outputs (tiny runs only)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from engine.classifiers.io import load_classifier
from engine.data import ImageReadError
from engine.errors import ArtifactMissingError, UsageError
from engine.store.checkpoint import load_checkpoint
from engine.train.classifier import TrainClassifierConfig, train_classifiers


def _fake_datasets():
    path = Path(__file__).resolve().parents[1] / "data" / "fake_datasets.py"
    spec = importlib.util.spec_from_file_location("fake_datasets_for_training", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(autouse=True)
def _env(tmp_path, monkeypatch):
    monkeypatch.setenv("GENCBM_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("GENCBM_OFFLINE", "1")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _config(tmp_path, **kw) -> TrainClassifierConfig:
    base = dict(dataset="toyfaces", concepts=("Smiling",), arch="small-cnn", epochs=1, batch_size=16, limit=48,
                device="cpu", out=str(tmp_path / "out"))
    base.update(kw)
    return TrainClassifierConfig(**base)


def test_deterministic_for_a_seed_on_cpu(tmp_path):
    a = train_classifiers(_config(tmp_path, out=str(tmp_path / "a")))[0]
    b = train_classifiers(_config(tmp_path, out=str(tmp_path / "b")))[0]
    c = train_classifiers(_config(tmp_path, out=str(tmp_path / "c"), seed=1))[0]
    ta, tb, tc = (load_checkpoint(r["path"])[0] for r in (a, b, c))
    assert all(torch.equal(ta[k], tb[k]) for k in ta)
    assert not all(torch.equal(ta[k], tc[k]) for k in ta)
    assert a["test_accuracy"] == b["test_accuracy"]


def test_interrupt_keeps_the_best_epoch(tmp_path):
    def progress(label, done, total):
        if "epoch 2/" in label:
            raise KeyboardInterrupt

    lines = []
    with pytest.raises(KeyboardInterrupt):
        train_classifiers(_config(tmp_path, epochs=3), progress=progress, info=lines.append)
    path = tmp_path / "out" / "toyfaces_Smiling_smallcnn_conclsf.safetensors"
    clf, meta = load_classifier(path)
    assert meta["interrupted"] is True and meta["best_epoch"] == 1 and meta["epochs_completed"] == 1 and meta["epochs"] == 3
    assert any("interrupted" in line and "kept epoch 1" in line for line in lines)


def test_several_concepts_and_file_outputs(tmp_path):
    results = train_classifiers(_config(tmp_path, concepts=("smiling", "male"), limit=24, export_original=True))
    assert [r["concept"] for r in results] == ["Smiling", "Male"]
    for r in results:
        assert Path(r["path"]).is_file() and Path(r["original_path"]).is_file()
        assert Path(r["original_path"]).name == f"toyfaces_{r['concept']}_smallcnn_conclsf.pth"
        assert 0 <= r["test_accuracy"] <= 1 and r["train_samples"] == 24 and r["test_samples"] == 24
    _, meta = load_classifier(results[1]["original_path"])
    assert meta["arch"] == "small-cnn" and meta["format"] == "original"
    with pytest.raises(UsageError, match="one file"):
        train_classifiers(_config(tmp_path, concepts=("Smiling", "Male"), out=str(tmp_path / "x.safetensors")))
    with pytest.raises(UsageError, match="epochs"):
        train_classifiers(_config(tmp_path, epochs=0))


def test_concepts_all_means_the_datasets_concept_set(tmp_path):
    results = train_classifiers(_config(tmp_path, concepts=("all",), limit=8, batch_size=8))
    assert len(results) == 8 and results[0]["concept"] == "Smiling"


def test_imagenet_init_missing_fails_before_any_rendering(tmp_path):
    seen = []
    with pytest.raises(ArtifactMissingError, match="gencbm download torchvision-resnet18"):
        train_classifiers(_config(tmp_path, arch="resnet18", init="imagenet"), progress=lambda *a: seen.append(a))
    assert seen == []


def test_real_format_dataset_trains_and_evaluates_on_the_originals_split(tmp_path):
    fake = _fake_datasets()
    fake.make_celeba(tmp_path / "celeba", size=(12, 16))
    [r] = train_classifiers(_config(tmp_path, dataset="celeba64", data_root=str(tmp_path / "celeba"), concepts=("male",),
                                    limit=None, epochs=2, batch_size=2, workers=1))
    assert r["concept"] == "Male" and r["test_split"] == "val" and r["train_samples"] == 4 and r["test_samples"] == 2
    clf, meta = load_classifier(r["path"])
    assert meta["input_size"] == 64 and meta["dataset"] == "celeba64" and meta["best_epoch"] in (1, 2)
    # An image that cannot be decoded, read in a DataLoader worker: still one line naming the file.
    (tmp_path / "celeba" / "img_align_celeba" / "000002.jpg").write_bytes(b"junk")
    with pytest.raises(ImageReadError) as err:
        train_classifiers(_config(tmp_path, dataset="celeba64", data_root=str(tmp_path / "celeba"), concepts=("male",),
                                  limit=None, batch_size=2, workers=1))
    assert str(err.value).startswith("cannot read image") and "000002.jpg" in str(err.value) and "\n" not in str(err.value)


def test_random_blur_blurs_the_chosen_share_and_keeps_the_rest():
    from engine.train.classifier import random_blur

    g = torch.Generator().manual_seed(0)
    x = torch.zeros(64, 3, 9, 9)
    x[:, :, 4, 4] = 1.0  # a single bright pixel per image
    y = random_blur(x, 0.5, g)
    blurred = (y[:, :, 4, 4] < 1.0).all(dim=1)
    assert 16 < int(blurred.sum()) < 48
    assert torch.equal(y[~blurred], x[~blurred])
    assert torch.allclose(y[blurred].sum(dim=(2, 3)), torch.ones(int(blurred.sum()), 3), atol=1e-5)  # mass kept
    assert torch.equal(random_blur(x, 0.0, g), x)
