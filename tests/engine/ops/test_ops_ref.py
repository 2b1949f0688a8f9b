"""The reference StyleGAN2 ops against naive float64 implementations written here from their definitions.

The naive versions loop over output pixels (vectorised over batch and channels only) and state the
op's meaning directly:
- upfirdn2d: insert up-1 zeros after each pixel, pad (negative pads crop), convolve with the filter
  ("valid" mode; true convolution unless flip_filter), keep every down-th pixel.
- conv2d_resample: zero insertion, padding (the caller's plus the filter-centring pads), FIR filter
  (gain up^2) when upsampling, the convolution (flip_weight False = true convolution), then FIR
  filter and decimation when downsampling.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from engine.ops import ACTIVATIONS, bias_act, conv2d_resample, setup_filter, upfirdn2d
from engine.ops.bias_act import bias_act_ref
from engine.ops.upfirdn2d import downsample2d, filter2d, upfirdn2d_ref, upsample2d

# --------------------------------------------------------------------------------------------
# Naive definitions (numpy, float64).


def _rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


def _effective_2d(f: np.ndarray) -> np.ndarray:
    """The 2-D kernel a filter stands for: a separable 1-D filter applies along x and along y."""
    return np.outer(f, f) if f.ndim == 1 else f


def naive_zero_insert(x: np.ndarray, upx: int, upy: int) -> np.ndarray:
    n, c, h, w = x.shape
    u = np.zeros([n, c, h * upy, w * upx])
    for iy in range(h):
        for ix in range(w):
            u[:, :, iy * upy, ix * upx] = x[:, :, iy, ix]
    return u


def naive_pad(x: np.ndarray, px0: int, px1: int, py0: int, py1: int) -> np.ndarray:
    """Pixel (i, j) of the result is pixel (i - py0, j - px0) of x, zero outside x."""
    n, c, h, w = x.shape
    oh, ow = h + py0 + py1, w + px0 + px1
    out = np.zeros([n, c, oh, ow])
    for i in range(oh):
        for j in range(ow):
            si, sj = i - py0, j - px0
            if 0 <= si < h and 0 <= sj < w:
                out[:, :, i, j] = x[:, :, si, sj]
    return out


def naive_fir_valid(x: np.ndarray, k: np.ndarray, flip: bool) -> np.ndarray:
    """Depthwise 'valid' filtering: true convolution with k (flip=False) or correlation (flip=True)."""
    kh, kw = k.shape
    n, c, h, w = x.shape
    kk = k if flip else k[::-1, ::-1]
    out = np.zeros([n, c, h - kh + 1, w - kw + 1])
    for i in range(out.shape[2]):
        for j in range(out.shape[3]):
            out[:, :, i, j] = (x[:, :, i : i + kh, j : j + kw] * kk).sum(axis=(2, 3))
    return out


def naive_upfirdn2d(x, f, up=(1, 1), down=(1, 1), pad=(0, 0, 0, 0), flip_filter=False, gain=1.0):
    """upfirdn2d from its definition; f is the filter as upfirdn2d receives it (1-D = separable)."""
    f = np.asarray(f, dtype=np.float64)
    k = _effective_2d(f) * gain
    u = naive_zero_insert(x, *up)
    p = naive_pad(u, *pad)
    y = naive_fir_valid(p, k, flip_filter)
    return y[:, :, :: down[1], :: down[0]]


def naive_conv_valid(x: np.ndarray, w: np.ndarray, groups: int, flip_weight: bool) -> np.ndarray:
    """'valid' grouped convolution; flip_weight True = correlation (torch), False = true convolution."""
    n, cin, h, wd = x.shape
    cout, cpg, kh, kw = w.shape
    opg = cout // groups
    ww = w if flip_weight else w[:, :, ::-1, ::-1]
    out = np.zeros([n, cout, h - kh + 1, wd - kw + 1])
    for i in range(out.shape[2]):
        for j in range(out.shape[3]):
            patch = x[:, :, i : i + kh, j : j + kw]  # [n, cin, kh, kw]
            for o in range(cout):
                g = o // opg
                out[:, o, i, j] = (patch[:, g * cpg : (g + 1) * cpg] * ww[o]).sum(axis=(1, 2, 3))
    return out


def naive_conv2d_resample(x, w, f, up=1, down=1, padding=(0, 0, 0, 0), groups=1, flip_weight=True, flip_filter=False):
    """conv2d_resample from its definition (see the module docstring)."""
    k = _effective_2d(np.asarray(f, dtype=np.float64)) if f is not None else np.ones([1, 1])
    fh, fw = k.shape
    px0, px1, py0, py1 = padding
    if up > 1:  # centre the interpolation filter on the upsampled grid
        px0, px1 = px0 + (fw + up - 1) // 2, px1 + (fw - up) // 2
        py0, py1 = py0 + (fh + up - 1) // 2, py1 + (fh - up) // 2
    if down > 1:  # centre the anti-aliasing filter on the decimated grid
        px0, px1 = px0 + (fw - down + 1) // 2, px1 + (fw - down) // 2
        py0, py1 = py0 + (fh - down + 1) // 2, py1 + (fh - down) // 2
    y = naive_pad(naive_zero_insert(x, up, up), px0, px1, py0, py1)
    if up > 1:
        y = naive_fir_valid(y, k * up**2, flip_filter)
    y = naive_conv_valid(y, w, groups, flip_weight)
    if down > 1:
        y = naive_fir_valid(y, k, flip_filter)[:, :, ::down, ::down]
    return y


def _t(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a))


def _close(actual: torch.Tensor, expected: np.ndarray, tol: float = 1e-10) -> None:
    assert tuple(actual.shape) == expected.shape, f"shape {tuple(actual.shape)} != {expected.shape}"
    np.testing.assert_allclose(actual.detach().numpy(), expected, rtol=tol, atol=tol)


# --------------------------------------------------------------------------------------------
# Self-checks of the naive helpers on hand-computed cases (so the oracle is itself tested).


def test_naive_helpers_on_hand_examples():
    x = np.arange(1.0, 4.0).reshape(1, 1, 1, 3)  # [1, 2, 3]
    assert naive_zero_insert(x, 2, 1)[0, 0, 0].tolist() == [1, 0, 2, 0, 3, 0]
    assert naive_pad(x, 1, -1, 0, 0)[0, 0, 0].tolist() == [0, 1, 2]
    # True convolution with [1, 10] (valid): y[i] = 10 * x[i] + 1 * x[i+1]... flipped kernel applied.
    assert naive_fir_valid(x, np.array([[1.0, 10.0]]), flip=False)[0, 0, 0].tolist() == [12, 23]
    assert naive_fir_valid(x, np.array([[1.0, 10.0]]), flip=True)[0, 0, 0].tolist() == [21, 32]
    assert naive_conv_valid(x, np.array([[[[1.0, 10.0]]]]), 1, flip_weight=True)[0, 0, 0].tolist() == [21, 32]


# --------------------------------------------------------------------------------------------
# upfirdn2d.

_FILTERS = {
    "2d_3x4": lambda: _rng(1).standard_normal([3, 4]),  # non-square, asymmetric: catches x/y and flip mix-ups
    "sep_5": lambda: _rng(2).standard_normal([5]),  # separable 1-D (applied along x then y)
    "1x1": lambda: np.array([[1.5]]),
}
_SCALES = [(1, 1), (2, 2), (3, 3), (2, 1), (1, 3), (3, 2)]
_PADS = [(0, 0, 0, 0), (1, 2, 0, 3), (-1, 2, 3, -2), (2, -3, -1, 1)]


def _out_size(size: int, up: int, p0: int, p1: int, taps: int, down: int) -> int:
    n = size * up + p0 + p1 - taps + 1
    return (n - 1) // down + 1 if n > 0 else 0


@pytest.mark.parametrize("fname", list(_FILTERS))
@pytest.mark.parametrize("up", _SCALES)
@pytest.mark.parametrize("down", _SCALES)
@pytest.mark.parametrize("pad", _PADS)
def test_upfirdn2d_ref_matches_naive(fname, up, down, pad):
    f = _FILTERS[fname]()
    x = _rng(0).standard_normal([2, 2, 5, 6])  # H != W
    fh, fw = _effective_2d(f).shape
    if _out_size(6, up[0], pad[0], pad[1], fw, down[0]) <= 0 or _out_size(5, up[1], pad[2], pad[3], fh, down[1]) <= 0:
        pytest.skip("padding crops everything")
    expected = naive_upfirdn2d(x, f, up=up, down=down, pad=pad)
    _close(upfirdn2d_ref(_t(x), _t(f), up=up, down=down, padding=pad), expected)
    # The public op with impl="ref" (and "auto" on CPU) is the same function.
    _close(upfirdn2d(_t(x), _t(f), up=up, down=down, padding=pad, impl="ref"), expected)


@pytest.mark.parametrize("fname", ["2d_3x4", "sep_5"])
@pytest.mark.parametrize("flip_filter", [False, True])
@pytest.mark.parametrize("gain", [1.0, 3.0])
@pytest.mark.parametrize("up,down", [((1, 1), (1, 1)), ((2, 3), (1, 1)), ((1, 1), (3, 2)), ((2, 2), (2, 2))])
def test_upfirdn2d_flip_and_gain(fname, flip_filter, gain, up, down):
    f = _FILTERS[fname]()
    x = _rng(3).standard_normal([1, 3, 4, 7])
    pad = (2, 1, 1, 2)
    expected = naive_upfirdn2d(x, f, up=up, down=down, pad=pad, flip_filter=flip_filter, gain=gain)
    _close(upfirdn2d(_t(x), _t(f), up=up, down=down, padding=pad, flip_filter=flip_filter, gain=gain, impl="auto"), expected)


def test_upfirdn2d_padding_forms_and_none_filter():
    x = _t(_rng(4).standard_normal([1, 1, 4, 5]))
    f = _t(_FILTERS["2d_3x4"]())
    a = upfirdn2d_ref(x, f, padding=2)
    b = upfirdn2d_ref(x, f, padding=(2, 2))
    c = upfirdn2d_ref(x, f, padding=[2, 2, 2, 2])
    assert torch.equal(a, b) and torch.equal(a, c)
    # (x, y) pair: x padding first.
    d = upfirdn2d_ref(x, f, padding=(3, 1))
    assert tuple(d.shape) == (1, 1, 4 + 2 - 3 + 1, 5 + 6 - 4 + 1)
    # No filter: pure resampling and padding.
    _close(upfirdn2d(x, None, up=2, padding=(1, 0, 0, 1), impl="ref"), naive_upfirdn2d(x.numpy(), np.ones([1, 1]), up=(2, 2), pad=(1, 0, 0, 1)))


def test_upfirdn2d_rejects_bad_arguments():
    x = torch.zeros([1, 1, 4, 4])
    with pytest.raises(ValueError, match="N, C, H, W"):
        upfirdn2d(torch.zeros([4, 4]), None)
    with pytest.raises(ValueError, match=">= 1"):
        upfirdn2d(x, None, up=0)
    with pytest.raises(ValueError, match="padding"):
        upfirdn2d(x, None, padding=(1, 2, 3))
    with pytest.raises(ValueError, match="1-D or 2-D"):
        upfirdn2d(x, torch.ones([2, 2, 2]))


# --------------------------------------------------------------------------------------------
# filter2d / upsample2d / downsample2d.


@pytest.mark.parametrize("taps", [[1, 2, 1], [1, 3, 3, 1], [1, 2, 3, 4, 5, 4, 3, 2, 1]])
@pytest.mark.parametrize("padding", [0, 1, (1, 0, 2, -1)])
def test_filter2d_size_and_values(taps, padding):
    f = setup_filter(taps)
    x = _rng(5).standard_normal([2, 3, 9, 11])
    p = padding if not isinstance(padding, int) else (padding,) * 4
    y = filter2d(_t(x), f, padding=padding)
    assert tuple(y.shape) == (2, 3, 9 + p[2] + p[3], 11 + p[0] + p[1])
    # Same-size filtering: an odd filter is centred; an even one puts the extra tap before the pixel.
    n = len(taps)
    expected = naive_upfirdn2d(x, f.double().numpy(), pad=(p[0] + n // 2, p[1] + (n - 1) // 2, p[2] + n // 2, p[3] + (n - 1) // 2))
    _close(y, expected)


def test_filter2d_odd_filter_is_same_padded_convolution():
    k = _rng(6).standard_normal([3, 3])
    x = _rng(7).standard_normal([1, 2, 6, 5])
    y = filter2d(_t(x), _t(k))
    expected = F.conv2d(_t(x), _t(k[::-1, ::-1].copy())[None, None].expand(2, 1, 3, 3), padding=1, groups=2)
    torch.testing.assert_close(y, expected, rtol=1e-12, atol=1e-12)


def test_upsample2d_box_filter_is_nearest_neighbour():
    x = _t(_rng(8).standard_normal([2, 3, 4, 5]))
    y = upsample2d(x, setup_filter([1, 1]))
    torch.testing.assert_close(y, F.interpolate(x, scale_factor=2, mode="nearest"), rtol=1e-12, atol=1e-12)
    y3 = upsample2d(x, setup_filter([1, 1, 1]), up=3)
    torch.testing.assert_close(y3, F.interpolate(x, scale_factor=3, mode="nearest"), rtol=1e-12, atol=1e-12)


def test_upsample2d_1331_is_bilinear_in_the_interior():
    # [1,3,3,1] upsampling by 2 is half-pixel-centred bilinear interpolation away from the border.
    x = _t(_rng(9).standard_normal([1, 2, 6, 7]))
    y = upsample2d(x, setup_filter([1, 3, 3, 1]))
    assert tuple(y.shape) == (1, 2, 12, 14)
    ref = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
    torch.testing.assert_close(y[..., 1:-1, 1:-1], ref[..., 1:-1, 1:-1], rtol=1e-12, atol=1e-12)
    # A constant image stays constant in the interior (the gain up^2 compensates zero insertion).
    ones = upsample2d(torch.ones([1, 1, 5, 5], dtype=torch.float64), setup_filter([1, 3, 3, 1]))
    torch.testing.assert_close(ones[..., 2:-2, 2:-2], torch.ones_like(ones[..., 2:-2, 2:-2]))


def test_downsample2d_box_filter_is_average_pooling():
    x = _t(_rng(10).standard_normal([2, 3, 8, 6]))
    torch.testing.assert_close(downsample2d(x, setup_filter([1, 1])), F.avg_pool2d(x, 2), rtol=1e-12, atol=1e-12)
    x9 = _t(_rng(11).standard_normal([1, 1, 9, 6]))
    # setup_filter returns float32 taps, and 1/9 is not exact in float32.
    torch.testing.assert_close(downsample2d(x9, setup_filter([1, 1, 1]), down=3), F.avg_pool2d(x9, 3), rtol=1e-7, atol=1e-7)


def test_downsample2d_1331_stencil():
    x = _rng(12).standard_normal([1, 1, 8, 10])
    y = downsample2d(_t(x), setup_filter([1, 3, 3, 1]))
    assert tuple(y.shape) == (1, 1, 4, 5)
    t = np.array([1, 3, 3, 1]) / 8
    # Output pixel (i, j) is centred between input pixels 2i and 2i+1 (taps at 2i-1 .. 2i+2).
    for i in range(1, 3):
        for j in range(1, 4):
            v = sum(t[a] * t[b] * x[0, 0, 2 * i - 1 + a, 2 * j - 1 + b] for a in range(4) for b in range(4))
            assert abs(float(y[0, 0, i, j]) - v) < 1e-12


@pytest.mark.parametrize("up", [2, 3, (2, 3), (3, 1)])
@pytest.mark.parametrize("taps", [[1, 3, 3, 1], [1, 2, 1], [1, 1]])
def test_resample_output_sizes(up, taps):
    x = torch.zeros([1, 2, 6, 12])
    f = setup_filter(taps)
    ux, uy = (up, up) if isinstance(up, int) else up
    assert tuple(upsample2d(x, f, up=up).shape) == (1, 2, 6 * uy, 12 * ux)
    assert tuple(downsample2d(x, f, down=up).shape) == (1, 2, 6 // uy, 12 // ux)
    assert tuple(upsample2d(x, f, up=up, padding=(1, 2, 0, -1)).shape) == (1, 2, 6 * uy - 1, 12 * ux + 3)
    assert tuple(downsample2d(x, f, down=up, padding=(2 * ux, 0, 0, 0)).shape) == (1, 2, 6 // uy, 12 // ux + 2)


# --------------------------------------------------------------------------------------------
# setup_filter.


def test_setup_filter_defaults_and_normalize():
    assert torch.equal(setup_filter(None), torch.ones([1, 1]))
    f = setup_filter([1, 3, 3, 1])
    assert f.dtype == torch.float32 and tuple(f.shape) == (4, 4)
    torch.testing.assert_close(f, torch.outer(torch.tensor([1.0, 3, 3, 1]), torch.tensor([1.0, 3, 3, 1])) / 64)
    raw = setup_filter([1, 3, 3, 1], normalize=False)
    assert float(raw.sum()) == 64.0 and float(raw[1, 2]) == 9.0
    two_d = setup_filter([[1.0, 2.0], [3.0, 4.0]])
    torch.testing.assert_close(two_d, torch.tensor([[1.0, 2.0], [3.0, 4.0]]) / 10)
    assert setup_filter(2.0).shape == (1, 1)


def test_setup_filter_separable_rule():
    assert setup_filter(list(range(1, 8))).ndim == 2  # 7 taps: outer product
    f8 = setup_filter(list(range(1, 9)))  # 8 taps: stays separable
    assert f8.ndim == 1 and f8.shape[0] == 8
    torch.testing.assert_close(f8.sum(), torch.tensor(1.0))
    assert setup_filter([1, 2, 1], separable=True).ndim == 1
    assert setup_filter(list(range(1, 9)), separable=False).shape == (8, 8)
    with pytest.raises(ValueError, match="separable"):
        setup_filter([[1, 2], [3, 4]], separable=True)
    with pytest.raises(ValueError):
        setup_filter([])
    with pytest.raises(ValueError):
        setup_filter(np.ones([2, 2, 2]))
    # A separable filter and its outer product filter alike.
    x = _t(_rng(13).standard_normal([1, 2, 12, 13]))
    taps = _rng(14).standard_normal([8])
    sep = setup_filter(taps).double()
    full = setup_filter(taps, separable=False).double()
    # (float32 taps: the outer product rounds differently from two 1-D passes.)
    torch.testing.assert_close(upfirdn2d_ref(x, sep, up=2, padding=3), upfirdn2d_ref(x, full, up=2, padding=3), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("taps", [[[1.0, 2.0, 0.5], [4.0, -1.0, 3.0]], [1.0, 2.0, 5.0], list(np.arange(1.0, 10.0))])
def test_setup_filter_flip_and_gain(taps):
    f = setup_filter(taps)
    flipped = setup_filter(taps, flip_filter=True)
    torch.testing.assert_close(flipped, f.flip(list(range(f.ndim))))
    assert not torch.equal(flipped, f)  # asymmetric taps: flipping changes them
    g = setup_filter(taps, gain=4.0)
    eff = g if g.ndim == 2 else torch.outer(g, g)
    torch.testing.assert_close(eff.sum(), torch.tensor(4.0))  # overall gain over both dimensions
    # Flipping/gain in setup_filter == asking upfirdn2d to flip/scale.
    x = _t(_rng(15).standard_normal([1, 1, 7, 8]))
    torch.testing.assert_close(
        upfirdn2d_ref(x, flipped.double(), padding=2), upfirdn2d_ref(x, f.double(), padding=2, flip_filter=True), rtol=1e-12, atol=1e-12
    )
    torch.testing.assert_close(upfirdn2d_ref(x, g.double(), padding=2), upfirdn2d_ref(x, f.double(), padding=2, gain=4.0), rtol=1e-12, atol=1e-12)


def test_setup_filter_device_argument():
    assert setup_filter([1, 2, 1], device="cpu").device.type == "cpu"


# --------------------------------------------------------------------------------------------
# bias_act.

_SELU_SCALE = 1.0507009873554804934193349852946
_SELU_ALPHA = 1.6732632423543772848170429916717


def naive_act(name: str, x: np.ndarray, alpha: float) -> np.ndarray:
    sig = 1.0 / (1.0 + np.exp(-x))
    return {
        "linear": lambda: x,
        "relu": lambda: np.where(x > 0, x, 0.0),
        "lrelu": lambda: np.where(x > 0, x, alpha * x),
        "tanh": lambda: np.tanh(x),
        "sigmoid": lambda: sig,
        "elu": lambda: np.where(x > 0, x, np.expm1(x)),
        "selu": lambda: _SELU_SCALE * np.where(x > 0, x, _SELU_ALPHA * np.expm1(x)),
        "softplus": lambda: np.log1p(np.exp(x)),
        "swish": lambda: x * sig,
    }[name]()


_DEFAULT_GAIN = {"relu": math.sqrt(2), "lrelu": math.sqrt(2), "swish": math.sqrt(2)}


def test_activation_table_is_complete():
    assert set(ACTIVATIONS) == {"linear", "relu", "lrelu", "tanh", "sigmoid", "elu", "selu", "softplus", "swish"}
    for name, spec in ACTIVATIONS.items():
        assert spec.def_gain == pytest.approx(_DEFAULT_GAIN.get(name, 1.0)), name
        assert spec.def_alpha == pytest.approx(0.2 if name == "lrelu" else 0.0), name


@pytest.mark.parametrize("act", list(ACTIVATIONS))
@pytest.mark.parametrize(
    "alpha,gain,clamp",
    [(None, None, None), (0.05, 0.5, None), (None, 2.0, 0.4), (0.3, None, 0.0)],
)
@pytest.mark.parametrize("shape,dim", [((2, 3, 4, 5), 1), ((3, 4, 5), 2), ((4, 6), -1), ((5, 3), 0)])
def test_bias_act_ref_matches_naive(act, alpha, gain, clamp, shape, dim):
    rng = _rng(16)
    x = rng.standard_normal(shape) * 2
    b = rng.standard_normal([shape[dim]])
    bshape = [1] * len(shape)
    bshape[dim] = shape[dim]
    eff_alpha = alpha if alpha is not None else (0.2 if act == "lrelu" else 0.0)
    eff_gain = gain if gain is not None else _DEFAULT_GAIN.get(act, 1.0)
    expected = naive_act(act, x + b.reshape(bshape), eff_alpha) * eff_gain
    if clamp is not None:
        expected = np.clip(expected, -clamp, clamp)
    _close(bias_act_ref(_t(x), _t(b), dim=dim, act=act, alpha=alpha, gain=gain, clamp=clamp), expected, tol=1e-12)
    _close(bias_act(_t(x), _t(b), dim=dim, act=act, alpha=alpha, gain=gain, clamp=clamp, impl="ref"), expected, tol=1e-12)
    # Without a bias.
    expected_nb = naive_act(act, x, eff_alpha) * eff_gain
    if clamp is not None:
        expected_nb = np.clip(expected_nb, -clamp, clamp)
    _close(bias_act(_t(x), None, dim=dim, act=act, alpha=alpha, gain=gain, clamp=clamp), expected_nb, tol=1e-12)


def test_bias_act_rejects_bad_arguments():
    x = torch.zeros([2, 3, 4])
    with pytest.raises(ValueError, match="unknown activation"):
        bias_act(x, act="gelu_nope")
    with pytest.raises(ValueError, match="bias shape"):
        bias_act(x, torch.zeros([4]), dim=1)
    with pytest.raises(ValueError, match="clamp"):
        bias_act(x, clamp=-2.0)


@pytest.mark.parametrize("act", ["lrelu", "tanh", "swish", "softplus", "selu"])
def test_bias_act_ref_gradients(act):
    rng = _rng(17)
    sign = np.where(rng.random([2, 3, 2]) < 0.5, -1.0, 1.0)
    x = _t(sign * (0.2 + rng.random([2, 3, 2]))).requires_grad_(True)  # away from the kinks at 0
    b = _t(rng.standard_normal([3]) * 0.05).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda x, b: bias_act_ref(x, b, act=act, gain=1.3), (x, b))
    assert torch.autograd.gradgradcheck(lambda x, b: bias_act_ref(x, b, act=act, gain=1.3), (x, b))


# --------------------------------------------------------------------------------------------
# conv2d_resample: every path against the naive definition.

# (id, x shape [N, Cin, H, W], w shape [Cout, Cin/groups, kh, kw], up, down, padding, groups)
_CONV_CASES = [
    ("1x1_up", (2, 4, 3, 5), (6, 4, 1, 1), 2, 1, 0, 1),
    ("1x1_up_groups", (1, 4, 3, 4), (6, 2, 1, 1), 2, 1, (1, 0, 0, 2), 2),
    ("1x1_down", (2, 4, 6, 8), (3, 4, 1, 1), 1, 2, 0, 1),
    ("1x1_down_pad", (1, 4, 6, 7), (4, 2, 1, 1), 1, 2, (1, 0, 2, 1), 2),
    ("down_only", (2, 3, 8, 7), (4, 3, 3, 3), 1, 2, 1, 1),
    ("down_only_groups_asym", (1, 4, 9, 8), (6, 2, 3, 2), 1, 2, (1, 0, 2, 1), 2),
    ("up_only", (2, 3, 4, 5), (4, 3, 3, 3), 2, 1, 1, 1),
    ("up_only_groups", (2, 6, 3, 4), (9, 2, 3, 3), 2, 1, 1, 3),
    ("up_only_asym_kernel", (1, 2, 3, 4), (3, 2, 2, 3), 2, 1, (0, 2, 1, 1), 1),
    ("up3", (1, 2, 3, 3), (2, 2, 3, 3), 3, 1, 1, 1),
    ("plain_symmetric", (2, 3, 5, 6), (4, 3, 3, 3), 1, 1, 1, 1),
    ("plain_symmetric_groups", (1, 4, 5, 5), (4, 2, 3, 3), 1, 1, (2, 2, 1, 1), 2),
    ("plain_asymmetric", (2, 3, 5, 6), (4, 3, 3, 3), 1, 1, (1, 0, 2, 1), 1),
    ("plain_negative", (1, 3, 6, 6), (2, 3, 3, 3), 1, 1, (-1, 2, 0, -1), 1),
    ("up_down", (1, 2, 5, 6), (3, 2, 3, 3), 2, 2, 1, 1),
    ("up_down_1x1", (1, 2, 5, 6), (3, 2, 1, 1), 2, 2, 0, 1),
]
_CONV_IDS = [c[0] for c in _CONV_CASES]


def _conv_inputs(xs, ws, seed):
    rng = _rng(seed)
    return rng.standard_normal(xs), rng.standard_normal(ws)


def _pad4(padding):
    if isinstance(padding, int):
        return (padding,) * 4
    return tuple(padding)


@pytest.mark.parametrize("case", _CONV_CASES, ids=_CONV_IDS)
@pytest.mark.parametrize("flip_weight", [True, False])
@pytest.mark.parametrize("flip_filter", [False, True])
def test_conv2d_resample_matches_naive(case, flip_weight, flip_filter):
    _, xs, ws, up, down, padding, groups = case
    x, w = _conv_inputs(xs, ws, seed=18)
    taps = [1.0, 3.0, 2.0, 0.5]  # asymmetric: a wrong flip or centring shows
    f = setup_filter(taps).double()
    expected = naive_conv2d_resample(
        x, w, f.numpy(), up=up, down=down, padding=_pad4(padding), groups=groups, flip_weight=flip_weight, flip_filter=flip_filter
    )
    y = conv2d_resample(_t(x), _t(w), f=f, up=up, down=down, padding=padding, groups=groups, flip_weight=flip_weight, flip_filter=flip_filter, impl="ref")
    _close(y, expected)


def test_conv2d_resample_stylegan_shapes():
    # The generator's uses: 3x3 up-conv with padding 1 doubles the size; 3x3 down-conv halves it.
    f = setup_filter([1, 3, 3, 1])
    x = torch.randn([2, 4, 8, 8])
    w = torch.randn([5, 4, 3, 3])
    assert tuple(conv2d_resample(x, w, f=f, up=2, padding=1, flip_weight=False).shape) == (2, 5, 16, 16)
    assert tuple(conv2d_resample(x, w, f=f, down=2, padding=1).shape) == (2, 5, 4, 4)
    assert tuple(conv2d_resample(x, w, padding=1).shape) == (2, 5, 8, 8)
    assert tuple(conv2d_resample(x, w[:, :, :1, :1], f=f, up=2).shape) == (2, 5, 16, 16)


def test_conv2d_resample_rejects_bad_arguments():
    x = torch.zeros([1, 4, 4, 4])
    with pytest.raises(ValueError, match="4-D"):
        conv2d_resample(x[0], torch.zeros([2, 4, 3, 3]))
    with pytest.raises(ValueError, match="channels"):
        conv2d_resample(x, torch.zeros([2, 3, 3, 3]))
    with pytest.raises(ValueError, match="up and down"):
        conv2d_resample(x, torch.zeros([2, 4, 3, 3]), up=0)


@pytest.mark.parametrize(
    "case", [c for c in _CONV_CASES if c[0] in {"1x1_up", "1x1_down", "down_only", "up_only_groups", "plain_symmetric", "plain_asymmetric", "up_down"}],
    ids=lambda c: c[0],
)
def test_conv2d_resample_gradcheck(case):
    _, xs, ws, up, down, padding, groups = case
    xs = (1, *xs[1:])  # batch 1 keeps gradcheck fast
    x, w = _conv_inputs(xs, ws, seed=19)
    f = setup_filter([1, 3, 3, 1]).double()
    xt = _t(x).requires_grad_(True)
    wt = _t(w).requires_grad_(True)
    fn = lambda x, w: conv2d_resample(x, w, f=f, up=up, down=down, padding=padding, groups=groups, flip_weight=(up == 1), impl="ref")  # noqa: E731
    assert torch.autograd.gradcheck(fn, (xt, wt))
