// Python lists -> AttnShape / AttnView for the attention bindings (CPU and CUDA).
#pragma once
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "avfast/attention.h"
#include "bindings_common.h"

namespace avfast {

// sizes = (B, heads, head_dim, g0, g1, n0, n1, n2)
inline AttnShape attn_shape(const std::vector<int64_t>& sizes, double scale) {
  auto z = as_array<8>(sizes, "attention sizes");
  for (int i = 0; i < 8; ++i)
    if (z[i] < 1) throw std::invalid_argument("avfast attention: sizes must be >= 1, got " + std::to_string(z[i]));
  return AttnShape{z[0], z[1], z[2], {z[3], z[4]}, {z[5], z[6], z[7]}, float(scale)};
}

// strides = (b, c, g0, g1, n0, n1, n2) in elements
inline AttnView attn_view(const std::vector<int64_t>& strides, const char* what) {
  auto z = as_array<7>(strides, what);
  return AttnView{z[0], z[1], {z[2], z[3]}, {z[4], z[5], z[6]}};
}

}  // namespace avfast
