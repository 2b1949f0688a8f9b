"""StyleGAN2's custom ops: a pure-PyTorch reference (the spec) and CUDA kernels from `kernels/`.

Each public op takes `impl="auto"|"ref"|"cuda"`:
- `ref`: the reference implementation, any device.
- `cuda`: the CUDA kernel; raises `OpBuildError` when it cannot be built or the input is not on a GPU.
- `auto`: the kernel for CUDA tensors when it builds, else (warning once) the reference.
Importing this package never compiles anything.
"""

from engine.ops.bias_act import ACTIVATIONS, bias_act
from engine.ops.conv2d_resample import conv2d_resample
from engine.ops.upfirdn2d import downsample2d, filter2d, setup_filter, upfirdn2d, upsample2d

IMPLS = ("auto", "ref", "cuda")

__all__ = [
    "ACTIVATIONS",
    "IMPLS",
    "bias_act",
    "conv2d_resample",
    "downsample2d",
    "filter2d",
    "setup_filter",
    "upfirdn2d",
    "upsample2d",
]
