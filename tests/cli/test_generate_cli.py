"""`gencbm generate` end to end, on official-format pickles of tiny random generators.

Through typer's CliRunner (click 8.2+: `result.stdout` and `result.stderr` are separate streams)
and once as a real `gencbm` process. Images are compared with the model's own output converted
as NVIDIA's gen_images.py does: `(img * 127.5 + 128).clamp(0, 255).to(uint8)`.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from engine.generators.stylegan2 import one_hot, z_from_seeds
from gencbm_cli import common
from gencbm_cli.main import app
from nvidia_format import tiny_generator, write_network_pickle
from output_checks import one_error_line, read_png, read_seeds

SEEDS = [0, 1, 2, 5]  # --seeds 0-2,5


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    """Own store per test, no debug from the environment, and the CLI's process-wide settings
    (--quiet/--debug stick once set) back to their defaults."""
    monkeypatch.setenv("GENCBM_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("GENCBM_DEBUG", raising=False)
    monkeypatch.setattr(common.settings, "quiet", False)
    monkeypatch.setattr(common.settings, "debug", False)


@pytest.fixture(scope="module")
def nets(tmp_path_factory):
    d = tmp_path_factory.mktemp("nets")
    G = tiny_generator(30, img_resolution=16, num_fp16_res=2)
    Gc = tiny_generator(31, img_resolution=8, c_dim=3, architecture="resnet")
    return {
        "G": G, "pkl": write_network_pickle(d / "uncond.pkl", G),
        "Gc": Gc, "cond_pkl": write_network_pickle(d / "cond.pkl", Gc, fmt="ada"),
        "dir": d,
    }


def invoke(*args: str):
    return CliRunner().invoke(app, ["generate", *map(str, args)])


def expected_uint8(G, seeds, psi=1.0, cutoff=None, noise_mode="const", class_idx=None, batch=None) -> np.ndarray:
    """[N, H, W, C] uint8 images as the CLI should write them (same batching as the CLI)."""
    batch = batch or 8
    out = []
    with torch.no_grad():
        for start in range(0, len(seeds), batch):
            part = list(seeds[start : start + batch])
            c = one_hot(class_idx, G.c_dim, len(part)) if G.c_dim else None
            img = G(z_from_seeds(part, G.z_dim), c, truncation_psi=psi, truncation_cutoff=cutoff, noise_mode=noise_mode)
            out.append((img * 127.5 + 128).clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy())
    return np.concatenate(out)


# --------------------------------------------------------------------------------------------
# Output.


def test_json_manifest_pngs_and_grid(nets, tmp_path):
    out = tmp_path / "out"
    result = invoke("--gen", nets["pkl"], "--seeds", "0-2,5", "--out", out, "--grid", "--json")
    assert result.exit_code == 0, result.output
    manifest = json.loads(result.stdout)  # stdout is exactly one JSON document
    assert [img["seed"] for img in manifest["images"]] == SEEDS
    assert [Path(img["path"]).name for img in manifest["images"]] == [f"seed{s:04d}.png" for s in SEEDS]
    assert all(Path(img["path"]).parent == out for img in manifest["images"])
    assert Path(manifest["grid"]) == out / "grid.png"
    assert manifest["truncation_psi"] == 1.0 and manifest["noise_mode"] == "const" and manifest["resolution"] == 16
    assert "{" not in result.stderr and "seed0000" not in result.stderr
    assert sorted(p.name for p in out.iterdir()) == ["grid.png"] + [f"seed{s:04d}.png" for s in SEEDS]

    images = read_seeds(out, SEEDS)
    np.testing.assert_array_equal(images, expected_uint8(nets["G"], SEEDS))
    assert images.std() > 5  # real pictures, not a constant
    grid = read_png(out / "grid.png")
    cols = math.ceil(math.sqrt(len(SEEDS)))
    assert grid.shape == (16 * math.ceil(len(SEEDS) / cols), 16 * cols, 3)
    for i, img in enumerate(images):
        r, c = divmod(i, cols)
        np.testing.assert_array_equal(grid[16 * r : 16 * r + 16, 16 * c : 16 * c + 16], img)


def test_text_output_lists_paths_on_stdout_and_logs_on_stderr(nets, tmp_path):
    out = tmp_path / "out"
    result = invoke("--gen", nets["pkl"], "--seeds", "3,4", "--out", out)
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [str(out / "seed0003.png"), str(out / "seed0004.png")]
    assert "2 image(s)" in result.stderr
    assert not (out / "grid.png").exists()


def test_quiet_prints_nothing_on_stderr(nets, tmp_path):
    result = invoke("--gen", nets["pkl"], "--seeds", "0-2,5", "--out", tmp_path / "out", "--grid", "--json", "--quiet")
    assert result.exit_code == 0, result.output
    assert result.stderr == ""
    assert len(json.loads(result.stdout)["images"]) == 4


def test_truncation_and_cutoff(nets, tmp_path):
    G = nets["G"]
    for psi, cutoff in ((0.7, None), (0.5, 2), (0.0, None)):
        out = tmp_path / f"psi{psi}-{cutoff}"
        args = ["--gen", nets["pkl"], "--seeds", "0-2,5", "--out", out, "--trunc", psi] + (["--trunc-cutoff", cutoff] if cutoff else [])
        result = invoke(*args)
        assert result.exit_code == 0, result.output
        np.testing.assert_array_equal(read_seeds(out, SEEDS), expected_uint8(G, SEEDS, psi=psi, cutoff=cutoff))
    # psi 0: every seed gives the image of w_avg.
    same = read_seeds(tmp_path / "psi0.0-None", SEEDS)
    assert all((img == same[0]).all() for img in same)
    assert not (read_seeds(tmp_path / "psi0.7-None", SEEDS) == read_seeds(tmp_path / "psi0.5-2", SEEDS)).all()


def test_trunc_cutoff_beyond_num_ws_is_usage_error(nets, tmp_path):
    result = invoke("--gen", nets["pkl"], "--seeds", "0", "--out", tmp_path / "o", "--trunc", "0.7", "--trunc-cutoff", "99")
    assert result.exit_code == 2
    assert "num_ws" in one_error_line(result)


def test_noise_modes(nets, tmp_path):
    G = nets["G"]
    imgs = {}
    for mode in ("const", "none", "random"):
        out = tmp_path / mode
        result = invoke("--gen", nets["pkl"], "--seeds", "0-2,5", "--out", out, "--noise-mode", mode)
        assert result.exit_code == 0, result.output
        imgs[mode] = read_seeds(out, SEEDS)
    np.testing.assert_array_equal(imgs["none"], expected_uint8(G, SEEDS, noise_mode="none"))
    assert (imgs["const"] != imgs["none"]).any()  # noise strengths are non-zero in these models
    assert (imgs["random"] != imgs["const"]).any() and (imgs["random"] != imgs["none"]).any()
    result = invoke("--gen", nets["pkl"], "--seeds", "0", "--out", tmp_path / "x", "--noise-mode", "loud")
    assert result.exit_code == 2


def test_batch_size_does_not_change_the_images(nets, tmp_path):
    """Batch 1 and batch 4 give the same images. Not bit for bit: on CPU the batch size changes the
    float rounding (gemv vs gemm in the mapping, convolution algorithms), about 1e-6, which can move
    a pixel across an 8-bit boundary; so at most one level, rarely."""
    files = {}
    for bs in (1, 4, 3):
        out = tmp_path / f"bs{bs}"
        result = invoke("--gen", nets["pkl"], "--seeds", "0-2,5", "--out", out, "--batch-size", bs)
        assert result.exit_code == 0, result.output
        files[bs] = read_seeds(out, SEEDS).astype(int)
        np.testing.assert_array_equal(files[bs], expected_uint8(nets["G"], SEEDS, batch=bs))  # the CLI batches as asked
    for bs in (4, 3):
        diff = np.abs(files[bs] - files[1])
        assert diff.max() <= 1 and (diff > 0).mean() < 1e-3
    assert invoke("--gen", nets["pkl"], "--seeds", "0", "--out", tmp_path / "z", "--batch-size", "0").exit_code == 2


def test_existing_output_is_replaced_atomically(nets, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    old = out / "seed0000.png"
    old.write_bytes(b"not a png at all")
    old_inode = old.stat().st_ino
    keep = out / "notes.txt"
    keep.write_text("mine")
    result = invoke("--gen", nets["pkl"], "--seeds", "0,1", "--out", out, "--grid")
    assert result.exit_code == 0, result.output
    np.testing.assert_array_equal(read_png(old), expected_uint8(nets["G"], [0, 1])[0])
    assert old.stat().st_ino != old_inode  # a new file renamed over the old one, not rewritten in place
    assert sorted(p.name for p in out.iterdir()) == ["grid.png", "notes.txt", "seed0000.png", "seed0001.png"]  # no temporaries
    assert keep.read_text() == "mine"
    # And again, over its own output.
    assert invoke("--gen", nets["pkl"], "--seeds", "0,1", "--out", out, "--grid").exit_code == 0
    assert sorted(p.name for p in out.iterdir()) == ["grid.png", "notes.txt", "seed0000.png", "seed0001.png"]


def test_pickle_key_g(nets, tmp_path):
    G_train = tiny_generator(32, img_resolution=8)
    G_ema = tiny_generator(33, img_resolution=8)
    pkl = write_network_pickle(tmp_path / "both.pkl", G_ema, G_train)
    for key, G in (("G", G_train), ("G_ema", G_ema)):
        out = tmp_path / key
        assert invoke("--gen", pkl, "--seeds", "0,1", "--out", out, "--pickle-key", key).exit_code == 0
        np.testing.assert_array_equal(read_seeds(out, [0, 1]), expected_uint8(G, [0, 1]))


# --------------------------------------------------------------------------------------------
# Conditional generators.


def test_conditional_needs_a_valid_class(nets, tmp_path):
    Gc, pkl = nets["Gc"], nets["cond_pkl"]
    out = tmp_path / "out"
    result = invoke("--gen", pkl, "--seeds", "0,1", "--out", out, "--class", 2)
    assert result.exit_code == 0, result.output
    np.testing.assert_array_equal(read_seeds(out, [0, 1]), expected_uint8(Gc, [0, 1], class_idx=2))
    other = tmp_path / "other"
    assert invoke("--gen", pkl, "--seeds", "0,1", "--out", other, "--class", 0).exit_code == 0
    assert (read_seeds(other, [0, 1]) != read_seeds(out, [0, 1])).any()

    result = invoke("--gen", pkl, "--seeds", "0", "--out", tmp_path / "a")
    assert result.exit_code == 2
    assert "--class" in one_error_line(result) and "0..2" in result.stderr
    for bad in ("3", "-1"):
        result = invoke("--gen", pkl, "--seeds", "0", "--out", tmp_path / "b", "--class", bad)
        assert result.exit_code == 2, (bad, result.output)
        assert "0..2" in one_error_line(result)
    assert not (tmp_path / "a").exists() or not list((tmp_path / "a").iterdir())


def test_class_for_an_unconditional_generator_is_usage_error(nets, tmp_path):
    result = invoke("--gen", nets["pkl"], "--seeds", "0", "--out", tmp_path / "o", "--class", 0)
    assert result.exit_code == 2
    assert "unconditional" in one_error_line(result)


# --------------------------------------------------------------------------------------------
# Errors.


def test_known_generator_not_downloaded_says_how_to_download_it(tmp_path):
    result = invoke("--gen", "stylegan2-celebahq-256", "--seeds", "0", "--out", tmp_path / "o")
    assert result.exit_code == 3
    assert "gencbm download stylegan2-celebahq-256" in one_error_line(result)
    assert not (tmp_path / "o").exists()


def test_unknown_generator_name(tmp_path):
    result = invoke("--gen", "stylegan2-celebahq-25", "--seeds", "0", "--out", tmp_path / "o")
    assert result.exit_code == 3
    line = one_error_line(result)
    assert "stylegan2-celebahq-25" in line and "gencbm download" in line
    assert "stylegan2-celebahq-256" in line  # the closest known name


def test_missing_pickle_file(tmp_path):
    result = invoke("--gen", tmp_path / "gone.pkl", "--seeds", "0", "--out", tmp_path / "o")
    assert result.exit_code == 3
    assert "gone.pkl" in one_error_line(result)


@pytest.mark.parametrize("seeds", ["1-x", "", "5-2", "-1", "1,,2", "abc"])
def test_malformed_seeds_are_usage_errors(seeds, nets, tmp_path):
    result = invoke("--gen", nets["pkl"], "--seeds", seeds, "--out", tmp_path / "o")
    assert result.exit_code == 2, result.output
    assert "seed" in result.stderr.lower()
    assert not (tmp_path / "o").exists()


@pytest.fixture
def corrupt_pkl(nets, tmp_path):
    data = nets["pkl"].read_bytes()
    path = tmp_path / "broken.pkl"
    path.write_bytes(data[: len(data) // 2])
    return path


def test_corrupt_pickle_is_exit_4_with_one_line(corrupt_pkl, tmp_path):
    result = invoke("--gen", corrupt_pkl, "--seeds", "0", "--out", tmp_path / "o")
    assert result.exit_code == 4
    assert "broken.pkl" in one_error_line(result)
    assert result.stdout == ""


def test_debug_shows_the_traceback(corrupt_pkl, tmp_path):
    result = invoke("--gen", corrupt_pkl, "--seeds", "0", "--out", tmp_path / "o", "--debug")
    assert result.exit_code == 4
    assert "Traceback" in result.stderr and "CorruptFileError" in result.stderr
    assert result.stderr.rstrip().splitlines()[-1].startswith("gencbm: error: ")


def test_unsafe_pickle_is_exit_4(tmp_path):
    import pickle

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'PWNED'}",))

    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"G_ema": Evil()}))
    result = invoke("--gen", path, "--seeds", "0", "--out", tmp_path / "o")
    assert result.exit_code == 4
    assert "refusing" in one_error_line(result)
    assert not (tmp_path / "PWNED").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without a GPU")
def test_cuda_without_gpu_is_exit_1(nets, tmp_path):
    result = invoke("--gen", nets["pkl"], "--seeds", "0", "--out", tmp_path / "o", "--device", "cuda")
    assert result.exit_code == 1
    assert "CUDA" in one_error_line(result)
    assert not (tmp_path / "o").exists()


def test_unknown_device_is_usage_error(nets, tmp_path):
    result = invoke("--gen", nets["pkl"], "--seeds", "0", "--out", tmp_path / "o", "--device", "tpu")
    assert result.exit_code == 2
    one_error_line(result)


# --------------------------------------------------------------------------------------------
# The installed command, as a real process.


GENCBM = Path(sys.executable).parent / "gencbm"


def _run_gencbm(args, tmp_path) -> subprocess.CompletedProcess:
    env = {**os.environ, "GENCBM_HOME": str(tmp_path / "home"), "OMP_NUM_THREADS": "1", "NO_COLOR": "1"}
    env.pop("GENCBM_DEBUG", None)
    return subprocess.run([str(GENCBM), *map(str, args)], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)


@pytest.mark.skipif(not GENCBM.is_file(), reason="the gencbm console script is not installed next to this python")
def test_real_process(nets, tmp_path, corrupt_pkl):
    out = tmp_path / "out"
    proc = _run_gencbm(["generate", "--gen", nets["pkl"], "--seeds", "0-2,5", "--out", out, "--grid", "--json"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    manifest = json.loads(proc.stdout)
    assert [img["seed"] for img in manifest["images"]] == SEEDS
    assert "{" not in proc.stderr
    np.testing.assert_array_equal(read_seeds(out, SEEDS), expected_uint8(nets["G"], SEEDS))
    assert (out / "grid.png").is_file()

    proc = _run_gencbm(["generate", "--gen", corrupt_pkl, "--seeds", "0", "--out", tmp_path / "o2"], tmp_path)
    assert proc.returncode == 4
    assert proc.stdout == ""
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("gencbm: error: ") and "broken.pkl" in lines[0], proc.stderr
