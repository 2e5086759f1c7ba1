// CPU attention, lane kernels (AVX-512 only): 16 small problems side by side, one per vector lane.
// Forward in attention_fwd_lanes.cpp, backward in attention_bwd_lanes.cpp; the lane GEMM, the
// packing and the group -> lane geometry they share are here.
#pragma once
#include <algorithm>
#include <cstdint>
#include <initializer_list>

#include "attention_common.h"
#include "microkernels_avx512.h"
#include "vec16_avx512.h"

#if AVF_X86_KERNELS
namespace avfast {
namespace attn_cpu {

// ---- lane kernels: 16 independent problems side by side in the AVX-512 lanes ------------------
//
// Many small problems whose group axis is the memory-contiguous one (temporal mode: one problem of
// N = F tokens per pixel, neighbouring pixels adjacent in memory) run 16 at a time, one problem per
// lane: every value below is a vector of 16 lanes (one per group), so q.k over the head dim, the
// softmax and P.V are plain vertical FMAs / max / exp, with no transposes and no horizontal sums,
// and N = 18 needs no padding to 16 either. Each block packs its q, k, v (converted to fp32, q
// pre-scaled) into lane-major scratch [token][d][16], forms the whole N x N score block (N <= 64,
// scratch in L2) and writes out / dq / dk / dv once. Lanes past the end of a row of groups are
// packed as zeros (uniform softmax, finite) and never stored.
constexpr int64_t kLaneMaxN = 64;

// C(i, j) = sum_k A(i, k) B(k, j) for i < M, j < Nc, every element a 16-lane vector:
// A(i, k) at a + (i ai + k ak) * 16, B(k, j) at b + (k bk + j bj) * 16, C(i, j) at c + (i ci + j cj) * 16.
template <int MR, int NR>
AVF_AVX512BW inline void lane_micro(int64_t K, const float* a, int64_t ai, int64_t ak, const float* b, int64_t bk,
                                    int64_t bj, float* c, int64_t ci, int64_t cj) {
  __m512 r[MR][NR];
#pragma GCC unroll 8
  for (int i = 0; i < MR; ++i)
#pragma GCC unroll 8
    for (int j = 0; j < NR; ++j) r[i][j] = _mm512_setzero_ps();
  for (int64_t k = 0; k < K; ++k) {
    __m512 bv[NR];
#pragma GCC unroll 8
    for (int j = 0; j < NR; ++j) bv[j] = _mm512_loadu_ps(b + (k * bk + j * bj) * kL);
#pragma GCC unroll 8
    for (int i = 0; i < MR; ++i) {
      const __m512 av = _mm512_loadu_ps(a + (i * ai + k * ak) * kL);
#pragma GCC unroll 8
      for (int j = 0; j < NR; ++j) r[i][j] = _mm512_fmadd_ps(av, bv[j], r[i][j]);
    }
  }
#pragma GCC unroll 8
  for (int i = 0; i < MR; ++i)
#pragma GCC unroll 8
    for (int j = 0; j < NR; ++j) _mm512_storeu_ps(c + (i * ci + j * cj) * kL, r[i][j]);
}

template <int MR>
AVF_AVX512BW void lane_gemm_rows(int64_t Nc, int64_t K, const float* a, int64_t ai, int64_t ak, const float* b,
                                 int64_t bk, int64_t bj, float* c, int64_t ci, int64_t cj) {
  int64_t j = 0;
  for (; j + 4 <= Nc; j += 4) lane_micro<MR, 4>(K, a, ai, ak, b + j * bj * kL, bk, bj, c + j * cj * kL, ci, cj);
  switch (Nc - j) {
    case 3: lane_micro<MR, 3>(K, a, ai, ak, b + j * bj * kL, bk, bj, c + j * cj * kL, ci, cj); break;
    case 2: lane_micro<MR, 2>(K, a, ai, ak, b + j * bj * kL, bk, bj, c + j * cj * kL, ci, cj); break;
    case 1: lane_micro<MR, 1>(K, a, ai, ak, b + j * bj * kL, bk, bj, c + j * cj * kL, ci, cj); break;
    default: break;
  }
}

AVF_AVX512BW inline void lane_gemm(int64_t M, int64_t Nc, int64_t K, const float* a, int64_t ai, int64_t ak, const float* b,
                            int64_t bk, int64_t bj, float* c, int64_t ci, int64_t cj) {
  int64_t i = 0;
  for (; i + 6 <= M; i += 6) lane_gemm_rows<6>(Nc, K, a + i * ai * kL, ai, ak, b, bk, bj, c + i * ci * kL, ci, cj);
  const float* ar = a + i * ai * kL;
  float* cr = c + i * ci * kL;
  switch (M - i) {
    case 5: lane_gemm_rows<5>(Nc, K, ar, ai, ak, b, bk, bj, cr, ci, cj); break;
    case 4: lane_gemm_rows<4>(Nc, K, ar, ai, ak, b, bk, bj, cr, ci, cj); break;
    case 3: lane_gemm_rows<3>(Nc, K, ar, ai, ak, b, bk, bj, cr, ci, cj); break;
    case 2: lane_gemm_rows<2>(Nc, K, ar, ai, ak, b, bk, bj, cr, ci, cj); break;
    case 1: lane_gemm_rows<1>(Nc, K, ar, ai, ak, b, bk, bj, cr, ci, cj); break;
    default: break;
  }
}

// dst[t][d] (lane-major scratch) = src[d * c + off[t]] (lanes ls apart) * mul, for t < N, d < D.
template <typename T>
AVF_AVX512BW void lanes_pack(float* dst, const T* src, const int64_t* off, int64_t c, int64_t ls, int n, int64_t N,
                             int64_t D, float mul) {
  const __m512 vm = _mm512_set1_ps(mul);
  for (int64_t t = 0; t < N; ++t)
    for (int64_t d = 0; d < D; ++d)
      _mm512_storeu_ps(dst + (t * D + d) * kL, _mm512_mul_ps(lanes_load(src + d * c + off[t], ls, n), vm));
}

// dst[d * c + off[t]] = src[t][d] * mul * (rowmul ? rowmul[t] : 1).
template <typename T>
AVF_AVX512BW void lanes_unpack(T* dst, const float* src, const int64_t* off, int64_t c, int64_t ls, int n, int64_t N,
                               int64_t D, float mul, const float* rowmul) {
  for (int64_t t = 0; t < N; ++t) {
    const __m512 vm = rowmul ? _mm512_mul_ps(_mm512_loadu_ps(rowmul + t * kL), _mm512_set1_ps(mul)) : _mm512_set1_ps(mul);
    for (int64_t d = 0; d < D; ++d)
      lanes_store(dst + d * c + off[t], ls, n, _mm512_mul_ps(_mm512_loadu_ps(src + (t * D + d) * kL), vm));
  }
}

// How the group index g maps to lane blocks: `rows` rows of `len` groups; within a row, group
// (r, x) sits at r * row_stride + x * lane_stride of a view (g = r * len + x).
struct LaneGeom {
  int64_t rows, len;
};
inline LaneGeom lane_geom(const AttnShape& s, std::initializer_list<const AttnView*> views) {
  if (s.g[1] == 1 || s.g[0] == 1) return {1, s.g[0] * s.g[1]};
  for (const AttnView* v : views)
    if (v->g[0] != s.g[1] * v->g[1]) return {s.g[0], s.g[1]};
  return {1, s.g[0] * s.g[1]};
}
inline int64_t lane_stride(const AttnShape& s, const AttnView& v) { return s.g[1] == 1 ? v.g[0] : v.g[1]; }
inline int64_t lane_row_offset(const AttnShape& s, const AttnView& v, const LaneGeom& lg, int64_t r, int64_t x) {
  // Groups (r, x) -> flat g -> the view's offset (exact whether or not the rows flatten).
  return attn_group_offset(s, v, r * lg.len + x);
}

// out, lse as attention_forward_cpu (attention_cpu.h); N <= kLaneMaxN.
template <typename T>
AVF_AVX512BW void forward_lanes(const T* qkv, T* out, float* lse, const AttnShape& s, const AttnView& vi,
                               const AttnView& vo);
// dqkv as attention_backward_cpu; N <= kLaneMaxN.
template <typename T>
AVF_AVX512BW void backward_lanes(const T* dout, const T* qkv, const T* out, const float* lse, T* dqkv,
                                const AttnShape& s, const AttnView& vdo, const AttnView& vi, const AttnView& vo,
                                const AttnView& vdq);

}  // namespace attn_cpu
}  // namespace avfast
#endif  // AVF_X86_KERNELS
