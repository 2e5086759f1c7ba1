// Helpers shared by the CPU and CUDA pybind11 modules: Python ints <-> pointers and shapes.
#pragma once
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <array>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "avfast/easy_fusion.h"

namespace avfast {

inline void* as_ptr(uintptr_t p) { return reinterpret_cast<void*>(p); }

template <size_t N>
std::array<int64_t, N> as_array(const std::vector<int64_t>& v, const char* what) {
  if (v.size() != N)
    throw std::invalid_argument(std::string("avfast: ") + what + " must have " + std::to_string(N) +
                                " entries, got " + std::to_string(v.size()));
  std::array<int64_t, N> out{};
  for (size_t i = 0; i < N; ++i) out[i] = v[i];
  return out;
}

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
