"""train-cbae / train-cc on a tiny generator that carries the toyfaces world."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

from engine.bottleneck import ConceptSpec
from engine.errors import UsageError
from engine.pseudolabel.factory import LabelerConfig
from engine.toyfaces.world import CONCEPTS
from engine.train.bottleneck import TrainBottleneckConfig, concept_loss, run_files, train_bottleneck
from toy_generators import tiny_toy_generator


@pytest.fixture(scope="module")
def toy_gen(tmp_path_factory):
    return tiny_toy_generator(tmp_path_factory.mktemp("gen") / "toy.safetensors")


def _cfg(gen, out, **kw):
    base = dict(gen=gen, out=str(out), steps=3, batch_size=4, device="cpu", log_every=1, checkpoint_every=2, sample_every=3,
                sample_count=2, hidden=12, depth=1, labeler=LabelerConfig(classifiers="toyfaces-pseudo"),
                concepts=("Smiling", "Male"))
    base.update(kw)
    return TrainBottleneckConfig(**base)


def test_concept_loss_skips_untrusted_labels():
    spec = ConceptSpec.binary(["A", "B"])
    logits = torch.randn(4, 4, requires_grad=True)
    labels = torch.tensor([[0, 1], [1, 1], [0, 0], [1, 0]])
    probs = torch.tensor([[0.95, 0.5], [0.99, 0.6], [0.5, 0.7], [0.5, 0.1]])
    loss, used = concept_loss(logits, spec, labels, probs, 0.9)
    expected = torch.nn.functional.cross_entropy(logits[:2, :2], labels[:2, 0])
    assert torch.allclose(loss, expected) and used == [0.5, 0.0]
    none, used = concept_loss(logits, spec, labels, probs * 0, 0.9)
    assert none is None and used == [0.0, 0.0]


def test_cbae_run_writes_checkpoint_metrics_and_samples(toy_gen, tmp_path):
    r = train_bottleneck(_cfg(toy_gen, tmp_path / "run.safetensors"))
    files = run_files(tmp_path / "run.safetensors")
    assert r.steps == 3 and r.concepts == ["Smiling", "Male"] and r.kind == "cbae"
    assert files["checkpoint"].exists() and files["state"].exists()
    lines = [json.loads(x) for x in files["metrics"].read_text().splitlines()]
    assert [x["step"] for x in lines] == [1, 2, 3]
    assert all(x["latent_mse"] >= 0 and x["intervention_pl_ce"] > 0 for x in lines)
    assert (files["samples"] / "step000003.png").exists()
    from engine.bottleneck.io import load_bottleneck

    model, meta = load_bottleneck(files["checkpoint"])
    assert model.spec.names == ("Smiling", "Male") and model.spec.unknown == 4  # w_dim 16 // 4
    assert meta["training"]["step"] == 3 and meta["generator"]["name"] == "toy.safetensors"
    # an existing run is not overwritten by accident
    with pytest.raises(UsageError, match="--resume"):
        train_bottleneck(_cfg(toy_gen, tmp_path / "run.safetensors"))


def test_cc_learns_the_concepts_only(toy_gen, tmp_path):
    r = train_bottleneck(_cfg(toy_gen, tmp_path / "cc.safetensors", kind="cc", concepts=()))
    assert r.concepts == list(CONCEPTS)
    keys = load_file(str(tmp_path / "cc.safetensors"))
    assert not any(k.startswith("decoder") for k in keys)
    assert "latent_mse" not in r.metrics and "concept_ce" in r.metrics


def test_resume_continues_the_same_run_exactly(toy_gen, tmp_path):
    train_bottleneck(_cfg(toy_gen, tmp_path / "a.safetensors", steps=4, sample_every=0))
    train_bottleneck(_cfg(toy_gen, tmp_path / "b.safetensors", steps=2, sample_every=0))
    r = train_bottleneck(_cfg(toy_gen, tmp_path / "b.safetensors", steps=4, sample_every=0, resume=True))
    assert r.resumed_from == 2 and r.steps == 4
    a, b = load_file(str(tmp_path / "a.safetensors")), load_file(str(tmp_path / "b.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    lines = (tmp_path / "b.metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["step"] for x in lines] == [1, 2, 3, 4]


def test_resume_refuses_other_concepts_and_missing_state(toy_gen, tmp_path):
    train_bottleneck(_cfg(toy_gen, tmp_path / "c.safetensors", steps=1, sample_every=0))
    with pytest.raises(UsageError, match="concepts"):
        train_bottleneck(_cfg(toy_gen, tmp_path / "c.safetensors", steps=2, resume=True, concepts=("Smiling",)))
    with pytest.raises(UsageError, match="nothing to resume"):
        train_bottleneck(_cfg(toy_gen, tmp_path / "none.safetensors", resume=True))


def test_bad_options(toy_gen, tmp_path):
    for kw, msg in (({"threshold": 1.5}, "--threshold"), ({"kind": "vae"}, "kind"), ({"resume": True, "overwrite": True}, "exclude"),
                    ({"labeler": LabelerConfig(source="magic")}, "--pseudo-label")):
        with pytest.raises(UsageError, match=msg):
            train_bottleneck(_cfg(toy_gen, tmp_path / "x.safetensors", **kw))


def test_sigterm_saves_and_exits_130_then_resume_finishes(toy_gen, tmp_path):
    out = tmp_path / "sig.safetensors"
    cmd = [sys.executable, "-m", "gencbm_cli", "train-cbae", "--gen", toy_gen, "--steps", "100000", "--batch-size", "4",
           "--out", str(out), "--concepts", "Smiling", "--hidden", "12", "--depth", "1", "--log-every", "1",
           "--sample-every", "0", "--device", "cpu", "--quiet"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    metrics = run_files(out)["metrics"]
    deadline = time.time() + 120
    while time.time() < deadline and not (metrics.exists() and metrics.read_text().count("\n") >= 2):
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "--resume" in err
    step = json.loads(metrics.read_text().splitlines()[-1])["step"]
    state = torch.load(run_files(out)["state"], weights_only=True)
    assert state["step"] == step >= 2
    r = subprocess.run(cmd[:6] + ["--steps", str(step + 2)] + cmd[8:] + ["--resume", "--json"], env=env, capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["resumed_from"] == step and doc["steps"] == step + 2


def test_recommended_eps_travels_with_the_checkpoint(toy_gen, tmp_path):
    from engine.bottleneck.interventions import EditSettings
    from engine.bottleneck.io import load_bottleneck

    train_bottleneck(_cfg(toy_gen, tmp_path / "e.safetensors", steps=1, sample_every=0, intervention_eps=0.25))
    _, meta = load_bottleneck(tmp_path / "e.safetensors")
    assert EditSettings().resolved(meta).eps == 0.25
    assert EditSettings(eps=0.05).resolved(meta).eps == 0.05  # an explicit --eps wins
    assert EditSettings().resolved({}).eps == 0.1  # the original's default
    with pytest.raises(UsageError, match="--intervention-eps"):
        train_bottleneck(_cfg(toy_gen, tmp_path / "f.safetensors", intervention_eps=-1.0))
