// Portable tile micro-kernels of the CPU attention (any CPU; AVFAST_ATTN_CPU_KERNEL=portable forces
// them): the fp32 GEMM, the forward online-softmax tile and the backward P / dS tile. Their contracts
// are in microkernels.h; microkernels_avx512.h has the AVX-512 versions.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>

#include "attention_common.h"

namespace avfast {
namespace attn_cpu {

inline void gemm_portable(int64_t M, int64_t Nc, int64_t K, const float* a, int64_t ai, int64_t ak, const float* b,
                   int64_t ldb, float* c, int64_t ldc, bool accumulate) {
  for (int64_t i = 0; i < M; ++i) {
    float* ci = c + i * ldc;
    if (!accumulate) std::fill(ci, ci + Nc, 0.f);
    for (int64_t k = 0; k < K; ++k) {
      const float av = a[i * ai + k * ak];
      const float* bk = b + k * ldb;
      for (int64_t j = 0; j < Nc; ++j) ci[j] += av * bk[j];
    }
  }
}

inline void softmax_tile_portable(int64_t m, int64_t n, float* S, float* mrow, float* lrow, float* O, int64_t Dp) {
  for (int64_t i = 0; i < m; ++i) {
    float* s = S + i * kBN;
    float mx = mrow[i];
    for (int64_t j = 0; j < n; ++j) mx = std::max(mx, s[j]);
    const float alpha = std::exp2(mrow[i] - mx);
    float sum = 0.f;
    for (int64_t j = 0; j < n; ++j) sum += (s[j] = std::exp2(s[j] - mx));
    for (int64_t j = n; j < round16(n); ++j) s[j] = 0.f;
    lrow[i] = lrow[i] * alpha + sum;
    mrow[i] = mx;
    for (int64_t d = 0; d < Dp; ++d) O[i * Dp + d] *= alpha;
  }
}

inline void backward_tile_portable(int64_t m, int64_t n, float* S, float* dP, const float* lse2, const float* delta, float c) {
  for (int64_t i = 0; i < m; ++i) {
    for (int64_t j = 0; j < round16(n); ++j) {
      const float p = j < n ? std::exp2(S[i * kBN + j] * c - lse2[i]) : 0.f;
      S[i * kBN + j] = p;
      dP[i * kBN + j] = p * (dP[i * kBN + j] - delta[i]);
    }
  }
}

}  // namespace attn_cpu
}  // namespace avfast
