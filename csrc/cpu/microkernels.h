// The micro-kernel table the tile kernels run on: AVX-512 where the CPU has it, else (or with
// AVFAST_ATTN_CPU_KERNEL=portable) the portable versions.
#pragma once
#include "attention_common.h"
#include "microkernels_avx512.h"
#include "microkernels_portable.h"

namespace avfast {
namespace attn_cpu {

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

inline const Kernels& kernels([[maybe_unused]] bool portable) {
  static const Kernels kPortable{gemm_portable, softmax_tile_portable, backward_tile_portable};
#if AVF_X86_KERNELS
  static const Kernels kAvx512{gemm_avx512, softmax_tile_avx512, backward_tile_avx512};
  if (!portable && avx512_usable()) return kAvx512;
#endif
  return kPortable;
}

}  // namespace attn_cpu
}  // namespace avfast
