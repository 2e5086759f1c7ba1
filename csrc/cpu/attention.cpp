// Temporal-spatial attention on the CPU: flash-style tiled online softmax, OpenMP over tasks. This
// file chooses a kernel family per call and dispatches the dtype; the kernels live one family and
// direction per file, as in flash-attention:
//
//   attention_common.h             ISA gate, tile sizes, constants, AVX-512 check, per-thread scratch
//   microkernels.h                 the micro-kernel table of the tile kernels (AVX-512 or portable):
//     microkernels_portable.h        fp32 GEMM, softmax tile, backward P / dS tile, any CPU
//     microkernels_avx512.h          the same with AVX-512 register blocking and a vector exp2
//   vec16_avx512.h                 16-lane fp32 / fp16 / bf16 loads and stores
//   attention_tiles.h              tile kernels, any strides:  attention_{fwd,bwd}_tiles.cpp
//   attention_lanes.h              lane kernels, temporal:     attention_{fwd,bwd}_lanes.cpp
//   attention_cols.h               column kernels, flat tokens: attention_{fwd,bwd}_cols.cpp
//
// q, k and v are read straight out of the model's [B, 3C, F, H, W] / [B, 3C, T] tensor through the
// strides in AttnView (no permute/contiguous copy around the kernel). The GEMM and exp micro-kernels
// have an AVX-512 version (chosen at run time) and a portable one; the lane and column kernels are
// AVX-512 only. AVX-512 code is compiled only for x86-64 with GCC or Clang, and not with
// AVFAST_NO_AVX512 defined: other CPUs build and run the portable tiles. AVFAST_ATTN_CPU_KERNEL=
// portable forces the portable tiles at run time on any machine (tests/test_attention_cpu_portable.py).
#include <cstdlib>
#include <stdexcept>
#include <string>

#include "attention_common.h"
#include "attention_cols.h"
#include "attention_cpu.h"
#include "attention_lanes.h"
#include "attention_tiles.h"
#include "microkernels.h"

namespace avfast {
namespace {

using namespace attn_cpu;  // NOLINT

#if AVF_X86_KERNELS
// AVFAST_ATTN_CPU_KERNEL, read at every call so that tests can switch it ("" when unset).
std::string forced_kernel() {
  const char* env = std::getenv("AVFAST_ATTN_CPU_KERNEL");
  return env ? env : "";
}
#endif

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

template <typename T>
void forward_impl(const T* qkv, T* out, float* lse, const AttnShape& s, const AttnView& vi, const AttnView& vo) {
  const Path path = choose_path(s, vi, vo);
#if AVF_X86_KERNELS
  if (path == Path::kLanes) return forward_lanes(qkv, out, lse, s, vi, vo);
  if (path == Path::kCols) return forward_cols(qkv, out, lse, s, vi, vo);
#endif
  const Kernels& kern = kernels(path == Path::kPortable);
  forward_tiles(kern, qkv, out, lse, s, vi, vo);
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
  backward_tiles(kern, dout, qkv, out, lse, dqkv, s, vdo, vi, vo, vdq);
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
