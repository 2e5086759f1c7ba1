// CPU attention backward, column kernels (see attention_cols.h).
#include <algorithm>
#include <type_traits>

#include "attention_cols.h"

#if AVF_X86_KERNELS
namespace avfast {
namespace attn_cpu {

// Backward with contiguous tokens: per (b, head, group) problem, key tiles outside, query tiles
// inside (dK, dV of a key tile accumulate in [d][key] scratch, dQ in [d][query] scratch for the
// problem). In the [d][token] layout, S and dP come out row = query (vectors along the keys), which
// is what dV^T += dO^T P and dK^T += Q^T dS need (A broadcast from dO / q, B = P / dS rows); dQ^T
// += K^T dS^T takes dS transposed (one 64 x 64 tile transpose per tile pair, ~1% of the FMAs).
// fp16 / bf16 problems are converted to fp32 [d][token] scratch once per problem; an fp32 ragged
// last key tile is copied zero-padded (its rows are read as whole vectors).
template <typename T>
AVF_AVX512BW void backward_cols(const T* dout, const T* qkv, const T* out, const float* lse, T* dqkv,
                                const AttnShape& s, const AttnView& vdo, const AttnView& vi, const AttnView& vo,
                                const AttnView& vdq) {
  constexpr bool kDirect = std::is_same<T, float>::value;
  const int64_t G = attn_groups(s), N = attn_tokens(s), D = s.D, C = s.heads * D, Np = round16(N);
  const int64_t tasks = s.B * s.heads * G;
  const float qscale = s.scale * kLog2e;
#pragma omp parallel
  {
    AlignedScratch scratch;
    const int64_t whole = kDirect ? 0 : 4 * D * Np;
    float* F32 = scratch.p(whole + D * Np + 2 * Np + 2 * kBM * kBN + kBN * kBM + 4 * D * kBN);
    float* dQt = F32 + whole;      // [D][Np]
    float* delta = dQt + D * Np;   // [Np]
    float* lse2 = delta + Np;
    float* S = lse2 + Np;          // [kBM][kBN]: S, then P
    float* dP = S + kBM * kBN;     // dP, then dS
    float* dSt = dP + kBM * kBN;   // [kBN][kBM]
    float* dVt = dSt + kBN * kBM;  // [D][kBN]
    float* dKt = dVt + D * kBN;
    float* Kr = dKt + D * kBN;     // ragged fp32 key tile, zero-padded
    float* Vr = Kr + D * kBN;
#pragma omp for schedule(dynamic, 1)
    for (int64_t task = 0; task < tasks; ++task) {
      const int64_t g = task % G, h = (task / G) % s.heads, b = task / (G * s.heads);
      const T* q_ptr = qkv + b * vi.b + h * D * vi.c + attn_group_offset(s, vi, g);
      const T* k_ptr = q_ptr + C * vi.c;
      const T* v_ptr = q_ptr + 2 * C * vi.c;
      const T* do_ptr = dout + b * vdo.b + h * D * vdo.c + attn_group_offset(s, vdo, g);
      const T* o_ptr = out + b * vo.b + h * D * vo.c + attn_group_offset(s, vo, g);
      T* dq_ptr = dqkv + b * vdq.b + h * D * vdq.c + attn_group_offset(s, vdq, g);
      const float* lse_row = lse + ((b * s.heads + h) * G + g) * N;
      const float *Q, *K, *V, *dO;
      int64_t ldq, lddo;
      if (kDirect) {
        Q = reinterpret_cast<const float*>(q_ptr), K = reinterpret_cast<const float*>(k_ptr);
        V = reinterpret_cast<const float*>(v_ptr), dO = reinterpret_cast<const float*>(do_ptr);
        ldq = vi.c, lddo = vdo.c;
      } else {
        float* w = F32;
        pack_rows(w, Np, q_ptr, vi.c, N, D);
        pack_rows(w + D * Np, Np, k_ptr, vi.c, N, D);
        pack_rows(w + 2 * D * Np, Np, v_ptr, vi.c, N, D);
        pack_rows(w + 3 * D * Np, Np, do_ptr, vdo.c, N, D);
        Q = w, K = w + D * Np, V = w + 2 * D * Np, dO = w + 3 * D * Np;
        ldq = lddo = Np;
      }
      for (int64_t i = 0; i < N; i += kL) {  // delta_i = dO_i . O_i, lse in log2 units
        const int cnt = int(std::min<int64_t>(kL, N - i));
        __m512 acc = _mm512_setzero_ps();
        for (int64_t d = 0; d < D; ++d)
          acc = _mm512_fmadd_ps(lanes_load(dO + d * lddo + i, 1, cnt), lanes_load(o_ptr + d * vo.c + i, 1, cnt), acc);
        _mm512_storeu_ps(delta + i, acc);
        _mm512_storeu_ps(lse2 + i, _mm512_mul_ps(lanes_load(lse_row + i, 1, cnt), _mm512_set1_ps(kLog2e)));
      }
      std::fill(dQt, dQt + D * Np, 0.f);
      for (int64_t j0 = 0; j0 < N; j0 += kBN) {
        const int64_t n = std::min(kBN, N - j0), np = round16(n);
        const float *Kp = K + j0, *Vp = V + j0;
        int64_t ldk = ldq;
        if (kDirect && n % kL) {
          pack_rows(Kr, kBN, Kp, ldq, n, D);
          pack_rows(Vr, kBN, Vp, ldq, n, D);
          Kp = Kr, Vp = Vr, ldk = kBN;
        }
        std::fill(dVt, dVt + 2 * D * kBN, 0.f);  // dVt and dKt
        for (int64_t i0 = 0; i0 < N; i0 += kBM) {
          const int64_t m = std::min(kBM, N - i0), mp = round16(m);
          gemm_avx512(m, np, D, Q + i0, 1, ldq, Kp, ldk, S, kBN, false);    // S = Q K^T
          gemm_avx512(m, np, D, dO + i0, 1, lddo, Vp, ldk, dP, kBN, false);  // dP = dO V^T
          backward_tile_avx512(m, n, S, dP, lse2 + i0, delta + i0, qscale);  // S -> P, dP -> dS
          gemm_avx512(D, np, m, dO + i0, lddo, 1, S, kBN, dVt, kBN, true);   // dV^T += dO^T P
          gemm_avx512(D, np, m, Q + i0, ldq, 1, dP, kBN, dKt, kBN, true);    // dK^T += Q^T dS
          for (int64_t j = 0; j < n; ++j)
            for (int64_t i = 0; i < mp; ++i) dSt[j * kBM + i] = i < m ? dP[i * kBN + j] : 0.f;
          gemm_avx512(D, mp, n, Kp, ldk, 1, dSt, kBM, dQt + i0, Np, true);  // dQ^T += K^T dS^T
        }
        T* dk_ptr = dq_ptr + C * vdq.c + j0;
        T* dv_ptr = dq_ptr + 2 * C * vdq.c + j0;
        const __m512 vs = _mm512_set1_ps(s.scale);
        for (int64_t d = 0; d < D; ++d)
          for (int64_t j = 0; j < n; j += kL) {
            const int cnt = int(std::min<int64_t>(kL, n - j));
            lanes_store(dk_ptr + d * vdq.c + j, 1, cnt, _mm512_mul_ps(_mm512_loadu_ps(dKt + d * kBN + j), vs));
            lanes_store(dv_ptr + d * vdq.c + j, 1, cnt, _mm512_loadu_ps(dVt + d * kBN + j));
          }
      }
      const __m512 vs = _mm512_set1_ps(s.scale);
      for (int64_t d = 0; d < D; ++d)
        for (int64_t i = 0; i < N; i += kL)
          lanes_store(dq_ptr + d * vdq.c + i, 1, int(std::min<int64_t>(kL, N - i)),
                      _mm512_mul_ps(_mm512_loadu_ps(dQt + d * Np + i), vs));
    }
  }
}

template void backward_cols<float>(const float*, const float*, const float*, const float*, float*,
                                   const AttnShape&, const AttnView&, const AttnView&, const AttnView&,
                                   const AttnView&);
template void backward_cols<half_t>(const half_t*, const half_t*, const half_t*, const float*, half_t*,
                                    const AttnShape&, const AttnView&, const AttnView&, const AttnView&,
                                    const AttnView&);
template void backward_cols<bf16_t>(const bf16_t*, const bf16_t*, const bf16_t*, const float*, bf16_t*,
                                    const AttnShape&, const AttnView&, const AttnView&, const AttnView&,
                                    const AttnView&);

}  // namespace attn_cpu
}  // namespace avfast
#endif  // AVF_X86_KERNELS
