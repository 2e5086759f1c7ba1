// CPU attention backward, lane kernels (see attention_lanes.h).
#include <algorithm>
#include <vector>

#include "attention_lanes.h"

#if AVF_X86_KERNELS
namespace avfast {
namespace attn_cpu {

template <typename T>
AVF_AVX512BW void backward_lanes(const T* dout, const T* qkv, const T* out, const float* lse, T* dqkv,
                                 const AttnShape& s, const AttnView& vdo, const AttnView& vi, const AttnView& vo,
                                 const AttnView& vdq) {
  const int64_t G = attn_groups(s), N = attn_tokens(s), D = s.D, C = s.heads * D;
  const LaneGeom lg = lane_geom(s, {&vdo, &vi, &vo, &vdq});
  const int64_t nblk = (lg.len + kL - 1) / kL, tasks = s.B * s.heads * lg.rows * nblk;
  const int64_t lsdo = lane_stride(s, vdo), lsi = lane_stride(s, vi), lso = lane_stride(s, vo),
                lsdq = lane_stride(s, vdq);
  const float qscale = s.scale * kLog2e;
#pragma omp parallel
  {
    AlignedScratch scratch;
    float* Q = scratch.p((5 * N * D + 2 * N * N + 2 * N) * kL);
    float* K = Q + N * D * kL;
    float* V = K + N * D * kL;
    float* dO = V + N * D * kL;
    float* R = dO + N * D * kL;  // result rows (dq, then dk, then dv)
    float* P = R + N * D * kL;
    float* dS = P + N * N * kL;
    float* delta = dS + N * N * kL;
    float* lse2 = delta + N * kL;
    std::vector<int64_t> offi(N), offdo(N), offo(N), offdq(N);
    for (int64_t i = 0; i < N; ++i) {
      offi[i] = attn_token_offset(s, vi, i);
      offdo[i] = attn_token_offset(s, vdo, i);
      offo[i] = attn_token_offset(s, vo, i);
      offdq[i] = attn_token_offset(s, vdq, i);
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
      const T* do_ptr = dout + b * vdo.b + h * D * vdo.c + lane_row_offset(s, vdo, lg, r, x0);
      const T* o_ptr = out + b * vo.b + h * D * vo.c + lane_row_offset(s, vo, lg, r, x0);
      T* dq_ptr = dqkv + b * vdq.b + h * D * vdq.c + lane_row_offset(s, vdq, lg, r, x0);
      lanes_pack(Q, q_ptr, offi.data(), vi.c, lsi, n, N, D, qscale);
      lanes_pack(K, q_ptr + C * vi.c, offi.data(), vi.c, lsi, n, N, D, 1.f);
      lanes_pack(V, q_ptr + 2 * C * vi.c, offi.data(), vi.c, lsi, n, N, D, 1.f);
      lanes_pack(dO, do_ptr, offdo.data(), vdo.c, lsdo, n, N, D, 1.f);
      for (int64_t i = 0; i < N; ++i) {  // delta_i = dO_i . O_i
        __m512 acc = _mm512_setzero_ps();
        for (int64_t d = 0; d < D; ++d)
          acc = _mm512_fmadd_ps(_mm512_loadu_ps(dO + (i * D + d) * kL), lanes_load(o_ptr + d * vo.c + offo[i], lso, n),
                                acc);
        _mm512_storeu_ps(delta + i * kL, acc);
      }
      const float* lse_b = lse + ((b * s.heads + h) * G + r * lg.len + x0) * N;
      for (int64_t i = 0; i < N; ++i)
        for (int l = 0; l < kL; ++l) lse2[i * kL + l] = l < n ? lse_b[l * N + i] * kLog2e : 0.f;
      lane_gemm(N, N, D, Q, D, 1, K, 1, D, P, N, 1);    // S (log2 units)
      lane_gemm(N, N, D, dO, D, 1, V, 1, D, dS, N, 1);  // dP = dO V^T
      for (int64_t i = 0; i < N; ++i) {
        const __m512 l2 = _mm512_loadu_ps(lse2 + i * kL), dl = _mm512_loadu_ps(delta + i * kL);
        for (int64_t j = 0; j < N; ++j) {
          float* pij = P + (i * N + j) * kL;
          float* dsij = dS + (i * N + j) * kL;
          const __m512 p = exp2_512(_mm512_sub_ps(_mm512_loadu_ps(pij), l2));
          _mm512_storeu_ps(pij, p);
          _mm512_storeu_ps(dsij, _mm512_mul_ps(p, _mm512_sub_ps(_mm512_loadu_ps(dsij), dl)));
        }
      }
      lane_gemm(N, D, N, dS, N, 1, K, D, 1, R, D, 1);  // dQ = dS K
      lanes_unpack(dq_ptr, R, offdq.data(), vdq.c, lsdq, n, N, D, s.scale, nullptr);
      lane_gemm(N, D, N, dS, 1, N, Q, D, 1, R, D, 1);  // dK = dS^T Q (Q holds q * scale * log2 e)
      lanes_unpack(dq_ptr + C * vdq.c, R, offdq.data(), vdq.c, lsdq, n, N, D, 1.f / kLog2e, nullptr);
      lane_gemm(N, D, N, P, 1, N, dO, D, 1, R, D, 1);  // dV = P^T dO
      lanes_unpack(dq_ptr + 2 * C * vdq.c, R, offdq.data(), vdq.c, lsdq, n, N, D, 1.f, nullptr);
    }
  }
}

template void backward_lanes<float>(const float*, const float*, const float*, const float*, float*,
                                    const AttnShape&, const AttnView&, const AttnView&, const AttnView&,
                                    const AttnView&);
template void backward_lanes<half_t>(const half_t*, const half_t*, const half_t*, const float*, half_t*,
                                     const AttnShape&, const AttnView&, const AttnView&, const AttnView&,
                                     const AttnView&);
template void backward_lanes<bf16_t>(const bf16_t*, const bf16_t*, const bf16_t*, const float*, bf16_t*,
                                     const AttnShape&, const AttnView&, const AttnView&, const AttnView&,
                                     const AttnView&);

}  // namespace attn_cpu
}  // namespace avfast
#endif  // AVF_X86_KERNELS
