// CPU attention, column kernels (AVX-512 only): queries in the vector lanes, for problems whose
// tokens are contiguous in memory. Forward in attention_fwd_cols.cpp, backward in
// attention_bwd_cols.cpp.
#pragma once
#include <algorithm>
#include <cstdint>

#include "attention_common.h"
#include "microkernels_avx512.h"
#include "vec16_avx512.h"

#if AVF_X86_KERNELS
namespace avfast {
namespace attn_cpu {

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

inline bool flat_tokens(const AttnShape& s, const AttnView& v) {
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

// out, lse as attention_forward_cpu (attention_cpu.h); tokens of qkv and out flat (flat_tokens).
template <typename T>
AVF_AVX512BW void forward_cols(const T* qkv, T* out, float* lse, const AttnShape& s, const AttnView& vi,
                              const AttnView& vo);
// dqkv as attention_backward_cpu; tokens of every view flat.
template <typename T>
AVF_AVX512BW void backward_cols(const T* dout, const T* qkv, const T* out, const float* lse, T* dqkv,
                               const AttnShape& s, const AttnView& vdo, const AttnView& vi, const AttnView& vo,
                               const AttnView& vdq);

}  // namespace attn_cpu
}  // namespace avfast
#endif  // AVF_X86_KERNELS
