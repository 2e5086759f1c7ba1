// CPU entry points of temporal-spatial attention (defined in attention.cpp; the kernels behind them are
// split by family and direction, see its header).
#pragma once
#include "avfast/attention.h"

namespace avfast {

// out: any strides (vo); lse: fp32 [B, heads, G, N] contiguous.
void attention_forward_cpu(int dtype, const void* qkv, void* out, float* lse, const AttnShape& s, const AttnView& vi,
                           const AttnView& vo);
// dqkv: any strides (vdq); every element of it is written.
void attention_backward_cpu(int dtype, const void* dout, const void* qkv, const void* out, const float* lse,
                            void* dqkv, const AttnShape& s, const AttnView& vdo, const AttnView& vi,
                            const AttnView& vo, const AttnView& vdq);

}  // namespace avfast
