// gencbm: fused bias + activation + gain + clamp.
//
// This header is shared by bias_act.cpp (the PyTorch binding, host compiler), bias_act.cu (the
// CUDA kernel) and the host-side test harness in tests/engine/ops/test_cuda_ops.py. It holds the
// launch parameters and the per-element arithmetic; it includes no CUDA or PyTorch header.
//
// One call evaluates one of three things element-wise (v = x + bias, a = act(v)):
//   mode 0 (forward):  out = clamp(gain * a(v))
//   mode 1 (grad):     out = in * gain * a'(v)                 (in = dL/dy)
//   mode 2 (grad2):    out = in * dyref * gain * a''(v)        (in = dL/d(dx), dyref = dL/dy)
// Where the forward clamped an element, modes 1 and 2 give 0. The derivatives are written in
// terms of whichever of v (from xref) and a (from yref / gain) the activation needs, so the
// backward pass can keep the cheaper of the op's input and output alive.

#pragma once

#include <math.h>
#include <stdint.h>

#if defined(__CUDACC__)
#define GENCBM_HD __host__ __device__ __forceinline__
#else
#define GENCBM_HD inline
#endif

namespace gencbm {
namespace bias_act {

enum Dtype : int { kFloat32 = 0, kFloat16 = 1, kFloat64 = 2 };
enum Mode : int { kForward = 0, kGrad = 1, kGrad2 = 2 };

// Activation ids; they match engine/ops/bias_act.py ACTIVATIONS[...].cuda_idx.
enum ActId : int {
  kLinear = 1, kRelu = 2, kLrelu = 3, kTanh = 4, kSigmoid = 5,
  kElu = 6, kSelu = 7, kSoftplus = 8, kSwish = 9,
};

struct Params {
  const void* in = nullptr;     // mode 0: x, mode 1: dL/dy, mode 2: dL/d(dx)
  const void* bias = nullptr;   // [bias_size] in the same dtype, or null
  const void* xref = nullptr;   // the forward input x (without bias), or null
  const void* yref = nullptr;   // the forward output y, or null
  const void* dyref = nullptr;  // mode 2: the dL/dy that mode 1 consumed
  void* out = nullptr;
  int64_t numel = 0;
  int64_t bias_stride = 1;  // memory stride (in elements) of the bias dimension
  int64_t bias_size = 1;    // length of the bias dimension
  int dtype = kFloat32;
  int act = kLinear;
  int mode = kForward;
  double alpha = 0;
  double gain = 1;
  double clamp = -1;  // < 0: no clamping
};

// Runs the op on `stream` (a cudaStream_t); returns a cudaError_t value (0 = success).
int launch(const Params& p, void* stream);

// ---------------------------------------------------------------------------------------------
// Math in the compute type C (float for float16/float32, double for float64).

template <typename C> struct Math;

template <> struct Math<float> {
  static GENCBM_HD float exp(float v) { return ::expf(v); }
  static GENCBM_HD float expm1(float v) { return ::expm1f(v); }
  static GENCBM_HD float log1p(float v) { return ::log1pf(v); }
  static GENCBM_HD float tanh(float v) { return ::tanhf(v); }
};

template <> struct Math<double> {
  static GENCBM_HD double exp(double v) { return ::exp(v); }
  static GENCBM_HD double expm1(double v) { return ::expm1(v); }
  static GENCBM_HD double log1p(double v) { return ::log1p(v); }
  static GENCBM_HD double tanh(double v) { return ::tanh(v); }
};

// Each activation: value(v) = a, slope = da/dv, curve = d2a/dv2. slope and curve receive both
// v and a; an activation whose backward is computed from the output ("y" in ACTIVATIONS) only
// reads a, one computed from the input ("x") only reads v.

struct Linear {
  template <typename C> static GENCBM_HD C value(C v, C) { return v; }
  template <typename C> static GENCBM_HD C slope(C, C, C) { return C(1); }
  template <typename C> static GENCBM_HD C curve(C, C, C) { return C(0); }
};

struct Relu {
  template <typename C> static GENCBM_HD C value(C v, C) { return v > C(0) ? v : C(0); }
  template <typename C> static GENCBM_HD C slope(C, C a, C) { return a > C(0) ? C(1) : C(0); }
  template <typename C> static GENCBM_HD C curve(C, C, C) { return C(0); }
};

struct Lrelu {
  template <typename C> static GENCBM_HD C value(C v, C alpha) { return v > C(0) ? v : v * alpha; }
  template <typename C> static GENCBM_HD C slope(C, C a, C alpha) { return a > C(0) ? C(1) : alpha; }
  template <typename C> static GENCBM_HD C curve(C, C, C) { return C(0); }
};

struct Tanh {
  template <typename C> static GENCBM_HD C value(C v, C) { return Math<C>::tanh(v); }
  template <typename C> static GENCBM_HD C slope(C, C a, C) { return C(1) - a * a; }
  template <typename C> static GENCBM_HD C curve(C, C a, C) { return C(-2) * a * (C(1) - a * a); }
};

struct Sigmoid {
  template <typename C> static GENCBM_HD C value(C v, C) { return C(1) / (C(1) + Math<C>::exp(-v)); }
  template <typename C> static GENCBM_HD C slope(C, C a, C) { return a * (C(1) - a); }
  template <typename C> static GENCBM_HD C curve(C, C a, C) { return a * (C(1) - a) * (C(1) - C(2) * a); }
};

// elu with unit scale (torch.nn.functional.elu defaults): v for v > 0, exp(v) - 1 otherwise.
struct Elu {
  template <typename C> static GENCBM_HD C value(C v, C) { return v > C(0) ? v : Math<C>::expm1(v); }
  template <typename C> static GENCBM_HD C slope(C, C a, C) { return a > C(0) ? C(1) : a + C(1); }
  template <typename C> static GENCBM_HD C curve(C, C a, C) { return a > C(0) ? C(0) : a + C(1); }
};

// selu: lambda * v for v > 0, lambda * alpha * (exp(v) - 1) otherwise, with the standard
// self-normalising constants.
struct Selu {
  template <typename C> static GENCBM_HD C lam() { return C(1.0507009873554804934193349852946); }
  template <typename C> static GENCBM_HD C lam_alpha() { return C(1.0507009873554804934193349852946 * 1.6732632423543772848170429916717); }
  template <typename C> static GENCBM_HD C value(C v, C) { return v > C(0) ? lam<C>() * v : lam_alpha<C>() * Math<C>::expm1(v); }
  template <typename C> static GENCBM_HD C slope(C, C a, C) { return a > C(0) ? lam<C>() : a + lam_alpha<C>(); }
  template <typename C> static GENCBM_HD C curve(C, C a, C) { return a > C(0) ? C(0) : a + lam_alpha<C>(); }
};

// softplus = log(1 + exp(v)), linear above 20 like torch's default threshold. Its slope is the
// logistic function of v, which equals 1 - exp(-a).
struct Softplus {
  template <typename C> static GENCBM_HD C value(C v, C) { return v > C(20) ? v : Math<C>::log1p(Math<C>::exp(v)); }
  template <typename C> static GENCBM_HD C slope(C, C a, C) { return -Math<C>::expm1(-a); }
  template <typename C> static GENCBM_HD C curve(C, C a, C) {
    C e = Math<C>::exp(-a);
    return e * (C(1) - e);
  }
};

// swish = v * sigmoid(v); its derivatives need v itself.
struct Swish {
  template <typename C> static GENCBM_HD C sig(C v) { return C(1) / (C(1) + Math<C>::exp(-v)); }
  template <typename C> static GENCBM_HD C value(C v, C) { return v * sig(v); }
  template <typename C> static GENCBM_HD C slope(C v, C, C) {
    C s = sig(v);
    return s * (C(1) + v * (C(1) - s));
  }
  template <typename C> static GENCBM_HD C curve(C v, C, C) {
    C s = sig(v);
    return s * (C(1) - s) * (C(2) + v * (C(1) - C(2) * s));
  }
};

// Calls fn(Act{}) for activation id `act`; false when the id is unknown.
template <typename Fn> inline bool with_activation(int act, Fn&& fn) {
  switch (act) {
    case kLinear: fn(Linear{}); return true;
    case kRelu: fn(Relu{}); return true;
    case kLrelu: fn(Lrelu{}); return true;
    case kTanh: fn(Tanh{}); return true;
    case kSigmoid: fn(Sigmoid{}); return true;
    case kElu: fn(Elu{}); return true;
    case kSelu: fn(Selu{}); return true;
    case kSoftplus: fn(Softplus{}); return true;
    case kSwish: fn(Swish{}); return true;
    default: return false;
  }
}

// ---------------------------------------------------------------------------------------------
// Storage <-> compute conversions. The CUDA file adds a specialisation for __half.

template <typename T> struct Storage {
  using compute = T;
  static GENCBM_HD compute load(const T* ptr, int64_t i) { return ptr[i]; }
  static GENCBM_HD void store(T* ptr, int64_t i, compute v) { ptr[i] = v; }
};

// Index of element i (a memory offset) along the bias dimension. The tensors are dense, so the
// offset divided by the dimension's stride, modulo its size, is that index.
GENCBM_HD int64_t bias_index(const Params& p, int64_t i) {
  if (p.numel <= 0x7fffffff) {
    return int64_t((uint32_t(i) / uint32_t(p.bias_stride)) % uint32_t(p.bias_size));
  }
  return (i / p.bias_stride) % p.bias_size;
}

// The whole computation for element i.
template <typename T, typename A> GENCBM_HD void element(const Params& p, int64_t i) {
  using S = Storage<T>;
  using C = typename S::compute;
  const C alpha = C(p.alpha);
  const C gain = C(p.gain);
  const C clamp = C(p.clamp);
  const bool clamping = p.clamp >= 0;

  const C in = S::load(static_cast<const T*>(p.in), i);
  const C b = p.bias ? S::load(static_cast<const T*>(p.bias), bias_index(p, i)) : C(0);

  if (p.mode == kForward) {
    C y = A::value(in + b, alpha) * gain;
    if (clamping) y = y > clamp ? clamp : (y < -clamp ? -clamp : y);  // keeps NaN
    S::store(static_cast<T*>(p.out), i, y);
    return;
  }

  const C v = (p.xref ? S::load(static_cast<const T*>(p.xref), i) : C(0)) + b;
  C a;
  bool passes = true;  // false where the forward output was clamped
  if (p.yref) {
    const C y = S::load(static_cast<const T*>(p.yref), i);
    a = gain != C(0) ? y / gain : C(0);
    if (clamping) passes = y > -clamp && y < clamp;
  } else {
    a = A::value(v, alpha);
    if (clamping) {
      const C y = a * gain;
      passes = y >= -clamp && y <= clamp;
    }
  }

  C r;
  if (p.mode == kGrad) {
    r = in * gain * A::slope(v, a, alpha);
  } else {
    const C dy = S::load(static_cast<const T*>(p.dyref), i);
    r = in * dy * gain * A::curve(v, a, alpha);
  }
  S::store(static_cast<T*>(p.out), i, passes ? r : C(0));
}

}  // namespace bias_act
}  // namespace gencbm
