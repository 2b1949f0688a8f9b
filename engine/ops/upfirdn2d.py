"""Upsample, pad, FIR-filter and downsample a batch of 2-D images in one op.

`upfirdn2d(x, f, up, down, padding)`:
1. upsample by inserting up-1 zeros after each pixel,
2. pad (or, for negative values, crop) by padding = [x0, x1, y0, y1],
3. convolve with the FIR filter f (true convolution, i.e. f flipped, unless flip_filter),
4. keep every down-th pixel.
Filters come from `setup_filter`: 2-D [fh, fw] or separable 1-D [fw] (applied along x then y).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from engine.ops._dispatch import use_cuda


def _pair(v: int | Sequence[int], what: str) -> tuple[int, int]:
    if isinstance(v, int):
        return v, v
    v = tuple(int(i) for i in v)
    if len(v) != 2:
        raise ValueError(f"{what} must be an int or a pair (got {v})")
    return v  # type: ignore[return-value]


def parse_scaling(s: int | Sequence[int]) -> tuple[int, int]:
    sx, sy = _pair(s, "up/down")
    if sx < 1 or sy < 1:
        raise ValueError(f"up/down factors must be >= 1 (got {s})")
    return sx, sy


def parse_padding(p: int | Sequence[int]) -> tuple[int, int, int, int]:
    """[x0, x1, y0, y1] from an int, an (x, y) pair or a 4-tuple."""
    if isinstance(p, int):
        return p, p, p, p
    p = [int(i) for i in p]
    if len(p) == 2:
        px, py = p
        return px, px, py, py
    if len(p) == 4:
        return p[0], p[1], p[2], p[3]
    raise ValueError(f"padding must be an int, 2 or 4 values (got {p})")


def filter_size(f: torch.Tensor | None) -> tuple[int, int]:
    """(fw, fh) of a filter; a separable 1-D filter is as tall as it is wide."""
    if f is None:
        return 1, 1
    if f.ndim not in (1, 2):
        raise ValueError(f"filter must be 1-D or 2-D (got {f.ndim}-D)")
    fw = f.shape[-1]
    fh = f.shape[0]
    return int(fw), int(fh)


def setup_filter(
    f: Sequence[float] | np.ndarray | torch.Tensor | None,  # filter taps, 1-D or 2-D; None: [1]
    device: torch.device | str = "cpu",  # where the result lives
    normalize: bool = True,  # scale so the taps sum to 1
    flip_filter: bool = False,  # flip the taps
    gain: float = 1,  # overall gain of the filter (over both dimensions)
    separable: bool | None = None,  # keep a 1-D filter separable; None: when it has >= 8 taps
) -> torch.Tensor:
    """A float32 filter tensor for `upfirdn2d`: 1-D taps become their outer product unless separable."""
    if f is None:
        f = 1
    f = torch.as_tensor(f, dtype=torch.float32)
    if f.ndim not in (0, 1, 2) or f.numel() == 0:
        raise ValueError("a filter needs 1-D or 2-D taps, at least one")
    if f.ndim == 0:
        f = f[None]
    if separable is None:
        separable = f.ndim == 1 and f.numel() >= 8
    if f.ndim == 1 and not separable:
        f = torch.outer(f, f)
    if f.ndim != (1 if separable else 2):
        raise ValueError("a separable filter must be 1-D")
    if normalize:
        f = f / f.sum()
    if flip_filter:
        f = f.flip(list(range(f.ndim)))
    f = f * (gain ** (f.ndim / 2))
    return f.to(device=device)


def upfirdn2d(
    x: torch.Tensor,  # [N, C, H, W]
    f: torch.Tensor | None,  # filter from setup_filter, [fh, fw] or [fw]; None: identity
    up: int | Sequence[int] = 1,  # integer upsampling factor, or (x, y)
    down: int | Sequence[int] = 1,  # integer downsampling factor, or (x, y)
    padding: int | Sequence[int] = 0,  # padding after upsampling: int, (x, y) or (x0, x1, y0, y1); negative crops
    flip_filter: bool = False,  # False: true convolution; True: correlation
    gain: float = 1,  # overall gain of the filter
    impl: str = "auto",  # "auto" | "ref" | "cuda"
) -> torch.Tensor:
    if x.ndim != 4:
        raise ValueError(f"upfirdn2d expects [N, C, H, W] input (got shape {tuple(x.shape)})")
    upx, upy = parse_scaling(up)
    downx, downy = parse_scaling(down)
    px0, px1, py0, py1 = parse_padding(padding)
    if f is None:
        f = torch.ones([1, 1], dtype=torch.float32, device=x.device)
    filter_size(f)
    if use_cuda("upfirdn2d", x, impl):
        from engine.ops.cuda_upfirdn2d import upfirdn2d_cuda

        return upfirdn2d_cuda(x, f, up=(upx, upy), down=(downx, downy), padding=(px0, px1, py0, py1), flip_filter=flip_filter, gain=gain)
    return upfirdn2d_ref(x, f, up=(upx, upy), down=(downx, downy), padding=(px0, px1, py0, py1), flip_filter=flip_filter, gain=gain)


def upfirdn2d_ref(
    x: torch.Tensor,
    f: torch.Tensor | None,
    up: int | Sequence[int] = 1,
    down: int | Sequence[int] = 1,
    padding: int | Sequence[int] = 0,
    flip_filter: bool = False,
    gain: float = 1,
) -> torch.Tensor:
    """The reference: zero insertion, F.pad, depthwise conv2d, strided slicing."""
    if f is None:
        f = torch.ones([1, 1], dtype=torch.float32, device=x.device)
    upx, upy = parse_scaling(up)
    downx, downy = parse_scaling(down)
    px0, px1, py0, py1 = parse_padding(padding)
    n, c, h, w = x.shape

    # 1. Zero insertion.
    if upx > 1 or upy > 1:
        x = x.reshape([n, c, h, 1, w, 1])
        x = F.pad(x, [0, upx - 1, 0, 0, 0, upy - 1])
        x = x.reshape([n, c, h * upy, w * upx])

    # 2. Pad, then crop what negative padding removes.
    x = F.pad(x, [max(px0, 0), max(px1, 0), max(py0, 0), max(py1, 0)])
    x = x[:, :, max(-py0, 0) : x.shape[2] - max(-py1, 0), max(-px0, 0) : x.shape[3] - max(-px1, 0)]

    # 3. FIR filter (conv2d correlates, so flip for a true convolution).
    f = (f * (gain ** (f.ndim / 2))).to(x.dtype)
    if not flip_filter:
        f = f.flip(list(range(f.ndim)))
    c = x.shape[1]
    if f.ndim == 2:
        x = F.conv2d(x, f[None, None].expand(c, 1, *f.shape), groups=c)
    else:
        x = F.conv2d(x, f[None, None, None, :].expand(c, 1, 1, f.shape[0]), groups=c)
        x = F.conv2d(x, f[None, None, :, None].expand(c, 1, f.shape[0], 1), groups=c)

    # 4. Decimate.
    if downx > 1 or downy > 1:
        x = x[:, :, ::downy, ::downx]
    return x


def filter2d(x: torch.Tensor, f: torch.Tensor | None, padding: int | Sequence[int] = 0, flip_filter: bool = False, gain: float = 1, impl: str = "auto") -> torch.Tensor:
    """Filter with f, padded so the output keeps the input size (plus `padding`)."""
    px0, px1, py0, py1 = parse_padding(padding)
    fw, fh = filter_size(f)
    p = [px0 + fw // 2, px1 + (fw - 1) // 2, py0 + fh // 2, py1 + (fh - 1) // 2]
    return upfirdn2d(x, f, padding=p, flip_filter=flip_filter, gain=gain, impl=impl)


def upsample2d(x: torch.Tensor, f: torch.Tensor | None, up: int | Sequence[int] = 2, padding: int | Sequence[int] = 0, flip_filter: bool = False, gain: float = 1, impl: str = "auto") -> torch.Tensor:
    """Upsample by `up` with f as the interpolation filter; output is `up` times the input size."""
    upx, upy = parse_scaling(up)
    px0, px1, py0, py1 = parse_padding(padding)
    fw, fh = filter_size(f)
    p = [px0 + (fw + upx - 1) // 2, px1 + (fw - upx) // 2, py0 + (fh + upy - 1) // 2, py1 + (fh - upy) // 2]
    return upfirdn2d(x, f, up=(upx, upy), padding=p, flip_filter=flip_filter, gain=gain * upx * upy, impl=impl)


def downsample2d(x: torch.Tensor, f: torch.Tensor | None, down: int | Sequence[int] = 2, padding: int | Sequence[int] = 0, flip_filter: bool = False, gain: float = 1, impl: str = "auto") -> torch.Tensor:
    """Low-pass with f, then keep every `down`-th pixel; output is the input size / `down`."""
    downx, downy = parse_scaling(down)
    px0, px1, py0, py1 = parse_padding(padding)
    fw, fh = filter_size(f)
    p = [px0 + (fw - downx + 1) // 2, px1 + (fw - downx) // 2, py0 + (fh - downy + 1) // 2, py1 + (fh - downy) // 2]
    return upfirdn2d(x, f, down=(downx, downy), padding=p, flip_filter=flip_filter, gain=gain, impl=impl)
