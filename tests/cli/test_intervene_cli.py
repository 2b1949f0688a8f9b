"""`gencbm intervene` and `gencbm generate --cbae/--cc` through the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from engine.pseudolabel.factory import LabelerConfig
from engine.train.bottleneck import TrainBottleneckConfig, train_bottleneck
from gencbm_cli.main import app
from toy_generators import tiny_toy_generator


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("iv")
    gen = tiny_toy_generator(root / "toy.safetensors")
    out = {}
    for kind in ("cbae", "cc"):
        cfg = TrainBottleneckConfig(kind=kind, gen=gen, out=str(root / f"{kind}.safetensors"), steps=2, batch_size=4, device="cpu",
                                    sample_every=0, hidden=12, depth=1, labeler=LabelerConfig(classifiers="toyfaces-pseudo"),
                                    concepts=("Smiling", "Male", "Eyeglasses"))
        out[kind] = train_bottleneck(cfg).out
    return gen, out["cbae"], out["cc"]


def _run(args):
    return CliRunner().invoke(app, args)


@pytest.mark.parametrize("method", ["swap", "optimize"])
def test_intervene_writes_every_file(trained, tmp_path, method):
    gen, cbae, _ = trained
    r = _run(["intervene", "--gen", gen, "--cbae", cbae, "--concept", "smiling", "--value", "1", "--seeds", "3-4",
              "--method", method, "--iters", "5", "--out", str(tmp_path), "--classifiers", "oracle", "--json", "--quiet"])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["kind"] == "cbae" and doc["method"] == method and doc["edits"] == [{"concept": "Smiling", "value": 1}]
    for seed in (3, 4):
        for row in ("orig", "recon", "edit"):
            assert (tmp_path / f"seed{seed:04d}-{row}.png").exists()
    assert (tmp_path / "grid.png").exists()
    results = json.loads((tmp_path / "results.json").read_text())
    img = results["images"][0]
    assert set(img["encoder"]) == {"orig", "recon", "edit"} and set(img["encoder"]["edit"]) == {"Smiling", "Male", "Eyeglasses"}
    assert set(img["classifiers"]["oracle"]) == {"orig", "recon", "edit"}
    assert set(img["ground_truth"]) >= {"Smiling"}

def test_optimize_on_the_latent_drives_the_encoder_to_the_target(trained, tmp_path):
    gen, cbae, _ = trained
    r = _run(["intervene", "--gen", gen, "--cbae", cbae, "-c", "Smiling", "-v", "1", "-c", "Male", "-v", "0", "--seeds", "0-3",
              "--method", "optimize", "--optimize-on", "latent", "--eps", "3", "--iters", "30", "--out", str(tmp_path), "--quiet"])
    assert r.exit_code == 0, r.output
    results = json.loads((tmp_path / "results.json").read_text())
    for img in results["images"]:
        assert img["encoder"]["edit"]["Smiling"] > 0.5 and img["encoder"]["edit"]["Male"] < 0.5


def test_swap_makes_the_encoder_read_the_target(trained, tmp_path):
    gen, cbae, _ = trained
    r = _run(["intervene", "--gen", gen, "--cbae", cbae, "-c", "Male", "-v", "0", "-c", "Eyeglasses", "-v", "1", "--seeds", "0-5",
              "--out", str(tmp_path), "--json", "--quiet"])
    assert r.exit_code == 0, r.output
    results = json.loads((tmp_path / "results.json").read_text())
    assert len(results["edits"]) == 2
    # the swap makes the target win in the logits; a 2-step decoder need not reproduce that exactly, so
    # check the composition on the swapped logits themselves
    from engine.bottleneck.io import load_bottleneck
    from engine.bottleneck.modules import swap_logits

    model, _ = load_bottleneck(cbae)
    logits = torch.randn(6, model.spec.total)
    both = swap_logits(swap_logits(logits, model.spec, 1, 0), model.spec, 2, 1)
    assert (both[:, model.spec.group(1)].argmax(1) == 0).all() and (both[:, model.spec.group(2)].argmax(1) == 1).all()


def test_cc_edits_with_optimize_and_its_recon_is_the_original(trained, tmp_path):
    gen, _, cc = trained
    r = _run(["intervene", "--gen", gen, "--cc", cc, "-c", "Male", "-v", "1", "--method", "optimize", "--iters", "3", "--seeds", "1",
              "--out", str(tmp_path), "--quiet"])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "seed0001-recon.png").read_bytes() == (tmp_path / "seed0001-orig.png").read_bytes()
    r = _run(["intervene", "--gen", gen, "--cc", cc, "-c", "Male", "-v", "1", "--method", "swap", "--out", str(tmp_path)])
    assert r.exit_code == 2 and "needs a CB-AE" in r.output


@pytest.mark.parametrize("args, code, text", [
    (["-c", "Smilng", "-v", "1"], 2, "did you mean 'Smiling'"),
    (["-c", "Smiling", "-v", "2"], 2, "0..1"),
    (["-c", "Smiling", "-v", "1", "-c", "Male"], 2, "one --value per --concept"),
    (["-c", "Smiling", "-v", "1", "--eps", "0", "--method", "optimize"], 2, "--eps"),
    (["-c", "Smiling", "-v", "1", "--alpha", "2"], 2, "--alpha"),
])
def test_bad_input_is_one_line_and_exit_2(trained, tmp_path, args, code, text):
    gen, cbae, _ = trained
    r = _run(["intervene", "--gen", gen, "--cbae", cbae, "--out", str(tmp_path / "x"), *args])
    assert r.exit_code == code, r.output
    assert text in r.output


def test_bottleneck_for_another_generator_is_refused(trained, tmp_path):
    _, cbae, _ = trained
    other = tiny_toy_generator(tmp_path / "other.safetensors", seed=1, world=False)
    r = _run(["intervene", "--gen", other, "--cbae", cbae, "-c", "Smiling", "-v", "1", "--out", str(tmp_path / "o")])
    assert r.exit_code == 1 and "--force" in r.output
    r = _run(["intervene", "--gen", other, "--cbae", cbae, "-c", "Smiling", "-v", "1", "--out", str(tmp_path / "o"), "--force", "--quiet"])
    assert r.exit_code == 0, r.output


def test_generate_explains_images_with_the_bottleneck(trained, tmp_path):
    gen, cbae, cc = trained
    for flag, path in (("--cbae", cbae), ("--cc", cc)):
        r = _run(["generate", "--gen", gen, "--seeds", "0-2", flag, path, "--grid", "--out", str(tmp_path), "--json", "--quiet"])
        assert r.exit_code == 0, r.output
        doc = json.loads(r.stdout)
        preds = doc["images"][0]["predictions"][flag[2:]]
        assert set(preds) == {"Smiling", "Male", "Eyeglasses"} and all(0.0 <= p <= 1.0 for p in preds.values())
        assert Path(doc["annotated_grid"]).exists()
