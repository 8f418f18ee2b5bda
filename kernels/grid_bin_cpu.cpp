// featinv::grid_bin on the CPU. The schema, the input checks and the registration with the
// dispatcher live once, in featinv_cli/ops.py; kernels/bindings.cpp exposes this function to it.
// Images are processed in parallel (at::parallel_for); no Python loop.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <vector>

#include "grid_bin.h"

namespace featinv {

at::Tensor grid_bin_cpu(const at::Tensor& keypoints, const at::Tensor& descriptors, const at::Tensor& counts,
                        int64_t height, int64_t width, int64_t cell, int64_t seed) {
  auto kp = keypoints.contiguous().to(at::kFloat);
  auto desc = descriptors.contiguous().to(at::kFloat);
  auto cnt = counts.contiguous().to(at::kLong);
  const int64_t n = cnt.size(0), d = desc.size(1), c = d + 5;
  const int64_t hc = (height + cell - 1) / cell, wc = (width + cell - 1) / cell, cells = hc * wc;
  std::vector<int64_t> offsets(n + 1, 0);
  const int64_t* cp = cnt.data_ptr<int64_t>();
  for (int64_t i = 0; i < n; ++i) offsets[i + 1] = offsets[i] + cp[i];
  // No separate zero-fill pass: each thread clears and writes its own images' planes while they are
  // in cache, one channel plane at a time (a plane of a 480x640 image is 77 KB, L2-sized).
  auto out = at::empty({n, c, hc, wc}, kp.options());
  const float* kpp = kp.data_ptr<float>();
  const float* dp = desc.data_ptr<float>();
  float* op = out.data_ptr<float>();
  const uint32_t s = (uint32_t)(seed & 0xffffffff);

  at::parallel_for(0, n, 1, [&](int64_t begin, int64_t end) {
    std::vector<int64_t> best(cells);
    std::vector<int64_t> winner(cells);
    std::vector<int64_t> won_cell, won_kp;
    std::vector<float> geometry;
    for (int64_t img = begin; img < end; ++img) {
      std::fill(best.begin(), best.end(), -1);
      for (int64_t i = 0; i < offsets[img + 1] - offsets[img]; ++i) {
        const float* k = kpp + (offsets[img] + i) * 4;
        int64_t cid = featinv_cell(k[0], k[1], height, width, cell);
        if (cid < 0) continue;
        int64_t key = featinv_key(s, (uint32_t)i);
        if (key > best[cid]) { best[cid] = key; winner[cid] = offsets[img] + i; }
      }
      won_cell.clear();
      won_kp.clear();
      geometry.clear();
      for (int64_t cid = 0; cid < cells; ++cid) {
        if (best[cid] < 0) continue;
        won_cell.push_back(cid);
        won_kp.push_back(winner[cid]);
        float g[5];
        featinv_geometry(kpp + winner[cid] * 4, cell, g);
        geometry.insert(geometry.end(), g, g + 5);
      }
      const size_t w = won_cell.size();
      float* o = op + img * c * cells;
      for (int64_t j = 0; j < c; ++j) {
        float* plane = o + j * cells;
        std::fill(plane, plane + cells, 0.0f);
        if (j < d) {
          for (size_t t = 0; t < w; ++t) plane[won_cell[t]] = dp[won_kp[t] * d + j];
        } else {
          for (size_t t = 0; t < w; ++t) plane[won_cell[t]] = geometry[t * 5 + (j - d)];
        }
      }
    }
  });
  return out;
}

}  // namespace featinv
