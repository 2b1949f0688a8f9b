// gencbm: CUDA kernel of the fused bias + activation op (see bias_act.h for the arithmetic).

#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include "bias_act.h"

namespace gencbm {
namespace bias_act {

// float16 is stored as __half and computed in float.
template <> struct Storage<__half> {
  using compute = float;
  static GENCBM_HD float load(const __half* ptr, int64_t i) { return __half2float(ptr[i]); }
  static GENCBM_HD void store(__half* ptr, int64_t i, float v) { ptr[i] = __float2half_rn(v); }
};

namespace {

constexpr int kThreads = 256;
constexpr int64_t kMaxBlocks = int64_t(1) << 20;

// Grid-stride loop over every element.
template <typename T, typename A> __global__ void __launch_bounds__(kThreads) kernel(Params p) {
  const int64_t step = int64_t(gridDim.x) * blockDim.x;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < p.numel; i += step) {
    element<T, A>(p, i);
  }
}

template <typename T> cudaError_t run(const Params& p, cudaStream_t stream) {
  int64_t blocks = (p.numel + kThreads - 1) / kThreads;
  if (blocks > kMaxBlocks) blocks = kMaxBlocks;
  bool known = with_activation(p.act, [&](auto act) {
    kernel<T, decltype(act)><<<unsigned(blocks), kThreads, 0, stream>>>(p);
  });
  if (!known) return cudaErrorInvalidValue;
  return cudaGetLastError();
}

}  // namespace

int launch(const Params& p, void* stream) {
  if (p.numel <= 0) return int(cudaSuccess);
  cudaStream_t s = static_cast<cudaStream_t>(stream);
  switch (p.dtype) {
    case kFloat32: return int(run<float>(p, s));
    case kFloat16: return int(run<__half>(p, s));
    case kFloat64: return int(run<double>(p, s));
    default: return int(cudaErrorInvalidValue);
  }
}

}  // namespace bias_act
}  // namespace gencbm
