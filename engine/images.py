"""Images in and out: [-1, 1] float NCHW tensors to 8-bit PNG files and grids."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from engine.store.atomic import atomic_path


def to_uint8(img: torch.Tensor) -> np.ndarray:  # [B, C, H, W] in [-1, 1] -> [B, H, W, C] uint8
    """8-bit conversion as NVIDIA's gen_images.py: (img * 127.5 + 128).clamp(0, 255), truncated."""
    if img.ndim != 4:
        raise ValueError(f"expected [B, C, H, W] images (got {tuple(img.shape)})")
    x = (img.detach().to(torch.float32) * 127.5 + 128).clamp(0, 255).to(torch.uint8)
    return x.permute(0, 2, 3, 1).cpu().numpy()


def save_png(array: np.ndarray, path: str | Path) -> Path:  # [H, W, C] uint8
    """Write one image atomically (never a half-written PNG)."""
    from PIL import Image

    if array.ndim != 3 or array.shape[2] not in (1, 3, 4):
        raise ValueError(f"expected [H, W, C] with C in 1, 3, 4 (got {array.shape})")
    mode = {1: "L", 3: "RGB", 4: "RGBA"}[array.shape[2]]
    image = Image.fromarray(array[:, :, 0] if array.shape[2] == 1 else array, mode)
    path = Path(path)
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG")
    return path


def make_grid(arrays: list[np.ndarray], cols: int | None = None, pad: int = 0) -> np.ndarray:
    """Tile equally sized [H, W, C] images row by row into one [rows*H, cols*W, C] image."""
    if not arrays:
        raise ValueError("no images to tile")
    n = len(arrays)
    cols = cols or math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    h, w, c = arrays[0].shape
    grid = np.zeros([rows * (h + pad) - pad, cols * (w + pad) - pad, c], dtype=np.uint8)
    for i, a in enumerate(arrays):
        r, q = divmod(i, cols)
        grid[r * (h + pad) : r * (h + pad) + h, q * (w + pad) : q * (w + pad) + w] = a
    return grid


def annotated_grid(arrays: list[np.ndarray], captions: list[list[str]], cols: int | None = None, cell: int = 128) -> np.ndarray:
    """A grid of images upscaled to `cell` px (nearest), each with its caption lines below it."""
    from PIL import Image, ImageDraw, ImageFont

    if len(arrays) != len(captions):
        raise ValueError("one caption list per image")
    n = len(arrays)
    cols = cols or math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    font = ImageFont.load_default()
    line_h = 11
    text_h = line_h * max((len(c) for c in captions), default=0) + 4
    width, height = cols * (cell + 4), rows * (cell + text_h + 4)
    canvas = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    for i, (a, lines) in enumerate(zip(arrays, captions)):
        r, q = divmod(i, cols)
        x0, y0 = q * (cell + 4) + 2, r * (cell + text_h + 4) + 2
        img = Image.fromarray(a[:, :, 0] if a.shape[2] == 1 else a).convert("RGB").resize((cell, cell), Image.NEAREST)
        canvas.paste(img, (x0, y0))
        for j, line in enumerate(lines):
            draw.text((x0 + 1, y0 + cell + 2 + j * line_h), line, fill=(0, 0, 0), font=font)
    return np.asarray(canvas)
