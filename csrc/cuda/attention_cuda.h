// CUDA launchers of temporal-spatial attention: plain C++ signatures (stream as void*), no libtorch.
// Geometry (AttnShape / AttnView) as in avfast/attention.h; strides in elements, int64.
#pragma once
#include <cstdint>

#include "avfast/attention.h"

namespace avfast {

// Head dims the tiled kernels are compiled for (anything else throws std::invalid_argument).
constexpr int kAttnCudaHeadDims[] = {16, 32, 64, 128};

// out [B, C, ...] in qkv's dtype through `vo`; lse [B, heads, G, N] fp32, contiguous.
// dtype: kFloat32, kFloat16 or kBFloat16.
void attention_forward_cuda(int dtype, const void* qkv, void* out, float* lse, const AttnShape& s,
                            const AttnView& vi, const AttnView& vo, void* stream);

// delta: caller-allocated fp32 workspace of B * heads * G * N (= lse's size); lse contiguous.
// dqkv [B, 3C, ...] through `vg`: every element is written (no zero-fill needed).
void attention_backward_cuda(int dtype, const void* dout, const void* qkv, const void* out, const float* lse,
                             float* delta, void* dqkv, const AttnShape& s, const AttnView& vdo, const AttnView& vi,
                             const AttnView& vo, const AttnView& vg, void* stream);

}  // namespace avfast
