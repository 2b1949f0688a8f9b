"""`gencbm download` through the CLI: exit codes, messages, and download -> generate end to end.

Every server is on 127.0.0.1; nothing here touches the internet.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from gencbm_cli.main import app

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "engine" / "store"))
from fakeserver import FakeServer, sha, url_entry, write_registry  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
SHARED_PKL = REPO.parent / "shared" / "fixtures" / "stylegan2" / "sg3-skip32.pkl"
SHARED_PNG = REPO.parent / "shared" / "fixtures" / "stylegan2" / "sg3-skip32-png"
DATA = os.urandom(120_000)


@pytest.fixture(autouse=True)
def _fresh_settings(monkeypatch):
    """--quiet and --debug set process-wide flags; each test starts without them."""
    from gencbm_cli import common

    monkeypatch.setattr(common.settings, "quiet", False)
    monkeypatch.setattr(common.settings, "debug", False)


@pytest.fixture
def server():
    with FakeServer() as srv:
        yield srv


@pytest.fixture
def env(tmp_path):
    """The environment of a user with an empty store (extend it per test)."""
    return {
        "GENCBM_HOME": str(tmp_path / "store"), "GENCBM_OFFLINE": "", "GENCBM_MIRROR": "", "GENCBM_REGISTRY": "",
        "GENCBM_GDRIVE_ENDPOINT": "", "HF_HUB_OFFLINE": "", "NO_COLOR": "1",
    }


def run(args: list[str], env: dict) -> object:
    return CliRunner().invoke(app, args, env=env)


@pytest.fixture(scope="module")
def tiny_generator(tmp_path_factory) -> bytes:
    """A gencbm .safetensors generator (16 px) as bytes, to serve from a mirror."""
    import torch

    from engine.generators import Generator, save_generator

    torch.manual_seed(0)
    g = Generator(z_dim=8, c_dim=0, w_dim=8, img_resolution=16, img_channels=3, channel_base=128, channel_max=16,
                  mapping_kwargs=dict(num_layers=2), architecture="skip")
    path = save_generator(g, tmp_path_factory.mktemp("gen") / "tiny.safetensors")
    return path.read_bytes()


def test_download_help_does_not_import_torch():
    code = (
        "import sys\nfrom gencbm_cli.main import app\nfrom typer.testing import CliRunner\n"
        "r = CliRunner().invoke(app, ['download', '--help'])\nassert r.exit_code == 0, r.output\n"
        "r = CliRunner().invoke(app, ['download', '--list'])\nassert r.exit_code == 0, r.output\n"
        "print('torch' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def test_list_json_names_every_artifact(env):
    result = run(["download", "--list", "--json"], env)
    assert result.exit_code == 0
    rows = {r["name"]: r for r in json.loads(result.stdout)}
    for name in ("stylegan2-celebahq-256", "stylegan2-cub-256", "ddpm-celebahq-256", "cbae-stylegan2-celebahq", "cc-stylegan2-celebahq",
                 "cbae-ddpm-celebahq", "classifiers-celebahq-vitl16", "celebahq-splits", "inception-fid", "torchvision-vit-l-16-swag"):
        assert rows[name]["stored"] is False
    assert rows["ddpm-celebahq-256"]["mirror_paths"][0] == "google/ddpm-celebahq-256/config.json"
    text = run(["download", "--list"], env)
    assert text.exit_code == 0 and "stylegan2-celebahq-256" in text.stdout and "prefix" in text.stdout


def test_download_then_generate_offline_through_a_mirror(env, server, tmp_path, tiny_generator):
    server.add("/mirror/tiny.safetensors", tiny_generator)
    env["GENCBM_REGISTRY"] = write_registry(tmp_path / "r.json", [url_entry("tiny-gen", "http://127.0.0.1:9/tiny.safetensors", "tiny.safetensors", kind="generator")])
    result = run(["download", "tiny-gen", "--mirror", server.url("/mirror")], env)
    assert result.exit_code == 0, result.output
    stored = Path(result.stdout.strip())
    assert stored == tmp_path / "store" / "artifacts" / "tiny-gen" / "tiny.safetensors"
    assert stored.read_bytes() == tiny_generator
    assert "trust on first use" in result.stderr
    out = tmp_path / "out"
    gen = run(["generate", "--gen", "tiny-gen", "--seeds", "0-2", "--out", str(out), "--device", "cpu", "--quiet"], {**env, "GENCBM_OFFLINE": "1"})
    assert gen.exit_code == 0, gen.output
    assert sorted(p.name for p in out.iterdir()) == ["seed0000.png", "seed0001.png", "seed0002.png"]
    assert Image.open(out / "seed0000.png").size == (16, 16)


@pytest.mark.skipif(not SHARED_PKL.exists(), reason="needs ../shared/fixtures (NVIDIA-format pickle)")
def test_real_name_through_a_local_mirror_then_generate_seeds_0_7_offline(env, server, tmp_path):
    server.add("/m/stylegan2-celebahq-256x256.pkl", SHARED_PKL.read_bytes())
    result = run(["download", "stylegan2-celebahq-256", "--mirror", server.url("/m"), "--json"], env)
    assert result.exit_code == 0, result.output
    (entry,) = json.loads(result.stdout)
    assert entry["name"] == "stylegan2-celebahq-256" and entry["sha256"] == sha(SHARED_PKL.read_bytes())
    assert entry["status"] == "downloaded" and entry["fetched_from"] == "mirror"
    out = tmp_path / "out"
    offline = {**env, "GENCBM_OFFLINE": "1"}
    gen = run(["generate", "--gen", "stylegan2-celebahq-256", "--seeds", "0-7", "--out", str(out), "--device", "cpu", "--quiet"], offline)
    assert gen.exit_code == 0, gen.output
    assert len(list(out.glob("seed*.png"))) == 8
    ours = np.asarray(Image.open(out / "seed0001.png"), dtype=np.int16)
    ref = np.asarray(Image.open(SHARED_PNG / "psi1-const-seed0001.png"), dtype=np.int16)
    assert np.abs(ours - ref).max() <= 2  # the same image NVIDIA's code makes for seed 1


def test_generate_with_a_name_not_downloaded_exits_3(env):
    result = run(["generate", "--gen", "stylegan2-celebahq-256", "--seeds", "0", "--quiet"], env)
    assert result.exit_code == 3
    assert "gencbm download stylegan2-celebahq-256" in result.stderr


def test_dropped_transfer_finishes_by_resuming(env, server, tmp_path):
    server.add("/g.pkl", DATA, drop_first=1)
    env["GENCBM_REGISTRY"] = write_registry(tmp_path / "r.json", [url_entry("test-g", server.url("/g.pkl"), "g.pkl")])
    result = run(["download", "test-g"], env)
    assert result.exit_code == 0, result.output
    assert "resuming at" in result.stderr
    assert Path(result.stdout.strip()).read_bytes() == DATA
    assert server.hits("/g.pkl")[1]["range"] == f"bytes={len(DATA) // 2}-"


def test_500_then_success(env, server, tmp_path):
    server.add("/g.pkl", DATA, fail_first=[500])
    env["GENCBM_REGISTRY"] = write_registry(tmp_path / "r.json", [url_entry("test-g", server.url("/g.pkl"), "g.pkl")])
    result = run(["download", "test-g"], env)
    assert result.exit_code == 0, result.output
    assert "HTTP 500" in result.stderr and "retrying" in result.stderr


def test_corrupted_store_exits_4_and_force_repairs_it(env, server, tmp_path, tiny_generator):
    server.add("/tiny.safetensors", tiny_generator)
    env["GENCBM_REGISTRY"] = write_registry(tmp_path / "r.json", [url_entry("tiny-gen", server.url("/tiny.safetensors"), "tiny.safetensors", kind="generator")])
    assert run(["download", "tiny-gen", "-q"], env).exit_code == 0
    stored = tmp_path / "store" / "artifacts" / "tiny-gen" / "tiny.safetensors"
    raw = bytearray(stored.read_bytes())
    raw[-10] ^= 0xFF  # a flipped bit in the weights; same size
    stored.write_bytes(bytes(raw))
    gen_args = ["generate", "--gen", "tiny-gen", "--seeds", "0", "--out", str(tmp_path / "out"), "--device", "cpu", "--quiet"]
    gen = run(gen_args, env)
    assert gen.exit_code == 4
    assert "corrupt" in gen.stderr and "gencbm download tiny-gen --force" in gen.stderr
    assert not (tmp_path / "out" / "seed0000.png").exists()
    verify = run(["download", "--verify"], env)
    assert verify.exit_code == 4 and "tiny-gen\tcorrupt" in verify.stdout
    again = run(["download", "tiny-gen"], env)
    assert again.exit_code == 4 and "--force" in again.stderr
    repaired = run(["download", "tiny-gen", "--force"], env)
    assert repaired.exit_code == 0, repaired.output
    assert stored.read_bytes() == tiny_generator
    assert run(["download", "--verify", "tiny-gen", "--json"], env).exit_code == 0
    assert run(gen_args, env).exit_code == 0


def test_offline_without_mirror_exits_3_without_network(env, server, tmp_path):
    server.add("/g.pkl", DATA)
    env["GENCBM_REGISTRY"] = write_registry(tmp_path / "r.json", [url_entry("test-g", server.url("/g.pkl"), "g.pkl")])
    result = run(["download", "test-g"], {**env, "GENCBM_OFFLINE": "1"})
    assert result.exit_code == 3
    assert "GENCBM_OFFLINE=1" in result.stderr and "--from-file" in result.stderr
    assert server.hits("/g.pkl") == []


def test_from_file_right_and_wrong_checksum(env, tmp_path):
    env["GENCBM_REGISTRY"] = write_registry(tmp_path / "r.json", [url_entry("test-w", "http://127.0.0.1:9/w.bin", "w.bin", sha256=sha(DATA))])
    wrong = tmp_path / "wrong.bin"
    wrong.write_bytes(DATA[:-1] + b"?")
    bad = run(["download", "test-w", "--from-file", str(wrong)], env)
    assert bad.exit_code == 4 and "published sha256" in bad.stderr
    right = tmp_path / "right.bin"
    right.write_bytes(DATA)
    good = run(["download", "test-w", "--from-file", str(right), "--json"], env)
    assert good.exit_code == 0, good.output
    (entry,) = json.loads(good.stdout)
    assert entry["status"] == "imported" and entry["verified_by"] == "sha256"
    missing = run(["download", "test-w", "--from-file", str(tmp_path / "nope.bin")], env)
    assert missing.exit_code == 3


def test_drive_quota_exits_3_with_the_from_file_instructions(env, server):
    server.add("/uc", b"<html><title>Google Drive - Quota exceeded</title><body>Too many users have viewed or downloaded this file recently.</body></html>", content_type="text/html")
    env["GENCBM_GDRIVE_ENDPOINT"] = server.url("/uc")
    result = run(["download", "cbae-stylegan2-celebahq"], env)
    assert result.exit_code == 3
    assert "gencbm download cbae-stylegan2-celebahq --from-file PATH/TO/celebahq_cbae_stygan2_thr90_sup_pl_cls8_cbae.pt" in result.stderr
    assert "https://drive.google.com/uc?id=1RBdjcBDbpAoW5qOkG-rBonIpcBApBF-q&export=download" in result.stderr
    assert server.hits("/uc")[0]["query"]["id"] == "1RBdjcBDbpAoW5qOkG-rBonIpcBApBF-q"


def test_mirror_404_exits_3(env, server):
    result = run(["download", "inception-fid", "--mirror", server.url("/m")], env)
    assert result.exit_code == 3
    assert "pt_inception-2015-12-05-6726825d.pth" in result.stderr
    assert server.hits("/m/pt_inception-2015-12-05-6726825d.pth")


def test_several_names_continue_after_a_failure(env, server, tmp_path):
    server.add("/m/a.bin", DATA)
    env["GENCBM_REGISTRY"] = write_registry(tmp_path / "r.json", [url_entry("test-a", "http://127.0.0.1:9/a.bin", "a.bin"), url_entry("test-b", "http://127.0.0.1:9/b.bin", "b.bin")])
    result = run(["download", "test-b", "test-a", "--mirror", server.url("/m")], env)
    assert result.exit_code == 3
    assert "b.bin" in result.stderr
    assert Path(result.stdout.strip()).name == "a.bin"


@pytest.mark.parametrize("args, needle", [
    (["download"], "name at least one artifact"),
    (["download", "stylegan2-celeba-256"], "did you mean 'stylegan2-celebahq-256'"),
    (["download", "a", "b", "--from-file", "x"], "exactly one NAME"),
    (["download", "--list", "stylegan2-celebahq-256"], "--list takes no artifact names"),
])
def test_usage_errors_exit_2(env, args, needle):
    result = run(args, env)
    assert result.exit_code == 2
    assert needle in result.stderr
