"""The CUDA ops (kernels/, engine/ops/cuda_*.py) against the reference implementations.

Every comparison runs on two backends:
- "host": the kernels' per-element code (kernels/*.h, the very functions the CUDA kernels call)
  compiled for the CPU with the system C++ compiler and driven through ctypes, plugged into
  the autograd Functions of cuda_bias_act / cuda_upfirdn2d in place of the extension. This
  checks the arithmetic, the gradient formulas and the autograd wiring on any machine.
- "cuda": the real extension on a GPU (float32 and float16); skipped without one.
"""

from __future__ import annotations

import ctypes
import math
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from engine.ops import cuda_bias_act, cuda_upfirdn2d
from engine.ops.bias_act import ACTIVATIONS, bias_act, bias_act_ref, resolve
from engine.ops.cuda_bias_act import bias_act_cuda, is_dense
from engine.ops.cuda_upfirdn2d import backward_params, upfirdn2d_cuda
from engine.ops.upfirdn2d import setup_filter, upfirdn2d, upfirdn2d_ref
from kernels import SOURCES_DIR

HAS_GPU = torch.cuda.is_available()

# ---------------------------------------------------------------------------------------------
# The host harness.

_HARNESS = r"""
#include "bias_act.h"
#include "upfirdn2d.h"

namespace ba = gencbm::bias_act;
namespace uf = gencbm::upfirdn2d;

extern "C" int host_bias_act(const void* in, const void* bias, const void* xref, const void* yref, const void* dyref,
                             void* out, int64_t numel, int64_t bias_stride, int64_t bias_size, int dtype, int act,
                             int mode, double alpha, double gain, double clamp) {
  ba::Params p;
  p.in = in; p.bias = bias; p.xref = xref; p.yref = yref; p.dyref = dyref; p.out = out;
  p.numel = numel; p.bias_stride = bias_stride; p.bias_size = bias_size;
  p.dtype = dtype; p.act = act; p.mode = mode; p.alpha = alpha; p.gain = gain; p.clamp = clamp;
  bool ok = ba::with_activation(act, [&](auto a) {
    using A = decltype(a);
    for (int64_t i = 0; i < numel; ++i) {
      if (dtype == ba::kFloat64) ba::element<double, A>(p, i); else ba::element<float, A>(p, i);
    }
  });
  return ok ? 0 : 1;
}

extern "C" int host_upfirdn2d(const void* x, const float* f, void* y, int dtype, const int64_t* sizes,
                              const int64_t* xs, const int64_t* ys, const int* ints, int flip, int channels_last,
                              double gain) {
  uf::Params p;
  p.x = x; p.f = f; p.y = y; p.dtype = dtype;
  p.n = sizes[0]; p.c = sizes[1]; p.in_h = sizes[2]; p.in_w = sizes[3]; p.out_h = sizes[4]; p.out_w = sizes[5];
  p.xs_n = xs[0]; p.xs_c = xs[1]; p.xs_h = xs[2]; p.xs_w = xs[3];
  p.ys_n = ys[0]; p.ys_c = ys[1]; p.ys_h = ys[2]; p.ys_w = ys[3];
  p.up_x = ints[0]; p.up_y = ints[1]; p.down_x = ints[2]; p.down_y = ints[3];
  p.pad_x0 = ints[4]; p.pad_y0 = ints[5]; p.f_w = ints[6]; p.f_h = ints[7];
  p.flip = flip != 0; p.channels_last = channels_last != 0; p.gain = gain;
  p.total = p.n * p.c * p.out_h * p.out_w;
  for (int64_t j = 0; j < p.total; ++j) {
    if (dtype == uf::kFloat64) uf::output_pixel<double>(p, j); else uf::output_pixel<float>(p, j);
  }
  return 0;
}
"""

_DTYPE_CODE = {torch.float32: 0, torch.float16: 1, torch.float64: 2}


def _ptr(t: torch.Tensor | None) -> ctypes.c_void_p:
    return ctypes.c_void_p(t.data_ptr() if t is not None else None)


class HostKernels:
    """Stands in for the compiled extensions, with the checks of kernels/*.cpp, on CPU tensors."""

    def __init__(self, lib: ctypes.CDLL):
        self.lib = lib
        self.calls = 0

    def bias_act(self, inp, bias, xref, yref, dyref, mode, dim, act, alpha, gain, clamp):
        self.calls += 1
        assert inp.device.type == "cpu" and inp.dtype in (torch.float32, torch.float64)
        assert is_dense(inp)
        for t in (xref, yref, dyref):
            if t is not None:  # the layout contract the CUDA binding enforces
                assert t.shape == inp.shape and t.stride() == inp.stride() and t.dtype == inp.dtype
        assert mode != 2 or dyref is not None
        stride, size = 1, 1
        if bias is not None:
            assert bias.ndim == 1 and bias.numel() == inp.shape[dim] and bias.dtype == inp.dtype and bias.is_contiguous()
            size = inp.shape[dim]
            stride = inp.stride(dim) if size > 1 else 1
        out = torch.empty_like(inp)
        rc = self.lib.host_bias_act(
            _ptr(inp), _ptr(bias), _ptr(xref), _ptr(yref), _ptr(dyref), _ptr(out),
            ctypes.c_int64(inp.numel()), ctypes.c_int64(stride), ctypes.c_int64(size),
            _DTYPE_CODE[inp.dtype], int(act), int(mode), ctypes.c_double(alpha), ctypes.c_double(gain), ctypes.c_double(clamp),
        )
        assert rc == 0
        return out

    def upfirdn2d(self, x, f, up_x, up_y, down_x, down_y, pad_x0, pad_x1, pad_y0, pad_y1, flip, gain):
        self.calls += 1
        assert x.device.type == "cpu" and x.ndim == 4 and x.dtype in (torch.float32, torch.float64)
        assert f.dtype == torch.float32 and f.ndim == 2 and f.is_contiguous()
        n, c, h, w = x.shape
        fh, fw = f.shape
        oh = (h * up_y + pad_y0 + pad_y1 - fh) // down_y + 1
        ow = (w * up_x + pad_x0 + pad_x1 - fw) // down_x + 1
        assert oh > 0 and ow > 0
        fmt = torch.channels_last if (x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()) else torch.contiguous_format
        y = torch.empty([n, c, oh, ow], dtype=x.dtype).contiguous(memory_format=fmt)
        sizes = (ctypes.c_int64 * 6)(n, c, h, w, oh, ow)
        xs = (ctypes.c_int64 * 4)(*x.stride())
        ys = (ctypes.c_int64 * 4)(*y.stride())
        ints = (ctypes.c_int * 8)(up_x, up_y, down_x, down_y, pad_x0, pad_y0, fw, fh)
        self.lib.host_upfirdn2d(
            _ptr(x), ctypes.cast(_ptr(f), ctypes.POINTER(ctypes.c_float)), _ptr(y), _DTYPE_CODE[x.dtype],
            sizes, xs, ys, ints, int(bool(flip)), int(fmt == torch.channels_last), ctypes.c_double(gain),
        )
        return y


@pytest.fixture(scope="module")
def host_kernels(tmp_path_factory) -> HostKernels:
    cxx = shutil.which("c++") or shutil.which("g++") or shutil.which("clang++")
    if cxx is None:
        pytest.skip("no C++ compiler to build the host harness")
    d = tmp_path_factory.mktemp("host_harness")
    (d / "harness.cpp").write_text(_HARNESS)
    lib = d / "harness.so"
    subprocess.run([cxx, "-std=c++17", "-O2", "-shared", "-fPIC", f"-I{SOURCES_DIR}", str(d / "harness.cpp"), "-o", str(lib)], check=True)
    return HostKernels(ctypes.CDLL(str(lib)))


@dataclass
class Backend:
    name: str
    device: str
    dtypes: tuple[torch.dtype, ...]
    kernels: HostKernels | None = None


@pytest.fixture(params=["host", pytest.param("cuda", marks=pytest.mark.gpu)])
def backend(request, monkeypatch) -> Backend:
    if request.param == "host":
        k = request.getfixturevalue("host_kernels")
        monkeypatch.setattr(cuda_bias_act, "_kernels", lambda: k)
        monkeypatch.setattr(cuda_upfirdn2d, "_kernels", lambda: k)
        return Backend("host", "cpu", (torch.float64, torch.float32), k)
    if not HAS_GPU:
        pytest.skip("needs a CUDA GPU")
    request.getfixturevalue("exact_fp32")
    return Backend("cuda", "cuda", (torch.float32, torch.float16))


@pytest.fixture
def exact_fp32(monkeypatch):
    """The reference's float32 convolutions in full precision (cuDNN would use TF32)."""
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)


def _tol(dtype: torch.dtype) -> dict:
    return {torch.float64: dict(rtol=1e-9, atol=1e-9), torch.float32: dict(rtol=1e-4, atol=1e-5), torch.float16: dict(rtol=1e-2, atol=1e-2)}[dtype]


# ---------------------------------------------------------------------------------------------
# bias_act


def _bias_act_inputs(shape, dim, dtype, device, seed, act, alpha, gain, clamp, with_bias=True):
    """x and b, with every pre-activation kept off the activation's kink at 0 and off the clamp
    boundary (derivatives jump there, and float16 may round across them)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g, dtype=torch.float64) * 2
    b = torch.randn([shape[dim]], generator=g, dtype=torch.float64) if with_bias else None
    spec, alpha_, gain_, clamp_ = resolve(act, alpha, gain, clamp)
    for _ in range(20):
        v = x + (b.reshape([-1 if i == dim % len(shape) else 1 for i in range(len(shape))]) if b is not None else 0)
        bad = v.abs() < 0.05
        if clamp_ >= 0:
            y0 = spec.func(v, alpha_) * gain_
            bad |= (y0.abs() - clamp_).abs() < 0.05 * max(clamp_, 1)
        if not bad.any():
            break
        x = torch.where(bad, x + 0.37, x)
    x = x.to(device=device, dtype=dtype)
    b = b.to(device=device, dtype=dtype) if b is not None else None
    return x, b


_ACT_CASES = [  # (alpha, gain, clamp)
    (None, None, None),
    (None, 0.7, 0.9),
    (0.3, 2.0, None),
]


def _cuda_call(x, b, dim, act, alpha, gain, clamp):
    _, alpha, gain, clamp = resolve(act, alpha, gain, clamp)
    return bias_act_cuda(x, b, dim=dim, act=act, alpha=alpha, gain=gain, clamp=clamp)


@pytest.mark.parametrize("act", list(ACTIVATIONS))
@pytest.mark.parametrize("alpha,gain,clamp", _ACT_CASES)
def test_bias_act_forward_and_grads_match_reference(backend, act, alpha, gain, clamp):
    for dtype in backend.dtypes:
        for shape, dim, with_bias in [((2, 5, 3, 4), 1, True), ((6, 7), -1, True), ((3, 4, 5), 0, False)]:
            x, b = _bias_act_inputs(shape, dim, dtype, backend.device, 1, act, alpha, gain, clamp, with_bias)
            xr, xc = x.clone().requires_grad_(), x.clone().requires_grad_()
            br = b.clone().requires_grad_() if b is not None else None
            bc = b.clone().requires_grad_() if b is not None else None
            yr = bias_act_ref(xr, br, dim=dim, act=act, alpha=alpha, gain=gain, clamp=clamp)
            yc = _cuda_call(xc, bc, dim, act, alpha, gain, clamp)
            tol = _tol(dtype)
            torch.testing.assert_close(yc, yr, **tol)
            if act == "linear" and b is None and gain is None and clamp is None:
                continue  # the identity: nothing to differentiate through a kernel
            dy = torch.randn_like(yr)
            params_r = [xr] + ([br] if br is not None else [])
            params_c = [xc] + ([bc] if bc is not None else [])
            gr = torch.autograd.grad(yr, params_r, dy, create_graph=True)
            gc = torch.autograd.grad(yc, params_c, dy, create_graph=True)
            for a, r in zip(gc, gr):
                torch.testing.assert_close(a, r, **(tol if dtype != torch.float16 else dict(rtol=2e-2, atol=5e-2)))
            # Second order: the gradient of a weighted sum of the first gradient (what R1 needs).
            w = torch.randn_like(gr[0])
            sr = (gr[0] * w).sum() + (gr[1].sum() if len(gr) > 1 else 0)
            sc = (gc[0] * w).sum() + (gc[1].sum() if len(gc) > 1 else 0)
            if not sr.requires_grad:
                assert not ACTIVATIONS[act].has_2nd_grad
                continue
            hr = torch.autograd.grad(sr, params_r, allow_unused=True)
            hc = torch.autograd.grad(sc, params_c, allow_unused=True) if sc.requires_grad else [None] * len(params_c)
            for a, r in zip(hc, hr):
                a = torch.zeros_like(r) if a is None and r is not None else a
                if r is None:
                    assert a is None or not a.abs().any()
                    continue
                torch.testing.assert_close(a, r, **(tol if dtype != torch.float16 else dict(rtol=5e-2, atol=1e-1)))


@pytest.mark.parametrize("act", list(ACTIVATIONS))
@pytest.mark.parametrize("clamp", [None, 0.8])
def test_bias_act_gradcheck_and_gradgradcheck(backend, act, clamp):
    # float64 on both backends (the extension takes double too): finite differences need it.
    x, b = _bias_act_inputs((2, 3, 4), 1, torch.float64, backend.device, 7, act, None, None, clamp)
    x.requires_grad_()
    b.requires_grad_()
    _, alpha, gain, clamp_ = resolve(act, None, None, clamp)

    def fn(x, b):
        return bias_act_cuda(x, b, dim=1, act=act, alpha=alpha, gain=gain, clamp=clamp_)

    assert torch.autograd.gradcheck(fn, (x, b), eps=1e-6, atol=1e-5)
    assert torch.autograd.gradgradcheck(fn, (x, b), eps=1e-6, atol=1e-5)


def test_bias_act_channels_last_and_noncontiguous(backend):
    for dtype in backend.dtypes:
        x, b = _bias_act_inputs((2, 6, 5, 3), 1, dtype, backend.device, 3, "lrelu", None, None, 1.0)
        xs = [x.contiguous(memory_format=torch.channels_last), x.transpose(2, 3), x[:, :, ::2]]
        for xi in xs:
            xi = xi.detach().requires_grad_()
            y = _cuda_call(xi, b, 1, "lrelu", None, None, 1.0)
            ref = bias_act_ref(xi.detach(), b, dim=1, act="lrelu", clamp=1.0)
            torch.testing.assert_close(y, ref, **_tol(dtype))
            # dy in a layout different from x's
            dy = torch.randn(y.shape, dtype=dtype, device=y.device)
            (g,) = torch.autograd.grad(y, xi, dy)
            xr = xi.detach().requires_grad_()
            (gr,) = torch.autograd.grad(bias_act_ref(xr, b, dim=1, act="lrelu", clamp=1.0), xr, dy)
            torch.testing.assert_close(g, gr, **_tol(dtype))


def test_bias_act_bias_gradient_keeps_bias_dtype(backend):
    dtype = backend.dtypes[-1]
    x, _ = _bias_act_inputs((2, 4, 3), 1, dtype, backend.device, 5, "tanh", None, None, None, with_bias=False)
    b = torch.randn(4, dtype=torch.float64, device=backend.device, requires_grad=True)
    y = _cuda_call(x, b, 1, "tanh", None, None, None)
    (gb,) = torch.autograd.grad(y.sum(), b)
    assert gb.dtype == torch.float64


def test_bias_act_third_order_raises(backend):
    x, b = _bias_act_inputs((2, 3), 1, backend.dtypes[0], backend.device, 2, "tanh", None, None, None)
    x.requires_grad_()
    y = _cuda_call(x, b, 1, "tanh", None, None, None)
    (g,) = torch.autograd.grad(y.sum(), x, create_graph=True)
    (h,) = torch.autograd.grad(g.sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match="third-order"):
        torch.autograd.grad(h.sum(), x)


def test_bias_act_unsupported_dtype_uses_reference(backend):
    x = torch.randn(2, 3, device=backend.device, dtype=torch.bfloat16)
    b = torch.randn(3, device=backend.device, dtype=torch.bfloat16)
    calls = backend.kernels.calls if backend.kernels else None
    y = _cuda_call(x, b, 1, "lrelu", None, None, None)
    torch.testing.assert_close(y, bias_act_ref(x, b, act="lrelu"))
    if backend.kernels:
        assert backend.kernels.calls == calls


# ---------------------------------------------------------------------------------------------
# upfirdn2d


def _filter(kind: str, device) -> torch.Tensor:
    if kind == "2d":
        return setup_filter(torch.tensor([[1.0, 2.0, 0.5], [3.0, -1.0, 2.0], [0.25, 1.0, 4.0], [1.0, 0.0, 2.0]]), device=device, normalize=False)
    if kind == "sep":
        return setup_filter([1.0, 3.0, 3.0, 1.0, 0.5], device=device, separable=True)
    if kind == "1331":
        return setup_filter([1, 3, 3, 1], device=device)
    return setup_filter([2.0], device=device)  # a single tap


_UFD_CASES = [  # (up, down, padding)
    ((1, 1), (1, 1), (0, 0, 0, 0)),
    ((2, 2), (1, 1), (2, 1, 2, 1)),
    ((1, 1), (2, 2), (1, 1, 1, 1)),
    ((3, 1), (1, 4), (1, -2, 3, 0)),
    ((4, 2), (3, 1), (-1, 2, 0, -3)),
    ((2, 3), (2, 3), (-2, -1, 4, 2)),
    ((1, 4), (4, 2), (5, 3, -1, 1)),
]


def _ufd_tol(dtype: torch.dtype) -> dict:
    # The reference scales the float32 filter by the gain before filtering, the kernel scales
    # the sum afterwards: even float64 results differ by float32 rounding.
    return {torch.float64: dict(rtol=1e-6, atol=1e-6), torch.float32: dict(rtol=1e-5, atol=1e-5), torch.float16: dict(rtol=1e-2, atol=3e-2)}[dtype]


@pytest.mark.parametrize("kind", ["2d", "sep", "1331", "tap"])
@pytest.mark.parametrize("up,down,padding", _UFD_CASES)
@pytest.mark.parametrize("flip", [False, True])
def test_upfirdn2d_forward_and_grads_match_reference(backend, kind, up, down, padding, flip):
    gain = 1.7
    f = _filter(kind, backend.device)
    for dtype in backend.dtypes:
        g = torch.Generator().manual_seed(11)
        x = torch.randn([2, 3, 7, 6], generator=g, dtype=torch.float64).to(backend.device, dtype)
        xr, xc = x.clone().requires_grad_(), x.clone().requires_grad_()
        yr = upfirdn2d_ref(xr, f, up=up, down=down, padding=padding, flip_filter=flip, gain=gain)
        yc = upfirdn2d_cuda(xc, f, up=up, down=down, padding=padding, flip_filter=flip, gain=gain)
        tol = _ufd_tol(dtype)
        torch.testing.assert_close(yc, yr, **tol)
        dy = torch.randn_like(yr)
        (gr,) = torch.autograd.grad(yr, xr, dy, create_graph=True)
        (gc,) = torch.autograd.grad(yc, xc, dy, create_graph=True)
        torch.testing.assert_close(gc, gr, **tol)
        # Double backward: the gradient w.r.t. dy of <grad, w> is the op applied to w.
        dyr, dyc = dy.clone().requires_grad_(), dy.clone().requires_grad_()
        w = torch.randn_like(x)
        (gr,) = torch.autograd.grad(upfirdn2d_ref(xr, f, up=up, down=down, padding=padding, flip_filter=flip, gain=gain), xr, dyr, create_graph=True)
        (gc,) = torch.autograd.grad(upfirdn2d_cuda(xc, f, up=up, down=down, padding=padding, flip_filter=flip, gain=gain), xc, dyc, create_graph=True)
        (hr,) = torch.autograd.grad((gr * w).sum(), dyr)
        (hc,) = torch.autograd.grad((gc * w).sum(), dyc)
        torch.testing.assert_close(hc, hr, **tol)


@pytest.mark.parametrize("up,down,padding", _UFD_CASES[1:5])
def test_upfirdn2d_gradcheck_and_gradgradcheck(backend, up, down, padding):
    f = _filter("2d", backend.device)
    x = torch.randn([1, 2, 5, 4], dtype=torch.float64, device=backend.device, requires_grad=True)

    def fn(x):
        return upfirdn2d_cuda(x, f, up=up, down=down, padding=padding, flip_filter=False, gain=1.3)

    assert torch.autograd.gradcheck(fn, (x,), eps=1e-6, atol=1e-6)
    assert torch.autograd.gradgradcheck(fn, (x,), eps=1e-6, atol=1e-6)


def test_upfirdn2d_layouts(backend):
    f = _filter("1331", backend.device)
    for dtype in backend.dtypes:
        x = torch.randn([2, 5, 6, 7], dtype=dtype, device=backend.device)
        for xi in [x.contiguous(memory_format=torch.channels_last), x.transpose(2, 3), x[:, :, 1::2], x[:, :1].expand(2, 4, 6, 7)]:
            y = upfirdn2d_cuda(xi, f, up=(2, 2), padding=(2, 1, 2, 1), gain=4.0)
            torch.testing.assert_close(y, upfirdn2d_ref(xi, f, up=2, padding=(2, 1, 2, 1), gain=4.0), **_ufd_tol(dtype))
        y = upfirdn2d_cuda(x.contiguous(memory_format=torch.channels_last), f, down=(2, 2), padding=(1, 1, 1, 1))
        assert y.is_contiguous(memory_format=torch.channels_last)


# The padding formula of the backward, checked against autograd of the reference (no kernel).
@pytest.mark.parametrize("up", [1, 2, 3, 4])
@pytest.mark.parametrize("down", [1, 2, 3, 4])
@pytest.mark.parametrize("pads", [(0, 0), (3, -1), (-2, 4)])
@pytest.mark.parametrize("taps", [1, 4, 5])
def test_backward_params_give_the_adjoint(up, down, pads, taps):
    torch.manual_seed(up * 100 + down * 10 + taps)
    f = torch.randn([taps, taps + 1], dtype=torch.float32)  # non-square: fh != fw
    fh, fw = f.shape
    p0, p1 = pads
    padding = (p0, p1, p1, p0)
    x = torch.randn([1, 2, 9, 8], dtype=torch.float64, requires_grad=True)
    cfg = cuda_upfirdn2d._Config(up=(up, down), down=(down, up), padding=padding, flip=False, gain=1.5)
    try:
        y = upfirdn2d_ref(x, f, up=cfg.up, down=cfg.down, padding=padding, gain=1.5)
    except RuntimeError:
        pytest.skip("the padded input is smaller than the filter")
    dy = torch.randn_like(y)
    (expected,) = torch.autograd.grad(y, x, dy)
    b = backward_params((9, 8), tuple(y.shape[2:]), (fh, fw), cfg)
    got = upfirdn2d_ref(dy, f, up=b.up, down=b.down, padding=b.padding, flip_filter=b.flip, gain=b.gain)
    assert got.shape == x.shape
    torch.testing.assert_close(got, expected)


def test_unsupported_dtype_and_filter_with_grad_use_reference(backend):
    f = _filter("1331", backend.device)
    x = torch.randn([1, 2, 5, 5], device=backend.device, dtype=torch.bfloat16)
    calls = backend.kernels.calls if backend.kernels else None
    torch.testing.assert_close(upfirdn2d_cuda(x, f, up=(2, 2), padding=(2, 1, 2, 1)), upfirdn2d_ref(x, f, up=2, padding=(2, 1, 2, 1)))
    fg = f.clone().requires_grad_()
    x32 = x.float()
    y = upfirdn2d_cuda(x32, fg, padding=(1, 2, 1, 2))
    assert y.requires_grad
    if backend.kernels:
        assert backend.kernels.calls == calls


# ---------------------------------------------------------------------------------------------
# The public ops with impl="cuda" (GPU only).


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_GPU, reason="needs a CUDA GPU")
def test_public_ops_on_gpu_use_the_kernels(exact_fp32):
    x = torch.randn([4, 8, 16, 16], device="cuda")
    b = torch.randn([8], device="cuda")
    torch.testing.assert_close(bias_act(x, b, act="lrelu", clamp=256, impl="cuda"), bias_act(x, b, act="lrelu", clamp=256, impl="ref"))
    f = setup_filter([1, 3, 3, 1], device="cuda")
    torch.testing.assert_close(upfirdn2d(x, f, up=2, padding=(2, 1, 2, 1), gain=4, impl="cuda"), upfirdn2d(x, f, up=2, padding=(2, 1, 2, 1), gain=4, impl="ref"))
    # auto picks the kernel on CUDA tensors without warning
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        bias_act(x, b, act="lrelu", impl="auto")
        upfirdn2d(x, f, impl="auto")


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_GPU, reason="needs a CUDA GPU")
def test_stylegan2_sized_calls_on_gpu(exact_fp32):
    # A 256x256 synthesis layer and a discriminator downsample, float16 channels_last included.
    f = setup_filter([1, 3, 3, 1], device="cuda")
    for dtype, fmt in [(torch.float32, torch.contiguous_format), (torch.float16, torch.channels_last)]:
        x = torch.randn([4, 128, 128, 128], device="cuda", dtype=dtype).contiguous(memory_format=fmt)
        y = upfirdn2d(x, f, up=2, padding=(2, 1, 2, 1), gain=4, impl="cuda")
        r = upfirdn2d(x.float(), f, up=2, padding=(2, 1, 2, 1), gain=4, impl="ref")
        torch.testing.assert_close(y.float(), r, rtol=1e-2, atol=2e-2)
        d = upfirdn2d(x, f, down=2, padding=1, impl="cuda")
        torch.testing.assert_close(d.float(), upfirdn2d(x.float(), f, down=2, padding=1, impl="ref"), rtol=1e-2, atol=2e-2)
        b = torch.randn([128], device="cuda", dtype=dtype)
        a = bias_act(x, b, act="lrelu", clamp=256, impl="cuda")
        torch.testing.assert_close(a.float(), bias_act(x.float(), b.float(), act="lrelu", clamp=256, impl="ref"), rtol=1e-2, atol=2e-2)
    torch.cuda.synchronize()
    assert math.isfinite(float(a.float().sum()))
