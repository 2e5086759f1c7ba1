// CPU attention, tile kernels: the path for any strides and any CPU. Each query / key tile is
// packed into a small fp32 scratch buffer (the "packing" step every BLAS does), so one set of fp32
// micro-kernels (microkernels.h: AVX-512 or portable) serves every mode, stride pattern and dtype.
// Scores live only as kBM x kBN tiles: the N x N matrix is never formed, forward or backward
// (backward recomputes P from the saved lse).
//
// Forward  (attention_fwd_tiles.cpp): one task per (b, head, group, query tile): loop over key
//          tiles, online softmax in base 2 (q is pre-multiplied by scale * log2 e, running max and
//          sum in fp32).
// Backward (attention_bwd_tiles.cpp): one task per (b, head, group): loop key tiles (dK, dV
//          accumulate in the tile), inner loop query tiles; dQ accumulates in a task-local fp32
//          buffer. No atomics: deterministic.
#pragma once
#include "avfast/attention.h"
#include "microkernels.h"

namespace avfast {
namespace attn_cpu {

// out, lse as attention_forward_cpu (attention_cpu.h).
template <typename T>
void forward_tiles(const Kernels& kern, const T* qkv, T* out, float* lse, const AttnShape& s, const AttnView& vi,
                   const AttnView& vo);
// dqkv as attention_backward_cpu.
template <typename T>
void backward_tiles(const Kernels& kern, const T* dout, const T* qkv, const T* out, const float* lse, T* dqkv,
                    const AttnShape& s, const AttnView& vdo, const AttnView& vi, const AttnView& vo,
                    const AttnView& vdq);

}  // namespace attn_cpu
}  // namespace avfast
