"""Concept classifiers: networks, both file formats, sets, predict_proba, ImageNet weights from the store."""

from __future__ import annotations

import pickle

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from engine.classifiers.concept import ConceptClassifier, predict_proba
from engine.classifiers.io import (
    classifier_meta,
    export_original,
    load_classifier,
    load_classifier_set,
    original_name,
    our_name,
    parse_original_name,
    save_classifier,
)
from engine.classifiers.networks import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    UNIT_MEAN,
    UNIT_STD,
    arch_spec,
    build_network,
    infer_arch,
)
from engine.classifiers.small_cnn import SmallCNN
from engine.errors import ArtifactMissingError, CorruptFileError, UsageError


@pytest.fixture(autouse=True)
def _env(tmp_path, monkeypatch):
    monkeypatch.setenv("GENCBM_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("GENCBM_OFFLINE", "1")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _tv_resnet18(seed: int = 0) -> nn.Module:
    """What the original trains: torchvision ResNet-18 with fc = Linear(512, 2)."""
    from torchvision import models

    torch.manual_seed(seed)
    net = models.resnet18(weights=None)
    net.fc = nn.Linear(net.fc.in_features, 2)
    return net.eval()


def _small(concept: str = "Smiling", seed: int = 0) -> ConceptClassifier:
    torch.manual_seed(seed)
    return ConceptClassifier(SmallCNN(num_outputs=2, width=8, stages=2), arch="small-cnn", input_size=32, mean=UNIT_MEAN,
                             std=UNIT_STD, concept=concept).eval()


def _images(n: int = 3, size: int = 32, seed: int = 1) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


# ------------------------------------------------------------------------------------------------
# Networks.


def test_heads_as_the_original():
    net = build_network("resnet18")
    assert isinstance(net.fc, nn.Linear) and tuple(net.fc.weight.shape) == (2, 512)
    with torch.device("meta"):
        r50 = build_network("rn50")
        vit = build_network("vit_l_16")
    assert tuple(r50.fc.weight.shape) == (2, 2048)
    sd = vit.state_dict()
    assert tuple(sd["heads.weight"].shape) == (2, 1024) and "heads.head.weight" not in sd  # heads = one Linear
    assert tuple(sd["encoder.pos_embedding"].shape) == (1, 1025, 1024)  # 512 px
    assert infer_arch(sd)[0] == "vit_l_16" and infer_arch(r50.state_dict())[0] == "resnet50"
    assert infer_arch(net.state_dict())[0] == "resnet18"
    assert infer_arch(SmallCNN(2, width=8, stages=2).state_dict()) == ("small-cnn", {"width": 8, "stages": 2, "in_channels": 3}, 2)
    assert arch_spec("ResNet18").name == "resnet18" and arch_spec("small_cnn").name == "small-cnn"
    assert arch_spec("vit_l_16").input_size == 512
    with pytest.raises(UsageError, match="small-cnn"):
        build_network("small-cnn", init="imagenet")


def test_vit_classifier_shapes_at_512_px():
    """ViT-L/16 is too large to run in the suite: its shapes are checked on the meta device."""
    spec = arch_spec("vit_l_16")
    with torch.device("meta"):
        clf = ConceptClassifier(build_network("vit_l_16"), arch="vit_l_16", input_size=spec.input_size, mean=spec.mean,
                                std=spec.std, resize_mode=spec.resize_mode, concept="Smiling")
        x = torch.zeros(2, 3, 256, 256)  # generated images at 256 px are resized to 512
        assert clf.preprocess(x).shape == (2, 3, 512, 512)
        assert clf(x).shape == (2, 2) and clf.predict_proba(x).shape == (2,)


def test_init_imagenet_without_weights_in_store_exits_3():
    with pytest.raises(ArtifactMissingError, match="gencbm download torchvision-resnet18") as err:
        build_network("resnet18", init="imagenet")
    assert err.value.exit_code == 3


def test_init_imagenet_loads_the_stored_weights(tmp_path, monkeypatch):
    from torchvision import models

    import engine.store.artifacts as artifacts

    torch.manual_seed(5)
    imagenet = models.resnet18(weights=None)  # stands in for the stored ImageNet weights (1000-way fc)
    path = tmp_path / "resnet18-f37072fd.pth"
    torch.save(imagenet.state_dict(), path)
    monkeypatch.setattr(artifacts, "resolve_artifact", lambda name: path if name == "torchvision-resnet18" else None)
    net = build_network("resnet18", init="imagenet")
    assert torch.equal(net.conv1.weight, imagenet.conv1.weight)
    assert torch.equal(net.layer4[1].bn2.running_var, imagenet.layer4[1].bn2.running_var)
    assert tuple(net.fc.weight.shape) == (2, 512)  # a new head
    path.write_bytes(b"garbage")
    with pytest.raises(CorruptFileError):
        build_network("resnet18", init="imagenet")


# ------------------------------------------------------------------------------------------------
# predict_proba.


def test_predict_proba_shape_range_and_preprocessing():
    clf = _small()
    x = _images(4, 32)
    p = predict_proba(clf, x)
    assert p.shape == (4,) and p.dtype == torch.float32 and (p >= 0).all() and (p <= 1).all()
    assert torch.allclose(p, clf.net(x).softmax(-1)[:, 1], atol=1e-6)  # small-cnn sees [-1, 1] as is
    big = F.interpolate(x, size=(64, 64), mode="nearest")
    assert predict_proba(clf, big).shape == (4,)  # resized to the input size
    assert torch.allclose(predict_proba(clf, x, batch_size=3), p, atol=1e-6)
    x.requires_grad_(True)
    clf.predict_proba(x).sum().backward()  # differentiable (for intervention losses)
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_predict_proba_matches_the_originals_evaluation_transform():
    tv = _tv_resnet18()
    clf = ConceptClassifier(tv, arch="resnet18", input_size=64, mean=IMAGENET_MEAN, std=IMAGENET_STD, concept="Smiling").eval()
    x = _images(2, 64)
    # The original's evaluation: images.mul(0.5).add(0.5), Normalize(ImageNet mean/std), argmax / softmax.
    mean, std = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        ref = tv((x.mul(0.5).add(0.5) - mean) / std).softmax(-1)[:, 1]
    assert torch.allclose(predict_proba(clf, x), ref, atol=1e-5)


# ------------------------------------------------------------------------------------------------
# Files.


def test_our_format_round_trip(tmp_path):
    clf = _small()
    meta = classifier_meta(clf, dataset="toyfaces", test_accuracy=0.93, epochs=2, seed=7, extra={"best_epoch": 2})
    path = save_classifier(tmp_path / our_name("toyfaces", "Smiling", "small-cnn"), clf, meta)
    assert path.name == "toyfaces_Smiling_smallcnn_conclsf.safetensors"
    loaded, got = load_classifier(path)
    assert got["kind"] == "concept-classifier" and got["concept"] == "Smiling"
    assert got["class_names"] == ["not Smiling", "Smiling"] and got["arch"] == "small-cnn" and got["input_size"] == 32
    assert got["normalize"] == {"mean": [0.5] * 3, "std": [0.5] * 3}
    assert got["test_accuracy"] == 0.93 and got["dataset"] == "toyfaces" and got["epochs"] == 2 and got["seed"] == 7
    assert got["gencbm_version"] and got["format"] == "gencbm"
    x = _images()
    assert torch.allclose(predict_proba(loaded, x), predict_proba(clf, x), atol=0)


def test_original_format_import(tmp_path):
    tv = _tv_resnet18(3)
    path = tmp_path / "celebahq_Wearing_Lipstick_rn18_conclsf.pth"
    torch.save(tv.state_dict(), path)  # exactly what the original's train_conclsf.py writes
    clf, meta = load_classifier(path)
    assert meta["format"] == "original" and meta["concept"] == "Wearing_Lipstick" and meta["dataset"] == "celebahq"
    assert meta["arch"] == "resnet18" and meta["input_size"] == 256 and meta["normalize"]["mean"] == list(IMAGENET_MEAN)
    assert meta["class_names"] == ["not Wearing_Lipstick", "Wearing_Lipstick"]
    x = _images(2, 256)
    mean, std = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        ref = tv(((x + 1) / 2 - mean) / std).softmax(-1)[:, 1]
    assert torch.allclose(predict_proba(clf, x), ref, atol=1e-5)


def test_export_original_is_a_plain_torchvision_state_dict(tmp_path):
    tv = _tv_resnet18(4)
    clf = ConceptClassifier(tv, arch="resnet18", input_size=256, mean=IMAGENET_MEAN, std=IMAGENET_STD, concept="Smiling")
    name = original_name("celebahq", "Smiling", "resnet18")
    assert name == "celebahq_Smiling_rn18_conclsf.pth"
    path = export_original(tmp_path / name, clf)
    state = torch.load(path, weights_only=True)
    fresh = _tv_resnet18(9)
    fresh.load_state_dict(state, strict=True)  # loads into the original's model definition
    assert torch.equal(fresh.fc.weight, tv.fc.weight)
    assert original_name("cub", "Small size 5 to 9 inches", "resnet50") == "cub_Small_size_5_to_9_inches_rn50_conclsf.pth"
    assert original_name("celebahq", "Smiling", "vit_l_16") == "celebahq_Smiling_vit_l_16_conclsf.pth"
    assert parse_original_name("celebahq_Mouth_Slightly_Open_vit_l_16_conclsf.pth") == ("celebahq", "Mouth_Slightly_Open", "vit_l_16")
    assert parse_original_name("cub64_Black_bill_color_rn50_conclsf.pth") == ("cub64", "Black_bill_color", "resnet50")
    assert parse_original_name("model.pth") is None


def test_sets_prefer_our_format_and_name_concepts(tmp_path):
    folder = tmp_path / "set"
    a, b = _small("Smiling", 1), _small("Male", 2)
    save_classifier(folder / our_name("toyfaces", "Smiling", "small-cnn"), a,
                    classifier_meta(a, dataset="toyfaces", test_accuracy=0.9, epochs=1, seed=0))
    export_original(folder / original_name("toyfaces", "Smiling", "small-cnn"), _small("Smiling", 3))  # loses to ours
    export_original(folder / "sub" / original_name("toyfaces", "Male", "small-cnn"), b)
    found = load_classifier_set(folder)
    assert set(found) == {"Smiling", "Male"}
    assert found["Smiling"][1]["format"] == "gencbm" and found["Male"][1]["format"] == "original"
    x = _images()
    assert torch.allclose(predict_proba(found["Male"][0], x), predict_proba(b, x), atol=0)
    one, meta = load_classifier(f"{folder}:smiling")
    assert meta["concept"] == "Smiling"
    with pytest.raises(UsageError, match="2 classifiers"):
        load_classifier(folder)
    with pytest.raises(UsageError, match="did you mean 'Smiling'"):
        load_classifier_set(folder, concepts=["smilng"])
    assert set(load_classifier_set(folder, concepts=["male"])) == {"Male"}


def test_cub_original_names_come_back_with_spaces(tmp_path):
    torch.manual_seed(0)
    export_original(tmp_path / "cub64_Black_bill_color_smallcnn_conclsf.pth", _small("x"))
    found = load_classifier_set(tmp_path)
    assert list(found) == ["Black bill color"] and found["Black bill color"][1]["input_size"] == 64


def test_unsafe_or_broken_original_files_are_refused(tmp_path, capsys):
    class Boom:
        def __reduce__(self):
            return (print, ("EXECUTED",))

    evil = tmp_path / "celebahq_Smiling_rn18_conclsf.pth"
    with open(evil, "wb") as f:
        pickle.dump({"fc.weight": Boom()}, f, protocol=2)
    with pytest.raises(CorruptFileError, match="weights_only") as err:
        load_classifier(evil)
    assert err.value.exit_code == 4 and "EXECUTED" not in capsys.readouterr().out
    wrong = tmp_path / "celebahq_Male_rn18_conclsf.pth"
    torch.save({"fc.weight": torch.zeros(2, 512)}, wrong)
    with pytest.raises(CorruptFileError):
        load_classifier(wrong)
    with pytest.raises(ArtifactMissingError):
        load_classifier(tmp_path / "absent_Smiling_rn18_conclsf.pth")
