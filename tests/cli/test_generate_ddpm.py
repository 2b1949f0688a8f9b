"""`gencbm generate` on a diffusers DDPM (a tiny random UNet2DModel folder), and --skip-existing.

Images are compared with diffusers' own DDIMPipeline / DDPMPipeline for the same seeds, converted
as diffusers' pipelines do: ((x / 2 + 0.5).clamp(0, 1) * 255).round() to uint8.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from ddpm_fixtures import tiny_unet, tiny_unet_folder
from gencbm_cli import common
from gencbm_cli.main import app
from output_checks import one_error_line, read_png, read_seeds

UNET_SEED = 11


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("GENCBM_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("GENCBM_DEBUG", raising=False)
    monkeypatch.setattr(common.settings, "quiet", False)
    monkeypatch.setattr(common.settings, "debug", False)


@pytest.fixture(scope="module")
def unet_dir(tmp_path_factory):
    return tiny_unet_folder(tmp_path_factory.mktemp("ddpm") / "unet", seed=UNET_SEED)


def invoke(*args):
    return CliRunner().invoke(app, ["generate", *map(str, args)])


def pipeline_uint8(seeds, steps, kind="ddim", eta=0.0) -> np.ndarray:
    """[N, H, W, C] uint8 as diffusers' pipeline makes them for these seeds."""
    from diffusers import DDIMPipeline, DDIMScheduler, DDPMPipeline, DDPMScheduler

    unet = tiny_unet(UNET_SEED)
    gens = [torch.Generator().manual_seed(s) for s in seeds]
    if kind == "ddim":
        pipe = DDIMPipeline(unet=unet, scheduler=DDIMScheduler(num_train_timesteps=1000))
        kwargs = {"eta": eta}
    else:
        pipe = DDPMPipeline(unet=unet, scheduler=DDPMScheduler(num_train_timesteps=1000))
        kwargs = {}
    pipe.set_progress_bar_config(disable=True)
    with torch.no_grad():
        x = pipe(batch_size=len(seeds), generator=gens, num_inference_steps=steps, output_type="pt", **kwargs).images
    return (x * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()


# ------------------------------------------------------------------------------------------------
# Images and manifest.


def test_pngs_are_diffusers_ddim_pipeline_output_and_manifest_has_the_sampler(unet_dir, tmp_path):
    out = tmp_path / "out"
    r = invoke("--gen", unet_dir, "--seeds", "0-2", "--steps", 5, "--out", out, "--grid", "--json", "--batch-size", 2)
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert [img["seed"] for img in doc["images"]] == [0, 1, 2]
    assert not any("skipped" in img for img in doc["images"])
    assert (doc["scheduler"], doc["steps"], doc["eta"], doc["resolution"], doc["device"]) == ("ddim", 5, 0.0, 16, "cpu")
    assert "truncation_psi" not in doc and "noise_mode" not in doc
    images = read_seeds(out, [0, 1, 2])
    np.testing.assert_array_equal(images, pipeline_uint8([0, 1, 2], 5))
    assert images.std() > 5
    grid = read_png(out / "grid.png")
    assert grid.shape == (32, 32, 3)
    for i, img in enumerate(images):
        r_, c = divmod(i, 2)
        np.testing.assert_array_equal(grid[16 * r_ : 16 * r_ + 16, 16 * c : 16 * c + 16], img)
    assert sorted(p.name for p in out.iterdir()) == ["grid.png", "seed0000.png", "seed0001.png", "seed0002.png"]


@pytest.mark.parametrize("kind, steps, eta", [("ddpm", 4, 0.0), ("ddim", 4, 0.5)])
def test_stochastic_samplers_match_the_pipelines(unet_dir, tmp_path, kind, steps, eta):
    out = tmp_path / "out"
    r = invoke("--gen", unet_dir, "--seeds", "3,1", "--scheduler", kind, "--steps", steps, "--eta", eta, "--out", out, "--json", "--quiet")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert (doc["scheduler"], doc["steps"], doc["eta"]) == (kind, steps, eta)
    np.testing.assert_array_equal(read_seeds(out, [3, 1]), pipeline_uint8([3, 1], steps, kind, eta))


def test_pipeline_folder_and_text_output(unet_dir, tmp_path):
    pipe_dir = tiny_unet_folder(tmp_path / "pipe", seed=UNET_SEED, pipeline=True)
    out = tmp_path / "out"
    r = invoke("--gen", pipe_dir, "--seeds", "2", "--steps", 3, "--out", out)
    assert r.exit_code == 0, r.output
    assert r.stdout.splitlines() == [str(out / "seed0002.png")]
    assert "1 image(s)" in r.stderr
    np.testing.assert_array_equal(read_seeds(out, [2]), pipeline_uint8([2], 3))


# ------------------------------------------------------------------------------------------------
# --skip-existing.


def test_skip_existing_resumes_an_interrupted_run(unet_dir, tmp_path):
    out = tmp_path / "out"
    r = invoke("--gen", unet_dir, "--seeds", "0-1", "--steps", 3, "--out", out, "--quiet")
    assert r.exit_code == 0, r.output
    before = {s: (out / f"seed{s:04d}.png").stat() for s in (0, 1)}
    # An interrupted run leaves at most a temporary file behind (PNGs are written atomically): it is not a seed.
    (out / ".seed0002.png.abc.tmp").write_bytes(b"half")
    r = invoke("--gen", unet_dir, "--seeds", "0-3", "--steps", 3, "--out", out, "--skip-existing", "--grid", "--json")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert [(img["seed"], img.get("skipped", False)) for img in doc["images"]] == [(0, True), (1, True), (2, False), (3, False)]
    assert all(Path(img["path"]) == out / f"seed{img['seed']:04d}.png" for img in doc["images"])
    for s in (0, 1):  # not rewritten
        after = (out / f"seed{s:04d}.png").stat()
        assert (after.st_mtime_ns, after.st_ino) == (before[s].st_mtime_ns, before[s].st_ino)
    np.testing.assert_array_equal(read_seeds(out, [0, 1, 2, 3]), pipeline_uint8([0, 1, 2, 3], 3))
    grid = read_png(out / "grid.png")  # the grid has every seed, the skipped ones read back from disk
    assert grid.shape == (32, 32, 3)
    np.testing.assert_array_equal(grid[:16, :16], read_png(out / "seed0000.png"))
    np.testing.assert_array_equal(grid[16:, 16:], read_png(out / "seed0003.png"))

    # Everything there: nothing is generated, and the text output says so.
    stamp = {s: (out / f"seed{s:04d}.png").stat().st_mtime_ns for s in range(4)}
    r = invoke("--gen", unet_dir, "--seeds", "0-3", "--steps", 3, "--out", out, "--skip-existing")
    assert r.exit_code == 0, r.output
    assert "4 already there, skipped" in r.stderr
    assert {s: (out / f"seed{s:04d}.png").stat().st_mtime_ns for s in range(4)} == stamp

    # Without --skip-existing every image is written again.
    r = invoke("--gen", unet_dir, "--seeds", "0", "--steps", 3, "--out", out, "--quiet")
    assert r.exit_code == 0, r.output
    assert (out / "seed0000.png").stat().st_ino != before[0].st_ino


def test_skip_existing_with_a_stylegan2(tmp_path):
    from nvidia_format import tiny_generator, write_network_pickle

    pkl = write_network_pickle(tmp_path / "g.pkl", tiny_generator(40, img_resolution=8))
    out = tmp_path / "out"
    assert invoke("--gen", pkl, "--seeds", "5", "--out", out, "--quiet").exit_code == 0
    first = (out / "seed0005.png").stat()
    r = invoke("--gen", pkl, "--seeds", "4-6", "--out", out, "--skip-existing", "--json", "--quiet", "--grid")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert [bool(img.get("skipped")) for img in doc["images"]] == [False, True, False]
    assert (out / "seed0005.png").stat().st_mtime_ns == first.st_mtime_ns
    fresh = tmp_path / "fresh"
    assert invoke("--gen", pkl, "--seeds", "4-6", "--out", fresh, "--quiet").exit_code == 0
    np.testing.assert_array_equal(read_seeds(out, [4, 5, 6]), read_seeds(fresh, [4, 5, 6]))
    assert read_png(out / "grid.png").shape == (16, 16, 3)


def test_skip_existing_checks_the_existing_files_before_generating(unet_dir, tmp_path):
    """A resumed run refuses another generator's (or a damaged) seed file up front, not after hours."""
    out = tmp_path / "out"
    out.mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(out / "seed0000.png")
    r = invoke("--gen", unet_dir, "--seeds", "0-1", "--steps", 2, "--out", out, "--skip-existing")
    assert r.exit_code == 2
    assert "seed0000.png" in one_error_line(r) and "16x16" in r.stderr
    assert not (out / "seed0001.png").exists()
    (out / "seed0000.png").write_bytes(b"not a png")
    r = invoke("--gen", unet_dir, "--seeds", "0-1", "--steps", 2, "--out", out, "--skip-existing")
    assert r.exit_code == 4
    assert "seed0000.png" in one_error_line(r)
    assert not (out / "seed0001.png").exists()


# ------------------------------------------------------------------------------------------------
# Concept predictions.


def test_cbae_predictions_read_the_latent_at_the_last_edited_step(unet_dir, tmp_path):
    from engine.bottleneck.io import save_bottleneck
    from engine.bottleneck.modules import CBAE
    from engine.bottleneck.spec import ConceptSpec
    from engine.generators.ddpm import DDPMLatent, ddpm_identity
    from engine.intervene import _probs_of_one

    torch.manual_seed(0)
    model = CBAE(ConceptSpec(names=("Smiling", "Male"), sizes=(2, 2)), 0, 0, hidden=8, depth=1, flat_shape=(32, 8, 8)).eval()
    ckpt = save_bottleneck(tmp_path / "cbae.safetensors", model, generator=ddpm_identity(unet_dir),
                           extra={"intervention": {"intervene_below": 300}})
    out = tmp_path / "out"
    r = invoke("--gen", unet_dir, "--seeds", "0-1", "--steps", 5, "--cbae", ckpt, "--out", out, "--grid", "--json", "--quiet")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["bottleneck"] == str(ckpt) and doc["intervene_below"] == 300  # the checkpoint's t range
    assert Path(doc["annotated_grid"]).is_file()
    lg = DDPMLatent(tiny_unet(UNET_SEED), "x", steps=5, intervene_below=doc["intervene_below"])
    seen = {}
    with torch.no_grad():
        lg.render(lg.z_from_seeds([0, 1]), edit=lambda h: seen.__setitem__("h", h) or h, seeds=[0, 1])
        expected = _probs_of_one(model, model.enc(seen["h"]))
    for i, img in enumerate(doc["images"]):
        got = img["predictions"]["cbae"]
        assert set(got) == {"Smiling", "Male"}
        for c in got:
            assert math.isclose(got[c], expected[i][c], abs_tol=2e-4)
    # The images are those without a bottleneck: it only explains them.
    np.testing.assert_array_equal(read_seeds(out, [0, 1]), pipeline_uint8([0, 1], 5))


def test_cbae_of_another_latent_shape_is_usage_error(unet_dir, tmp_path):
    from engine.bottleneck.io import save_bottleneck
    from engine.bottleneck.modules import CBAE
    from engine.bottleneck.spec import ConceptSpec
    from engine.generators.ddpm import ddpm_identity

    model = CBAE(ConceptSpec(names=("Smiling",), sizes=(2,)), 0, 0, hidden=8, depth=1, flat_shape=(16, 4, 4))
    ckpt = save_bottleneck(tmp_path / "cbae.safetensors", model, generator=ddpm_identity(unet_dir))
    r = invoke("--gen", unet_dir, "--seeds", "0", "--steps", 2, "--cbae", ckpt, "--out", tmp_path / "o")
    assert r.exit_code == 2, r.output
    one_error_line(r)


# ------------------------------------------------------------------------------------------------
# Errors.


@pytest.mark.parametrize("opt", [["--trunc", "0.7"], ["--trunc-cutoff", "2"], ["--noise-mode", "random"], ["--pickle-key", "G"]])
def test_stylegan_options_with_a_ddpm_are_one_line_usage_errors(unet_dir, tmp_path, opt):
    r = invoke("--gen", unet_dir, "--seeds", "0", "--out", tmp_path / "o", *opt)
    assert r.exit_code == 2, r.output
    line = one_error_line(r)
    assert opt[0] in line and "DDPM" in line
    assert not (tmp_path / "o").exists()


def test_ddpm_options_with_a_stylegan2_are_usage_errors(tmp_path):
    from nvidia_format import tiny_generator, write_network_pickle

    pkl = write_network_pickle(tmp_path / "g.pkl", tiny_generator(41, img_resolution=8))
    for opt in (["--scheduler", "ddpm"], ["--steps", "5"], ["--eta", "0.5"]):
        r = invoke("--gen", pkl, "--seeds", "0", "--out", tmp_path / "o", *opt)
        assert r.exit_code == 2, (opt, r.output)
        assert opt[0] in one_error_line(r)


@pytest.mark.parametrize("opt", [["--scheduler", "euler"], ["--steps", "0"], ["--eta", "1.5"], ["--eta", "-0.1"]])
def test_bad_sampler_values_exit_2(unet_dir, tmp_path, opt):
    r = invoke("--gen", unet_dir, "--seeds", "0", "--out", tmp_path / "o", *opt)
    assert r.exit_code == 2, r.output
    assert opt[0] in r.stderr
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("opt, match", [(["--steps", "1001"], "--steps"), (["--scheduler", "ddpm", "--eta", "0.5"], "--eta")])
def test_sampler_values_the_model_refuses_are_one_line_usage_errors(unet_dir, tmp_path, opt, match):
    r = invoke("--gen", unet_dir, "--seeds", "0", "--out", tmp_path / "o", *opt)
    assert r.exit_code == 2, r.output
    assert match in one_error_line(r)
    assert not (tmp_path / "o").exists()


def test_folder_without_weights_is_exit_4(unet_dir, tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text((unet_dir / "config.json").read_text())
    r = invoke("--gen", broken, "--seeds", "0", "--out", tmp_path / "o")
    assert r.exit_code == 4, r.output
    assert "broken" in one_error_line(r)


def test_registry_ddpm_not_downloaded_is_exit_3(tmp_path):
    r = invoke("--gen", "ddpm-celebahq-256", "--seeds", "0", "--out", tmp_path / "o")
    assert r.exit_code == 3, r.output
    assert "gencbm download ddpm-celebahq-256" in one_error_line(r)
    assert not (tmp_path / "o").exists()


def test_help_mentions_ddpm_folders_and_options():
    r = CliRunner().invoke(app, ["generate", "--help"], env={"COLUMNS": "200"})
    assert r.exit_code == 0
    for word in ("ddpm-celebahq-256", "UNet2DModel", "--scheduler", "--steps", "--eta", "--skip-existing"):
        assert word in r.stdout, word
