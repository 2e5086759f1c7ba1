// Element-wise helpers shared by the CPU (OpenMP) and CUDA kernels.
//
// Everything here is __host__ __device__ so that the CPU tests exercise the exact
// arithmetic the CUDA kernels run. No libtorch: tensors arrive as raw pointers,
// sizes and strides, with a dtype code chosen by the Python layer.
#pragma once

#include <cstdint>
#include <cstring>
#include <cmath>

#if defined(__CUDACC__)
#define AVF_HD __host__ __device__ __forceinline__
#else
#define AVF_HD inline
#endif

namespace avfast {

// Must match avfast/ops/_native.py::DTYPE_CODES.
enum DType : int { kFloat32 = 0, kFloat16 = 1, kBFloat16 = 2, kFloat64 = 3 };

// Storage types for the 16-bit formats: raw bits, converted with the helpers below so
// the same code compiles with g++ (no _Float16 requirement) and nvcc.
struct half_t { uint16_t bits; };
struct bf16_t { uint16_t bits; };

AVF_HD uint32_t f32_bits(float f) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(f);
#else
  uint32_t u; std::memcpy(&u, &f, 4); return u;
#endif
}
AVF_HD float bits_f32(uint32_t u) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(u);
#else
  float f; std::memcpy(&f, &u, 4); return f;
#endif
}

// bf16 <-> f32: round to nearest even, NaN kept quiet (same rule as PyTorch's c10::BFloat16).
AVF_HD float to_float(bf16_t x) { return bits_f32(uint32_t(x.bits) << 16); }
AVF_HD bf16_t bf16_from_float(float f) {
  uint32_t u = f32_bits(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return bf16_t{uint16_t((u >> 16) | 0x40)};
  uint32_t rounding = 0x7fffu + ((u >> 16) & 1u);
  return bf16_t{uint16_t((u + rounding) >> 16)};
}

// IEEE binary16 <-> f32, round to nearest even (matches c10::Half and __float2half_rn).
AVF_HD float to_float(half_t h) {
  const uint32_t w = uint32_t(h.bits) << 16;
  const uint32_t sign = w & 0x80000000u;
  const uint32_t two_w = w + w;
  const uint32_t exp_offset = 0xE0u << 23;
  const float exp_scale = bits_f32(0x7800000u);  // 2^-112
  const float normalized = bits_f32((two_w >> 4) + exp_offset) * exp_scale;
  const uint32_t magic_mask = 126u << 23;
  const float magic_bias = 0.5f;
  const float denormalized = bits_f32((two_w >> 17) | magic_mask) - magic_bias;
  const uint32_t denormalized_cutoff = 1u << 27;
  const uint32_t result = sign | (two_w < denormalized_cutoff ? f32_bits(denormalized) : f32_bits(normalized));
  return bits_f32(result);
}
AVF_HD half_t half_from_float(float f) {
  const float scale_to_inf = bits_f32(0x77800000u);   // 2^112
  const float scale_to_zero = bits_f32(0x08800000u);  // 2^-110
  float base = (fabsf(f) * scale_to_inf) * scale_to_zero;
  const uint32_t w = f32_bits(f);
  const uint32_t shl1_w = w + w;
  const uint32_t sign = w & 0x80000000u;
  uint32_t bias = shl1_w & 0xFF000000u;
  if (bias < 0x71000000u) bias = 0x71000000u;
  base = bits_f32((bias >> 1) + 0x07800000u) + base;
  const uint32_t bits = f32_bits(base);
  const uint32_t exp_bits = (bits >> 13) & 0x00007C00u;
  const uint32_t mantissa_bits = bits & 0x00000FFFu;
  const uint32_t nonsign = exp_bits + mantissa_bits;
  return half_t{uint16_t((sign >> 16) | (shl1_w > 0xFF000000u ? 0x7E00u : nonsign))};
}

AVF_HD float to_float(float x) { return x; }
AVF_HD double to_float(double x) { return x; }

// Accumulator type: fp32 for the 16-bit formats and fp32, fp64 for fp64 (gradcheck).
template <typename T> struct Acc { using type = float; };
template <> struct Acc<double> { using type = double; };

template <typename T> AVF_HD T from_acc(typename Acc<T>::type x);
template <> AVF_HD float from_acc<float>(float x) { return x; }
template <> AVF_HD double from_acc<double>(double x) { return x; }
template <> AVF_HD half_t from_acc<half_t>(float x) { return half_from_float(x); }
template <> AVF_HD bf16_t from_acc<bf16_t>(float x) { return bf16_from_float(x); }

// The source index of torch.nn.functional.interpolate(mode="nearest") along one axis
// (aten/src/ATen/native/UpSample.h: nearest_idx with scale = in/out computed in float).
// Reproduced exactly, fp32 arithmetic included, so every backend picks the same frame.
AVF_HD int64_t nearest_src_index(int64_t dst, int64_t in_size, int64_t out_size) {
  if (out_size == in_size) return dst;
  if (out_size == 2 * in_size) return dst >> 1;
  const float scale = float(in_size) / float(out_size);
  const int64_t src = int64_t(floorf(float(dst) * scale));
  return src < in_size - 1 ? src : in_size - 1;
}

}  // namespace avfast

// Dispatch a dtype code to a storage type `scalar_t` (used by both CPU and CUDA launchers).
#define AVF_DISPATCH_FLOATING(code, ...)                                   \
  switch (code) {                                                          \
    case ::avfast::kFloat32: { using scalar_t = float; __VA_ARGS__; break; }     \
    case ::avfast::kFloat16: { using scalar_t = ::avfast::half_t; __VA_ARGS__; break; } \
    case ::avfast::kBFloat16: { using scalar_t = ::avfast::bf16_t; __VA_ARGS__; break; } \
    case ::avfast::kFloat64: { using scalar_t = double; __VA_ARGS__; break; }    \
    default: throw std::invalid_argument("avfast: unsupported dtype code " + std::to_string(code)); \
  }
