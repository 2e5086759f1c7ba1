// CPU attention forward, lane kernels (see attention_lanes.h).
#include <algorithm>
#include <cmath>
#include <vector>

#include "attention_lanes.h"

#if AVF_X86_KERNELS
namespace avfast {
namespace attn_cpu {

template <typename T>
AVF_AVX512BW void forward_lanes(const T* qkv, T* out, float* lse, const AttnShape& s, const AttnView& vi,
                                const AttnView& vo) {
  const int64_t G = attn_groups(s), N = attn_tokens(s), D = s.D, C = s.heads * D;
  const LaneGeom lg = lane_geom(s, {&vi, &vo});
  const int64_t nblk = (lg.len + kL - 1) / kL, tasks = s.B * s.heads * lg.rows * nblk;
  const int64_t lsi = lane_stride(s, vi), lso = lane_stride(s, vo);
  const float qscale = s.scale * kLog2e;
#pragma omp parallel
  {
    AlignedScratch scratch;
    float* Q = scratch.p((3 * N * D + N * N + N * D + 2 * N) * kL);
    float* K = Q + N * D * kL;
    float* V = K + N * D * kL;
    float* S = V + N * D * kL;
    float* O = S + N * N * kL;
    float* linv = O + N * D * kL;
    float* lse2 = linv + N * kL;
    std::vector<int64_t> offi(N), offo(N);
    for (int64_t i = 0; i < N; ++i) {
      offi[i] = attn_token_offset(s, vi, i);
      offo[i] = attn_token_offset(s, vo, i);
    }
#pragma omp for schedule(dynamic, 1)
    for (int64_t task = 0; task < tasks; ++task) {
      int64_t t = task;
      const int64_t blk = t % nblk; t /= nblk;
      const int64_t r = t % lg.rows; t /= lg.rows;
      const int64_t h = t % s.heads, b = t / s.heads;
      const int64_t x0 = blk * kL;
      const int n = int(std::min<int64_t>(kL, lg.len - x0));
      const T* q_ptr = qkv + b * vi.b + h * D * vi.c + lane_row_offset(s, vi, lg, r, x0);
      lanes_pack(Q, q_ptr, offi.data(), vi.c, lsi, n, N, D, qscale);
      lanes_pack(K, q_ptr + C * vi.c, offi.data(), vi.c, lsi, n, N, D, 1.f);
      lanes_pack(V, q_ptr + 2 * C * vi.c, offi.data(), vi.c, lsi, n, N, D, 1.f);
      lane_gemm(N, N, D, Q, D, 1, K, 1, D, S, N, 1);  // S(i, j) = q_i . k_j (log2 units)
      for (int64_t i = 0; i < N; ++i) {
        float* si = S + i * N * kL;
        __m512 mx = _mm512_loadu_ps(si);
        for (int64_t j = 1; j < N; ++j) mx = _mm512_max_ps(mx, _mm512_loadu_ps(si + j * kL));
        __m512 sum = _mm512_setzero_ps();
        for (int64_t j = 0; j < N; ++j) {
          const __m512 p = exp2_512(_mm512_sub_ps(_mm512_loadu_ps(si + j * kL), mx));
          _mm512_storeu_ps(si + j * kL, p);
          sum = _mm512_add_ps(sum, p);
        }
        _mm512_storeu_ps(linv + i * kL, _mm512_div_ps(_mm512_set1_ps(1.f), sum));
        // lse (natural log) = (max + log2 sum) ln 2; log2 via getexp/getmant keeps it in vectors.
        const __m512 e = _mm512_getexp_ps(sum);
        const __m512 mnt = _mm512_getmant_ps(sum, _MM_MANT_NORM_1_2, _MM_MANT_SIGN_zero);
        alignas(64) float mt[kL];
        _mm512_store_ps(mt, mnt);
        for (int l = 0; l < kL; ++l) mt[l] = std::log2(mt[l]);
        _mm512_storeu_ps(lse2 + i * kL,
                         _mm512_mul_ps(_mm512_add_ps(_mm512_add_ps(mx, e), _mm512_load_ps(mt)), _mm512_set1_ps(kLn2)));
      }
      lane_gemm(N, D, N, S, N, 1, V, D, 1, O, D, 1);  // O(i, d) = sum_j P(i, j) v_j
      lanes_unpack(out + b * vo.b + h * D * vo.c + lane_row_offset(s, vo, lg, r, x0), O, offo.data(), vo.c, lso, n,
                   N, D, 1.f, linv);
      float* lse_b = lse + ((b * s.heads + h) * G + r * lg.len + x0) * N;
      for (int l = 0; l < n; ++l)
        for (int64_t i = 0; i < N; ++i) lse_b[l * N + i] = lse2[i * kL + l];
    }
  }
}

template void forward_lanes<float>(const float*, float*, float*, const AttnShape&, const AttnView&, const AttnView&);
template void forward_lanes<half_t>(const half_t*, half_t*, float*, const AttnShape&, const AttnView&, const AttnView&);
template void forward_lanes<bf16_t>(const bf16_t*, bf16_t*, float*, const AttnShape&, const AttnView&, const AttnView&);

}  // namespace attn_cpu
}  // namespace avfast
#endif  // AVF_X86_KERNELS
