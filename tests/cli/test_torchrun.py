"""Several processes through torchrun (gloo on the CPU, 2 processes): training, resuming, stopping on
a signal, and sharded evaluation that equals one process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from gencbm_cli.main import app

GENCBM = Path(sys.executable).with_name("gencbm")
pytestmark = pytest.mark.skipif(not GENCBM.exists() or not torch.distributed.is_available(),
                                reason="needs the gencbm console script and torch.distributed")


def _env():
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", GENCBM_DEBUG="0")
    return env


def torchrun(args, cwd, nproc=2, timeout=600, **kw):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}", "--no-python", str(GENCBM),
           *[str(a) for a in args]]
    return subprocess.run(cmd, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=timeout, **kw)


def single(args):
    r = CliRunner().invoke(app, [str(a) for a in args])
    assert r.exit_code == 0, r.output
    return r.stdout


def test_train_cbae_on_two_processes_writes_one_checkpoint_and_resumes(tmp_path):
    out = tmp_path / "X.safetensors"
    base = ["train-cbae", "--gen", "toyfaces", "--pseudo-label", "supervised", "--batch-size", 8, "--sample-every", 2,
            "--log-every", 1, "--out", out, "--device", "cpu", "--quiet"]
    r = torchrun([*base, "--steps", 2], tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip() == str(out)  # rank 0 alone prints
    assert sorted(p.name for p in tmp_path.iterdir()) == ["X-samples", "X.metrics.jsonl", "X.safetensors", "X.train-state.pt"]
    lines = out.with_name("X.metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == [1, 2]  # one writer
    state = torch.load(out.with_name("X.train-state.pt"), weights_only=True)
    assert state["step"] == 2 and len(state["ranks"]) == 2
    assert not torch.equal(state["ranks"][0]["zgen"], state["ranks"][1]["zgen"])  # per-rank seeds
    from engine.bottleneck.io import load_bottleneck

    _, meta = load_bottleneck(out)
    assert meta["training"]["processes"] == 2 and meta["training"]["step"] == 2

    r = torchrun([*base, "--steps", 3, "--resume", "--json"], tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    doc = json.loads(r.stdout)
    assert doc["steps"] == 3 and doc["resumed_from"] == 2
    # a run saved by two processes cannot continue on one
    r = CliRunner().invoke(app, [str(a) for a in [*base, "--steps", 4, "--resume"]])
    assert r.exit_code == 2 and "--nproc-per-node 2" in r.output


def test_sigterm_on_one_rank_saves_once_and_stops_every_rank(tmp_path):
    out = tmp_path / "S.safetensors"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", "--no-python", str(GENCBM),
           "train-cc", "--gen", "toyfaces", "--batch-size", 4, "--steps", 100000, "--sample-every", 0, "--log-every", 1,
           "--checkpoint-every", 100000, "--out", out, "--device", "cpu", "--quiet"]
    proc = subprocess.Popen([str(c) for c in cmd], cwd=tmp_path, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    metrics = out.with_name("S.metrics.jsonl")
    try:
        deadline = time.time() + 300
        while time.time() < deadline and (not metrics.exists() or len(metrics.read_text().splitlines()) < 3):
            time.sleep(0.5)
        assert metrics.exists(), "training never started"
        children = [int(p) for p in Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()]
        ranks = {}
        for pid in children:
            env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            rank = next(int(e.split(b"=", 1)[1]) for e in env if e.startswith(b"RANK="))
            ranks[rank] = pid
        os.kill(ranks[1], signal.SIGTERM)  # rank 1 only
        _, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode != 0
    assert "interrupted at step" in err
    state = torch.load(out.with_name("S.train-state.pt"), weights_only=True)
    assert 3 <= state["step"] < 100000 and len(state["ranks"]) == 2
    r = torchrun(["train-cc", "--gen", "toyfaces", "--batch-size", 4, "--steps", state["step"] + 1, "--sample-every", 0,
                  "--out", out, "--device", "cpu", "--resume", "--json", "--quiet"], tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.loads(r.stdout)["steps"] == state["step"] + 1


def test_sharded_steerability_equals_one_process(tmp_path):
    args = ["evaluate", "steerability", "--gen", "toyfaces", "--concept", "Smiling", "--value", 1, "--method", "swap",
            "--samples", 24, "--batch-size", 8, "--seed", 3, "--json", "--quiet", "--device", "cpu"]
    r = torchrun(args, tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.loads(r.stdout) == json.loads(single(args))


def test_sharded_accuracy_and_generate_equal_one_process(tmp_path):
    args = ["evaluate", "accuracy", "--gen", "toyfaces", "--samples", 30, "--batch-size", 10, "--json", "--quiet", "--device", "cpu"]
    r = torchrun(args, tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.loads(r.stdout) == json.loads(single(args))
    gen = ["generate", "--gen", "toyfaces", "--seeds", "0-5", "--batch-size", 3, "--classifiers", "oracle", "--json", "--quiet",
           "--device", "cpu"]
    r = torchrun([*gen, "--out", tmp_path / "multi"], tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    multi = json.loads(r.stdout)
    one = json.loads(single([*gen, "--out", tmp_path / "one"]))
    strip = lambda doc: [{k: v for k, v in e.items() if k != "path"} for e in doc["images"]]  # noqa: E731
    assert [e["seed"] for e in multi["images"]] == list(range(6))
    assert strip(multi) == strip(one)
    assert sorted(p.name for p in (tmp_path / "multi").iterdir()) == [f"seed{s:04d}.png" for s in range(6)]


def test_train_classifier_on_two_processes(tmp_path):
    r = torchrun(["train-classifier", "--dataset", "toyfaces", "--concepts", "Smiling", "--arch", "small-cnn", "--epochs", 1,
                  "--limit", 400, "--batch-size", 32, "--out", tmp_path / "clf", "--json", "--quiet", "--device", "cpu"], tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    doc = json.loads(r.stdout)
    assert doc["train_samples"] == 400 and 0.0 <= doc["test_accuracy"] <= 1.0
    assert [p.name for p in (tmp_path / "clf").iterdir()] == ["toyfaces_Smiling_smallcnn_conclsf.safetensors"]


def test_feature_stats_merge_equals_one_accumulator():
    from engine.evaluate.fid import FeatureStats

    g = torch.Generator().manual_seed(0)
    feats = torch.randn(50, 6, generator=g, dtype=torch.float64) * 3 + 100
    whole = FeatureStats()
    whole.update(feats)
    parts = [FeatureStats(), FeatureStats(), FeatureStats()]
    parts[0].update(feats[:10])
    parts[1].update(feats[10:35])
    parts[2].update(feats[35:])
    merged = FeatureStats.from_state(parts[0].state())
    merged.merge(FeatureStats.from_state(parts[1].state())).merge(parts[2]).merge(FeatureStats())
    assert merged.n == 50
    import numpy as np

    np.testing.assert_allclose(merged.mean(), whole.mean(), rtol=1e-12)
    np.testing.assert_allclose(merged.cov(), whole.cov(), rtol=1e-9, atol=1e-10)
