// CPU attention forward, tile kernels (see attention_tiles.h).
#include <algorithm>
#include <cmath>
#include <vector>

#include "attention_tiles.h"

namespace avfast {
namespace attn_cpu {

template <typename T>
void forward_tiles(const Kernels& kern, const T* qkv, T* out, float* lse, const AttnShape& s, const AttnView& vi,
                   const AttnView& vo) {
  const int64_t G = attn_groups(s), N = attn_tokens(s), D = s.D, Dp = round16(D), C = s.heads * D;
  const int64_t nqb = (N + kBM - 1) / kBM, tasks = s.B * s.heads * G * nqb;
  const float qscale = s.scale * kLog2e;
#pragma omp parallel
  {
    std::vector<float> Q(kBM * Dp, 0.f), Kt(Dp * kBN, 0.f), V(kBN * Dp, 0.f), S(kBM * kBN), O(kBM * Dp);
    std::vector<float> mrow(kBM), lrow(kBM);
    std::vector<int64_t> qoff(kBM), koff(kBN);
#pragma omp for schedule(dynamic, 1)
    for (int64_t task = 0; task < tasks; ++task) {
      int64_t r = task;
      const int64_t qb = r % nqb; r /= nqb;
      const int64_t g = r % G; r /= G;
      const int64_t h = r % s.heads, b = r / s.heads;
      const T* qb_ptr = qkv + b * vi.b + h * D * vi.c + attn_group_offset(s, vi, g);
      const T* kb_ptr = qb_ptr + C * vi.c;
      const T* vb_ptr = qb_ptr + 2 * C * vi.c;
      const int64_t i0 = qb * kBM, m = std::min(kBM, N - i0);
      for (int64_t i = 0; i < m; ++i) qoff[i] = attn_token_offset(s, vi, i0 + i);
      for (int64_t d = 0; d < D; ++d)
        for (int64_t i = 0; i < m; ++i) Q[i * Dp + d] = to_float(qb_ptr[d * vi.c + qoff[i]]) * qscale;
      std::fill(O.begin(), O.end(), 0.f);
      std::fill(mrow.begin(), mrow.end(), kNegInf);
      std::fill(lrow.begin(), lrow.end(), 0.f);
      for (int64_t j0 = 0; j0 < N; j0 += kBN) {
        const int64_t n = std::min(kBN, N - j0);
        for (int64_t j = 0; j < n; ++j) koff[j] = attn_token_offset(s, vi, j0 + j);
        if (n < kBN) std::fill(Kt.begin(), Kt.end(), 0.f);
        for (int64_t d = 0; d < D; ++d)
          for (int64_t j = 0; j < n; ++j) {
            Kt[d * kBN + j] = to_float(kb_ptr[d * vi.c + koff[j]]);
            V[j * Dp + d] = to_float(vb_ptr[d * vi.c + koff[j]]);
          }
        kern.gemm(m, round16(n), D, Q.data(), Dp, 1, Kt.data(), kBN, S.data(), kBN, false);  // short tiles: N=18
        kern.softmax_tile(m, n, S.data(), mrow.data(), lrow.data(), O.data(), Dp);
        kern.gemm(m, Dp, n, S.data(), kBN, 1, V.data(), Dp, O.data(), Dp, true);
      }
      float* lse_row = lse + ((b * s.heads + h) * G + g) * N + i0;
      for (int64_t i = 0; i < m; ++i) {
        lse_row[i] = (mrow[i] + std::log2(lrow[i])) * kLn2;
        lrow[i] = 1.f / lrow[i];
        qoff[i] = attn_token_offset(s, vo, i0 + i);  // reused for the output's strides
      }
      T* ob = out + b * vo.b + h * D * vo.c + attn_group_offset(s, vo, g);
      for (int64_t d = 0; d < D; ++d)
        for (int64_t i = 0; i < m; ++i) ob[d * vo.c + qoff[i]] = from_acc<T>(O[i * Dp + d] * lrow[i]);
    }
  }
}

template void forward_tiles<float>(const Kernels&, const float*, float*, float*, const AttnShape&, const AttnView&,
                                     const AttnView&);
template void forward_tiles<half_t>(const Kernels&, const half_t*, half_t*, float*, const AttnShape&, const AttnView&,
                                      const AttnView&);
template void forward_tiles<bf16_t>(const Kernels&, const bf16_t*, bf16_t*, float*, const AttnShape&, const AttnView&,
                                      const AttnView&);

}  // namespace attn_cpu
}  // namespace avfast
