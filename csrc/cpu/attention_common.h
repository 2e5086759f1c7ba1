// Shared by the CPU attention kernels (csrc/cpu/attention*.cpp): the ISA gate, tile sizes and
// constants, the run-time AVX-512 check and per-thread scratch.
//
// AVX-512 code is compiled (through target attributes, so a portable -march still gets it) only for
// x86-64 with GCC or Clang, and not with AVFAST_NO_AVX512 defined: other CPUs build and run the
// portable tiles (AVF_X86_KERNELS is 0 there and no file includes <immintrin.h>).
#pragma once
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__)) && !defined(AVFAST_NO_AVX512)
#define AVF_X86_KERNELS 1
#include <immintrin.h>
#else
#define AVF_X86_KERNELS 0
#endif

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <memory>

#include "avfast/attention.h"
#include "avfast/common.h"

namespace avfast {
namespace attn_cpu {

constexpr int64_t kBM = 64;  // query tile
constexpr int64_t kBN = 64;  // key tile (also the padded width of score tiles)
constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;
constexpr float kNegInf = -std::numeric_limits<float>::infinity();

inline int64_t round16(int64_t x) { return (x + 15) / 16 * 16; }

#if AVF_X86_KERNELS
#define AVF_AVX512 __attribute__((target("avx512f,fma")))
#define AVF_AVX512BW __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,fma,f16c")))

inline bool avx512_usable() {
  static const bool ok = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                         __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
  return ok;
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
#endif  // AVF_X86_KERNELS

}  // namespace attn_cpu
}  // namespace avfast
