// The compiled kernels as plain functions of a Python module. featinv_cli/ops.py defines each op's
// schema, checks its inputs once, and registers these (or the torch versions) with the dispatcher.
#include <torch/extension.h>

namespace featinv {
at::Tensor grid_bin_cpu(const at::Tensor& keypoints, const at::Tensor& descriptors, const at::Tensor& counts,
                        int64_t height, int64_t width, int64_t cell, int64_t seed);
at::Tensor hog_cpu(const at::Tensor& images, int64_t cell, int64_t orientations);
at::Tensor lbp_cpu(const at::Tensor& images, int64_t cell);
#ifdef FEATINV_CUDA
at::Tensor grid_bin_cuda(const at::Tensor& keypoints, const at::Tensor& descriptors, const at::Tensor& counts,
                         int64_t height, int64_t width, int64_t cell, int64_t seed);
#endif
}  // namespace featinv

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("grid_bin_cpu", &featinv::grid_bin_cpu);
  m.def("hog_cpu", &featinv::hog_cpu);
  m.def("lbp_cpu", &featinv::lbp_cpu);
#ifdef FEATINV_CUDA
  m.def("grid_bin_cuda", &featinv::grid_bin_cuda);
#endif
}
