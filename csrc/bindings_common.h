// Helpers shared by every pybind11 binding (CPU and CUDA): Python ints -> pointers, lists -> arrays.
// The per-op conversions to shape structs are in <op>_bind.h beside this file.
#pragma once
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <array>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

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

}  // namespace avfast
