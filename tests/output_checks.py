"""Checks on what `gencbm generate` leaves behind, shared by the StyleGAN2 and DDPM CLI tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def read_png(path) -> np.ndarray:
    with Image.open(path) as im:
        assert im.format == "PNG"
        return np.asarray(im.convert("RGB"))


def read_seeds(out: Path, seeds) -> np.ndarray:
    return np.stack([read_png(out / f"seed{s:04d}.png") for s in seeds])


def one_error_line(result) -> str:
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("gencbm: error: "), result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]
