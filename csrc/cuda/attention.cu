// Temporal-spatial attention on CUDA: flash-attention-2 style tiled kernels, fp32 FMA in shared memory.
//
// Geometry in avfast/attention.h: q, k, v are read straight out of the model's [B, 3C, F, H, W] /
// [B, 3C, T] tensor through its strides (token index split into up to three axes, problem index
// into (b, head, group)), and out / grad_qkv are written the same way: no permute or copy.
//
// Every kernel runs 128 threads seen as a 16 x 8 grid (ty, tx); a BM x BN score tile gives thread
// (ty, tx) rows ty + 16a and columns tx + 8b, so a row lives in 8 consecutive lanes of one warp and
// row max / sum are three xor-shuffles (bitwise identical in every lane). Tiles are staged in shared
// memory as fp32 (16-bit inputs widened on load), rows padded to D + 1 floats (no bank conflicts).
//
// Forward  attn_fwd   one block per (b, head, group, query tile): online softmax over key tiles in
//                     base 2 (q pre-multiplied by scale * log2 e, running max and sum in fp32, so
//                     fp16 inputs with large logits cannot overflow); writes out and the natural lse.
// Backward attn_delta delta_i = dO_i . O_i, one thread per query row;
//          attn_dkdv  one block per key tile: loops over query tiles, dK and dV in registers;
//          attn_dq    one block per query tile: loops over key tiles, dQ in registers.
// P is recomputed from the lse in both backward kernels instead of atomically adding dQ: no atomics,
// results are bitwise deterministic. Offsets are int64; grids are 1-D with a grid-stride task loop
// (no 65535 limit). Static shared memory stays under 48 KiB for every (dtype, head dim).
#include <cuda_runtime.h>
#include <cuda_fp16.h>
#include <cuda_bf16.h>

#include <math_constants.h>

#include <stdexcept>
#include <string>

#include "avfast/attention.h"
#include "avfast/common.h"
#include "attention_cuda.h"
#include "device_common.cuh"

namespace avfast {
namespace {

constexpr int kThreads = 128;  // 16 x 8 thread grid
constexpr int kTY = 16, kTX = 8;
constexpr int kDeltaThreads = 256;

// Tile sizes per head dim, chosen for static shared memory < 48 KiB and no spills on sm_80..sm_90.
template <int D> struct FwdTiles;  // BM query rows x BN keys
template <> struct FwdTiles<16> { static constexpr int BM = 64, BN = 64; };
template <> struct FwdTiles<32> { static constexpr int BM = 64, BN = 64; };
template <> struct FwdTiles<64> { static constexpr int BM = 64, BN = 32; };
template <> struct FwdTiles<128> { static constexpr int BM = 32, BN = 16; };
// Short sequences (temporal mode: N = frames, 18 at training length) fill 18 of 64 rows and columns of
// the tiles above, so 92 % of the score tile would be masked work; up to kShortN tokens take one
// 32 x 32 tile instead (56 % filled). Head dim 128 keeps its 32 x 16 tiles: a 32 x 32 tile there needs
// 54 KiB of static shared memory.
constexpr int64_t kShortN = 32;
template <int D> struct ShortFwdTiles { static constexpr int BM = 32, BN = 32; };
template <> struct ShortFwdTiles<128> : FwdTiles<128> {};
template <int D> struct BwdTiles { static constexpr int BM = 32, BN = 32; };
template <> struct BwdTiles<128> { static constexpr int BM = 16, BN = 16; };

// --- shared-memory tiles --------------------------------------------------------------------------
// Rows [t0, t0 + R) of one D-channel block, widened to fp32 and multiplied by `mul`; rows past N
// are zero. Thread tid always loads row tid % R (so its token offset is computed once) and
// channels tid / R, tid / R + 128 / R, ...: consecutive threads read consecutive tokens.
template <int R, int D, typename T>
__device__ __forceinline__ void load_tile(float* __restrict__ dst, const T* __restrict__ base, int64_t sc,
                                          const AttnShape& s, const AttnView& v, int64_t t0, int64_t N, float mul) {
  static_assert(kThreads % R == 0 && R <= kThreads, "tile rows must divide the block");
  constexpr int LD = D + 1;
  const int r = threadIdx.x % R;
  const int64_t t = t0 + r;
  float* row = dst + r * LD;
  if (t < N) {
    const T* src = base + attn_token_offset(s, v, t);
#pragma unroll 4
    for (int d = threadIdx.x / R; d < D; d += kThreads / R) row[d] = load_acc(src + d * sc) * mul;
  } else {
#pragma unroll 4
    for (int d = threadIdx.x / R; d < D; d += kThreads / R) row[d] = 0.f;
  }
}

// The inverse: rows [t0, t0 + R) (those < N) of src [R][D + 1] stored to one channel block.
template <int R, int D, typename T>
__device__ __forceinline__ void store_tile(T* __restrict__ base, int64_t sc, const float* __restrict__ src,
                                           const AttnShape& s, const AttnView& v, int64_t t0, int64_t N) {
  constexpr int LD = D + 1;
  const int r = threadIdx.x % R;
  const int64_t t = t0 + r;
  if (t >= N) return;
  T* dst = base + attn_token_offset(s, v, t);
  const float* row = src + r * LD;
#pragma unroll 4
  for (int d = threadIdx.x / R; d < D; d += kThreads / R) dst[d * sc] = from_acc<T>(row[d]);
}

// --- register micro-tiles -------------------------------------------------------------------------
// acc[a][b] = sum_k A[(ty + 16a) * LDA + k] * B[(tx + 8b) * LDB + k]   (A B^T over K)
template <int RA, int RB, int K, int LDA, int LDB>
__device__ __forceinline__ void gemm_nt(float (&acc)[RA][RB], const float* __restrict__ A,
                                        const float* __restrict__ B, int ty, int tx) {
#pragma unroll
  for (int a = 0; a < RA; ++a)
#pragma unroll
    for (int b = 0; b < RB; ++b) acc[a][b] = 0.f;
#pragma unroll 8
  for (int k = 0; k < K; ++k) {
    float x[RA], y[RB];
#pragma unroll
    for (int a = 0; a < RA; ++a) x[a] = A[(ty + kTY * a) * LDA + k];
#pragma unroll
    for (int b = 0; b < RB; ++b) y[b] = B[(tx + kTX * b) * LDB + k];
#pragma unroll
    for (int a = 0; a < RA; ++a)
#pragma unroll
      for (int b = 0; b < RB; ++b) acc[a][b] = fmaf(x[a], y[b], acc[a][b]);
  }
}

// acc[a][e] += sum_j P[(ty + 16a) * LDP + j] * V[j * LDV + tx + 8e]   (P V over J)
template <int RA, int RE, int J, int LDP, int LDV>
__device__ __forceinline__ void gemm_nn(float (&acc)[RA][RE], const float* __restrict__ P,
                                        const float* __restrict__ V, int ty, int tx) {
#pragma unroll 4
  for (int j = 0; j < J; ++j) {
    float x[RA], y[RE];
#pragma unroll
    for (int a = 0; a < RA; ++a) x[a] = P[(ty + kTY * a) * LDP + j];
#pragma unroll
    for (int e = 0; e < RE; ++e) y[e] = V[j * LDV + tx + kTX * e];
#pragma unroll
    for (int a = 0; a < RA; ++a)
#pragma unroll
      for (int e = 0; e < RE; ++e) acc[a][e] = fmaf(x[a], y[e], acc[a][e]);
  }
}

// Max / sum over the 8 lanes (tx = 0..7) that share a row; every lane gets the same bits.
__device__ __forceinline__ float row_max(float x) {
#pragma unroll
  for (int o = 1; o < kTX; o <<= 1) x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, o));
  return x;
}
__device__ __forceinline__ float row_sum(float x) {
#pragma unroll
  for (int o = 1; o < kTX; o <<= 1) x += __shfl_xor_sync(0xffffffffu, x, o);
  return x;
}

// --- forward --------------------------------------------------------------------------------------
template <typename T, int D, typename Tiles>
__global__ void __launch_bounds__(kThreads, 1) attn_fwd(const T* __restrict__ qkv, T* __restrict__ out,
                                                     float* __restrict__ lse, AttnShape s, AttnView vi, AttnView vo,
                                                     float qk_scale, int64_t tasks) {
  constexpr int BM = Tiles::BM, BN = Tiles::BN, LD = D + 1, LDP = BN + 1;
  constexpr int RM = BM / kTY, RN = BN / kTX, RD = D / kTX;
  __shared__ float Qs[BM * LD];  // q * scale * log2 e; reused for the output tile
  __shared__ float Ks[BN * LD];
  __shared__ float Vs[BN * LD];
  __shared__ float Ps[BM * LDP];
  const int ty = threadIdx.x / kTX, tx = threadIdx.x % kTX;
  const int64_t N = attn_tokens(s), C = s.heads * D, nqb = (N + BM - 1) / BM;

  for (int64_t task = blockIdx.x; task < tasks; task += gridDim.x) {
    const int64_t p = task / nqb, q0 = (task % nqb) * BM;
    const T* qb = qkv + attn_problem_offset(s, vi, p);
    const T* kb = qb + C * vi.c;
    const T* vb = qb + 2 * C * vi.c;
    __syncthreads();  // the previous task's output store is done with Qs
    load_tile<BM, D>(Qs, qb, vi.c, s, vi, q0, N, qk_scale);

    float m[RM], l[RM], o[RM][RD];
#pragma unroll
    for (int a = 0; a < RM; ++a) {
      m[a] = -CUDART_INF_F;
      l[a] = 0.f;
#pragma unroll
      for (int e = 0; e < RD; ++e) o[a][e] = 0.f;
    }
    for (int64_t k0 = 0; k0 < N; k0 += BN) {
      __syncthreads();  // the previous tile's P V is done with Ks, Vs, Ps
      load_tile<BN, D>(Ks, kb, vi.c, s, vi, k0, N, 1.f);
      load_tile<BN, D>(Vs, vb, vi.c, s, vi, k0, N, 1.f);
      __syncthreads();
      float sc[RM][RN];  // scores in log2 units
      gemm_nt<RM, RN, D, LD, LD>(sc, Qs, Ks, ty, tx);
#pragma unroll
      for (int b = 0; b < RN; ++b)
        if (k0 + tx + kTX * b >= N)
#pragma unroll
          for (int a = 0; a < RM; ++a) sc[a][b] = -CUDART_INF_F;
#pragma unroll
      for (int a = 0; a < RM; ++a) {
        float mx = sc[a][0];
#pragma unroll
        for (int b = 1; b < RN; ++b) mx = fmaxf(mx, sc[a][b]);
        const float alpha = attn_online_rescale(m[a], row_max(mx));  // key k0 is valid: max finite
        float sum = 0.f;
#pragma unroll
        for (int b = 0; b < RN; ++b) {
          const float pr = exp2f(sc[a][b] - m[a]);  // masked keys: exp2(-inf) = 0
          sum += pr;
          Ps[(ty + kTY * a) * LDP + tx + kTX * b] = pr;
        }
        l[a] = l[a] * alpha + row_sum(sum);
#pragma unroll
        for (int e = 0; e < RD; ++e) o[a][e] *= alpha;
      }
      __syncthreads();
      gemm_nn<RM, RD, BN, LDP, LD>(o, Ps, Vs, ty, tx);
    }

    // Normalise, stage the tile in Qs (every reader of Qs passed the barrier before P V) and store
    // it token-major so that consecutive threads write consecutive tokens.
#pragma unroll
    for (int a = 0; a < RM; ++a) {
      const int r = ty + kTY * a;
      const float inv = 1.f / l[a];
#pragma unroll
      for (int e = 0; e < RD; ++e) Qs[r * LD + tx + kTX * e] = o[a][e] * inv;
      if (tx == 0 && q0 + r < N) lse[p * N + q0 + r] = attn_lse(m[a], l[a]);
    }
    __syncthreads();
    store_tile<BM, D>(out + attn_problem_offset(s, vo, p), vo.c, Qs, s, vo, q0, N);
  }
}

// --- backward -------------------------------------------------------------------------------------
template <typename T>
__global__ void __launch_bounds__(kDeltaThreads) attn_delta(const T* __restrict__ dout, const T* __restrict__ out,
                                                            float* __restrict__ delta, AttnShape s, AttnView vdo,
                                                            AttnView vo, int64_t rows) {
  const int64_t N = attn_tokens(s);
  for (int64_t r = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; r < rows; r += int64_t(gridDim.x) * blockDim.x) {
    const int64_t p = r / N, i = r % N;
    const T* g = dout + attn_problem_offset(s, vdo, p) + attn_token_offset(s, vdo, i);
    const T* o = out + attn_problem_offset(s, vo, p) + attn_token_offset(s, vo, i);
    float acc = 0.f;
    for (int64_t d = 0; d < s.D; ++d) acc = fmaf(load_acc(g + d * vdo.c), load_acc(o + d * vo.c), acc);
    delta[r] = acc;
  }
}

// One block per key tile: S^T = K Q^T, P^T, dP^T = V dO^T, dS^T; dV += P^T dO, dK += dS^T Q.
template <typename T, int D>
__global__ void __launch_bounds__(kThreads, 1) attn_dkdv(const T* __restrict__ dout, const T* __restrict__ qkv,
                                                      const float* __restrict__ lse, const float* __restrict__ delta,
                                                      T* __restrict__ dqkv, AttnShape s, AttnView vdo, AttnView vi,
                                                      AttnView vg, float scale, float qk_scale, int64_t tasks) {
  constexpr int BM = BwdTiles<D>::BM, BN = BwdTiles<D>::BN, LD = D + 1, LDP = BM + 1;
  constexpr int RJ = BN / kTY, RI = BM / kTX, RD = D / kTX;
  __shared__ float Ks[BN * LD];  // reused for the dK tile
  __shared__ float Vs[BN * LD];  // reused for the dV tile
  __shared__ float Qs[BM * LD];
  __shared__ float dOs[BM * LD];
  __shared__ float Ps[BN * LDP];   // P^T
  __shared__ float dSs[BN * LDP];  // dS^T
  __shared__ float Ls[BM], Dl[BM];
  const int ty = threadIdx.x / kTX, tx = threadIdx.x % kTX;
  const int64_t N = attn_tokens(s), C = s.heads * D, nkb = (N + BN - 1) / BN;

  for (int64_t task = blockIdx.x; task < tasks; task += gridDim.x) {
    const int64_t p = task / nkb, k0 = (task % nkb) * BN;
    const T* qb = qkv + attn_problem_offset(s, vi, p);
    const T* gb = dout + attn_problem_offset(s, vdo, p);
    const float* lse_p = lse + p * N;
    const float* delta_p = delta + p * N;
    __syncthreads();  // the previous task's dK / dV store is done with Ks, Vs
    load_tile<BN, D>(Ks, qb + C * vi.c, vi.c, s, vi, k0, N, 1.f);
    load_tile<BN, D>(Vs, qb + 2 * C * vi.c, vi.c, s, vi, k0, N, 1.f);

    float dk[RJ][RD], dv[RJ][RD];
#pragma unroll
    for (int a = 0; a < RJ; ++a)
#pragma unroll
      for (int e = 0; e < RD; ++e) dk[a][e] = dv[a][e] = 0.f;

    for (int64_t q0 = 0; q0 < N; q0 += BM) {
      __syncthreads();  // the previous query tile's dV / dK updates are done with Qs, dOs, Ps, dSs
      load_tile<BM, D>(Qs, qb, vi.c, s, vi, q0, N, 1.f);
      load_tile<BM, D>(dOs, gb, vdo.c, s, vdo, q0, N, 1.f);
      if (threadIdx.x < BM) {
        const bool in = q0 + threadIdx.x < N;
        Ls[threadIdx.x] = in ? lse_p[q0 + threadIdx.x] : 0.f;
        Dl[threadIdx.x] = in ? delta_p[q0 + threadIdx.x] : 0.f;
      }
      __syncthreads();
      float st[RJ][RI], dpt[RJ][RI];
      gemm_nt<RJ, RI, D, LD, LD>(st, Ks, Qs, ty, tx);
      gemm_nt<RJ, RI, D, LD, LD>(dpt, Vs, dOs, ty, tx);
#pragma unroll
      for (int a = 0; a < RJ; ++a) {
        const int j = ty + kTY * a;
        const bool jin = k0 + j < N;
#pragma unroll
        for (int b = 0; b < RI; ++b) {
          const int i = tx + kTX * b;
          const float pr = (jin && q0 + i < N) ? attn_prob(st[a][b] * qk_scale, Ls[i]) : 0.f;
          Ps[j * LDP + i] = pr;
          dSs[j * LDP + i] = attn_dscore(pr, dpt[a][b], Dl[i]);
        }
      }
      __syncthreads();
      gemm_nn<RJ, RD, BM, LDP, LD>(dv, Ps, dOs, ty, tx);
      gemm_nn<RJ, RD, BM, LDP, LD>(dk, dSs, Qs, ty, tx);
    }

    __syncthreads();  // every reader of Ks / Vs is done
#pragma unroll
    for (int a = 0; a < RJ; ++a)
#pragma unroll
      for (int e = 0; e < RD; ++e) {
        Ks[(ty + kTY * a) * LD + tx + kTX * e] = dk[a][e] * scale;
        Vs[(ty + kTY * a) * LD + tx + kTX * e] = dv[a][e];
      }
    __syncthreads();
    T* g = dqkv + attn_problem_offset(s, vg, p);
    store_tile<BN, D>(g + C * vg.c, vg.c, Ks, s, vg, k0, N);
    store_tile<BN, D>(g + 2 * C * vg.c, vg.c, Vs, s, vg, k0, N);
  }
}

// One block per query tile: S = Q K^T, P, dP = dO V^T, dS; dQ += dS K.
template <typename T, int D>
__global__ void __launch_bounds__(kThreads, 1) attn_dq(const T* __restrict__ dout, const T* __restrict__ qkv,
                                                    const float* __restrict__ lse, const float* __restrict__ delta,
                                                    T* __restrict__ dqkv, AttnShape s, AttnView vdo, AttnView vi,
                                                    AttnView vg, float scale, float qk_scale, int64_t tasks) {
  constexpr int BM = BwdTiles<D>::BM, BN = BwdTiles<D>::BN, LD = D + 1, LDS = BN + 1;
  constexpr int RI = BM / kTY, RJ = BN / kTX, RD = D / kTX;
  __shared__ float Qs[BM * LD];  // q * scale * log2 e; reused for the dQ tile
  __shared__ float dOs[BM * LD];
  __shared__ float Ks[BN * LD];
  __shared__ float Vs[BN * LD];
  __shared__ float dSs[BM * LDS];
  __shared__ float Ls[BM], Dl[BM];
  const int ty = threadIdx.x / kTX, tx = threadIdx.x % kTX;
  const int64_t N = attn_tokens(s), C = s.heads * D, nqb = (N + BM - 1) / BM;

  for (int64_t task = blockIdx.x; task < tasks; task += gridDim.x) {
    const int64_t p = task / nqb, q0 = (task % nqb) * BM;
    const T* qb = qkv + attn_problem_offset(s, vi, p);
    __syncthreads();  // the previous task's dQ store is done with Qs
    load_tile<BM, D>(Qs, qb, vi.c, s, vi, q0, N, qk_scale);
    load_tile<BM, D>(dOs, dout + attn_problem_offset(s, vdo, p), vdo.c, s, vdo, q0, N, 1.f);
    if (threadIdx.x < BM) {
      const bool in = q0 + threadIdx.x < N;
      Ls[threadIdx.x] = in ? lse[p * N + q0 + threadIdx.x] : 0.f;
      Dl[threadIdx.x] = in ? delta[p * N + q0 + threadIdx.x] : 0.f;
    }
    float dq[RI][RD];
#pragma unroll
    for (int a = 0; a < RI; ++a)
#pragma unroll
      for (int e = 0; e < RD; ++e) dq[a][e] = 0.f;

    for (int64_t k0 = 0; k0 < N; k0 += BN) {
      __syncthreads();  // the previous key tile's dQ update is done with Ks, dSs
      load_tile<BN, D>(Ks, qb + C * vi.c, vi.c, s, vi, k0, N, 1.f);
      load_tile<BN, D>(Vs, qb + 2 * C * vi.c, vi.c, s, vi, k0, N, 1.f);
      __syncthreads();
      float sc[RI][RJ], dp[RI][RJ];
      gemm_nt<RI, RJ, D, LD, LD>(sc, Qs, Ks, ty, tx);
      gemm_nt<RI, RJ, D, LD, LD>(dp, dOs, Vs, ty, tx);
#pragma unroll
      for (int a = 0; a < RI; ++a) {
        const int i = ty + kTY * a;
#pragma unroll
        for (int b = 0; b < RJ; ++b) {
          const int j = tx + kTX * b;
          const float pr = (k0 + j < N) ? attn_prob(sc[a][b], Ls[i]) : 0.f;
          dSs[i * LDS + j] = attn_dscore(pr, dp[a][b], Dl[i]);
        }
      }
      __syncthreads();
      gemm_nn<RI, RD, BN, LDS, LD>(dq, dSs, Ks, ty, tx);
    }

    __syncthreads();  // every reader of Qs is done
#pragma unroll
    for (int a = 0; a < RI; ++a)
#pragma unroll
      for (int e = 0; e < RD; ++e) Qs[(ty + kTY * a) * LD + tx + kTX * e] = dq[a][e] * scale;
    __syncthreads();
    store_tile<BM, D>(dqkv + attn_problem_offset(s, vg, p), vg.c, Qs, s, vg, q0, N);
  }
}

// --- launchers ------------------------------------------------------------------------------------
void check(cudaError_t err, const char* what) {
  if (err != cudaSuccess)
    throw std::runtime_error(std::string("avfast CUDA attention ") + what + ": " + cudaGetErrorString(err));
}

// Blocks for `tasks` independent tiles: a grid-stride loop covers anything past 2^30.
unsigned grid_for(int64_t tasks) {
  constexpr int64_t kMax = int64_t(1) << 30;
  return unsigned(tasks < 1 ? 1 : (tasks < kMax ? tasks : kMax));
}

int64_t problems(const AttnShape& s) { return s.B * s.heads * attn_groups(s); }
int64_t cdiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

template <typename T, int D, typename Tiles>
void forward_tiles(const void* qkv, void* out, float* lse, const AttnShape& s, const AttnView& vi, const AttnView& vo,
                   cudaStream_t st) {
  const int64_t tasks = problems(s) * cdiv(attn_tokens(s), Tiles::BM);
  auto* fwd = attn_fwd<T, D, Tiles>;
  AVF_LAUNCH(fwd, grid_for(tasks), kThreads, st, static_cast<const T*>(qkv), static_cast<T*>(out), lse, s, vi, vo,
             attn_log2_scale(s.scale), tasks);
  check(cudaGetLastError(), "forward");
}

template <typename T, int D>
void forward_impl(const void* qkv, void* out, float* lse, const AttnShape& s, const AttnView& vi, const AttnView& vo,
                  cudaStream_t st) {
  if (attn_tokens(s) <= kShortN)
    forward_tiles<T, D, ShortFwdTiles<D>>(qkv, out, lse, s, vi, vo, st);
  else
    forward_tiles<T, D, FwdTiles<D>>(qkv, out, lse, s, vi, vo, st);
}

template <typename T, int D>
void backward_impl(const void* dout, const void* qkv, const void* out, const float* lse, float* delta, void* dqkv,
                   const AttnShape& s, const AttnView& vdo, const AttnView& vi, const AttnView& vo,
                   const AttnView& vg, cudaStream_t st) {
  const int64_t N = attn_tokens(s), rows = problems(s) * N;
  const T* g = static_cast<const T*>(dout);
  const T* x = static_cast<const T*>(qkv);
  T* dx = static_cast<T*>(dqkv);
  auto* dlt = attn_delta<T>;
  AVF_LAUNCH(dlt, grid_for(cdiv(rows, kDeltaThreads)), kDeltaThreads, st, g, static_cast<const T*>(out), delta, s,
             vdo, vo, rows);
  check(cudaGetLastError(), "backward delta");
  const float qk = attn_log2_scale(s.scale);
  const int64_t kv_tasks = problems(s) * cdiv(N, BwdTiles<D>::BN);
  auto* dkdv = attn_dkdv<T, D>;
  AVF_LAUNCH(dkdv, grid_for(kv_tasks), kThreads, st, g, x, lse, delta, dx, s, vdo, vi, vg, s.scale, qk, kv_tasks);
  check(cudaGetLastError(), "backward dK/dV");
  const int64_t q_tasks = problems(s) * cdiv(N, BwdTiles<D>::BM);
  auto* dq = attn_dq<T, D>;
  AVF_LAUNCH(dq, grid_for(q_tasks), kThreads, st, g, x, lse, delta, dx, s, vdo, vi, vg, s.scale, qk, q_tasks);
  check(cudaGetLastError(), "backward dQ");
}

// dtype code x head dim -> fn<T, D>(args...).
#define AVF_ATTN_DISPATCH(dtype, D, FN, ...)                                                                  \
  do {                                                                                                        \
    auto by_dim = [&](auto tag) {                                                                             \
      using scalar_t = decltype(tag);                                                                         \
      switch (D) {                                                                                            \
        case 16: FN<scalar_t, 16>(__VA_ARGS__); break;                                                        \
        case 32: FN<scalar_t, 32>(__VA_ARGS__); break;                                                        \
        case 64: FN<scalar_t, 64>(__VA_ARGS__); break;                                                        \
        case 128: FN<scalar_t, 128>(__VA_ARGS__); break;                                                      \
        default:                                                                                              \
          throw std::invalid_argument("avfast CUDA attention: head_dim must be 16, 32, 64 or 128, got " +     \
                                      std::to_string(D));                                                     \
      }                                                                                                       \
    };                                                                                                        \
    switch (dtype) {                                                                                          \
      case kFloat32: by_dim(float{}); break;                                                                  \
      case kFloat16: by_dim(half_t{}); break;                                                                 \
      case kBFloat16: by_dim(bf16_t{}); break;                                                                \
      default:                                                                                                \
        throw std::invalid_argument("avfast CUDA attention: dtype must be float32, float16 or bfloat16 (code " \
                                    "0, 1, 2), got code " + std::to_string(dtype));                           \
    }                                                                                                         \
  } while (0)

}  // namespace

void attention_forward_cuda(int dtype, const void* qkv, void* out, float* lse, const AttnShape& s,
                            const AttnView& vi, const AttnView& vo, void* stream) {
  auto st = static_cast<cudaStream_t>(stream);
  AVF_ATTN_DISPATCH(dtype, s.D, forward_impl, qkv, out, lse, s, vi, vo, st);
}

void attention_backward_cuda(int dtype, const void* dout, const void* qkv, const void* out, const float* lse,
                             float* delta, void* dqkv, const AttnShape& s, const AttnView& vdo, const AttnView& vi,
                             const AttnView& vo, const AttnView& vg, void* stream) {
  auto st = static_cast<cudaStream_t>(stream);
  AVF_ATTN_DISPATCH(dtype, s.D, backward_impl, dout, qkv, out, lse, delta, dqkv, s, vdo, vi, vo, vg, st);
}

}  // namespace avfast
