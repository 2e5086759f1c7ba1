// AVX-512 micro-kernels of the CPU attention: the fp32 GEMM (6-row x up-to-64-column register
// blocks), exp2 on 16 lanes, and the forward softmax / backward P, dS tiles. The tile kernels reach
// them through the table in microkernels.h; the column kernels call them directly.
#pragma once
#include "attention_common.h"

#if AVF_X86_KERNELS
namespace avfast {
namespace attn_cpu {

template <int MR, int NV>
AVF_AVX512 inline void micro512(int64_t K, const float* a, int64_t ai, int64_t ak, const float* b, int64_t ldb,
                                float* c, int64_t ldc, bool accumulate) {
  __m512 r[MR][NV];
#pragma GCC unroll 8
  for (int i = 0; i < MR; ++i)
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) r[i][v] = accumulate ? _mm512_loadu_ps(c + i * ldc + 16 * v) : _mm512_setzero_ps();
  for (int64_t k = 0; k < K; ++k) {
    __m512 bv[NV];
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) bv[v] = _mm512_loadu_ps(b + k * ldb + 16 * v);
#pragma GCC unroll 8
    for (int i = 0; i < MR; ++i) {
      const __m512 av = _mm512_set1_ps(a[i * ai + k * ak]);
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) r[i][v] = _mm512_fmadd_ps(av, bv[v], r[i][v]);
    }
  }
#pragma GCC unroll 8
  for (int i = 0; i < MR; ++i)
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) _mm512_storeu_ps(c + i * ldc + 16 * v, r[i][v]);
}

// Rows in blocks of 6 (6 x 4 accumulators + 4 B vectors + 1 broadcast fit the 32 zmm registers).
template <int NV>
AVF_AVX512 void gemm_cols512(int64_t M, int64_t K, const float* a, int64_t ai, int64_t ak, const float* b, int64_t ldb,
                             float* c, int64_t ldc, bool acc) {
  int64_t i = 0;
  for (; i + 6 <= M; i += 6) micro512<6, NV>(K, a + i * ai, ai, ak, b, ldb, c + i * ldc, ldc, acc);
  const float* ar = a + i * ai;
  float* cr = c + i * ldc;
  switch (M - i) {
    case 5: micro512<5, NV>(K, ar, ai, ak, b, ldb, cr, ldc, acc); break;
    case 4: micro512<4, NV>(K, ar, ai, ak, b, ldb, cr, ldc, acc); break;
    case 3: micro512<3, NV>(K, ar, ai, ak, b, ldb, cr, ldc, acc); break;
    case 2: micro512<2, NV>(K, ar, ai, ak, b, ldb, cr, ldc, acc); break;
    case 1: micro512<1, NV>(K, ar, ai, ak, b, ldb, cr, ldc, acc); break;
    default: break;
  }
}

AVF_AVX512 inline void gemm_avx512(int64_t M, int64_t Nc, int64_t K, const float* a, int64_t ai, int64_t ak, const float* b,
                            int64_t ldb, float* c, int64_t ldc, bool acc) {
  for (int64_t j = 0; j < Nc; j += 64) {
    switch (std::min<int64_t>(64, Nc - j) / 16) {
      case 4: gemm_cols512<4>(M, K, a, ai, ak, b + j, ldb, c + j, ldc, acc); break;
      case 3: gemm_cols512<3>(M, K, a, ai, ak, b + j, ldb, c + j, ldc, acc); break;
      case 2: gemm_cols512<2>(M, K, a, ai, ak, b + j, ldb, c + j, ldc, acc); break;
      default: gemm_cols512<1>(M, K, a, ai, ak, b + j, ldb, c + j, ldc, acc); break;
    }
  }
}

// 2^x: x = k + f with f in [-1/2, 1/2], 2^f by its degree-7 Taylor series (relative error < 1e-8,
// below fp32 rounding), 2^k by scalef. Inputs below -127 flush towards 0 (exp2(-inf) = 0 too).
AVF_AVX512 inline __m512 exp2_512(__m512 x) {
  x = _mm512_max_ps(x, _mm512_set1_ps(-127.f));
  const __m512 k = _mm512_roundscale_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  const __m512 f = _mm512_mul_ps(_mm512_sub_ps(x, k), _mm512_set1_ps(kLn2));
  __m512 p = _mm512_set1_ps(1.f / 5040.f);
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.f / 720.f));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.f / 120.f));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.f / 24.f));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.f / 6.f));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(0.5f));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.f));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.f));
  return _mm512_scalef_ps(p, k);
}

AVF_AVX512 inline __mmask16 cols_mask(int64_t j, int64_t n) {
  const int64_t left = n - j;
  return left >= 16 ? __mmask16(0xffff) : left <= 0 ? __mmask16(0) : __mmask16((1u << left) - 1u);
}

AVF_AVX512 inline void softmax_tile_avx512(int64_t m, int64_t n, float* S, float* mrow, float* lrow, float* O, int64_t Dp) {
  for (int64_t i = 0; i < m; ++i) {
    float* s = S + i * kBN;
    __m512 vmax = _mm512_set1_ps(kNegInf);
    for (int64_t j = 0; j < n; j += 16)
      vmax = _mm512_max_ps(vmax, _mm512_mask_loadu_ps(_mm512_set1_ps(kNegInf), cols_mask(j, n), s + j));
    const float mx = std::max(mrow[i], _mm512_reduce_max_ps(vmax));
    const float alpha = std::exp2(mrow[i] - mx);
    const __m512 vmx = _mm512_set1_ps(mx);
    __m512 vsum = _mm512_setzero_ps();
    for (int64_t j = 0; j < n; j += 16) {
      const __m512 p = _mm512_maskz_mov_ps(cols_mask(j, n), exp2_512(_mm512_sub_ps(_mm512_loadu_ps(s + j), vmx)));
      _mm512_storeu_ps(s + j, p);
      vsum = _mm512_add_ps(vsum, p);
    }
    lrow[i] = lrow[i] * alpha + _mm512_reduce_add_ps(vsum);
    mrow[i] = mx;
    const __m512 va = _mm512_set1_ps(alpha);
    for (int64_t d = 0; d < Dp; d += 16) _mm512_storeu_ps(O + i * Dp + d, _mm512_mul_ps(_mm512_loadu_ps(O + i * Dp + d), va));
  }
}

AVF_AVX512 inline void backward_tile_avx512(int64_t m, int64_t n, float* S, float* dP, const float* lse2, const float* delta,
                                     float c) {
  const __m512 vc = _mm512_set1_ps(c);
  for (int64_t i = 0; i < m; ++i) {
    const __m512 vl = _mm512_set1_ps(lse2[i]), vd = _mm512_set1_ps(delta[i]);
    for (int64_t j = 0; j < n; j += 16) {
      float* s = S + i * kBN + j;
      float* dp = dP + i * kBN + j;
      const __m512 p = _mm512_maskz_mov_ps(cols_mask(j, n), exp2_512(_mm512_fmsub_ps(_mm512_loadu_ps(s), vc, vl)));
      _mm512_storeu_ps(s, p);
      _mm512_storeu_ps(dp, _mm512_mul_ps(p, _mm512_sub_ps(_mm512_loadu_ps(dp), vd)));
    }
  }
}

}  // namespace attn_cpu
}  // namespace avfast
#endif  // AVF_X86_KERNELS
