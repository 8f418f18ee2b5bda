// Runs the raw CUDA kernel (grid_bin.cu) on torch's current stream; inputs were checked in
// featinv_cli/ops.py, which registers this for CUDA tensors. Built only when torch has CUDA.
#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <cuda_runtime.h>

extern "C" int featinv_grid_bin_cuda(const float* kp, const float* desc, const int64_t* offsets, int64_t n,
                                     int64_t total, int64_t d, int64_t height, int64_t width, int64_t cell,
                                     int64_t seed, unsigned long long* best, float* out, cudaStream_t stream);

namespace featinv {

at::Tensor grid_bin_cuda(const at::Tensor& keypoints, const at::Tensor& descriptors, const at::Tensor& counts,
                         int64_t height, int64_t width, int64_t cell, int64_t seed) {
  // The inputs' GPU current (ops.py checked that all three are on it): a tensor on cuda:1 must not be
  // launched on cuda:0's stream, nor its buffers allocated there.
  const c10::cuda::CUDAGuard guard(keypoints.device());
  auto kp = keypoints.contiguous().to(at::kFloat);
  auto desc = descriptors.contiguous().to(at::kFloat);
  auto cnt = counts.to(at::kLong);
  const int64_t n = cnt.size(0), d = desc.size(1);
  const int64_t hc = (height + cell - 1) / cell, wc = (width + cell - 1) / cell;
  auto offsets = at::zeros({n + 1}, cnt.options());
  offsets.slice(0, 1).copy_(at::cumsum(cnt, 0));
  auto out = at::zeros({n, d + 5, hc, wc}, kp.options());
  auto best = at::empty({n * hc * wc}, cnt.options());  // reinterpreted as uint64 by the kernel
  int err = featinv_grid_bin_cuda(kp.data_ptr<float>(), desc.data_ptr<float>(), offsets.data_ptr<int64_t>(), n,
                                  kp.size(0), d, height, width, cell, seed,
                                  reinterpret_cast<unsigned long long*>(best.data_ptr<int64_t>()),
                                  out.data_ptr<float>(), at::cuda::getCurrentCUDAStream());
  TORCH_CHECK(err == 0, "featinv::grid_bin CUDA kernel failed: ", cudaGetErrorString((cudaError_t)err));
  return out;
}

}  // namespace featinv
