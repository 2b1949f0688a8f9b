// gencbm: CUDA kernel of upfirdn2d (see upfirdn2d.h for the index arithmetic).
//
// One thread per output pixel (grid-stride); every tap that lands on an input pixel is read
// straight from global memory, which the L1/L2 caches serve well for StyleGAN2's 4x4 filters.

#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include "upfirdn2d.h"

namespace gencbm {
namespace upfirdn2d {

// float16 is stored as __half and accumulated in float.
template <> struct Storage<__half> {
  using compute = float;
  static GENCBM_HD float load(const __half* ptr, int64_t i) { return __half2float(ptr[i]); }
  static GENCBM_HD void store(__half* ptr, int64_t i, float v) { ptr[i] = __float2half_rn(v); }
};

namespace {

constexpr int kThreads = 256;
constexpr int64_t kMaxBlocks = int64_t(1) << 20;

template <typename T> __global__ void __launch_bounds__(kThreads) kernel(Params p) {
  const int64_t step = int64_t(gridDim.x) * blockDim.x;
  for (int64_t j = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; j < p.total; j += step) {
    output_pixel<T>(p, j);
  }
}

template <typename T> cudaError_t run(const Params& p, cudaStream_t stream) {
  int64_t blocks = (p.total + kThreads - 1) / kThreads;
  if (blocks > kMaxBlocks) blocks = kMaxBlocks;
  kernel<T><<<unsigned(blocks), kThreads, 0, stream>>>(p);
  return cudaGetLastError();
}

}  // namespace

int launch(const Params& p, void* stream) {
  if (p.total <= 0) return int(cudaSuccess);
  cudaStream_t s = static_cast<cudaStream_t>(stream);
  switch (p.dtype) {
    case kFloat32: return int(run<float>(p, s));
    case kFloat16: return int(run<__half>(p, s));
    case kFloat64: return int(run<double>(p, s));
    default: return int(cudaErrorInvalidValue);
  }
}

}  // namespace upfirdn2d
}  // namespace gencbm
