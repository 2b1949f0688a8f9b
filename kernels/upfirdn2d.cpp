// gencbm: PyTorch binding of the upfirdn2d kernel (upfirdn2d.cu).

// Only the headers this file needs (torch/extension.h would pull in the whole C++ frontend and
// quadruple the compile time); torch/csrc/utils/pybind.h brings pybind11 with torch's casters.
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <torch/csrc/utils/pybind.h>

#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime_api.h>

#include <climits>

#include "upfirdn2d.h"

namespace {

namespace uf = gencbm::upfirdn2d;

int dtype_code(const at::Tensor& t) {
  switch (t.scalar_type()) {
    case at::ScalarType::Float: return uf::kFloat32;
    case at::ScalarType::Half: return uf::kFloat16;
    case at::ScalarType::Double: return uf::kFloat64;
    default: TORCH_CHECK(false, "upfirdn2d: unsupported dtype ", t.scalar_type(), " (float16, float32 and float64 are supported)");
  }
  return -1;
}

bool fits_int(int64_t v) { return v >= INT_MIN && v <= INT_MAX; }

// Output length along one axis: upsample, pad, "valid" filtering, then every down-th sample.
int64_t out_len(int64_t in, int64_t up, int64_t pad0, int64_t pad1, int64_t taps, int64_t down, const char* axis) {
  const int64_t span = in * up + pad0 + pad1 - taps;
  TORCH_CHECK(span >= 0, "upfirdn2d: along ", axis, " the upsampled, padded input (", in * up + pad0 + pad1,
              ") is shorter than the filter (", taps, ")");
  return span / down + 1;
}

at::Tensor upfirdn2d(const at::Tensor& x, const at::Tensor& f, int64_t up_x, int64_t up_y, int64_t down_x, int64_t down_y,
                        int64_t pad_x0, int64_t pad_x1, int64_t pad_y0, int64_t pad_y1, bool flip, double gain) {
  TORCH_CHECK(x.is_cuda(), "upfirdn2d: the input must be a CUDA tensor (got one on ", x.device(), ")");
  TORCH_CHECK(x.dim() == 4, "upfirdn2d: the input must be [N, C, H, W]");
  TORCH_CHECK(f.device() == x.device(), "upfirdn2d: the filter is on ", f.device(), ", the input on ", x.device());
  TORCH_CHECK(f.scalar_type() == at::ScalarType::Float, "upfirdn2d: the filter must be float32");
  TORCH_CHECK(f.dim() == 2 && f.numel() > 0 && f.is_contiguous(), "upfirdn2d: the filter must be a contiguous, non-empty [fh, fw] tensor");
  TORCH_CHECK(up_x >= 1 && up_y >= 1 && down_x >= 1 && down_y >= 1, "upfirdn2d: up/down factors must be >= 1");
  TORCH_CHECK(fits_int(up_x) && fits_int(up_y) && fits_int(down_x) && fits_int(down_y) && fits_int(pad_x0) && fits_int(pad_x1) &&
                  fits_int(pad_y0) && fits_int(pad_y1) && fits_int(f.size(0)) && fits_int(f.size(1)),
              "upfirdn2d: factors, paddings and filter size must fit in 32 bits");

  uf::Params p;
  p.dtype = dtype_code(x);
  p.n = x.size(0);
  p.c = x.size(1);
  p.in_h = x.size(2);
  p.in_w = x.size(3);
  p.f_h = int(f.size(0));
  p.f_w = int(f.size(1));
  p.out_h = out_len(p.in_h, up_y, pad_y0, pad_y1, p.f_h, down_y, "y");
  p.out_w = out_len(p.in_w, up_x, pad_x0, pad_x1, p.f_w, down_x, "x");
  p.xs_n = x.stride(0);
  p.xs_c = x.stride(1);
  p.xs_h = x.stride(2);
  p.xs_w = x.stride(3);
  p.up_x = int(up_x);
  p.up_y = int(up_y);
  p.down_x = int(down_x);
  p.down_y = int(down_y);
  p.pad_x0 = int(pad_x0);
  p.pad_y0 = int(pad_y0);
  p.flip = flip;
  p.gain = gain;

  const c10::cuda::CUDAGuard guard(x.device());
  const auto format = x.suggest_memory_format();
  at::Tensor y = at::empty({p.n, p.c, p.out_h, p.out_w}, x.options().memory_format(format));
  p.channels_last = format == at::MemoryFormat::ChannelsLast;
  p.ys_n = y.stride(0);
  p.ys_c = y.stride(1);
  p.ys_h = y.stride(2);
  p.ys_w = y.stride(3);
  p.total = y.numel();
  p.x = x.data_ptr();
  p.f = f.data_ptr<float>();
  p.y = y.data_ptr();
  const int err = uf::launch(p, c10::cuda::getCurrentCUDAStream().stream());
  TORCH_CHECK(err == 0, "upfirdn2d: kernel launch failed: ", cudaGetErrorString(static_cast<cudaError_t>(err)));
  return y;
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("upfirdn2d", &upfirdn2d, "Upsample, pad, FIR-filter and downsample a batch of 2-D images.", py::arg("x"), py::arg("f"),
        py::arg("up_x"), py::arg("up_y"), py::arg("down_x"), py::arg("down_y"), py::arg("pad_x0"), py::arg("pad_x1"),
        py::arg("pad_y0"), py::arg("pad_y1"), py::arg("flip"), py::arg("gain"));
}
