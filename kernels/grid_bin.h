// featinv::grid_bin, the shared part: the priority hash and the per-keypoint cell vector.
// Plain C++ (no torch headers), so the CPU source, the CUDA source and nvcc -c all use this one
// definition; the pure-torch reference in featinv_cli/ops.py implements the same arithmetic.
#pragma once
#include <stdint.h>
#include <math.h>

#ifdef __CUDACC__
#define FEATINV_HD __host__ __device__ __forceinline__
#else
#define FEATINV_HD inline
#endif

// murmur3's 32-bit finaliser: a cheap, well-mixed permutation of 32-bit integers.
FEATINV_HD uint32_t featinv_fmix32(uint32_t h) {
  h ^= h >> 16;
  h *= 0x85ebca6bu;
  h ^= h >> 13;
  h *= 0xc2b2ae35u;
  h ^= h >> 16;
  return h;
}

// Priority of keypoint `index` (its rank within its own image): depends on nothing else, so the
// winner of a cell is the same whatever order threads visit keypoints in, and an image's grid is the
// same alone or anywhere in a batch (the image's place in the batch is deliberately not hashed).
FEATINV_HD uint32_t featinv_priority(uint32_t seed, uint32_t index) {
  return featinv_fmix32(seed ^ featinv_fmix32(index + 0x9e3779b9u));
}

// The value compared per cell: priority in the high bits, the keypoint's index in the low 31, so
// keys are unique within an image and always positive as a signed 64-bit number (torch's int64).
FEATINV_HD int64_t featinv_key(uint32_t seed, uint32_t index) {
  return (int64_t)(((uint64_t)featinv_priority(seed, index) << 31) | (uint64_t)(index & 0x7fffffffu));
}

// Cell of a keypoint, or -1 when it lies outside the image (or is not finite).
FEATINV_HD int64_t featinv_cell(float x, float y, int64_t height, int64_t width, int64_t cell) {
  if (!(x >= 0.0f && y >= 0.0f && x < (float)width && y < (float)height)) return -1;
  int64_t cells_x = (width + cell - 1) / cell, cells_y = (height + cell - 1) / cell;
  // The quotient of a float just below the border can round up to the cell count: clamp it.
  int64_t cx = (int64_t)(x / (float)cell), cy = (int64_t)(y / (float)cell);
  if (cx > cells_x - 1) cx = cells_x - 1;
  if (cy > cells_y - 1) cy = cells_y - 1;
  return cy * cells_x + cx;
}

// The 5 geometric entries (x mod d, y mod d, sin a, cos a, log s). The transcendental functions are
// evaluated in double and rounded once, so CPU libm, CUDA and torch agree to the last float bit.
FEATINV_HD void featinv_geometry(const float* kp, int64_t cell, float* out) {
  out[0] = fmodf(kp[0], (float)cell);
  out[1] = fmodf(kp[1], (float)cell);
  out[2] = (float)sin((double)kp[3]);
  out[3] = (float)cos((double)kp[3]);
  out[4] = (float)log((double)kp[2]);
}
