"""Time the reference and the CUDA kernels of bias_act and upfirdn2d at StyleGAN2-256 sizes.

    python bench/bench_ops.py [--batch 8] [--dtype float32|float16] [--iters 20] [--channels-last]

For each call StyleGAN2-256 makes (the synthesis and discriminator layers), prints the time of a
forward and of a forward+backward, reference vs CUDA, and the speed-up. Without a GPU it says
so and times the reference on the CPU only (at a smaller batch). The first CUDA call builds the
kernels if they are not cached yet (minutes), outside the timings.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from engine.ops import bias_act, setup_filter, upfirdn2d  # noqa: E402

# (label, channels, resolution) of the StyleGAN2-256 layers (config-f channel counts).
_SYNTH = [("synth 4", 512, 4), ("synth 8", 512, 8), ("synth 16", 512, 16), ("synth 32", 512, 32),
          ("synth 64", 512, 64), ("synth 128", 256, 128), ("synth 256", 128, 256)]
_DISC = [("disc 256", 128, 256), ("disc 128", 256, 128), ("disc 64", 512, 64), ("disc 32", 512, 32),
         ("disc 16", 512, 16), ("disc 8", 512, 8)]


def _cases(batch: int) -> list[tuple[str, tuple[int, ...], Callable]]:
    """(name, input shape, fn(x, impl)) for every op call worth timing."""
    f = setup_filter([1, 3, 3, 1])
    cases = []
    for label, c, r in _SYNTH:
        cases.append((f"bias_act lrelu  {label}", (batch, c, r, r), lambda x, impl, c=c: bias_act(x, _bias(c, x), act="lrelu", clamp=256, impl=impl)))
    for label, c, r in _SYNTH[:-1]:  # the upsampling blur after each transposed conv (output 2r+1)
        cases.append((f"upfirdn2d blur  {label}", (batch, c, 2 * r + 1, 2 * r + 1), lambda x, impl: upfirdn2d(x, _f(f, x), padding=1, gain=4, impl=impl)))
        cases.append((f"upfirdn2d up2   {label}", (batch, 3, r, r), lambda x, impl: upfirdn2d(x, _f(f, x), up=2, padding=(2, 1, 2, 1), gain=4, impl=impl)))
    for label, c, r in _DISC:
        cases.append((f"upfirdn2d down2 {label}", (batch, c, r, r), lambda x, impl: upfirdn2d(x, _f(f, x), down=2, padding=1, impl=impl)))
        cases.append((f"bias_act lrelu  {label}", (batch, c, r, r), lambda x, impl, c=c: bias_act(x, _bias(c, x), act="lrelu", clamp=256, impl=impl)))
    return cases


_cache: dict = {}


def _bias(c: int, x: torch.Tensor) -> torch.Tensor:
    key = ("b", c, x.device, x.dtype)
    if key not in _cache:
        _cache[key] = torch.randn(c, device=x.device, dtype=x.dtype, requires_grad=True)
    return _cache[key]


def _f(f: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    key = ("f", x.device)
    if key not in _cache:
        _cache[key] = f.to(x.device)
    return _cache[key]


def _time(fn: Callable[[], None], device: torch.device, iters: int) -> float:
    """Median seconds per call."""
    fn()  # warm-up (and, for CUDA, the build / kernel load)
    times = []
    for _ in range(iters):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    times.sort()
    return times[len(times) // 2]


def _fwd(fn, x, impl) -> Callable[[], None]:
    def run() -> None:
        with torch.no_grad():
            fn(x, impl)

    return run


def _fwd_bwd(fn, x, impl) -> Callable[[], None]:
    def run() -> None:
        xx = x.detach().requires_grad_()
        y = fn(xx, impl)
        y.backward(torch.ones_like(y))

    return run


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=None, help="batch size (default 8 on a GPU, 1 on the CPU)")
    ap.add_argument("--dtype", choices=["float32", "float16"], default="float32")
    ap.add_argument("--iters", type=int, default=None, help="timed repetitions per case (default 20 on a GPU, 2 on the CPU)")
    ap.add_argument("--channels-last", action="store_true", help="use channels_last inputs")
    ap.add_argument("--only", default="", help="run only cases whose name contains this text")
    args = ap.parse_args(argv)

    gpu = torch.cuda.is_available()
    device = torch.device("cuda" if gpu else "cpu")
    dtype = getattr(torch, args.dtype)
    if not gpu:
        print("no CUDA GPU: timing the reference implementation on the CPU only")
        if dtype == torch.float16:
            print("(float16 on the CPU is slow and unrepresentative; using float32)")
            dtype = torch.float32
    batch = args.batch or (8 if gpu else 1)
    iters = args.iters or (20 if gpu else 2)
    print(f"device {torch.cuda.get_device_name() if gpu else 'cpu'}, dtype {str(dtype)[6:]}, batch {batch}, "
          f"{'channels_last' if args.channels_last else 'contiguous'}, median of {iters} (ms)")

    impls = ["ref", "cuda"] if gpu else ["ref"]
    head = f"{'case':34} {'shape':>20}"
    for what in ("fwd", "fwd+bwd"):
        head += "".join(f" {what + ' ' + i:>14}" for i in impls)
        if gpu:
            head += f" {'speed-up':>9}"
    print(head)
    print("-" * len(head))
    for name, shape, fn in _cases(batch):
        if args.only and args.only not in name:
            continue
        x = torch.randn(shape, device=device, dtype=dtype)
        if args.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        row = f"{name:34} {'x'.join(map(str, shape)):>20}"
        for mk in (_fwd, _fwd_bwd):
            t = {impl: _time(mk(fn, x, impl), device, iters) for impl in impls}
            row += "".join(f" {t[i] * 1e3:14.3f}" for i in impls)
            if gpu:
                row += f" {t['ref'] / t['cuda']:8.2f}x"
        print(row, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
