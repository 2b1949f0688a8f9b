"""2-D convolution with optional up/downsampling by a FIR filter, as StyleGAN2 resamples.

Upsampling runs as a strided transposed convolution followed by the FIR filter; downsampling as
the FIR filter followed by a strided convolution; 1x1 kernels take cheaper orders. All paths
compute the same function as: upsample (zero insertion), pad, filter, convolve, downsample.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from engine.ops.upfirdn2d import filter_size, parse_padding, upfirdn2d


def _conv(
    x: torch.Tensor,
    w: torch.Tensor,  # [out, in/groups, kh, kw] (or [in, out/groups, kh, kw] when transposed)
    stride: int = 1,
    padding: int | Sequence[int] = 0,
    groups: int = 1,
    transpose: bool = False,
    flip_weight: bool = True,  # True: correlation (torch's convention); False: true convolution
) -> torch.Tensor:
    if not flip_weight and (w.shape[2] > 1 or w.shape[3] > 1):
        w = w.flip([2, 3])
    if transpose:
        return F.conv_transpose2d(x, w, stride=stride, padding=padding, groups=groups)
    return F.conv2d(x, w, stride=stride, padding=padding, groups=groups)


def conv2d_resample(
    x: torch.Tensor,  # [N, in, H, W]
    w: torch.Tensor,  # [out, in/groups, kh, kw]
    f: torch.Tensor | None = None,  # resampling filter from setup_filter; None: no resampling filter
    up: int = 1,  # integer upsampling factor
    down: int = 1,  # integer downsampling factor
    padding: int | Sequence[int] = 0,  # padding of the upsampled image, as in upfirdn2d
    groups: int = 1,  # grouped convolution
    flip_weight: bool = True,  # False: true convolution (StyleGAN2's upsampling layers)
    flip_filter: bool = False,  # passed to upfirdn2d
    impl: str = "auto",  # implementation of the FIR steps
) -> torch.Tensor:
    if x.ndim != 4 or w.ndim != 4:
        raise ValueError(f"conv2d_resample expects 4-D x and w (got {tuple(x.shape)}, {tuple(w.shape)})")
    if not (isinstance(up, int) and isinstance(down, int) and up >= 1 and down >= 1):
        raise ValueError(f"up and down must be integers >= 1 (got {up}, {down})")
    out_ch, in_per_group, kh, kw = w.shape
    if groups < 1 or out_ch % groups:
        raise ValueError(f"{out_ch} output channels cannot be split into {groups} groups")
    if x.shape[1] != in_per_group * groups:
        raise ValueError(f"x has {x.shape[1]} channels, weight expects {in_per_group} x {groups} groups")
    fw, fh = filter_size(f)
    px0, px1, py0, py1 = parse_padding(padding)

    # Padding that centres the filter on the resampled grid.
    if up > 1:
        px0 += (fw + up - 1) // 2
        px1 += (fw - up) // 2
        py0 += (fh + up - 1) // 2
        py1 += (fh - up) // 2
    if down > 1:
        px0 += (fw - down + 1) // 2
        px1 += (fw - down) // 2
        py0 += (fh - down + 1) // 2
        py1 += (fh - down) // 2

    # 1x1 kernel: resample on the smaller side of the convolution.
    if kw == 1 and kh == 1 and down > 1 and up == 1:
        x = upfirdn2d(x, f, down=down, padding=[px0, px1, py0, py1], flip_filter=flip_filter, impl=impl)
        return _conv(x, w, groups=groups, flip_weight=flip_weight)
    if kw == 1 and kh == 1 and up > 1 and down == 1:
        x = _conv(x, w, groups=groups, flip_weight=flip_weight)
        return upfirdn2d(x, f, up=up, padding=[px0, px1, py0, py1], gain=up**2, flip_filter=flip_filter, impl=impl)

    # Downsampling only: filter, then strided convolution.
    if down > 1 and up == 1:
        x = upfirdn2d(x, f, padding=[px0, px1, py0, py1], flip_filter=flip_filter, impl=impl)
        return _conv(x, w, stride=down, groups=groups, flip_weight=flip_weight)

    # Upsampling: strided transposed convolution, then filter.
    if up > 1:
        if groups == 1:
            w = w.transpose(0, 1)
        else:
            w = w.reshape(groups, out_ch // groups, in_per_group, kh, kw).transpose(1, 2)
            w = w.reshape(groups * in_per_group, out_ch // groups, kh, kw)
        px0 -= kw - 1
        px1 -= kw - up
        py0 -= kh - 1
        py1 -= kh - up
        pxt = max(min(-px0, -px1), 0)
        pyt = max(min(-py0, -py1), 0)
        x = _conv(x, w, stride=up, padding=[pyt, pxt], groups=groups, transpose=True, flip_weight=not flip_weight)
        x = upfirdn2d(x, f, padding=[px0 + pxt, px1 + pxt, py0 + pyt, py1 + pyt], gain=up**2, flip_filter=flip_filter, impl=impl)
        if down > 1:
            x = upfirdn2d(x, f, down=down, flip_filter=flip_filter, impl=impl)
        return x

    # No resampling: a plain convolution when the padding is symmetric.
    if px0 == px1 and py0 == py1 and px0 >= 0 and py0 >= 0:
        return _conv(x, w, padding=[py0, px0], groups=groups, flip_weight=flip_weight)

    # General case.
    x = upfirdn2d(x, f if up > 1 else None, up=up, padding=[px0, px1, py0, py1], gain=up**2, flip_filter=flip_filter, impl=impl)
    x = _conv(x, w, groups=groups, flip_weight=flip_weight)
    if down > 1:
        x = upfirdn2d(x, f, down=down, flip_filter=flip_filter, impl=impl)
    return x
