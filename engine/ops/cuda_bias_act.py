"""The CUDA path of `bias_act`: autograd Functions around the kernel in kernels/bias_act.cu.

The kernel has three modes (see kernels/bias_act.h): 0 the forward, 1 the gradient dL/dx given
dL/dy, 2 the second-order term. The graph is built so that the gradient is itself a
differentiable op (`_Grad`), which gives exact first and second derivatives, as StyleGAN2's R1
penalty needs:

    _Forward(x, b) -> y          backward: dx = _Grad(dy, x, b, y), db = sum of dx
    _Grad(dy, x, b, y) -> dx     backward: d(dy) = _Grad(d(dx), ...)   (the gradient is linear in dy)
                                           d(x) = _Grad2(d(dx), x, b, y, dy) when act'' is not 0
    _Grad2                       third-order derivatives are not implemented (it raises)

Which of x and y the gradient reads follows `ACTIVATIONS[act].ref`; y is also kept when the
output is clamped (the gradient is 0 where it was). Only float16/32/64 run on the kernel; other
dtypes, and anything the kernel cannot take, use the reference.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch

from engine.ops.bias_act import ACTIVATIONS, Activation, bias_act_ref

_KERNEL_DTYPES = (torch.float16, torch.float32, torch.float64)

MODE_FORWARD, MODE_GRAD, MODE_GRAD2 = 0, 1, 2


def _kernels() -> Any:
    """The compiled extension (built on first use; raises OpBuildError when it cannot be)."""
    from engine.ops import builder

    return builder.load_op("bias_act")


class _Config(NamedTuple):
    spec: Activation
    dim: int
    alpha: float
    gain: float
    clamp: float  # -1: none


def _run(cfg: _Config, mode: int, inp: torch.Tensor, b, xref, yref, dyref) -> torch.Tensor:
    return _kernels().bias_act(inp, b, xref, yref, dyref, mode, cfg.dim, cfg.spec.cuda_idx, cfg.alpha, cfg.gain, cfg.clamp)


def is_dense(t: torch.Tensor) -> bool:
    """Whether t's elements fill its storage span exactly once in some dimension order (the
    layouts the kernel takes: contiguous, channels_last, any permutation of them)."""
    if t.numel() == 0:
        return False
    expected = 1
    for size, stride in sorted(((s, st) for s, st in zip(t.shape, t.stride()) if s != 1), key=lambda p: p[1]):
        if stride != expected:
            return False
        expected *= size
    return True


def _layout_like(t: torch.Tensor, template: torch.Tensor | None) -> torch.Tensor:
    """`t` with exactly `template`'s strides (the kernel walks all its tensors with one offset);
    without a template, `t` made dense."""
    if template is None:
        return t if is_dense(t) else t.contiguous()
    if t.stride() == template.stride():
        return t
    return torch.empty_like(template).copy_(t)


def _sum_to_bias(g: torch.Tensor, dim: int) -> torch.Tensor:
    dims = [i for i in range(g.ndim) if i != dim]
    return g.sum(dims) if dims else g


class _Forward(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, b: torch.Tensor | None, cfg: _Config) -> torch.Tensor:  # type: ignore[override]
        y = _run(cfg, MODE_FORWARD, x, b, None, None, None)
        spec = cfg.spec
        keep_x = spec.ref == "x" or spec.has_2nd_grad
        keep_y = spec.ref == "y" or (cfg.clamp >= 0 and spec.ref != "x")
        ctx.cfg = cfg
        ctx.save_for_backward(x if keep_x else None, b, y if keep_y else None)
        return y

    @staticmethod
    def backward(ctx, dy: torch.Tensor):  # type: ignore[override]
        x, b, y = ctx.saved_tensors
        cfg: _Config = ctx.cfg
        dx = db = None
        if ctx.needs_input_grad[0] or ctx.needs_input_grad[1]:
            dy = _layout_like(dy, x if x is not None else y)
            dx = _Grad.apply(dy, x, b, y, cfg)
            if ctx.needs_input_grad[1]:
                db = _sum_to_bias(dx, cfg.dim)
        return (dx if ctx.needs_input_grad[0] else None), db, None


class _Grad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, dy: torch.Tensor, x: torch.Tensor | None, b: torch.Tensor | None, y: torch.Tensor | None, cfg: _Config) -> torch.Tensor:  # type: ignore[override]
        ctx.cfg = cfg
        ctx.save_for_backward(dy, x, b, y)
        return _run(cfg, MODE_GRAD, dy, b, x, y, None)

    @staticmethod
    def backward(ctx, ddx: torch.Tensor):  # type: ignore[override]
        dy, x, b, y = ctx.saved_tensors
        cfg: _Config = ctx.cfg
        ddx = _layout_like(ddx, dy)
        d_dy = d_x = d_b = None
        if ctx.needs_input_grad[0]:
            d_dy = _Grad.apply(ddx, x, b, y, cfg)
        # The gradient also depends on x (through x or through y = f(x)); all of that is
        # credited to x, none to y, which is f(x) and would count it twice.
        if cfg.spec.has_2nd_grad and (ctx.needs_input_grad[1] or ctx.needs_input_grad[2]):
            g = _Grad2.apply(ddx, x, b, y, dy, cfg)
            d_x = g if ctx.needs_input_grad[1] else None
            if ctx.needs_input_grad[2]:
                d_b = _sum_to_bias(g, cfg.dim)
        return d_dy, d_x, d_b, None, None


class _Grad2(torch.autograd.Function):
    @staticmethod
    def forward(ctx, ddx: torch.Tensor, x, b, y, dy: torch.Tensor, cfg: _Config) -> torch.Tensor:  # type: ignore[override]
        return _run(cfg, MODE_GRAD2, ddx, b, x, y, dy)

    @staticmethod
    def backward(ctx, *grads):  # type: ignore[override]
        raise RuntimeError("third-order derivatives of bias_act are not implemented by the CUDA kernel; use impl='ref'")


def bias_act_cuda(
    x: torch.Tensor,
    b: torch.Tensor | None,
    dim: int = 1,
    act: str = "linear",
    alpha: float = 0.0,
    gain: float = 1.0,
    clamp: float = -1.0,
) -> torch.Tensor:
    """`bias_act` on the CUDA kernel; alpha, gain and clamp already resolved (clamp -1: none)."""
    spec = ACTIVATIONS[act]
    if x.dtype not in _KERNEL_DTYPES:
        return bias_act_ref(x, b, dim=dim, act=act, alpha=alpha, gain=gain, clamp=None if clamp < 0 else clamp)
    if act == "linear" and b is None and gain == 1 and clamp < 0:
        return x  # the identity, as in the reference
    dim = dim % x.ndim if x.ndim else 0
    if not is_dense(x):
        x = x.contiguous()
    if b is not None:
        b = b.to(device=x.device, dtype=x.dtype).contiguous()  # differentiable: the grad comes back in b's dtype
    cfg = _Config(spec, dim, float(alpha), float(gain), float(clamp) if clamp >= 0 else -1.0)
    return _Forward.apply(x, b, cfg)
