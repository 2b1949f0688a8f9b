"""Generators that carry a toyfaces world report each image's ground-truth concepts."""

from __future__ import annotations

import json

import torch
from typer.testing import CliRunner

from engine.generators import load_generator, save_generator
from engine.generators.stylegan2 import Generator, z_from_seeds
from engine.toyfaces.world import CONCEPTS, World, WorldConfig
from gencbm_cli.main import app


def _toy_like(tmp_path):
    torch.manual_seed(0)
    G = Generator(z_dim=32, c_dim=0, w_dim=16, img_resolution=8, img_channels=3, mapping_kwargs=dict(num_layers=2),
                  channel_base=64, channel_max=16, num_fp16_res=0)
    return save_generator(G, tmp_path / "toy.safetensors", extra={"world": WorldConfig().to_json()})


def test_world_round_trips_through_the_generator_file(tmp_path):
    G = load_generator(_toy_like(tmp_path))
    assert WorldConfig.from_json(G.gencbm_meta["world"]) == WorldConfig()


def test_generate_json_includes_ground_truth(tmp_path, monkeypatch):
    monkeypatch.setenv("GENCBM_HOME", str(tmp_path / "home"))
    path = _toy_like(tmp_path)
    result = CliRunner().invoke(app, ["generate", "--gen", str(path), "--seeds", "0-5", "--out", str(tmp_path / "out"), "--json", "-q"])
    assert result.exit_code == 0, result.output
    manifest = json.loads(result.stdout)
    expected = World().factors(z_from_seeds(range(6), 32))[0]
    for entry in manifest["images"]:
        truth = entry["ground_truth"]
        assert list(truth) == list(CONCEPTS)
        assert [truth[c] for c in CONCEPTS] == expected[entry["seed"]].tolist()


def test_plain_generators_have_no_ground_truth(tmp_path, monkeypatch):
    monkeypatch.setenv("GENCBM_HOME", str(tmp_path / "home"))
    G = Generator(z_dim=8, c_dim=0, w_dim=8, img_resolution=4, img_channels=3, mapping_kwargs=dict(num_layers=1), channel_base=32, channel_max=8, num_fp16_res=0)
    path = save_generator(G, tmp_path / "plain.safetensors")
    result = CliRunner().invoke(app, ["generate", "--gen", str(path), "--seeds", "1", "--out", str(tmp_path / "o"), "--json", "-q"])
    assert result.exit_code == 0, result.output
    assert "ground_truth" not in json.loads(result.stdout)["images"][0]


def test_generate_with_classifiers_adds_predictions_and_annotated_grid(tmp_path, monkeypatch):
    from engine.train.classifier import TrainClassifierConfig, train_classifiers

    monkeypatch.setenv("GENCBM_HOME", str(tmp_path / "home"))
    cset = tmp_path / "tiny-set"
    train_classifiers(TrainClassifierConfig(dataset="toyfaces", concepts=("Smiling", "Eyeglasses"), arch="small-cnn", width=4,
                                            epochs=1, limit=200, out=str(cset), device="cpu"))
    path = _toy_like(tmp_path)
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["generate", "--gen", str(path), "--seeds", "0-3", "--out", str(out), "--grid",
                                      "--classifiers", str(cset), "--json", "-q"])
    assert result.exit_code == 0, result.output
    manifest = json.loads(result.stdout)
    for entry in manifest["images"]:
        probs = entry["predictions"][str(cset)]
        assert set(probs) == {"Smiling", "Eyeglasses"}
        assert all(0.0 <= p <= 1.0 for p in probs.values())
    from PIL import Image

    annotated = Image.open(manifest["annotated_grid"])
    assert annotated.size[0] >= 2 * 128  # upscaled cells with captions


def test_unknown_classifier_set_exits_3(tmp_path, monkeypatch):
    monkeypatch.setenv("GENCBM_HOME", str(tmp_path / "home"))
    path = _toy_like(tmp_path)
    result = CliRunner().invoke(app, ["generate", "--gen", str(path), "--seeds", "0", "--out", str(tmp_path / "o"), "--classifiers", "no-such-set"])
    assert result.exit_code == 3
    assert "no-such-set" in result.stderr
