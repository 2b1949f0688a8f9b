"""Fused bias + activation + gain + clamp, as StyleGAN2 uses it.

`bias_act(x, b)` = clamp(act(x + b, alpha) * gain, -clamp, clamp), with `b` broadcast along `dim`.
Defaults per activation (alpha, gain) follow StyleGAN2: lrelu has alpha 0.2 and gain sqrt(2),
relu and swish gain sqrt(2), the rest gain 1.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from engine.ops._dispatch import use_cuda


@dataclass(frozen=True)
class Activation:
    func: Callable[[torch.Tensor, float], torch.Tensor]  # y = func(x, alpha)
    def_alpha: float  # alpha used when the caller passes None
    def_gain: float  # gain used when the caller passes None
    cuda_idx: int  # activation id understood by the kernel
    ref: str  # which tensor the kernel's gradient is computed from: "x" (input) or "y" (output)
    has_2nd_grad: bool  # whether the second derivative is non-zero somewhere


ACTIVATIONS: dict[str, Activation] = {
    "linear": Activation(lambda x, a: x, 0.0, 1.0, 1, "", False),
    "relu": Activation(lambda x, a: F.relu(x), 0.0, math.sqrt(2), 2, "y", False),
    "lrelu": Activation(lambda x, a: F.leaky_relu(x, a), 0.2, math.sqrt(2), 3, "y", False),
    "tanh": Activation(lambda x, a: torch.tanh(x), 0.0, 1.0, 4, "y", True),
    "sigmoid": Activation(lambda x, a: torch.sigmoid(x), 0.0, 1.0, 5, "y", True),
    "elu": Activation(lambda x, a: F.elu(x), 0.0, 1.0, 6, "y", True),
    "selu": Activation(lambda x, a: F.selu(x), 0.0, 1.0, 7, "y", True),
    "softplus": Activation(lambda x, a: F.softplus(x), 0.0, 1.0, 8, "y", True),
    "swish": Activation(lambda x, a: torch.sigmoid(x) * x, 0.0, math.sqrt(2), 9, "x", True),
}


def resolve(act: str, alpha: float | None, gain: float | None, clamp: float | None) -> tuple[Activation, float, float, float]:
    """The activation spec and the effective (alpha, gain, clamp); clamp -1 means none."""
    if act not in ACTIVATIONS:
        raise ValueError(f"unknown activation {act!r}; expected one of {', '.join(ACTIVATIONS)}")
    spec = ACTIVATIONS[act]
    alpha = float(alpha if alpha is not None else spec.def_alpha)
    gain = float(gain if gain is not None else spec.def_gain)
    clamp = float(clamp if clamp is not None else -1)
    if clamp != -1 and clamp < 0:
        raise ValueError(f"clamp must be >= 0 or None (got {clamp})")
    return spec, alpha, gain, clamp


def bias_act(
    x: torch.Tensor,  # input, any shape
    b: torch.Tensor | None = None,  # bias [x.shape[dim]], or None
    dim: int = 1,  # the dimension of x that b runs along
    act: str = "linear",  # activation name, a key of ACTIVATIONS
    alpha: float | None = None,  # activation parameter (lrelu slope); None: the activation's default
    gain: float | None = None,  # output scale; None: the activation's default
    clamp: float | None = None,  # clamp the output to [-clamp, clamp]; None: no clamp
    impl: str = "auto",  # "auto" | "ref" | "cuda"
) -> torch.Tensor:
    spec, alpha, gain, clamp = resolve(act, alpha, gain, clamp)
    if b is not None:
        if b.ndim != 1 or b.shape[0] != x.shape[dim]:
            raise ValueError(f"bias shape {tuple(b.shape)} does not match x.shape[{dim}] = {x.shape[dim]}")
    if use_cuda("bias_act", x, impl):
        from engine.ops.cuda_bias_act import bias_act_cuda

        return bias_act_cuda(x, b, dim=dim, act=act, alpha=alpha, gain=gain, clamp=clamp)
    return bias_act_ref(x, b, dim=dim, act=act, alpha=alpha, gain=gain, clamp=clamp)


def bias_act_ref(
    x: torch.Tensor,
    b: torch.Tensor | None = None,
    dim: int = 1,
    act: str = "linear",
    alpha: float | None = None,
    gain: float | None = None,
    clamp: float | None = None,
) -> torch.Tensor:
    """The reference: plain PyTorch ops, differentiable to any order."""
    spec, alpha, gain, clamp = resolve(act, alpha, gain, clamp)
    if b is not None:
        x = x + b.to(x.dtype).reshape([-1 if i == dim % x.ndim else 1 for i in range(x.ndim)])
    x = spec.func(x, alpha)
    if gain != 1:
        x = x * gain
    if clamp >= 0:
        x = x.clamp(-clamp, clamp)
    return x
