"""Choosing between the reference and the CUDA implementation of an op."""

from __future__ import annotations

import torch

from engine.errors import UsageError


def use_cuda(op: str, x: torch.Tensor, impl: str) -> bool:
    """True when `op` should run its CUDA kernel on `x` for the requested `impl`.

    `ref` never does; `cuda` must (raising when it cannot); `auto` does when `x` lives on a
    GPU and the kernel builds, else falls back to the reference (the builder warns once and
    remembers the failure, so a broken build is never retried on every call).
    """
    if impl == "ref":
        return False
    if impl not in ("auto", "cuda"):
        raise UsageError(f"impl must be one of auto, ref, cuda (got {impl!r})")
    if impl == "cuda":
        if not x.is_cuda:
            raise UsageError(f"impl='cuda' needs a CUDA tensor; {op} got one on {x.device}")
        from engine.ops import builder

        builder.load_op(op)  # raises OpBuildError
        return True
    if not x.is_cuda:
        return False
    from engine.ops import builder

    return builder.try_load_op(op) is not None
