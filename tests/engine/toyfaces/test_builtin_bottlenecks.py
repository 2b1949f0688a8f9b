"""The shipped toyfaces CB-AE and CC: they read the world's concepts and steer them (checked against
ground truth and the independent oracle on every commit)."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from engine.toyfaces import CONCEPTS
from engine.toyfaces.builtin import BOTTLENECKS, WEIGHTS_DIR, builtin_bottleneck


@pytest.mark.parametrize("name", sorted(BOTTLENECKS))
def test_shipped_bottleneck_reads_the_ground_truth(name):
    from engine.evaluate.accuracy import AccuracyConfig, evaluate_accuracy

    kind = name.split("-")[-1]
    cfg = AccuracyConfig(**{kind: str(builtin_bottleneck(name))}, samples=300, batch_size=150, device="cpu")
    doc = evaluate_accuracy(cfg)
    assert [r["concept"] for r in doc["rows"]] == list(CONCEPTS)
    for r in doc["rows"]:
        assert r["agreement_with_ground_truth"] >= 0.85, r


@pytest.mark.parametrize("method", ["optimize", "swap"])
def test_shipped_cbae_steers_smiling_and_glasses(method):
    from engine.evaluate.steerability import SteerabilityConfig, evaluate_steerability

    doc = evaluate_steerability(SteerabilityConfig(concepts=("Smiling", "Eyeglasses"), values=(1,), method=method, samples=60,
                                                   batch_size=60, seed=1, device="cpu"))
    for row in doc["rows"]:
        assert row["eligible"] >= 10 and row["steerability"] >= 0.6, row
        assert row["mean_side_effect"] <= 0.15, row


def test_intervene_with_no_options_uses_toyfaces_and_writes_to_gencbm_out(tmp_path, monkeypatch):
    from gencbm_cli.main import app

    monkeypatch.chdir(tmp_path)
    r = CliRunner().invoke(app, ["intervene", "--concept", "Smiling", "--value", "1", "--seeds", "0-3"])
    assert r.exit_code == 0, r.output
    out = tmp_path / "gencbm-out"
    assert (out / "grid.png").exists() and (out / "seed0003-edit.png").exists()
    assert "gencbm-out" in r.output
    doc = json.loads((out / "results.json").read_text())
    assert doc["generator"] == "toyfaces" and doc["kind"] == "cbae"


def test_shipped_weights_record_how_they_were_made():
    readme = json.loads((WEIGHTS_DIR / "README.json").read_text())
    for name in BOTTLENECKS:
        assert "gencbm train-" in " ".join(readme[name]["commands"])
