"""`gencbm evaluate steerability|accuracy` on a tiny generator that carries the toyfaces world."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from engine.pseudolabel.factory import LabelerConfig
from engine.train.bottleneck import TrainBottleneckConfig, train_bottleneck
from gencbm_cli.main import app
from toy_generators import tiny_toy_generator


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("ev")
    gen = tiny_toy_generator(root / "toy.safetensors")
    cfg = TrainBottleneckConfig(kind="cbae", gen=gen, out=str(root / "cbae.safetensors"), steps=2, batch_size=4, device="cpu",
                                sample_every=0, hidden=12, depth=1, labeler=LabelerConfig(classifiers="toyfaces-pseudo"),
                                concepts=("Smiling", "Male"))
    return gen, train_bottleneck(cfg).out


def _json(args):
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout)


@pytest.mark.parametrize("method", ["swap", "optimize", "interfacegan"])
def test_steerability_table_has_a_row_per_concept_and_value(trained, tmp_path, method):
    gen, cbae = trained
    doc = _json(["evaluate", "steerability", "--gen", gen, "--cbae", cbae, "--concept", "all", "--value", "both", "--method", method,
                 "--samples", "6", "--batch-size", "3", "--iters", "2", "--fit-samples", "40", "--seed", "3", "--json", "--quiet"])
    assert doc["method"] == method and doc["evaluator"] == "oracle" and doc["samples"] == 6 and doc["seed"] == 3
    assert [(r["concept"], r["value"]) for r in doc["rows"]] == [("Smiling", 0), ("Smiling", 1), ("Male", 0), ("Male", 1)]
    for r in doc["rows"]:
        assert r["eligible"] + r["had_value"] == 6
        assert set(r["side_effects"]) == {"Arched_Eyebrows", "Blond_Hair", "Eyeglasses", "Heavy_Makeup", "Mouth_Slightly_Open",
                                          "Wearing_Lipstick", "Male" if r["concept"] == "Smiling" else "Smiling"}
        assert r["steerability"] is None or 0 <= r["steerability"] <= 1
        assert 0 <= r["mean_pixel_change"] <= 1
    # deterministic for a given seed
    again = _json(["evaluate", "steerability", "--gen", gen, "--cbae", cbae, "--concept", "all", "--method", method, "--samples", "6",
                   "--batch-size", "2", "--iters", "2", "--fit-samples", "40", "--seed", "3", "--json", "--quiet"])
    assert again["rows"] == doc["rows"]


def test_steerability_grids_and_text_table(trained, tmp_path):
    gen, cbae = trained
    r = CliRunner().invoke(app, ["evaluate", "steerability", "--gen", gen, "--cbae", cbae, "-c", "Male", "--value", "both", "--method", "swap",
                                 "--samples", "4", "--out", str(tmp_path), "--quiet"])
    assert r.exit_code == 0, r.output
    assert "steerability" in r.stdout and "Male" in r.stdout
    assert list(tmp_path.glob("Male-*-*.png"))


def test_steerability_bad_input(trained):
    gen, cbae = trained
    r = CliRunner().invoke(app, ["evaluate", "steerability", "--gen", gen, "--cbae", cbae, "--value", "3"])
    assert r.exit_code == 2
    r = CliRunner().invoke(app, ["evaluate", "steerability", "--gen", gen, "--cbae", cbae, "--method", "magic"])
    assert r.exit_code == 2 and "--method" in r.output
    r = CliRunner().invoke(app, ["evaluate", "steerability", "--gen", gen, "--cbae", cbae, "-c", "Smilng"])
    assert r.exit_code == 2 and "Smiling" in r.output


def test_accuracy_against_the_evaluator_and_the_ground_truth(trained):
    gen, cbae = trained
    doc = _json(["evaluate", "accuracy", "--gen", gen, "--cbae", cbae, "--samples", "10", "--batch-size", "4", "--json", "--quiet"])
    assert [r["concept"] for r in doc["rows"]] == ["Smiling", "Male"]
    for r in doc["rows"]:
        for key in ("agreement_with_evaluator", "agreement_with_ground_truth", "evaluator_vs_ground_truth"):
            assert 0 <= r[key] <= 1
    assert doc["mean_agreement_with_ground_truth"] is not None


def test_fid_without_the_inception_weights_names_the_download(trained, tmp_path):
    gen, _ = trained
    r = CliRunner().invoke(app, ["evaluate", "fid", "--gen", gen, "--dataset", "toyfaces", "--samples", "4"])
    assert r.exit_code == 3 and "gencbm download inception-fid" in r.output
    r = CliRunner().invoke(app, ["evaluate", "fid", "--gen", gen, "--samples", "4"])
    assert r.exit_code == 2
