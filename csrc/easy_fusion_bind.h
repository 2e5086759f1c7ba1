// Python lists -> EasyFusionShape for the easy-fusion bindings (CPU and CUDA).
#pragma once
#include <cstdint>
#include <vector>

#include "avfast/easy_fusion.h"
#include "bindings_common.h"

namespace avfast {

// sizes = (B, Cv, Ca, F, H, W, T); strides of the two strided inputs in elements.
inline EasyFusionShape easy_fusion_shape(const std::vector<int64_t>& sizes, const std::vector<int64_t>& vstrides,
                                         const std::vector<int64_t>& astrides) {
  auto sz = as_array<7>(sizes, "sizes");
  auto vs = as_array<5>(vstrides, "video strides");
  auto as = as_array<3>(astrides, "audio strides");
  EasyFusionShape s{sz[0], sz[1], sz[2], sz[3], sz[4], sz[5], sz[6], {}, {}};
  for (int i = 0; i < 5; ++i) s.vs[i] = vs[i];
  for (int i = 0; i < 3; ++i) s.as[i] = as[i];
  return s;
}

}  // namespace avfast
