"""DDPM end to end through the CLI on a tiny diffusers UNet (32 px, random weights):
train-cbae / train-cc from training images, intervene and evaluate during denoising."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from ddpm_fixtures import tiny_unet_folder
from gencbm_cli.main import app

CONCEPTS = "Smiling,Male,Eyeglasses"


def _run(args):
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def ddpm(tmp_path_factory):
    """A tiny 32-px UNet folder, a folder of training images, and a CB-AE and CC trained for 3 steps."""
    root = tmp_path_factory.mktemp("ddpm")
    unet = tiny_unet_folder(root / "unet", sample_size=32)
    images = root / "train"
    images.mkdir()
    from engine.data import open_dataset
    from engine.images import save_png

    ds = open_dataset("toyfaces", split="train", limit=12)
    ds.prepare()
    for i in range(len(ds)):
        save_png(ds[i][0].permute(1, 2, 0).numpy(), images / f"image_{i:05d}.png")
    out = {}
    for kind in ("cbae", "cc"):
        ckpt = root / f"{kind}.safetensors"
        r = _run([f"train-{kind}", "--gen", unet, "--train-images", images, "--concepts", CONCEPTS, "--classifiers", "toyfaces-pseudo",
                  "--steps", 3, "--batch-size", 4, "--hidden", 32, "--depth", 1, "--max-t", 300, "--sample-every", 3,
                  "--out", ckpt, "--device", "cpu", "--json", "--quiet"])
        assert r.exit_code == 0, r.output
        out[kind] = json.loads(r.stdout)
    return {"root": root, "unet": unet, "images": images, **out}


def test_train_writes_checkpoint_grid_and_ddpm_metadata(ddpm):
    from engine.bottleneck.io import load_bottleneck

    doc = ddpm["cbae"]
    assert doc["steps"] == 3 and doc["concepts"] == ["Smiling", "Male", "Eyeglasses"]
    assert {"latent_mse", "image_mse", "concept_ce", "intervention_pl_ce", "t"} <= set(doc["metrics"])
    assert 1 <= doc["metrics"]["t"] < 300
    assert len(doc["samples"]) == 1 and Path(doc["samples"][0]).exists()
    model, meta = load_bottleneck(doc["out"])
    assert model.layout == "flat" and model.latent_shape == (32, 16, 16) and model.hidden == 32
    assert meta["latent"] == {"kind": "unet-mid", "shape": [32, 16, 16]}
    assert meta["intervention"]["intervene_below"] == 300  # train --max-t becomes the edit range
    assert meta["training"]["data"]["count"] == 12
    assert meta["generator"]["sha256"]  # the UNet's weights file
    cc = ddpm["cc"]
    assert cc["steps"] == 3 and "latent_mse" not in cc["metrics"]


def test_train_resume_continues_and_equals_uninterrupted(ddpm, tmp_path):
    base = ["--gen", ddpm["unet"], "--train-images", ddpm["images"], "--concepts", CONCEPTS, "--classifiers", "toyfaces-pseudo",
            "--batch-size", 4, "--hidden", 16, "--depth", 1, "--sample-every", 0, "--device", "cpu", "--quiet"]
    r = _run(["train-cbae", *base, "--steps", 4, "--out", tmp_path / "full.safetensors"])
    assert r.exit_code == 0, r.output
    r = _run(["train-cbae", *base, "--steps", 2, "--out", tmp_path / "part.safetensors"])
    assert r.exit_code == 0, r.output
    r = _run(["train-cbae", *base, "--steps", 4, "--out", tmp_path / "part.safetensors", "--resume"])
    assert r.exit_code == 0, r.output
    from safetensors.torch import load_file

    a, b = load_file(tmp_path / "full.safetensors"), load_file(tmp_path / "part.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6, msg=k)


def test_train_needs_images_and_rejects_bad_input(ddpm, tmp_path):
    base = ["train-cbae", "--gen", ddpm["unet"], "--classifiers", "toyfaces-pseudo", "--steps", 1, "--device", "cpu", "--quiet"]
    r = _run([*base, "--out", tmp_path / "a.safetensors"])
    assert r.exit_code == 2 and "--train-images" in r.output
    empty = tmp_path / "empty"
    empty.mkdir()
    r = _run([*base, "--train-images", empty, "--out", tmp_path / "b.safetensors"])
    assert r.exit_code == 2 and "holds no images" in r.output
    r = _run([*base, "--train-images", ddpm["images"], "--max-t", 5000, "--out", tmp_path / "c.safetensors"])
    assert r.exit_code == 2 and "--max-t" in r.output
    r = _run([*base, "--train-images", ddpm["images"], "--batch-size", 64, "--out", tmp_path / "d.safetensors"])
    assert r.exit_code == 2 and "larger than the training set" in r.output
    assert not any(tmp_path.glob("*.safetensors"))


def test_train_on_a_dataset_split(ddpm, tmp_path):
    r = _run(["train-cc", "--gen", ddpm["unet"], "--dataset", "toyfaces", "--concepts", "Smiling", "--classifiers", "toyfaces-pseudo",
              "--steps", 1, "--batch-size", 2, "--hidden", 8, "--depth", 1, "--sample-every", 0, "--out", tmp_path / "cc.safetensors",
              "--device", "cpu", "--json", "--quiet"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["steps"] == 1


@pytest.mark.parametrize("kind,method", [("cbae", "swap"), ("cbae", "optimize"), ("cc", "optimize")])
def test_intervene_on_ddpm(ddpm, tmp_path, kind, method):
    r = _run(["intervene", "--gen", ddpm["unet"], f"--{kind}", ddpm[kind]["out"], "--concept", "Smiling", "--value", 1,
              "--seeds", "1-2", "--method", method, "--iters", 3, "--steps", 5, "--out", tmp_path, "--device", "cpu",
              "--json", "--quiet"])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["settings"]["scheduler"] == "ddim" and results["settings"]["steps"] == 5
    assert results["settings"]["intervene_below"] == 300  # the checkpoint's training --max-t
    if method == "optimize":
        assert results["settings"]["eps"] == 1.0  # the original's DDPM radius
    for seed in (1, 2):
        for row in ("orig", "recon", "edit"):
            assert (tmp_path / f"seed{seed:04d}-{row}.png").exists()
    assert set(doc["images"][0]["encoder"]) == ({"orig", "recon", "edit"} if kind == "cbae" else {"orig", "edit"})


def test_intervene_orig_equals_plain_generation(ddpm, tmp_path):
    """The un-intervened row is exactly `gencbm generate` for the same seed (same x_T, same loop)."""
    r = _run(["intervene", "--gen", ddpm["unet"], "--cbae", ddpm["cbae"]["out"], "--concept", "Male", "--value", 0,
              "--seeds", 4, "--steps", 4, "--out", tmp_path / "iv", "--device", "cpu", "--quiet"])
    assert r.exit_code == 0, r.output
    from engine.generators.latent import open_generator
    from PIL import Image
    import numpy as np

    lg = open_generator(ddpm["unet"], steps=4)
    with torch.no_grad():
        img = lg.to_uint8(lg.render(lg.z_from_seeds([4])))[0]
    assert np.array_equal(np.asarray(Image.open(tmp_path / "iv" / "seed0004-orig.png")), img)


def test_intervene_below_sets_the_edited_steps(ddpm, tmp_path):
    """DDIM-4 visits t = 750, 500, 250, 0: --intervene-below 0 edits only the last step, 1000 every step."""
    from PIL import Image
    import numpy as np

    edits = {}
    for below in (0, 1000):
        out = tmp_path / str(below)
        r = _run(["intervene", "--gen", ddpm["unet"], "--cbae", ddpm["cbae"]["out"], "--concept", "Smiling", "--value", 1,
                  "--seeds", 0, "--steps", 4, "--intervene-below", below, "--out", out, "--device", "cpu", "--quiet"])
        assert r.exit_code == 0, r.output
        assert json.loads((out / "results.json").read_text())["settings"]["intervene_below"] == below
        edits[below] = np.asarray(Image.open(out / "seed0000-edit.png")).astype(int)
        orig = np.asarray(Image.open(out / "seed0000-orig.png")).astype(int)
    assert np.abs(edits[1000] - orig).mean() > np.abs(edits[0] - orig).mean()


def test_evaluate_steerability_on_ddpm(ddpm, tmp_path):
    args = ["evaluate", "steerability", "--gen", ddpm["unet"], "--cbae", ddpm["cbae"]["out"], "--classifiers", "oracle",
            "--concept", "Smiling", "--value", 1, "--method", "swap", "--samples", 4, "--batch-size", 2, "--steps", 3,
            "--seed", 2, "--device", "cpu", "--json", "--quiet"]
    r = _run(args)
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["method"] == "swap" and len(doc["rows"]) == 1 and doc["rows"][0]["samples"] == 4
    again = json.loads(_run(args).stdout)
    assert again["rows"] == doc["rows"]  # deterministic per seed
    r = _run(["evaluate", "steerability", "--gen", ddpm["unet"], "--cbae", ddpm["cbae"]["out"], "--classifiers", "oracle",
              "--method", "interfacegan", "--samples", 2, "--device", "cpu", "--quiet"])
    assert r.exit_code == 2 and "interfacegan" in r.output


def test_evaluate_accuracy_on_ddpm(ddpm):
    r = _run(["evaluate", "accuracy", "--gen", ddpm["unet"], "--cc", ddpm["cc"]["out"], "--classifiers", "oracle",
              "--samples", 3, "--batch-size", 3, "--steps", 3, "--device", "cpu", "--json", "--quiet"])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert [row["concept"] for row in doc["rows"]] == ["Smiling", "Male", "Eyeglasses"]
    assert all(0.0 <= row["agreement_with_evaluator"] <= 1.0 for row in doc["rows"])


def test_bottleneck_for_another_latent_is_refused(ddpm, tmp_path):
    other = tiny_unet_folder(tmp_path / "other", sample_size=32, block_out_channels=(16, 16))
    r = _run(["intervene", "--gen", other, "--cbae", ddpm["cbae"]["out"], "--concept", "Smiling", "--value", 1, "--seeds", 0,
              "--steps", 2, "--out", tmp_path / "x", "--device", "cpu", "--force", "--quiet"])
    assert r.exit_code == 2 and "expects latents [32, 16, 16]" in r.output


def test_train_with_an_original_ddpm_config(ddpm, tmp_path):
    """The original's cbae_ddpm YAML: its concepts (original words), unknown dims and width (latent_noise_dim) apply."""
    yaml = tmp_path / "celebahq.yaml"
    yaml.write_text("""dataset:
  name: celebahq
  batch_size: 4
model:
  pretrained: google/ddpm-celebahq-256
  type: cbae_ddpm
  latent_shape: [32, 16, 16]
  latent_noise_dim: 24
  concepts:
    concept_bins: [2, 2, 5]
    concept_names: ["smiling", "gender", "unknown"]
    concept_output: [2, 2, 5]
train_config:
  pl_prob_thresh: 0.8
  betas: (.5, .99)
""")
    out = tmp_path / "orig.safetensors"
    r = _run(["train-cbae", "--gen", ddpm["unet"], "--config", yaml, "--train-images", ddpm["images"], "--classifiers",
              "toyfaces-pseudo", "--steps", 1, "--batch-size", 4, "--depth", 1, "--sample-every", 0, "--out", out,
              "--device", "cpu", "--quiet"])
    assert r.exit_code == 0, r.output
    from engine.bottleneck.io import load_bottleneck

    model, meta = load_bottleneck(out)
    assert model.spec.names == ("Smiling", "Male") and model.spec.unknown == 5 and model.hidden == 24
    assert meta["training"]["threshold"] == 0.8
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.read_text().replace("[32, 16, 16]", "[512, 8, 8]"))
    r = _run(["train-cbae", "--gen", ddpm["unet"], "--config", bad, "--train-images", ddpm["images"], "--classifiers",
              "toyfaces-pseudo", "--steps", 1, "--out", tmp_path / "bad.safetensors", "--device", "cpu", "--quiet"])
    assert r.exit_code == 2 and "[512, 8, 8]" in r.output
