// 16-lane AVX-512 loads and stores of fp32 / fp16 / bf16 (widened to and rounded from fp32), strided
// or masked: used by the lane and column kernels.
#pragma once
#include <cstdint>

#include "attention_common.h"

#if AVF_X86_KERNELS
namespace avfast {
namespace attn_cpu {

constexpr int kL = 16;  // lanes

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

}  // namespace attn_cpu
}  // namespace avfast
#endif  // AVF_X86_KERNELS
