// featinv::hog and featinv::lbp on the CPU: VLFeat's UoCTTI HOG and uniform LBP, the same arithmetic
// as the torch versions in featinv_cli/features/{hog,lbp}.py (the reference and the fallback).
//
// Three passes per image, each parallel over rows, so one image alone still uses every thread; a
// batch is spread over the threads image by image (each_image). (1) Per pixel a bin and a weight
// (HOG: the best of 2*O directions and the gradient magnitude; LBP: the uniform code). (2) Per cell
// row the bilinear votes of the pixel rows that touch it, accumulated in double into a (cells, bins)
// scratch; a pass writes only its own cell row, so no two threads ever add to the same histogram.
// (3) Per cell row the normalisation, written to the planar float32 output. Inputs are checked
// once, in Python (featinv_cli/ops.py).
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <cmath>
#include <cstdint>
#include <vector>

// The per-pixel loops are also compiled for AVX2 and picked at run time (GCC/clang function
// clones; the baseline x86-64 build has only SSE2). Same results: -ffp-contract=off forbids fused
// multiply-adds, and vector float arithmetic rounds as scalar arithmetic does.
#if defined(__x86_64__) && defined(__linux__) && (defined(__GNUC__) || defined(__clang__)) && !defined(FEATINV_NO_CLONES)
#define FEATINV_VECTOR_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define FEATINV_VECTOR_CLONES
#endif

namespace featinv {
namespace {

// VLFeat's bilinear rule along one axis: pixel p votes for cells lo and lo + 1 with weights
// (1 - f, f), where (p + 0.5) / cell - 0.5 = lo + f. Border pixels (0 and length - 1) and cells
// outside the grid get weight 0; indices are clamped so they stay addressable.
struct Axis {
  std::vector<int64_t> lo, hi;
  std::vector<double> w_lo, w_hi;
  Axis(int64_t length, int64_t cell, int64_t cells) : lo(length), hi(length), w_lo(length), w_hi(length) {
    for (int64_t p = 0; p < length; ++p) {
      const double h = ((double)p + 0.5) / (double)cell - 0.5;
      const double f = std::floor(h);
      const int64_t l = (int64_t)f;
      const double interior = (p >= 1 && p <= length - 2) ? 1.0 : 0.0;
      const double wh = h - f;
      w_lo[p] = (1.0 - wh) * interior * ((l >= 0 && l < cells) ? 1.0 : 0.0);
      w_hi[p] = wh * interior * ((l + 1 >= 0 && l + 1 < cells) ? 1.0 : 0.0);
      lo[p] = std::min(std::max(l, (int64_t)0), cells - 1);
      hi[p] = std::min(std::max(l + 1, (int64_t)0), cells - 1);
    }
  }
  // Pixel rows whose votes reach cell row r: those with lo == r or lo + 1 == r (a contiguous range).
  std::pair<int64_t, int64_t> rows_of(int64_t r, int64_t cell, int64_t length) const {
    const int64_t first = std::max<int64_t>(0, r * cell - cell / 2 - 1);
    const int64_t last = std::min<int64_t>(length, (r + 2) * cell + 1);
    return {first, last};
  }
};

// Pass 2: hist (hc, wc, bins) double = bilinear votes of every pixel of one image, parallel over
// cell rows. weight: per-pixel vote (HOG's gradient magnitude), or nullptr for 1 (LBP).
void spread(const uint8_t* bins, const float* weight, int64_t height, int64_t width, int64_t cell, int64_t hc,
            int64_t wc, int64_t nbins, double* hist) {
  const Axis ys(height, cell, hc), xs(width, cell, wc);
  at::parallel_for(0, hc, 1, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      double* row = hist + r * wc * nbins;
      std::fill(row, row + wc * nbins, 0.0);
      const auto [y0, y1] = ys.rows_of(r, cell, height);
      for (int64_t y = y0; y < y1; ++y) {
        // Both terms: at the border lo and hi clamp to the same cell (the one outside has weight 0).
        const double wy = (ys.lo[y] == r ? ys.w_lo[y] : 0.0) + (ys.hi[y] == r ? ys.w_hi[y] : 0.0);
        if (wy == 0.0) continue;
        const uint8_t* b = bins + y * width;
        const float* m = weight ? weight + y * width : nullptr;
        for (int64_t x = 1; x < width - 1; ++x) {
          const double v = (m ? (double)m[x] : 1.0) * wy;
          row[xs.lo[x] * nbins + b[x]] += v * xs.w_lo[x];
          row[xs.hi[x] * nbins + b[x]] += v * xs.w_hi[x];
        }
      }
    }
  });
}

// ------------------------------------------------------------------------------------------ HOG

// Pass 1 for one row: the best of 2*O directed bins (largest |<g, u_k>|, its sign choosing k or
// k + O; strict '>' keeps the first of equal scores, as VLFeat) and the gradient magnitude.
FEATINV_VECTOR_CLONES
void hog_row(const float* img, int64_t y, int64_t height, int64_t width, const float* ux, const float* uy,
             int64_t o, std::vector<float>& gx, std::vector<float>& gy, std::vector<float>& best,
             std::vector<int32_t>& choice, uint8_t* bin, float* mag) {
  std::fill(bin, bin + width, 0);
  std::fill(mag, mag + width, 0.0f);
  if (y == 0 || y == height - 1 || width < 3) return;
  const float* c = img + y * width;
  const float* up = c - width;
  const float* down = c + width;
  const int64_t w = width - 2;
  float* bx = gx.data();
  float* by = gy.data();
  float* bb = best.data();
  int32_t* ch = choice.data();
  for (int64_t x = 0; x < w; ++x) {
    bx[x] = c[x + 2] - c[x];
    by[x] = down[x + 1] - up[x + 1];
    mag[x + 1] = std::sqrt(bx[x] * bx[x] + by[x] * by[x]);
    bb[x] = 0.0f;
    ch[x] = 0;
  }
  // Branch-free and of one element width (float, int32), so the compiler vectorises the loop.
  for (int64_t k = 0; k < o; ++k) {
    const float cx = ux[k], cy = uy[k];
    const int32_t pos = (int32_t)k, neg = (int32_t)(k + o);
    for (int64_t x = 0; x < w; ++x) {
      const float s = bx[x] * cx + by[x] * cy;
      const float a = std::fabs(s);
      const bool better = a > bb[x];
      bb[x] = better ? a : bb[x];
      ch[x] = better ? (s < 0.0f ? neg : pos) : ch[x];
    }
  }
  for (int64_t x = 0; x < w; ++x) bin[x + 1] = (uint8_t)ch[x];
}

// Pass 3 for one cell row: UoCTTI normalisation of the directed histograms by the energies of the
// four 2x2 blocks around the cell (clamped at the border), truncated at 0.2.
void hog_normalize_row(const double* hist, const double* energy, int64_t r, int64_t hc, int64_t wc, int64_t o,
                       float* out) {
  const int64_t plane = hc * wc;
  auto e = [&](int64_t i, int64_t j) {
    i = std::min(std::max(i, (int64_t)0), hc - 1);
    j = std::min(std::max(j, (int64_t)0), wc - 1);
    return energy[i * wc + j];
  };
  const double sqrt18 = std::sqrt(18.0);
  for (int64_t j = 0; j < wc; ++j) {
    double f[4];
    int q = 0;
    for (int dy = -1; dy <= 0; ++dy)
      for (int dx = -1; dx <= 0; ++dx, ++q) {
        const double s = e(r + dy, j + dx) + e(r + dy + 1, j + dx) + e(r + dy, j + dx + 1) + e(r + dy + 1, j + dx + 1);
        f[q] = 1.0 / std::sqrt(s + 1e-4);
      }
    const double* h = hist + (r * wc + j) * 2 * o;
    double texture[4] = {0.0, 0.0, 0.0, 0.0};
    float* cell = out + r * wc + j;
    for (int64_t k = 0; k < o; ++k) {
      const double a = h[k], b = h[k + o], u = a + b;
      double sa = 0.0, sb = 0.0, su = 0.0;
      for (int q2 = 0; q2 < 4; ++q2) {
        sa += std::min(f[q2] * a, 0.2);
        sb += std::min(f[q2] * b, 0.2);
        const double t = std::min(f[q2] * u, 0.2);
        su += t;
        texture[q2] += t;
      }
      cell[k * plane] = (float)(0.5 * sa);
      cell[(k + o) * plane] = (float)(0.5 * sb);
      cell[(k + 2 * o) * plane] = (float)(0.5 * su);
    }
    for (int q2 = 0; q2 < 4; ++q2) cell[(3 * o + q2) * plane] = (float)(texture[q2] / sqrt18);
  }
}

// ------------------------------------------------------------------------------------------ LBP

// 256 bit strings -> 58 uniform codes, as featinv_cli/features/lbp.py's uniform_mapping.
std::vector<uint8_t> uniform_mapping() {
  std::vector<uint8_t> m(256, 57);
  m[0x00] = m[0xFF] = 56;
  for (int i = 0; i < 8; ++i)
    for (int j = 1; j < 8; ++j) {
      const int s = ((1 << j) - 1) << i;
      m[(s | (s >> 8)) & 0xFF] = (uint8_t)(i * 7 + (j - 1));
    }
  return m;
}

// Pass 1 for one row: the code of each interior pixel; neighbours for bits 0..7 are E, SE, S, SW,
// W, NW, N, NE (VLFeat's order). Border pixels get code 0 and weight 0 in the spreading.
void lbp_row(const float* img, int64_t y, int64_t height, int64_t width, const uint8_t* mapping,
             std::vector<uint8_t>& bits, uint8_t* code) {
  std::fill(code, code + width, 0);
  if (y == 0 || y == height - 1 || width < 3) return;
  const float* c = img + y * width + 1;
  const float* up = c - width;
  const float* down = c + width;
  const int64_t w = width - 2;
  for (int64_t x = 0; x < w; ++x) {
    const float v = c[x];
    bits[x] = (uint8_t)((c[x + 1] > v) | ((down[x + 1] > v) << 1) | ((down[x] > v) << 2) | ((down[x - 1] > v) << 3)
                        | ((c[x - 1] > v) << 4) | ((up[x - 1] > v) << 5) | ((up[x] > v) << 6) | ((up[x + 1] > v) << 7));
  }
  for (int64_t x = 0; x < w; ++x) code[x + 1] = mapping[bits[x]];
}

// Runs image(i) for every image: one image's passes stay in cache, so a batch costs no more per image
// than one image alone. Images are spread over the threads; a lone image (or the last ones) uses
// the threads inside its passes instead (a nested parallel_for runs inline).
template <typename F>
void each_image(int64_t n, const F& image) {
  at::parallel_for(0, n, 1, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) image(i);
  });
}

// Luma of image i of (N, C, H, W) float32, C = 1 or 3: the image itself, or r*w0 + g*w1 + b*w2 in
// float in that order (featinv_cli/features/base.py's to_gray, GRAY_WEIGHTS) into `buffer`.
const float* luma(const at::Tensor& images, int64_t i, std::vector<float>& buffer) {
  const int64_t c = images.size(1), plane = images.size(2) * images.size(3);
  const float* p = images.data_ptr<float>() + i * c * plane;
  if (c == 1) return p;
  buffer.resize(plane);
  for (int64_t k = 0; k < plane; ++k)
    buffer[k] = p[k] * 0.2125f + p[plane + k] * 0.7154f + p[2 * plane + k] * 0.0721f;
  return buffer.data();
}

}  // namespace

at::Tensor hog_cpu(const at::Tensor& images, int64_t cell, int64_t orientations) {
  auto img = images.contiguous().to(at::kFloat);
  const int64_t n = img.size(0), height = img.size(2), width = img.size(3), o = orientations;
  const int64_t hc = (height + cell / 2) / cell, wc = (width + cell / 2) / cell;
  std::vector<float> ux(o), uy(o);
  for (int64_t k = 0; k < o; ++k) {  // as the torch version: angles in double, used as float
    const double a = (double)k * (M_PI / (double)o);
    ux[k] = (float)std::cos(a);
    uy[k] = (float)std::sin(a);
  }
  auto out = at::empty({n, 3 * o + 4, hc, wc}, img.options());
  float* op = out.data_ptr<float>();
  each_image(n, [&](int64_t i) {
    std::vector<float> buffer;
    const float* gray = luma(img, i, buffer);
    std::vector<uint8_t> bins(height * width);
    std::vector<float> mag(height * width);
    at::parallel_for(0, height, 16, [&](int64_t begin, int64_t end) {
      std::vector<float> gx(width), gy(width), best(width);
      std::vector<int32_t> choice(width);
      for (int64_t y = begin; y < end; ++y)
        hog_row(gray, y, height, width, ux.data(), uy.data(), o, gx, gy, best, choice,
                bins.data() + y * width, mag.data() + y * width);
    });
    std::vector<double> hist(hc * wc * 2 * o), energy(hc * wc);
    spread(bins.data(), mag.data(), height, width, cell, hc, wc, 2 * o, hist.data());
    for (int64_t c = 0; c < hc * wc; ++c) {
      double e = 0.0;
      for (int64_t k = 0; k < o; ++k) {
        const double u = hist[c * 2 * o + k] + hist[c * 2 * o + k + o];
        e += u * u;
      }
      energy[c] = e;
    }
    at::parallel_for(0, hc, 1, [&](int64_t begin, int64_t end) {
      for (int64_t r = begin; r < end; ++r)
        hog_normalize_row(hist.data(), energy.data(), r, hc, wc, o, op + i * (3 * o + 4) * hc * wc);
    });
  });
  return out;
}

at::Tensor lbp_cpu(const at::Tensor& images, int64_t cell) {
  auto img = images.contiguous().to(at::kFloat);
  const int64_t n = img.size(0), height = img.size(2), width = img.size(3), nbins = 58;
  const int64_t hc = height / cell, wc = width / cell, plane = hc * wc;
  static const std::vector<uint8_t> mapping = uniform_mapping();
  auto out = at::empty({n, nbins, hc, wc}, img.options());
  float* op = out.data_ptr<float>();
  each_image(n, [&](int64_t i) {
    std::vector<float> buffer;
    const float* gray = luma(img, i, buffer);
    std::vector<uint8_t> codes(height * width);
    at::parallel_for(0, height, 16, [&](int64_t begin, int64_t end) {
      std::vector<uint8_t> bits(width);
      for (int64_t y = begin; y < end; ++y)
        lbp_row(gray, y, height, width, mapping.data(), bits, codes.data() + y * width);
    });
    std::vector<double> hist(plane * nbins);
    spread(codes.data(), nullptr, height, width, cell, hc, wc, nbins, hist.data());
    float* o = op + i * nbins * plane;
    for (int64_t c = 0; c < plane; ++c) {
      const double* h = hist.data() + c * nbins;
      double total = 0.0;
      for (int64_t k = 0; k < nbins; ++k) total += h[k];
      const double norm = std::sqrt(total) + 1e-10;
      for (int64_t k = 0; k < nbins; ++k) o[k * plane + c] = (float)(std::sqrt(h[k]) / norm);
    }
  });
  return out;
}

}  // namespace featinv
