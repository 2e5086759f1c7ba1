// Host emulation of CUDA's execution model, enough to run avfast's attention kernels on a CPU.
//
// A launch runs its blocks one after another; each block is blockDim.x std::threads (one per CUDA
// thread, run one at a time: see Barrier). __shared__ becomes `static` (one copy, shared by the
// block's threads; blocks do not overlap), __syncthreads is a block-wide barrier and __shfl_xor_sync exchanges through a shared
// array between two barriers (valid because every thread of the block reaches each shuffle, as
// in the kernels emulated). Half/bfloat16 conversions go through avfast/common.h.
#pragma once
#include <cmath>
#include <cstdlib>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

#include "avfast/common.h"

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__ static

struct dim3 {
  unsigned x = 1, y = 1, z = 1;
};
inline thread_local dim3 threadIdx, blockIdx;
inline dim3 blockDim, gridDim;

typedef struct CUstream_st* cudaStream_t;
enum cudaError_t { cudaSuccess = 0 };
inline cudaError_t cudaGetLastError() { return cudaSuccess; }
inline const char* cudaGetErrorString(cudaError_t) { return "no error"; }

namespace emu {

// The threads of a block run one at a time, each from one barrier to the next, in thread order
// in even phases and in reverse order in odd ones: a legal CUDA schedule that makes a missing
// __syncthreads a deterministic failure (the reader runs before the writer in one of the orders)
// rather than a race that a 2-core machine would rarely lose.
class Barrier {
 public:
  void reset(unsigned n) {
    n_ = n;
    arrived_ = 0;
    phase_ = 0;
    turn_ = 0;
    cv_ = std::vector<std::condition_variable>(n);
  }
  // Blocks until it is thread t's turn to run (called once when the thread starts).
  void start(unsigned t) {
    std::unique_lock<std::mutex> lock(mu_);
    cv_[t].wait(lock, [&] { return turn_ == t; });
  }
  void wait(unsigned t) {
    std::unique_lock<std::mutex> lock(mu_);
    pass(lock);
    cv_[t].wait(lock, [&] { return turn_ == t; });
  }
  // The thread left the kernel: hand over without waiting.
  void finish() {
    std::unique_lock<std::mutex> lock(mu_);
    pass(lock);
  }

 private:
  unsigned order(unsigned i) const { return phase_ % 2 ? n_ - 1 - i : i; }
  void pass(std::unique_lock<std::mutex>&) {
    if (++arrived_ == n_) {
      arrived_ = 0;
      ++phase_;
    }
    turn_ = order(arrived_);
    cv_[turn_].notify_one();
  }
  std::mutex mu_;
  std::vector<std::condition_variable> cv_;
  unsigned n_ = 0, arrived_ = 0, phase_ = 0, turn_ = 0;
};

inline Barrier& barrier() { static Barrier b; return b; }
inline double* shuffle_slots() { static double slots[1024]; return slots; }
// Blocks a launch really runs: the kernels' grid-stride loops cover the rest (tests set it low).
// AVFAST_EMU_MAX_GRID sets the default for whole-module builds (tests/test_cuda_emulated.py).
inline unsigned& max_grid() {
  static unsigned g = std::getenv("AVFAST_EMU_MAX_GRID") ? unsigned(std::atoi(std::getenv("AVFAST_EMU_MAX_GRID"))) : 1u << 30;
  return g;
}

inline void launch(unsigned grid, unsigned block, const std::function<void()>& body) {
  if (grid > max_grid()) grid = max_grid();
  gridDim.x = grid;
  blockDim.x = block;
  for (unsigned b = 0; b < grid; ++b) {
    barrier().reset(block);
    std::vector<std::thread> threads;
    threads.reserve(block);
    for (unsigned t = 0; t < block; ++t)
      threads.emplace_back([&body, b, t] {
        threadIdx.x = t;
        blockIdx.x = b;
        barrier().start(t);
        body();
        barrier().finish();
      });
    for (auto& th : threads) th.join();
  }
}

}  // namespace emu

#define AVF_LAUNCH(kernel, grid, block, stream, ...) \
  ::emu::launch(unsigned(grid), unsigned(block), [&] { kernel(__VA_ARGS__); })

inline void __syncthreads() { emu::barrier().wait(threadIdx.x); }

template <typename T>
inline T __shfl_xor_sync(unsigned, T x, int lane_mask) {
  double* slots = emu::shuffle_slots();
  const unsigned t = threadIdx.x;
  slots[t] = double(x);
  __syncthreads();
  const T y = T(slots[t ^ unsigned(lane_mask)]);
  __syncthreads();
  return y;
}
template <typename T>
inline T __shfl_down_sync(unsigned, T x, int delta) {
  double* slots = emu::shuffle_slots();
  const unsigned t = threadIdx.x;
  slots[t] = double(x);
  __syncthreads();
  const unsigned src = (t % 32) + unsigned(delta) < 32 ? t + unsigned(delta) : t;
  const T y = T(slots[src]);
  __syncthreads();
  return y;
}

struct __half { uint16_t bits; };
struct __nv_bfloat16 { uint16_t bits; };
inline float __half2float(__half h) { return avfast::to_float(avfast::half_t{h.bits}); }
inline float __bfloat162float(__nv_bfloat16 h) { return avfast::to_float(avfast::bf16_t{h.bits}); }
inline __half __float2half_rn(float f) { return __half{avfast::half_from_float(f).bits}; }
inline __nv_bfloat16 __float2bfloat16_rn(float f) { return __nv_bfloat16{avfast::bf16_from_float(f).bits}; }
