// gencbm: PyTorch binding of the fused bias + activation kernel (bias_act.cu).

// Only the headers this file needs (torch/extension.h would pull in the whole C++ frontend and
// quadruple the compile time); torch/csrc/utils/pybind.h brings pybind11 with torch's casters.
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <torch/csrc/utils/pybind.h>

#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime_api.h>

#include "bias_act.h"

namespace {

namespace ba = gencbm::bias_act;

int dtype_code(const at::Tensor& t) {
  switch (t.scalar_type()) {
    case at::ScalarType::Float: return ba::kFloat32;
    case at::ScalarType::Half: return ba::kFloat16;
    case at::ScalarType::Double: return ba::kFloat64;
    default: TORCH_CHECK(false, "bias_act: unsupported dtype ", t.scalar_type(), " (float16, float32 and float64 are supported)");
  }
  return -1;
}

// A reference tensor must be laid out exactly like the primary input: the kernel walks them
// all with the same memory offsets.
const void* like_input(const std::optional<at::Tensor>& t, const at::Tensor& in, const char* what) {
  if (!t.has_value() || !t->defined()) return nullptr;
  TORCH_CHECK(t->device() == in.device(), "bias_act: ", what, " is on ", t->device(), ", the input on ", in.device());
  TORCH_CHECK(t->scalar_type() == in.scalar_type(), "bias_act: ", what, " has dtype ", t->scalar_type(), ", the input ", in.scalar_type());
  TORCH_CHECK(t->sizes() == in.sizes() && t->strides() == in.strides(), "bias_act: ", what, " must have the input's shape and strides");
  return t->data_ptr();
}

at::Tensor bias_act(const at::Tensor& in, const std::optional<at::Tensor>& bias, const std::optional<at::Tensor>& xref,
                       const std::optional<at::Tensor>& yref, const std::optional<at::Tensor>& dyref, int64_t mode, int64_t dim,
                       int64_t act, double alpha, double gain, double clamp) {
  TORCH_CHECK(in.is_cuda(), "bias_act: the input must be a CUDA tensor (got one on ", in.device(), ")");
  TORCH_CHECK(in.is_non_overlapping_and_dense(), "bias_act: the input must be dense (contiguous in some dimension order)");
  TORCH_CHECK(mode >= ba::kForward && mode <= ba::kGrad2, "bias_act: mode must be 0, 1 or 2 (got ", mode, ")");
  TORCH_CHECK(act >= ba::kLinear && act <= ba::kSwish, "bias_act: unknown activation id ", act);
  TORCH_CHECK(mode != ba::kGrad2 || (dyref.has_value() && dyref->defined()), "bias_act: mode 2 needs dyref");

  ba::Params p;
  p.dtype = dtype_code(in);
  p.in = in.data_ptr();
  p.xref = like_input(xref, in, "xref");
  p.yref = like_input(yref, in, "yref");
  p.dyref = like_input(dyref, in, "dyref");
  if (bias.has_value() && bias->defined()) {
    TORCH_CHECK(in.dim() > 0 && dim >= 0 && dim < in.dim(), "bias_act: dim ", dim, " is out of range for a ", in.dim(), "-D input");
    TORCH_CHECK(bias->device() == in.device(), "bias_act: the bias is on ", bias->device(), ", the input on ", in.device());
    TORCH_CHECK(bias->scalar_type() == in.scalar_type(), "bias_act: the bias must have the input's dtype");
    TORCH_CHECK(bias->dim() == 1 && bias->numel() == in.size(dim), "bias_act: the bias must be 1-D with input.shape[dim] elements");
    TORCH_CHECK(bias->is_contiguous(), "bias_act: the bias must be contiguous");
    p.bias = bias->data_ptr();
    p.bias_size = in.size(dim);
    p.bias_stride = p.bias_size > 1 ? in.stride(dim) : 1;
  }
  p.act = int(act);
  p.mode = int(mode);
  p.alpha = alpha;
  p.gain = gain;
  p.clamp = clamp;
  p.numel = in.numel();

  const c10::cuda::CUDAGuard guard(in.device());
  at::Tensor out = at::empty_like(in);  // a dense input keeps its strides
  p.out = out.data_ptr();
  const int err = ba::launch(p, c10::cuda::getCurrentCUDAStream().stream());
  TORCH_CHECK(err == 0, "bias_act: kernel launch failed: ", cudaGetErrorString(static_cast<cudaError_t>(err)));
  return out;
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("bias_act", &bias_act,
        "Fused bias + activation + gain + clamp (mode 0), its gradient (mode 1) or second-order term (mode 2).",
        py::arg("input"), py::arg("bias"), py::arg("xref"), py::arg("yref"), py::arg("dyref"), py::arg("mode"), py::arg("dim"),
        py::arg("act"), py::arg("alpha"), py::arg("gain"), py::arg("clamp"));
}
