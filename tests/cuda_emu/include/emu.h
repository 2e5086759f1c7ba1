// Host emulation of CUDA's execution model, enough to run avfast's kernels on a CPU.
//
// A launch runs its blocks one after another; each CUDA thread of a block is a fiber (ucontext)
// on the launching OS thread, and a scheduler runs the live fibers one at a time, each from one
// barrier to the next. __shared__ becomes `static` (one copy, shared by the block's threads; blocks
// do not overlap), __syncthreads hands back to the scheduler, and __shfl_*_sync exchange through a
// shared array between two barriers (valid because every thread of the block reaches each shuffle,
// as in the kernels emulated). Half/bfloat16 conversions go through avfast/common.h.
//
// Schedules (tests/cuda_emu/build.py::schedule; tests/test_cuda_emulated_schedules.py runs every op
// under each and requires identical bits): the order of the threads within each barrier phase and
// of the blocks within a launch is
//   alternating  threads in index order in even phases, reversed in odd ones; blocks in order (default)
//   forward      threads and blocks in index order
//   reverse      threads and blocks in reverse order
//   shuffled     a fresh seeded permutation of the threads every phase and of the blocks every launch
// All are legal CUDA schedules, so a kernel's results must not depend on which one ran: a missing
// __syncthreads (a reader running before its writer in one of the orders) or a block reading what
// another block writes shows up as different results instead of a race a GPU would rarely lose.
#pragma once
#include <ucontext.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <functional>
#include <memory>
#include <numeric>
#include <random>
#include <stdexcept>
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
inline dim3 threadIdx, blockIdx, blockDim, gridDim;  // set by the scheduler before each fiber runs

typedef struct CUstream_st* cudaStream_t;
enum cudaError_t { cudaSuccess = 0 };
inline cudaError_t cudaGetLastError() { return cudaSuccess; }
inline const char* cudaGetErrorString(cudaError_t) { return "no error"; }

namespace emu {

enum class Schedule : int { alternating = 0, forward = 1, reverse = 2, shuffled = 3 };

struct ScheduleState {
  Schedule mode = Schedule::alternating;
  std::mt19937_64 rng{0};
};
inline ScheduleState& schedule() { static ScheduleState s; return s; }

// Blocks a launch really runs: the kernels' grid-stride loops cover the rest (tests set it low).
// AVFAST_EMU_MAX_GRID sets the default for whole-module builds (tests/conftest.py).
inline unsigned& max_grid() {
  static unsigned g = std::getenv("AVFAST_EMU_MAX_GRID") ? unsigned(std::atoi(std::getenv("AVFAST_EMU_MAX_GRID"))) : 1u << 30;
  return g;
}

// The order in which `n` items (threads of a phase, blocks of a launch) run under the schedule.
inline void order(std::vector<unsigned>& out, unsigned n, unsigned phase) {
  out.resize(n);
  std::iota(out.begin(), out.end(), 0u);
  switch (schedule().mode) {
    case Schedule::alternating: if (phase % 2) std::reverse(out.begin(), out.end()); break;
    case Schedule::forward: break;
    case Schedule::reverse: std::reverse(out.begin(), out.end()); break;
    case Schedule::shuffled: std::shuffle(out.begin(), out.end(), schedule().rng); break;
  }
}

// The fibers of one block. Stacks are allocated once for the largest block and reused (new char[]
// leaves them uncommitted until touched).
class Block {
 public:
  static Block& get() { static Block b; return b; }

  void run(unsigned threads, const std::function<void()>& body) {
    constexpr size_t kStack = 256 * 1024;
    while (stacks_.size() < threads) stacks_.emplace_back(new char[kStack]);
    fibers_.resize(threads);
    done_.assign(threads, false);
    body_ = &body;
    for (unsigned t = 0; t < threads; ++t) {
      ucontext_t& f = fibers_[t];
      getcontext(&f);
      f.uc_stack.ss_sp = stacks_[t].get();
      f.uc_stack.ss_size = kStack;
      f.uc_link = &scheduler_;
      makecontext(&f, &Block::entry, 0);
    }
    unsigned live = threads;
    std::vector<unsigned> turns;
    for (unsigned phase = 0; live > 0; ++phase) {
      order(turns, threads, phase);
      for (unsigned t : turns) {
        if (done_[t]) continue;
        current_ = t;
        threadIdx.x = t;
        swapcontext(&scheduler_, &fibers_[t]);  // returns at the fiber's next barrier or its end
        if (done_[t]) --live;
      }
    }
  }

  // __syncthreads: the current fiber waits for the next phase.
  void barrier() { swapcontext(&fibers_[current_], &scheduler_); }

 private:
  static void entry() {
    Block& b = get();
    (*b.body_)();
    b.done_[b.current_] = true;  // uc_link returns to the scheduler
  }
  std::vector<std::unique_ptr<char[]>> stacks_;
  std::vector<ucontext_t> fibers_;
  std::vector<bool> done_;
  ucontext_t scheduler_{};
  const std::function<void()>* body_ = nullptr;
  unsigned current_ = 0;
};

inline double* shuffle_slots() { static double slots[1024]; return slots; }

inline void launch(unsigned grid, unsigned block, const std::function<void()>& body) {
  if (block == 0 || block > 1024) throw std::invalid_argument("emulated launch: block size must be 1..1024");
  if (grid > max_grid()) grid = max_grid();
  gridDim.x = grid;
  blockDim.x = block;
  std::vector<unsigned> blocks;
  order(blocks, grid, 0);
  for (unsigned b : blocks) {
    blockIdx.x = b;
    Block::get().run(block, body);
  }
}

}  // namespace emu

#define AVF_LAUNCH(kernel, grid, block, stream, ...) \
  ::emu::launch(unsigned(grid), unsigned(block), [&] { kernel(__VA_ARGS__); })

inline void __syncthreads() { emu::Block::get().barrier(); }

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
