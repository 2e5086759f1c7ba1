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
// The GEMM and exp micro-kernels have an AVX-512 version (chosen at run time) and a portable one;
// the lane and column kernels are AVX-512 only. AVX-512 code is compiled (through target
// attributes, so a portable -march still gets it) only for x86-64 with GCC or Clang, and not with
// AVFAST_NO_AVX512 defined: other CPUs build and run the portable tiles. AVFAST_ATTN_CPU_KERNEL=
// portable forces the portable tiles at run time on any machine (tests/test_attention_cpu_portable.py).
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__)) && !defined(AVFAST_NO_AVX512)
#define AVF_X86_KERNELS 1
#include <immintrin.h>
#else
#define AVF_X86_KERNELS 0
#endif

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <initializer_list>
#include <limits>
#include <memory>
#include <stdexcept>
#include <string>
#include <type_traits>
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

#if AVF_X86_KERNELS
// AVFAST_ATTN_CPU_KERNEL, read at every call so that tests can switch it ("" when unset).
std::string forced_kernel() {
  const char* env = std::getenv("AVFAST_ATTN_CPU_KERNEL");
  return env ? env : "";
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

bool avx512_usable() {
  static const bool ok = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                         __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
  return ok;
}
#endif

const Kernels& kernels([[maybe_unused]] bool portable) {
  static const Kernels kPortable{gemm_portable, softmax_tile_portable, backward_tile_portable};
#if AVF_X86_KERNELS
  static const Kernels kAvx512{gemm_avx512, softmax_tile_avx512, backward_tile_avx512};
  if (!portable && avx512_usable()) return kAvx512;
#endif
  return kPortable;
}

#if AVF_X86_KERNELS

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
constexpr int kL = 16;  // lanes

#define AVF_AVX512BW __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,fma,f16c")))

AVF_AVX512BW inline __mmask16 lane_mask(int n) { return n >= kL ? __mmask16(0xffff) : __mmask16((1u << n) - 1u); }

// 16 lanes of T at p, p + ls, ... (n valid, the rest 0) as fp32.
AVF_AVX512BW inline __m512 lanes_load(const float* p, int64_t ls, int n) {
  if (ls == 1) return n == kL ? _mm512_loadu_ps(p) : _mm512_maskz_loadu_ps(lane_mask(n), p);
  alignas(64) float t[kL] = {};
  for (int l = 0; l < n; ++l) t[l] = p[l * ls];
  return _mm512_load_ps(t);
}
AVF_AVX512BW inline __m512 cvt16(__m256i h, half_t*) { return _mm512_cvtph_ps(h); }
AVF_AVX512BW inline __m512 cvt16(__m256i h, bf16_t*) {
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}
template <typename T>
AVF_AVX512BW inline __m512 lanes_load(const T* p, int64_t ls, int n) {
  __m256i h;
  if (ls == 1) {
    h = _mm256_maskz_loadu_epi16(lane_mask(n), p);
  } else {
    alignas(32) uint16_t t[kL] = {};
    for (int l = 0; l < n; ++l) t[l] = p[l * ls].bits;
    h = _mm256_load_si256(reinterpret_cast<const __m256i*>(t));
  }
  return cvt16(h, static_cast<T*>(nullptr));
}

AVF_AVX512BW inline void lanes_store(float* p, int64_t ls, int n, __m512 v) {
  if (ls == 1) {
    if (n == kL) _mm512_storeu_ps(p, v); else _mm512_mask_storeu_ps(p, lane_mask(n), v);
    return;
  }
  alignas(64) float t[kL];
  _mm512_store_ps(t, v);
  for (int l = 0; l < n; ++l) p[l * ls] = t[l];
}
// fp32 -> fp16 / bf16 bits, round to nearest even (as half_from_float / bf16_from_float).
AVF_AVX512BW inline __m256i to16(__m512 v, half_t*) { return _mm512_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
AVF_AVX512BW inline __m256i to16(__m512 v, bf16_t*) {
  const __m512i u = _mm512_castps_si512(v);
  const __m512i rounded = _mm512_srli_epi32(
      _mm512_add_epi32(u, _mm512_add_epi32(_mm512_set1_epi32(0x7fff),
                                           _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1)))), 16);
  const __mmask16 nan = _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
  const __m512i quiet = _mm512_or_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(0x40));
  return _mm512_cvtepi32_epi16(_mm512_mask_mov_epi32(rounded, nan, quiet));
}
template <typename T>
AVF_AVX512BW inline void lanes_store(T* p, int64_t ls, int n, __m512 v) {
  const __m256i h = to16(v, static_cast<T*>(nullptr));
  if (ls == 1) {
    _mm256_mask_storeu_epi16(p, lane_mask(n), h);
    return;
  }
  alignas(32) uint16_t t[kL];
  _mm256_store_si256(reinterpret_cast<__m256i*>(t), h);
  for (int l = 0; l < n; ++l) p[l * ls].bits = t[l];
}

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

AVF_AVX512BW void lane_gemm(int64_t M, int64_t Nc, int64_t K, const float* a, int64_t ai, int64_t ak, const float* b,
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

// Per-thread scratch, 64-byte aligned and left uninitialised (every kernel writes before it reads;
// zero-filling the lane kernels' ~300 KB per thread per call cost ~10% at temporal 8x8).
struct AlignedScratch {
  std::unique_ptr<float[]> buf;
  float* p(int64_t floats) {
    buf.reset(new float[floats + 16]);
    return reinterpret_cast<float*>((reinterpret_cast<uintptr_t>(buf.get()) + 63) & ~uintptr_t(63));
  }
};

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

// ---- column kernels: queries in the vector lanes, for tokens contiguous in memory ----------------
//
// Spatial, joint and audio tokens are contiguous (the H*W, F*H*W or T axis has stride 1), and q, k,
// v are stored [d][token]. Computing the transposed score tile S^T[key j][query i] makes every
// operand fall out of that layout with no packing or transposing: S^T = K^T Q broadcasts k[d][j]
// and loads 16 queries q[d][i..i+15] as a vector; the softmax runs down the key axis, one query per
// lane (vertical max / exp / sum); O^T[d][i] += sum_j v[d][j] P^T[j][i] broadcasts v and writes O^T
// in the output's own [d][token] layout. fp32 inputs are read in place; fp16 / bf16 tiles (and a
// ragged last query tile) are converted into small fp32 scratch tiles in the same layout.
constexpr int64_t kCM = 64;   // queries per task (4 vectors)
constexpr int64_t kCN = 128;  // keys per score tile

bool flat_tokens(const AttnShape& s, const AttnView& v) {
  return (s.n[2] == 1 || v.n[2] == 1) && (s.n[1] == 1 || v.n[1] == s.n[2]) &&
         (s.n[0] == 1 || v.n[0] == s.n[1] * s.n[2]);
}

// dst[d][0:round16(cols)] (row stride ld) = src[d * c + 0:cols] as fp32, zero-padded.
template <typename T>
AVF_AVX512BW void pack_rows(float* dst, int64_t ld, const T* src, int64_t c, int64_t cols, int64_t D) {
  for (int64_t d = 0; d < D; ++d)
    for (int64_t j = 0; j < cols; j += kL)
      _mm512_storeu_ps(dst + d * ld + j, lanes_load(src + d * c + j, 1, int(std::min<int64_t>(kL, cols - j))));
}

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

#endif  // AVF_X86_KERNELS

// Which CPU kernel: lanes (N <= 64 tokens and >= 16 groups adjacent in memory: temporal mode),
// else columns (tokens contiguous: spatial, joint, audio), else the packed tiles (any strides).
// AVFAST_ATTN_CPU_KERNEL=lanes|cols|tiles forces one where it applies, =portable the tiles with the
// portable micro-kernels (the tests cover each).
enum class Path { kLanes, kCols, kTiles, kPortable };
Path choose_path([[maybe_unused]] const AttnShape& s, [[maybe_unused]] const AttnView& vi,
                 [[maybe_unused]] const AttnView& vo) {
#if AVF_X86_KERNELS
  const std::string force = forced_kernel();
  if (force == "portable" || !avx512_usable()) return Path::kPortable;
  const bool lanes_ok = attn_tokens(s) <= kLaneMaxN, cols_ok = flat_tokens(s, vi) && flat_tokens(s, vo);
  if (force == "lanes" && lanes_ok) return Path::kLanes;
  if (force == "cols" && cols_ok) return Path::kCols;
  if (force == "tiles") return Path::kTiles;
  // Spatial mode's groups are frames H*W apart: gathering them into lanes loses to the columns.
  if (lanes_ok && attn_groups(s) >= kL && lane_stride(s, vi) == 1) return Path::kLanes;
  return cols_ok ? Path::kCols : Path::kTiles;
#else
  return Path::kPortable;
#endif
}

// ---- drivers ----------------------------------------------------------------------------------
template <typename T>
void forward_impl(const T* qkv, T* out, float* lse, const AttnShape& s, const AttnView& vi, const AttnView& vo) {
  const Path path = choose_path(s, vi, vo);
#if AVF_X86_KERNELS
  if (path == Path::kLanes) return forward_lanes(qkv, out, lse, s, vi, vo);
  if (path == Path::kCols) return forward_cols(qkv, out, lse, s, vi, vo);
#endif
  const Kernels& kern = kernels(path == Path::kPortable);
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
  const Path path = choose_path(s, vi, vdq);
#if AVF_X86_KERNELS
  const bool cols_ok = flat_tokens(s, vdo) && flat_tokens(s, vo) && flat_tokens(s, vdq);
  if (path == Path::kCols && cols_ok) return backward_cols(dout, qkv, out, lse, dqkv, s, vdo, vi, vo, vdq);
  if (path == Path::kLanes) return backward_lanes(dout, qkv, out, lse, dqkv, s, vdo, vi, vo, vdq);
#endif
  const Kernels& kern = kernels(path == Path::kPortable);
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
