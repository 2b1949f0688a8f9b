"""The registry's data: every artifact of the original project, consistent and safe."""

from __future__ import annotations

import json
import re
from pathlib import PurePosixPath

import pytest

from engine.errors import UsageError
from engine.store.registry import artifact_from_json, load_registry

NGC = "https://api.ngc.nvidia.com/v2/models/nvidia/research/stylegan2/versions/1/files/"
STYLEGAN2 = {
    "ffhq": (1024, 512, 256), "ffhqu": (1024, 256), "metfaces": (1024,), "metfacesu": (1024,), "afhqv2": (512,),
    "afhqcat": (512,), "afhqdog": (512,), "afhqwild": (512,), "brecahad": (512,), "cifar10": (32,), "celebahq": (256,),
    "lsundog": (256,),
}
DRIVE = {
    "stylegan2-cub-256": "1sW7WgvUFH2REZPQx88BjFneoItP9C0XB",
    "cbae-stylegan2-celebahq": "1RBdjcBDbpAoW5qOkG-rBonIpcBApBF-q",
    "cc-stylegan2-celebahq": "1fh2XV2ttrCc88-SgfR9f-JcwG1eent_U",
    "cbae-ddpm-celebahq": "1kl5pDqzm0M73r8H74AfSokgDFGAF0szb",
    "classifiers-celebahq-rn18": "1xbR7MbERV7wMnU4WcsNSDriYXBqsy_jZ",
    "classifiers-celebahq-vitl16": "1XD6Badmf4QwRrdy6MbOr-mefyu1k_OIy",
    "classifiers-celeba64-rn18": "15m6xCI5JPZaz-BaSoCjHCJCeof53G4rC",
    "classifiers-cub-rn50": "1vW5Q41FGHXdTqbraz54AXQ2uoBKispLD",
    "classifiers-cub64-rn50": "1vvlWd4MWB62-lyq2sPQAVhf5Pqc5Mnzf",
}


@pytest.fixture(autouse=True)
def _no_extra(monkeypatch):
    monkeypatch.delenv("GENCBM_REGISTRY", raising=False)


def test_every_nvidia_stylegan2_pickle_is_registered():
    reg = load_registry()
    for ds, resolutions in STYLEGAN2.items():
        for res in resolutions:
            art = reg.get(f"stylegan2-{ds}-{res}")
            assert art.file == f"stylegan2-{ds}-{res}x{res}.pkl"
            assert art.url == NGC + art.file and art.kind == "generator"
            assert art.settings["resolution"] == res


def test_drive_artifacts_have_the_published_ids():
    reg = load_registry()
    for name, file_id in DRIVE.items():
        art = reg.get(name)
        assert art.source_type == "gdrive" and art.gdrive_id == file_id
    for name in DRIVE:
        if name.startswith("classifiers-"):
            assert reg.get(name).archive == "zip" and reg.get(name).file.endswith("_conclsf.zip")


def test_published_hash_prefixes_match_the_file_names():
    reg = load_registry()
    for name in ("inception-fid", "torchvision-resnet18", "torchvision-resnet50", "torchvision-vit-l-16-swag"):
        art = reg.get(name)
        m = re.search(r"-([0-9a-f]{8})\.pth$", art.url)
        assert m and art.sha256_prefix == m.group(1) and art.file == art.url.rsplit("/", 1)[1]
    assert reg.get("inception-fid").file == "pt_inception-2015-12-05-6726825d.pth"


def test_ddpm_splits_and_bottleneck_settings():
    reg = load_registry()
    ddpm = reg.get("ddpm-celebahq-256")
    assert ddpm.source_type == "hf" and ddpm.hf_repo == "google/ddpm-celebahq-256" and ddpm.multi_file
    splits = reg.get("celebahq-splits")
    assert [f.url.split("/main/")[1] for f in splits.files] == ["datasets/CelebAMask-HQ/train.txt", "datasets/CelebAMask-HQ/test.txt"]
    cbae = reg.get("cbae-stylegan2-celebahq")
    assert cbae.settings["latent"]["shape"] == [14, 512] and cbae.settings["generator"] == "stylegan2-celebahq-256"
    assert len(cbae.settings["concepts"]) == 8 and cbae.settings["unknown_dims"] == 40
    assert 2 * len(cbae.settings["concepts"]) + cbae.settings["unknown_dims"] == cbae.settings["concept_logits_total"]
    assert reg.get("cbae-ddpm-celebahq").settings["latent"]["shape"] == [512, 8, 8]
    for name in ("cbae-stylegan2-celebahq", "cc-stylegan2-celebahq", "cbae-ddpm-celebahq"):
        assert reg.get(reg.get(name).settings["generator"]).kind == "generator"


def test_mirror_paths_are_unique_and_relative():
    reg = load_registry()
    paths = [p for art in reg for p in art.mirror_paths()]
    assert len(paths) == len(set(paths))
    for p in paths:
        assert not PurePosixPath(p).is_absolute() and ".." not in PurePosixPath(p).parts
    assert all(a.licence for a in reg)


def test_names_are_forgiving():
    reg = load_registry()
    assert reg.find("StyleGAN2_CelebAHQ 256").name == "stylegan2-celebahq-256"
    with pytest.raises(UsageError, match="did you mean 'classifiers-celebahq-rn18'"):
        reg.get("classifier-celebahq-rn18")


def test_extra_registry_file_adds_and_overrides(tmp_path, monkeypatch):
    extra = tmp_path / "extra.json"
    extra.write_text(json.dumps({"artifacts": [
        {"name": "my-gen", "kind": "generator", "source": {"type": "url", "url": "http://127.0.0.1:9/my.pkl"}, "file": "my.pkl"},
        {"name": "stylegan2-celebahq-256", "kind": "generator", "source": {"type": "url", "url": "http://127.0.0.1:9/x.pkl"}, "file": "x.pkl"},
    ]}))
    monkeypatch.setenv("GENCBM_REGISTRY", str(extra))
    reg = load_registry()
    assert reg.get("my-gen").file == "my.pkl"
    assert reg.get("stylegan2-celebahq-256").file == "x.pkl"
    assert len(reg) == 32


@pytest.mark.parametrize("bad, match", [
    ({"file": "../escape.pkl"}, "unsafe"),
    ({"file": "a/b.pkl"}, "plain file name"),
    ({"sha256": "abc"}, "sha256 hex digest"),
    ({"sha256_prefix": "xyz!"}, "prefix"),
    ({"kind": "model"}, "kind must be"),
    ({"source": {"type": "ftp"}}, "source.type"),
    ({"archive": "tar"}, "archive"),
])
def test_bad_entries_are_rejected(bad, match):
    entry = {"name": "x-1", "kind": "weights", "source": {"type": "url", "url": "http://h/x"}, "file": "x.pth", **bad}
    with pytest.raises(ValueError, match=match):
        artifact_from_json(entry)


def test_bad_registry_file_is_a_usage_error(tmp_path, monkeypatch):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"artifacts": [{"name": "x", "kind": "weights", "source": {"type": "files", "files": [{"path": "../../x", "url": "http://h/x"}]}}]}))
    monkeypatch.setenv("GENCBM_REGISTRY", str(bad))
    with pytest.raises(UsageError, match="unsafe relative path"):
        load_registry()
