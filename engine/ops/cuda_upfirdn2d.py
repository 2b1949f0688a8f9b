"""The CUDA path of `upfirdn2d`: an autograd Function around the kernel in kernels/upfirdn2d.cu.

upfirdn2d is linear in x, and its adjoint is again an upfirdn2d: same filter with the flip
toggled, up and down swapped, and the padding given by `backward_params`. So the backward is the
same Function, and derivatives of any order come for free. A separable (1-D) filter runs as two
passes, along x and then along y. The filter itself gets no gradient; a filter that requires one
(never the case for setup_filter's output) sends the call to the reference.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch

from engine.ops.upfirdn2d import upfirdn2d_ref

_KERNEL_DTYPES = (torch.float16, torch.float32, torch.float64)


def _kernels() -> Any:
    """The compiled extension (built on first use; raises OpBuildError when it cannot be)."""
    from engine.ops import builder

    return builder.load_op("upfirdn2d")


class _Config(NamedTuple):
    up: tuple[int, int]  # (x, y)
    down: tuple[int, int]  # (x, y)
    padding: tuple[int, int, int, int]  # (x0, x1, y0, y1)
    flip: bool
    gain: float


def out_size(in_size: int, up: int, pad0: int, pad1: int, taps: int, down: int) -> int:
    """Output length along one axis."""
    return (in_size * up + pad0 + pad1 - taps) // down + 1


def backward_params(
    in_hw: tuple[int, int], out_hw: tuple[int, int], f_hw: tuple[int, int], cfg: _Config
) -> _Config:
    """The upfirdn2d whose result is the gradient of `cfg`'s forward w.r.t. its input.

    Per axis, with input length n, output length m, factors u (up) and d (down), leading
    padding p0 and k taps: forward output o reads input pixel i through tap t = i*u + p0 - o*d.
    The adjoint upsamples dy by d, downsamples by u, and, with the taps reversed (flip toggled),
    reads dy[o] at i through tap t' = k-1-t = o*d + (k-1-p0) - i*u: a leading padding of
    q0 = k-1-p0. The trailing padding q1 makes the result exactly n long:
    (n-1)*u + k = m*d + q0 + q1, i.e. q1 = (n-1)*u - m*d + p0 + 1.
    """
    (h, w), (oh, ow), (fh, fw) = in_hw, out_hw, f_hw
    (ux, uy), (dx, dy) = cfg.up, cfg.down
    px0, _, py0, _ = cfg.padding
    qx0 = fw - 1 - px0
    qx1 = (w - 1) * ux - ow * dx + px0 + 1
    qy0 = fh - 1 - py0
    qy1 = (h - 1) * uy - oh * dy + py0 + 1
    return _Config(up=(dx, dy), down=(ux, uy), padding=(qx0, qx1, qy0, qy1), flip=not cfg.flip, gain=cfg.gain)


def _filter_hw(f: torch.Tensor) -> tuple[int, int]:
    return (int(f.shape[0]), int(f.shape[-1]))  # a 1-D filter is as tall as it is wide


def _run(x: torch.Tensor, f: torch.Tensor, cfg: _Config) -> torch.Tensor:
    k = _kernels()
    (ux, uy), (dx, dy) = cfg.up, cfg.down
    px0, px1, py0, py1 = cfg.padding
    if f.ndim == 2:
        return k.upfirdn2d(x, f, ux, uy, dx, dy, px0, px1, py0, py1, cfg.flip, cfg.gain)
    taps = f.shape[0]
    t = k.upfirdn2d(x, f.reshape(1, taps), ux, 1, dx, 1, px0, px1, 0, 0, cfg.flip, cfg.gain)
    return k.upfirdn2d(t, f.reshape(taps, 1), 1, uy, 1, dy, 0, 0, py0, py1, cfg.flip, 1.0)


class _Upfirdn2d(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, f: torch.Tensor, cfg: _Config) -> torch.Tensor:  # type: ignore[override]
        y = _run(x, f, cfg)
        ctx.save_for_backward(f)
        ctx.cfg = cfg
        ctx.in_hw = (int(x.shape[2]), int(x.shape[3]))
        ctx.out_hw = (int(y.shape[2]), int(y.shape[3]))
        return y

    @staticmethod
    def backward(ctx, dy: torch.Tensor):  # type: ignore[override]
        (f,) = ctx.saved_tensors
        dx = None
        if ctx.needs_input_grad[0]:
            bcfg = backward_params(ctx.in_hw, ctx.out_hw, _filter_hw(f), ctx.cfg)
            dx = _Upfirdn2d.apply(dy, f, bcfg)
        return dx, None, None


def upfirdn2d_cuda(
    x: torch.Tensor,
    f: torch.Tensor,
    up: tuple[int, int] = (1, 1),
    down: tuple[int, int] = (1, 1),
    padding: tuple[int, int, int, int] = (0, 0, 0, 0),
    flip_filter: bool = False,
    gain: float = 1.0,
) -> torch.Tensor:
    """`upfirdn2d` on the CUDA kernel; f is setup_filter's float32 [fh, fw] or separable [fw]."""
    if x.dtype not in _KERNEL_DTYPES or f.requires_grad or f.ndim not in (1, 2):
        return upfirdn2d_ref(x, f, up=up, down=down, padding=padding, flip_filter=flip_filter, gain=gain)
    cfg = _Config(
        up=(int(up[0]), int(up[1])),
        down=(int(down[0]), int(down[1])),
        padding=tuple(int(p) for p in padding),  # type: ignore[arg-type]
        flip=bool(flip_filter),
        gain=float(gain),
    )
    f = f.to(device=x.device, dtype=torch.float32).contiguous()
    return _Upfirdn2d.apply(x, f, cfg)
