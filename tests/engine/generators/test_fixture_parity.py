"""Parity with NVIDIA's own StyleGAN2 code on the shared fixture (../shared/fixtures/stylegan2).

The fixture holds a network snapshot written by NVIDIA's stylegan3 code base and the arrays and
PNGs its networks_stylegan2.py computed on the CPU (see its README). Skipped where ../shared is
absent (a fresh clone). Tolerance 1e-4 on [-1, 1] images and on w; the measured maximum errors
are printed (pytest -s) and named in any failure.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from nvidia_format import SHARED_STYLEGAN2

PKL = SHARED_STYLEGAN2 / "sg3-skip32.pkl"
NPZ = SHARED_STYLEGAN2 / "sg3-skip32.npz"
PNGS = SHARED_STYLEGAN2 / "sg3-skip32-png"
TOL = 1e-4

pytestmark = pytest.mark.skipif(not (PKL.is_file() and NPZ.is_file()), reason="needs ../shared/fixtures/stylegan2 (not in a fresh clone)")


@pytest.fixture(scope="module")
def ref():
    return {k: torch.from_numpy(v) for k, v in np.load(NPZ).items()}


@pytest.fixture(scope="module")
def G():
    from engine.generators import load_generator

    return load_generator(PKL, use_cache=False)


def _error(name: str, got: torch.Tensor, want: torch.Tensor) -> float:
    assert got.shape == want.shape, (name, tuple(got.shape), tuple(want.shape))
    return (got.double() - want.double()).abs().max().item()


def _report(label: str, errors: dict[str, float]) -> None:
    print(f"{label} max abs errors: " + ", ".join(f"{k} {v:.3g}" for k, v in errors.items()))
    bad = {k: v for k, v in errors.items() if not v <= TOL}
    assert not bad, f"{label}: above {TOL}: " + ", ".join(f"{k} {v:.3g}" for k, v in bad.items())


def test_seeds_give_the_fixture_z(ref):
    from engine.generators import z_from_seeds

    assert torch.equal(z_from_seeds(range(4), 64), ref["z"])


@pytest.mark.parametrize("batch", [1, 4])
@pytest.mark.parametrize("fused", [True, False], ids=["fused", "activations"])
def test_arrays_match_nvidia(G, ref, fused, batch):
    label = f"[{'fused' if fused else 'activations'}, batch {batch}]"
    errors = {}
    with torch.no_grad():
        for start in range(0, 4, batch):
            sl = slice(start, start + batch)
            z = ref["z"][sl]
            w = G.mapping(z, None, truncation_psi=1)
            w07 = G.mapping(z, None, truncation_psi=0.7)
            outs = {
                "w": w,
                "w_psi07": w07,
                # From the fixture's own w, so that image errors are the synthesis network's alone.
                "img_const": G.synthesis(ref["w"][sl], noise_mode="const", force_fp32=True, fused_modconv=fused),
                "img_none_psi07": G.synthesis(ref["w_psi07"][sl], noise_mode="none", force_fp32=True, fused_modconv=fused),
                "img_full": G(z, None, truncation_psi=1, noise_mode="const", force_fp32=True, fused_modconv=fused),
            }
            for name, got in outs.items():
                errors[name] = max(errors.get(name, 0.0), _error(name, got, ref[name][sl]))
    assert set(errors) == {"w", "w_psi07", "img_const", "img_none_psi07", "img_full"}
    _report(label, errors)


def test_fixture_loads_through_the_store(ref, tmp_path, monkeypatch):
    """The safetensors conversion computes the same as the pickle."""
    from engine.generators import load_generator

    monkeypatch.setenv("GENCBM_HOME", str(tmp_path / "home"))
    first = load_generator(PKL)
    again = load_generator(PKL)  # from the conversion
    assert len(list((tmp_path / "home" / "converted").glob("*.safetensors"))) == 1
    with torch.no_grad():
        a = first(ref["z"], None, noise_mode="const")
        b = again(ref["z"], None, noise_mode="const")
    assert torch.equal(a, b)
    _report("[store]", {"img_full": _error("img_full", b, ref["img_full"])})


@pytest.mark.skipif(not PNGS.is_dir(), reason="fixture PNGs missing")
@pytest.mark.parametrize("psi, noise, prefix", [("1", "const", "psi1-const"), ("0.7", "none", "psi07-none")])
def test_pngs_match_within_one_level(psi, noise, prefix, tmp_path, monkeypatch):
    from gencbm_cli import common
    from gencbm_cli.main import app

    monkeypatch.setenv("GENCBM_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(common.settings, "quiet", False)
    monkeypatch.setattr(common.settings, "debug", False)
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["generate", "--gen", str(PKL), "--seeds", "0-3", "--trunc", psi, "--noise-mode", noise, "--out", str(out), "--quiet"])
    assert result.exit_code == 0, result.output
    worst, differing = 0, 0
    for seed in range(4):
        with Image.open(out / f"seed{seed:04d}.png") as a, Image.open(PNGS / f"{prefix}-seed{seed:04d}.png") as b:
            got, want = np.asarray(a).astype(int), np.asarray(b).astype(int)
        assert got.shape == want.shape == (32, 32, 3)
        diff = np.abs(got - want)
        worst, differing = max(worst, int(diff.max())), differing + int((diff > 0).sum())
    print(f"PNG {prefix}: max difference {worst} level(s), {differing} of {4 * 32 * 32 * 3} values differ")
    assert worst <= 1, f"PNG {prefix}: max difference {worst} levels"
