// gencbm: upsample, pad, FIR-filter and downsample a batch of 2-D images.
//
// Shared by upfirdn2d.cpp (the PyTorch binding), upfirdn2d.cu (the CUDA kernel) and the host-side
// test harness in tests/engine/ops/test_cuda_ops.py; it includes no CUDA or PyTorch header.
//
// Along each axis, with up-factor u, down-factor d, leading padding p0 and a filter of n taps,
// output pixel o sums the taps t = 0..n-1 over the upsampled, padded signal at position
// o * d + t, i.e. at upsampled coordinate s = o * d + t - p0. Only coordinates that are
// multiples of u (and inside the input) hold input pixels, pixel s / u; the rest are the
// inserted zeros or padding and are skipped. A true convolution uses tap n-1-t there,
// `flip` (correlation) uses tap t. A separable filter is run as two such passes.

#pragma once

#include <stdint.h>

#if defined(__CUDACC__)
#define GENCBM_HD __host__ __device__ __forceinline__
#else
#define GENCBM_HD inline
#endif

namespace gencbm {
namespace upfirdn2d {

enum Dtype : int { kFloat32 = 0, kFloat16 = 1, kFloat64 = 2 };

struct Params {
  const void* x = nullptr;  // [N, C, in_h, in_w], any strides
  const float* f = nullptr; // [f_h, f_w], contiguous
  void* y = nullptr;        // [N, C, out_h, out_w], any strides
  int dtype = kFloat32;
  int64_t n = 0, c = 0;
  int64_t in_h = 0, in_w = 0, out_h = 0, out_w = 0;
  int64_t xs_n = 0, xs_c = 0, xs_h = 0, xs_w = 0;  // strides of x, in elements
  int64_t ys_n = 0, ys_c = 0, ys_h = 0, ys_w = 0;  // strides of y, in elements
  int up_x = 1, up_y = 1, down_x = 1, down_y = 1;
  int pad_x0 = 0, pad_y0 = 0;
  int f_w = 1, f_h = 1;
  bool flip = false;           // true: correlate with f; false: convolve (taps reversed)
  bool channels_last = false;  // enumerate outputs channel-fastest (matches a channels_last y)
  double gain = 1;
  int64_t total = 0;           // N * C * out_h * out_w
};

// Runs the op on `stream` (a cudaStream_t); returns a cudaError_t value (0 = success).
int launch(const Params& p, void* stream);

template <typename T> struct Storage {
  using compute = T;
  static GENCBM_HD compute load(const T* ptr, int64_t i) { return ptr[i]; }
  static GENCBM_HD void store(T* ptr, int64_t i, compute v) { ptr[i] = v; }
};

// The first tap along one axis that lands on an input pixel, and that pixel. `start` is the
// upsampled coordinate under tap 0. Leaves tap >= taps when no tap does.
GENCBM_HD void first_tap(int64_t start, int up, int64_t& tap, int64_t& pixel) {
  int64_t r = (-start) % up;
  tap = r < 0 ? r + up : r;
  pixel = (start + tap) / up;  // exact: start + tap is a multiple of up
  if (pixel < 0) {
    tap += -pixel * up;
    pixel = 0;
  }
}

// Output index j (in the order the kernel enumerates outputs) -> (n, c, oy, ox).
template <typename I> GENCBM_HD void split_index(const Params& p, I j, int64_t& n, int64_t& c, int64_t& oy, int64_t& ox) {
  const I cc = I(p.c), ow = I(p.out_w), oh = I(p.out_h);
  if (p.channels_last) {
    c = int64_t(j % cc); j /= cc;
    ox = int64_t(j % ow); j /= ow;
    oy = int64_t(j % oh); j /= oh;
  } else {
    ox = int64_t(j % ow); j /= ow;
    oy = int64_t(j % oh); j /= oh;
    c = int64_t(j % cc); j /= cc;
  }
  n = int64_t(j);
}

// Computes output number j.
template <typename T> GENCBM_HD void output_pixel(const Params& p, int64_t j) {
  using S = Storage<T>;
  using C = typename S::compute;
  int64_t n, c, oy, ox;
  if (p.total <= 0x7fffffff) {
    split_index<uint32_t>(p, uint32_t(j), n, c, oy, ox);
  } else {
    split_index<int64_t>(p, j, n, c, oy, ox);
  }

  int64_t tx0, kx0, ty0, ky0;
  first_tap(ox * p.down_x - p.pad_x0, p.up_x, tx0, kx0);
  first_tap(oy * p.down_y - p.pad_y0, p.up_y, ty0, ky0);

  const T* x = static_cast<const T*>(p.x) + n * p.xs_n + c * p.xs_c;
  C acc = C(0);
  for (int64_t ty = ty0, ky = ky0; ty < p.f_h && ky < p.in_h; ty += p.up_y, ++ky) {
    const float* frow = p.f + (p.flip ? ty : p.f_h - 1 - ty) * p.f_w;
    const T* xrow = x + ky * p.xs_h;
    for (int64_t tx = tx0, kx = kx0; tx < p.f_w && kx < p.in_w; tx += p.up_x, ++kx) {
      const C tap = C(frow[p.flip ? tx : p.f_w - 1 - tx]);
      acc += tap * S::load(xrow, kx * p.xs_w);
    }
  }
  S::store(static_cast<T*>(p.y), n * p.ys_n + c * p.ys_c + oy * p.ys_h + ox * p.ys_w, acc * C(p.gain));
}

}  // namespace upfirdn2d
}  // namespace gencbm
