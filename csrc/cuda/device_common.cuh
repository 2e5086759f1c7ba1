// Device helpers shared by the CUDA kernels: loads into the accumulator type, warp reductions.
#pragma once
#include <cuda_runtime.h>
#include <cuda_fp16.h>
#include <cuda_bf16.h>

#include "avfast/common.h"

// Kernel launch as a macro so that tests/cuda_emu can compile the .cu files as host C++ (a thread
// per CUDA thread, see tests/cuda_emu/include/emu.h) and run the very kernels on a CPU.
#ifndef AVF_LAUNCH
#define AVF_LAUNCH(kernel, grid, block, stream, ...) kernel<<<(grid), (block), 0, (stream)>>>(__VA_ARGS__)
#endif

namespace avfast {

template <typename T> using acc_t = typename Acc<T>::type;

// Loads one element widened to its accumulator type (fp32, or fp64 for fp64 tensors).
__device__ __forceinline__ float load_acc(const float* p) { return *p; }
__device__ __forceinline__ double load_acc(const double* p) { return *p; }
__device__ __forceinline__ float load_acc(const half_t* p) { return __half2float(*reinterpret_cast<const __half*>(p)); }
__device__ __forceinline__ float load_acc(const bf16_t* p) {
  return __bfloat162float(*reinterpret_cast<const __nv_bfloat16*>(p));
}

// Stores an accumulator value rounded to nearest even into the tensor's dtype, with the hardware
// conversions (the portable from_acc<half_t> made ptxas spill on sm_90).
__device__ __forceinline__ void store_acc(float* p, float x) { *p = x; }
__device__ __forceinline__ void store_acc(double* p, double x) { *p = x; }
__device__ __forceinline__ void store_acc(half_t* p, float x) { *reinterpret_cast<__half*>(p) = __float2half_rn(x); }
__device__ __forceinline__ void store_acc(bf16_t* p, float x) {
  *reinterpret_cast<__nv_bfloat16*>(p) = __float2bfloat16_rn(x);
}

// Sum over the 32 lanes of a warp; lane 0 holds the result.
template <typename A>
__device__ __forceinline__ A warp_sum(A x) {
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) x += __shfl_down_sync(0xffffffffu, x, offset);
  return x;
}

}  // namespace avfast
