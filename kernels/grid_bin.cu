// featinv::grid_bin on the GPU, without torch headers: raw pointers and a stream, so that
// `nvcc -c kernels/grid_bin.cu` checks it on any machine with nvcc. grid_bin_cuda.cpp binds it.
//
// Two passes over keypoints: (1) each keypoint atomically raises its cell's best key (a 64-bit
// atomic max of priority:index), (2) the keypoint whose key equals its cell's best writes the cell.
#include <cuda_runtime.h>
#include <stdint.h>

#include "grid_bin.h"

namespace {

// Image of keypoint k: binary search in the exclusive prefix sums `offsets` (n + 1 entries).
__device__ int64_t image_of(const int64_t* offsets, int64_t n, int64_t k) {
  int64_t lo = 0, hi = n;
  while (hi - lo > 1) {
    int64_t mid = (lo + hi) / 2;
    if (offsets[mid] <= k) lo = mid; else hi = mid;
  }
  return lo;
}

// Keypoint k's image, its cell within that image (-1: outside) and its key (+1, so that 0 in `best`
// means "no keypoint" and the buffer can be cleared with memset). Both passes start with this.
struct Claim {
  int64_t img, cid;
  unsigned long long key;
};

__device__ Claim claim_of(const float* kp, const int64_t* offsets, int64_t n, int64_t k, int64_t height,
                          int64_t width, int64_t cell, uint32_t seed) {
  Claim c;
  c.img = image_of(offsets, n, k);
  c.cid = featinv_cell(kp[k * 4], kp[k * 4 + 1], height, width, cell);
  c.key = (unsigned long long)featinv_key(seed, (uint32_t)(k - offsets[c.img])) + 1ull;
  return c;
}

__global__ void claim_cells(const float* kp, const int64_t* offsets, int64_t n, int64_t total,
                            int64_t height, int64_t width, int64_t cell, uint32_t seed,
                            unsigned long long* best, int64_t cells) {
  int64_t k = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (k >= total) return;
  Claim c = claim_of(kp, offsets, n, k, height, width, cell, seed);
  if (c.cid >= 0) atomicMax(best + c.img * cells + c.cid, c.key);
}

__global__ void write_winners(const float* kp, const float* desc, const int64_t* offsets, int64_t n,
                              int64_t total, int64_t d, int64_t height, int64_t width, int64_t cell,
                              uint32_t seed, const unsigned long long* best, int64_t cells, float* out) {
  int64_t k = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (k >= total) return;
  Claim c = claim_of(kp, offsets, n, k, height, width, cell, seed);
  if (c.cid < 0 || best[c.img * cells + c.cid] != c.key) return;
  float* o = out + c.img * (d + 5) * cells + c.cid;
  for (int64_t j = 0; j < d; ++j) o[j * cells] = desc[k * d + j];
  float g[5];
  featinv_geometry(kp + k * 4, cell, g);
  for (int j = 0; j < 5; ++j) o[(d + j) * cells] = g[j];
}

}  // namespace

// out: zeroed (n, d + 5, hc, wc) float32; best: scratch of n * hc * wc uint64, zeroed here.
// offsets: exclusive prefix sums of counts, n + 1 entries, on the device. Returns a CUDA error code.
extern "C" int featinv_grid_bin_cuda(const float* kp, const float* desc, const int64_t* offsets, int64_t n,
                                     int64_t total, int64_t d, int64_t height, int64_t width, int64_t cell,
                                     int64_t seed, unsigned long long* best, float* out, cudaStream_t stream) {
  const int64_t cells = ((height + cell - 1) / cell) * ((width + cell - 1) / cell);
  cudaError_t err = cudaMemsetAsync(best, 0, sizeof(unsigned long long) * n * cells, stream);
  if (err != cudaSuccess || total == 0) return (int)err;
  const int threads = 256;
  const unsigned blocks = (unsigned)((total + threads - 1) / threads);
  const uint32_t s = (uint32_t)(seed & 0xffffffff);
  claim_cells<<<blocks, threads, 0, stream>>>(kp, offsets, n, total, height, width, cell, s, best, cells);
  write_winners<<<blocks, threads, 0, stream>>>(kp, desc, offsets, n, total, d, height, width, cell, s, best,
                                                cells, out);
  return (int)cudaGetLastError();
}
