// CPU attention backward, tile kernels (see attention_tiles.h).
#include <algorithm>
#include <vector>

#include "attention_tiles.h"

namespace avfast {
namespace attn_cpu {

template <typename T>
void backward_tiles(const Kernels& kern, const T* dout, const T* qkv, const T* out, const float* lse, T* dqkv,
                    const AttnShape& s, const AttnView& vdo, const AttnView& vi, const AttnView& vo,
                    const AttnView& vdq) {
  const int64_t G = attn_groups(s), N = attn_tokens(s), D = s.D, Dp = round16(D), C = s.heads * D;
  const int64_t tasks = s.B * s.heads * G;
  const float qscale = s.scale * kLog2e;
#pragma omp parallel
  {
    // O(N * D) per thread: q, dO and the dQ accumulator of one (b, head, group) problem.
    std::vector<float> Q(N * Dp, 0.f), dO(N * Dp, 0.f), dQ(N * Dp), delta(N), lse2(N);
    std::vector<float> Kt(Dp * kBN, 0.f), Vt(Dp * kBN, 0.f), K(kBN * Dp, 0.f), dK(kBN * Dp), dV(kBN * Dp);
    std::vector<float> S(kBM * kBN), dP(kBM * kBN);
    std::vector<int64_t> off(std::max(N, kBN)), off2(std::max(N, kBN));
#pragma omp for schedule(dynamic, 1)
    for (int64_t task = 0; task < tasks; ++task) {
      const int64_t g = task % G, h = (task / G) % s.heads, b = task / (G * s.heads);
      const int64_t head = h * D;
      const T* q_ptr = qkv + b * vi.b + head * vi.c + attn_group_offset(s, vi, g);
      const T* k_ptr = q_ptr + C * vi.c;
      const T* v_ptr = q_ptr + 2 * C * vi.c;
      const T* do_ptr = dout + b * vdo.b + head * vdo.c + attn_group_offset(s, vdo, g);
      const T* o_ptr = out + b * vo.b + head * vo.c + attn_group_offset(s, vo, g);
      T* dq_ptr = dqkv + b * vdq.b + head * vdq.c + attn_group_offset(s, vdq, g);
      T* dk_ptr = dq_ptr + C * vdq.c;
      T* dv_ptr = dq_ptr + 2 * C * vdq.c;
      const float* lse_row = lse + ((b * s.heads + h) * G + g) * N;

      for (int64_t i = 0; i < N; ++i) off[i] = attn_token_offset(s, vi, i);
      for (int64_t d = 0; d < D; ++d)
        for (int64_t i = 0; i < N; ++i) Q[i * Dp + d] = to_float(q_ptr[d * vi.c + off[i]]);
      for (int64_t i = 0; i < N; ++i) {
        off[i] = attn_token_offset(s, vdo, i);
        off2[i] = attn_token_offset(s, vo, i);
        delta[i] = 0.f;
        lse2[i] = lse_row[i] * kLog2e;
      }
      for (int64_t d = 0; d < D; ++d)
        for (int64_t i = 0; i < N; ++i) {
          const float g_o = to_float(do_ptr[d * vdo.c + off[i]]);
          dO[i * Dp + d] = g_o;
          delta[i] += g_o * to_float(o_ptr[d * vo.c + off2[i]]);  // delta_i = dO_i . O_i
        }
      std::fill(dQ.begin(), dQ.end(), 0.f);

      for (int64_t j0 = 0; j0 < N; j0 += kBN) {
        const int64_t n = std::min(kBN, N - j0);
        for (int64_t j = 0; j < n; ++j) off[j] = attn_token_offset(s, vi, j0 + j);
        if (n < kBN) {
          std::fill(Kt.begin(), Kt.end(), 0.f);
          std::fill(Vt.begin(), Vt.end(), 0.f);
        }
        for (int64_t d = 0; d < D; ++d)
          for (int64_t j = 0; j < n; ++j) {
            const float kv = to_float(k_ptr[d * vi.c + off[j]]);
            Kt[d * kBN + j] = kv;
            K[j * Dp + d] = kv;
            Vt[d * kBN + j] = to_float(v_ptr[d * vi.c + off[j]]);
          }
        std::fill(dK.begin(), dK.end(), 0.f);
        std::fill(dV.begin(), dV.end(), 0.f);
        for (int64_t i0 = 0; i0 < N; i0 += kBM) {
          const int64_t m = std::min(kBM, N - i0);
          const float* Qi = Q.data() + i0 * Dp;
          const float* dOi = dO.data() + i0 * Dp;
          kern.gemm(m, round16(n), D, Qi, Dp, 1, Kt.data(), kBN, S.data(), kBN, false);
          kern.gemm(m, round16(n), D, dOi, Dp, 1, Vt.data(), kBN, dP.data(), kBN, false);
          kern.backward_tile(m, n, S.data(), dP.data(), lse2.data() + i0, delta.data() + i0, qscale);
          kern.gemm(n, Dp, m, S.data(), 1, kBN, dOi, Dp, dV.data(), Dp, true);   // dV += P^T dO
          kern.gemm(n, Dp, m, dP.data(), 1, kBN, Qi, Dp, dK.data(), Dp, true);   // dK += dS^T Q
          kern.gemm(m, Dp, n, dP.data(), kBN, 1, K.data(), Dp, dQ.data() + i0 * Dp, Dp, true);  // dQ += dS K
        }
        for (int64_t j = 0; j < n; ++j) off[j] = attn_token_offset(s, vdq, j0 + j);
        for (int64_t d = 0; d < D; ++d)
          for (int64_t j = 0; j < n; ++j) {
            dk_ptr[d * vdq.c + off[j]] = from_acc<T>(dK[j * Dp + d] * s.scale);
            dv_ptr[d * vdq.c + off[j]] = from_acc<T>(dV[j * Dp + d]);
          }
      }
      for (int64_t i = 0; i < N; ++i) off[i] = attn_token_offset(s, vdq, i);
      for (int64_t d = 0; d < D; ++d)
        for (int64_t i = 0; i < N; ++i) dq_ptr[d * vdq.c + off[i]] = from_acc<T>(dQ[i * Dp + d] * s.scale);
    }
  }
}

template void backward_tiles<float>(const Kernels&, const float*, const float*, const float*, const float*, float*,
                                      const AttnShape&, const AttnView&, const AttnView&, const AttnView&,
                                      const AttnView&);
template void backward_tiles<half_t>(const Kernels&, const half_t*, const half_t*, const half_t*, const float*, half_t*,
                                       const AttnShape&, const AttnView&, const AttnView&, const AttnView&,
                                       const AttnView&);
template void backward_tiles<bf16_t>(const Kernels&, const bf16_t*, const bf16_t*, const bf16_t*, const float*, bf16_t*,
                                       const AttnShape&, const AttnView&, const AttnView&, const AttnView&,
                                       const AttnView&);

}  // namespace attn_cpu
}  // namespace avfast
