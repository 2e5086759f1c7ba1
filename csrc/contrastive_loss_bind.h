// Python lists -> ContrastiveLossShape, shared by the CPU and CUDA pybind11 bindings.
#pragma once
#include <stdexcept>
#include <string>
#include <vector>

#include "avfast/contrastive_loss.h"
#include "bindings_common.h"

namespace avfast {

// sizes = (G, B, Kv, Nv, Na); strides = pred_v (3), pred_a (3), target_v (2), target_a (2);
// params = (eta, weight_v, weight_a).
inline ContrastiveLossShape contrastive_loss_shape(const std::vector<int64_t>& sizes,
                                                   const std::vector<int64_t>& strides,
                                                   const std::vector<double>& params) {
  auto sz = as_array<5>(sizes, "sizes");
  auto st = as_array<10>(strides, "strides");
  if (params.size() != 3)
    throw std::invalid_argument("avfast: params must be (eta, weight_v, weight_a), got " +
                                std::to_string(params.size()) + " entries");
  ContrastiveLossShape s{};
  s.G = sz[0]; s.B = sz[1]; s.Kv = sz[2]; s.Nv = sz[3]; s.Na = sz[4];
  if (s.G < 1 || s.B < 1 || s.Kv < 0 || s.Kv > s.G - 1 || s.Nv < 1 || s.Na < 1)
    throw std::invalid_argument("avfast: contrastive_loss sizes out of range");
  for (int i = 0; i < 3; ++i) { s.pvs[i] = st[i]; s.pas[i] = st[3 + i]; }
  for (int i = 0; i < 2; ++i) { s.tvs[i] = st[6 + i]; s.tas[i] = st[8 + i]; }
  s.eta = params[0]; s.wv = params[1]; s.wa = params[2];
  return s;
}

}  // namespace avfast
