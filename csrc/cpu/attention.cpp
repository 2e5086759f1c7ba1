// Temporal-spatial attention on the CPU: flash-style tiled online softmax, OpenMP over tiles.
//
// q, k and v are read straight out of the model's [B, 3C, F, H, W] / [B, 3C, T] tensor through the
// strides in AttnView (no permute/contiguous copy around the kernel); each tile is packed into a
// small fp32 scratch buffer (the "packing" step every BLAS does), so one set of fp32 GEMM
// micro-kernels serves every mode, stride pattern and dtype. Scores live only as BM x BN tiles:
// the N x N matrix is never formed, forward or backward (backward recomputes P from the saved lse).
//
// Forward:  one task per (b, head, group, query tile): loop over key tiles, online softmax in
//           base 2 (q is pre-multiplied by scale * log2 e, running max and sum in fp32).
// Backward: one task per (b, head, group): loop key tiles (dK, dV accumulate in the tile), inner
//           loop query tiles; dQ accumulates in a task-local fp32 buffer. No atomics: deterministic.
//
// The GEMM and exp micro-kernels have an AVX-512 version (chosen at run time) and a portable one.
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

#include "avfast/attention.h"
#include "avfast/common.h"
#include "attention_kernels.h"

namespace avfast {
namespace {

constexpr int64_t kBM = 64;  // query tile
constexpr int64_t kBN = 64;  // key tile (also the padded width of score tiles)
constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;
constexpr float kNegInf = -std::numeric_limits<float>::infinity();

int64_t round16(int64_t x) { return (x + 15) / 16 * 16; }

// C[M][Nc] (=, or += when accumulate) sum_k A(i, k) * B[k][0:Nc], A(i, k) = a[i * ai + k * ak].
// Nc is a multiple of 16; B and C rows are ldb / ldc floats apart.
struct Kernels {
  void (*gemm)(int64_t M, int64_t Nc, int64_t K, const float* a, int64_t ai, int64_t ak, const float* b, int64_t ldb,
               float* c, int64_t ldc, bool accumulate);
  // Forward: one key tile of online softmax. S [m][kBN] scores in log2 units (overwritten with P,
  // zero for columns >= n); running max / sum per row; O rows [m][Dp] rescaled.
  void (*softmax_tile)(int64_t m, int64_t n, float* S, float* mrow, float* lrow, float* O, int64_t Dp);
  // Backward: S -> P = exp2(S * c - lse2[i]), dP -> dS = P * (dP - delta[i]); columns >= n zeroed.
  void (*backward_tile)(int64_t m, int64_t n, float* S, float* dP, const float* lse2, const float* delta, float c);
};

// ---- portable versions ------------------------------------------------------------------------
void gemm_portable(int64_t M, int64_t Nc, int64_t K, const float* a, int64_t ai, int64_t ak, const float* b,
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

void softmax_tile_portable(int64_t m, int64_t n, float* S, float* mrow, float* lrow, float* O, int64_t Dp) {
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

void backward_tile_portable(int64_t m, int64_t n, float* S, float* dP, const float* lse2, const float* delta, float c) {
  for (int64_t i = 0; i < m; ++i) {
    for (int64_t j = 0; j < round16(n); ++j) {
      const float p = j < n ? std::exp2(S[i * kBN + j] * c - lse2[i]) : 0.f;
      S[i * kBN + j] = p;
      dP[i * kBN + j] = p * (dP[i * kBN + j] - delta[i]);
    }
  }
}

// ---- AVX-512 versions -------------------------------------------------------------------------
#define AVF_AVX512 __attribute__((target("avx512f,fma")))

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

AVF_AVX512 void gemm_avx512(int64_t M, int64_t Nc, int64_t K, const float* a, int64_t ai, int64_t ak, const float* b,
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

AVF_AVX512 void softmax_tile_avx512(int64_t m, int64_t n, float* S, float* mrow, float* lrow, float* O, int64_t Dp) {
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

AVF_AVX512 void backward_tile_avx512(int64_t m, int64_t n, float* S, float* dP, const float* lse2, const float* delta,
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

const Kernels& kernels() {
  static const Kernels k = __builtin_cpu_supports("avx512f")
                               ? Kernels{gemm_avx512, softmax_tile_avx512, backward_tile_avx512}
                               : Kernels{gemm_portable, softmax_tile_portable, backward_tile_portable};
  return k;
}

// ---- drivers ----------------------------------------------------------------------------------
template <typename T>
void forward_impl(const T* qkv, T* out, float* lse, const AttnShape& s, const AttnView& vi, const AttnView& vo) {
  const Kernels& kern = kernels();
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

template <typename T>
void backward_impl(const T* dout, const T* qkv, const T* out, const float* lse, T* dqkv, const AttnShape& s,
                   const AttnView& vdo, const AttnView& vi, const AttnView& vo, const AttnView& vdq) {
  const Kernels& kern = kernels();
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

#define AVF_DISPATCH_ATTN(code, ...)                                                   \
  switch (code) {                                                                      \
    case kFloat32: { using scalar_t = float; __VA_ARGS__; break; }                     \
    case kFloat16: { using scalar_t = half_t; __VA_ARGS__; break; }                    \
    case kBFloat16: { using scalar_t = bf16_t; __VA_ARGS__; break; }                   \
    default: throw std::invalid_argument("avfast attention (cpu): unsupported dtype code " + std::to_string(code)); \
  }

}  // namespace

void attention_forward_cpu(int dtype, const void* qkv, void* out, float* lse, const AttnShape& s, const AttnView& vi,
                           const AttnView& vo) {
  AVF_DISPATCH_ATTN(dtype, forward_impl<scalar_t>(static_cast<const scalar_t*>(qkv), static_cast<scalar_t*>(out), lse,
                                                  s, vi, vo));
}

void attention_backward_cpu(int dtype, const void* dout, const void* qkv, const void* out, const float* lse,
                            void* dqkv, const AttnShape& s, const AttnView& vdo, const AttnView& vi,
                            const AttnView& vo, const AttnView& vdq) {
  AVF_DISPATCH_ATTN(dtype, backward_impl<scalar_t>(static_cast<const scalar_t*>(dout), static_cast<const scalar_t*>(qkv),
                                                   static_cast<const scalar_t*>(out), lse,
                                                   static_cast<scalar_t*>(dqkv), s, vdo, vi, vo, vdq));
}

}  // namespace avfast
