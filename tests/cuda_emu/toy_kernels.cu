// Small kernels that prove the emulation's schedules catch races (tests/test_cuda_emulated_schedules.py).
// Each kernel's correct result does not depend on the order threads or blocks run in; the racy ones'
// results do, which is what a schedule change must reveal.
#include <cuda_runtime.h>

constexpr int kToyThreads = 64;

// out[i] = in[i] + in[i + 1 within the block] (rotated): each thread stages its value in shared memory,
// then reads its neighbour's. With `sync` false the barrier between the write and the read is missing.
__global__ void neighbour_sum(const float* in, float* out, bool sync) {
  __shared__ float staged[kToyThreads];
  const int t = threadIdx.x, i = blockIdx.x * kToyThreads + t;
  staged[t] = in[i];
  if (sync) __syncthreads();
  out[i] = staged[t] + staged[(t + 1) % kToyThreads];
}

// Block b writes flags[b] = b + 1 and out[b] = flags[b - 1]: reading another block's output without a
// grid-wide synchronisation (a cross-block race); `flags` starts at zero.
__global__ void read_previous_block(float* flags, float* out) {
  if (threadIdx.x != 0) return;
  const unsigned b = blockIdx.x;
  flags[b] = float(b + 1);
  out[b] = b > 0 ? flags[b - 1] : 0.f;
}

extern "C" void toy_neighbour_sum(const float* in, float* out, int blocks, int sync) {
  AVF_LAUNCH(neighbour_sum, blocks, kToyThreads, nullptr, in, out, sync != 0);
}

extern "C" void toy_read_previous_block(float* flags, float* out, int blocks) {
  AVF_LAUNCH(read_previous_block, blocks, kToyThreads, nullptr, flags, out);
}
