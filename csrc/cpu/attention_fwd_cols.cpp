// CPU attention forward, column kernels (see attention_cols.h).
#include <algorithm>
#include <cmath>
#include <type_traits>

#include "attention_cols.h"

#if AVF_X86_KERNELS
namespace avfast {
namespace attn_cpu {

template <typename T>
AVF_AVX512BW void forward_cols(const T* qkv, T* out, float* lse, const AttnShape& s, const AttnView& vi,
                               const AttnView& vo) {
  constexpr bool kDirect = std::is_same<T, float>::value;  // fp32: k, v read in place
  const int64_t G = attn_groups(s), N = attn_tokens(s), D = s.D, C = s.heads * D;
  const int64_t nqb = (N + kCM - 1) / kCM, tasks = s.B * s.heads * G * nqb;
  const float qscale = s.scale * kLog2e;
#pragma omp parallel
  {
    AlignedScratch scratch;
    float* Qs = scratch.p(D * kCM + 2 * D * kCN + kCN * kCM + D * kCM + 3 * kCM);
    float* Ks = Qs + D * kCM;
    float* Vs = Ks + D * kCN;
    float* St = Vs + D * kCN;  // S^T / P^T [key][query]
    float* Ot = St + kCN * kCM;  // O^T [d][query]
    float* mrow = Ot + D * kCM;  // running max (log2 units), sum, per query
    float* lrow = mrow + kCM;
    float* tmp = lrow + kCM;
#pragma omp for schedule(dynamic, 1)
    for (int64_t task = 0; task < tasks; ++task) {
      int64_t r = task;
      const int64_t qb = r % nqb; r /= nqb;
      const int64_t g = r % G; r /= G;
      const int64_t h = r % s.heads, b = r / s.heads;
      const T* q_ptr = qkv + b * vi.b + h * D * vi.c + attn_group_offset(s, vi, g);
      const T* k_ptr = q_ptr + C * vi.c;
      const T* v_ptr = q_ptr + 2 * C * vi.c;
      const int64_t i0 = qb * kCM, m = std::min(kCM, N - i0), mp = round16(m), nv = mp / kL;
      const float* Q;
      int64_t ldq;
      if (kDirect && m == kCM) {
        Q = reinterpret_cast<const float*>(q_ptr + i0), ldq = vi.c;
      } else {
        pack_rows(Qs, kCM, q_ptr + i0, vi.c, m, D);
        Q = Qs, ldq = kCM;
      }
      for (int64_t i = 0; i < mp; i += kL) {
        _mm512_storeu_ps(mrow + i, _mm512_set1_ps(kNegInf));
        _mm512_storeu_ps(lrow + i, _mm512_setzero_ps());
      }
      for (int64_t d = 0; d < D; ++d)
        for (int64_t i = 0; i < mp; i += kL) _mm512_storeu_ps(Ot + d * kCM + i, _mm512_setzero_ps());
      for (int64_t j0 = 0; j0 < N; j0 += kCN) {
        const int64_t n = std::min(kCN, N - j0);
        const float *Kp, *Vp;
        int64_t ldk;
        if (kDirect) {
          Kp = reinterpret_cast<const float*>(k_ptr + j0), Vp = reinterpret_cast<const float*>(v_ptr + j0);
          ldk = vi.c;
        } else {
          pack_rows(Ks, kCN, k_ptr + j0, vi.c, n, D);
          pack_rows(Vs, kCN, v_ptr + j0, vi.c, n, D);
          Kp = Ks, Vp = Vs, ldk = kCN;
        }
        // S^T[j][i] = sum_d k[d][j] q[d][i]
        gemm_avx512(n, mp, D, Kp, 1, ldk, Q, ldq, St, kCM, false);
        // Online softmax down the key axis, 16 queries per vector.
        const __m512 vqs = _mm512_set1_ps(qscale);
        for (int64_t v = 0; v < nv; ++v) {
          float* col = St + v * kL;
          __m512 mx = _mm512_loadu_ps(mrow + v * kL);
          for (int64_t j = 0; j < n; ++j) {
            const __m512 t = _mm512_mul_ps(_mm512_loadu_ps(col + j * kCM), vqs);
            _mm512_storeu_ps(col + j * kCM, t);
            mx = _mm512_max_ps(mx, t);
          }
          const __m512 alpha = exp2_512(_mm512_sub_ps(_mm512_loadu_ps(mrow + v * kL), mx));
          __m512 sum = _mm512_setzero_ps();
          for (int64_t j = 0; j < n; ++j) {
            const __m512 p = exp2_512(_mm512_sub_ps(_mm512_loadu_ps(col + j * kCM), mx));
            _mm512_storeu_ps(col + j * kCM, p);
            sum = _mm512_add_ps(sum, p);
          }
          _mm512_storeu_ps(lrow + v * kL, _mm512_fmadd_ps(_mm512_loadu_ps(lrow + v * kL), alpha, sum));
          _mm512_storeu_ps(mrow + v * kL, mx);
          if (j0 > 0)
            for (int64_t d = 0; d < D; ++d)
              _mm512_storeu_ps(Ot + d * kCM + v * kL, _mm512_mul_ps(_mm512_loadu_ps(Ot + d * kCM + v * kL), alpha));
        }
        // O^T[d][i] += sum_j v[d][j] P^T[j][i]
        gemm_avx512(D, mp, n, Vp, ldk, 1, St, kCM, Ot, kCM, true);
      }
      T* o_ptr = out + b * vo.b + h * D * vo.c + attn_group_offset(s, vo, g) + i0;
      float* lse_row = lse + ((b * s.heads + h) * G + g) * N + i0;
      for (int64_t v = 0; v < nv; ++v) {
        const int cnt = int(std::min<int64_t>(kL, m - v * kL));
        const __m512 l = _mm512_loadu_ps(lrow + v * kL);
        const __m512 inv = _mm512_div_ps(_mm512_set1_ps(1.f), l);
        for (int64_t d = 0; d < D; ++d)
          lanes_store(o_ptr + d * vo.c + v * kL, 1, cnt, _mm512_mul_ps(_mm512_loadu_ps(Ot + d * kCM + v * kL), inv));
        _mm512_storeu_ps(tmp, l);
        for (int k = 0; k < cnt; ++k) tmp[k] = (mrow[v * kL + k] + std::log2(tmp[k])) * kLn2;
        _mm512_mask_storeu_ps(lse_row + v * kL, lane_mask(cnt), _mm512_loadu_ps(tmp));
      }
    }
  }
}

template void forward_cols<float>(const float*, float*, float*, const AttnShape&, const AttnView&, const AttnView&);
template void forward_cols<half_t>(const half_t*, half_t*, float*, const AttnShape&, const AttnView&, const AttnView&);
template void forward_cols<bf16_t>(const bf16_t*, bf16_t*, float*, const AttnShape&, const AttnView&, const AttnView&);

}  // namespace attn_cpu
}  // namespace avfast
#endif  // AVF_X86_KERNELS
