// Joint contrastive diffusion loss on CUDA (maths in avfast/contrastive_loss.h).
//
// Forward:  (1) per modality, one block per (sample, chunk of kChunk elements): each thread keeps
//               its kPerThread target values in registers and streams every group's predictions
//               against them; a block reduction writes one partial per (group, sample, chunk);
//           (2) one thread per sample adds its partials in chunk order and combines them (shared
//               helper) into the [4, B] output.
//           Given the upstream gradient, (1) also writes grad_pred and grad_target (forward and
//           backward in one read of the data, for the autograd fast path).
// Backward: one thread per (sample, element): reads the target once, writes grad_pred of every
//           group and grad_target = -sum_g grad_pred (skipped when its pointer is null).
// No atomics anywhere: every output has one writer and reductions run in a fixed order, so results
// are bitwise deterministic. Offsets are int64; grids are 1-D grid-stride loops (no y/z limits).
#include <cuda_runtime.h>
#include <cuda_fp16.h>
#include <cuda_bf16.h>

#include <stdexcept>
#include <string>

#include "avfast/common.h"
#include "device_common.cuh"
#include "avfast/contrastive_loss.h"
#include "contrastive_loss_cuda.h"

namespace avfast {
namespace {

constexpr int kThreads = 256;
constexpr int kPerThread = 4;
constexpr int64_t kChunk = int64_t(kThreads) * kPerThread;


template <typename A>
__device__ __forceinline__ A block_sum(A x, A* shared) {
  x = warp_sum(x);
  const int warp = threadIdx.x / 32, lane = threadIdx.x & 31;
  __syncthreads();  // the previous call's readers are done with `shared`
  if (lane == 0) shared[warp] = x;
  __syncthreads();
  A total = 0;
  if (threadIdx.x == 0)
    for (int w = 0; w < kThreads / 32; ++w) total += shared[w];  // fixed order: deterministic
  return total;
}

int grid_for(int64_t work, int64_t per_block) {
  int64_t blocks = (work + per_block - 1) / per_block;
  if (blocks < 1) blocks = 1;
  return int(blocks < (int64_t(1) << 20) ? blocks : (int64_t(1) << 20));
}

__host__ __device__ __forceinline__ int64_t chunks(int64_t n) { return (n + kChunk - 1) / kChunk; }

// One modality's pass of the forward: partial sums of squared errors and, when `grad` is given
// (the upstream gradient [4, B] the caller expects), grad_pred and (if non-null) grad_target too:
// the loss is quadratic, so the gradient needs only the upstream gradient, and the autograd fast
// path gets forward + backward from one read of the data.
template <typename T>
__global__ void __launch_bounds__(kThreads) partial_sums(const T* __restrict__ pred, const T* __restrict__ target,
                                                         acc_t<T>* __restrict__ partial, int64_t N, int64_t ps0,
                                                         int64_t ps1, int64_t ps2, int64_t ts0, int64_t ts1,
                                                         const acc_t<T>* __restrict__ grad, T* __restrict__ gpred,
                                                         T* __restrict__ gtarget, double w, ContrastiveLossShape s) {
  using A = acc_t<T>;
  __shared__ A shared[kThreads / 32];
  const int64_t G = s.G, B = s.B, nch = chunks(N);
  const A scale = A(w) * A(2) / A(N);
  for (int64_t task = blockIdx.x; task < B * nch; task += gridDim.x) {
    const int64_t b = task / nch, c = task % nch;
    A t[kPerThread], gt[kPerThread];
    bool in[kPerThread];
#pragma unroll
    for (int k = 0; k < kPerThread; ++k) {
      const int64_t i = c * kChunk + k * kThreads + threadIdx.x;
      in[k] = i < N;
      t[k] = in[k] ? load_acc(&target[b * ts0 + i * ts1]) : A(0);
      gt[k] = 0;
    }
    for (int64_t g = 0; g < G; ++g) {
      A coef = 0;
      if (grad)
        coef = scale * contrastive_group_coef<A>(g, G, s.Kv, A(s.eta), grad[kCont * B + b], grad[kPos * B + b],
                                                 grad[kNegV * B + b], grad[kNegA * B + b]);
      A sum = 0;
#pragma unroll
      for (int k = 0; k < kPerThread; ++k) {
        const int64_t i = c * kChunk + k * kThreads + threadIdx.x;
        if (!in[k]) continue;
        const A p = load_acc(&pred[g * ps0 + b * ps1 + i * ps2]);
        sum += contrastive_sq_err<A>(p, t[k]);
        if (grad) {
          const A gp = contrastive_grad_elem<A>(coef, p, t[k]);
          store_acc(&gpred[(g * B + b) * N + i], gp);
          gt[k] -= gp;
        }
      }
      sum = block_sum(sum, shared);
      if (threadIdx.x == 0) partial[(g * B + b) * nch + c] = sum;
    }
    if (grad && gtarget) {
#pragma unroll
      for (int k = 0; k < kPerThread; ++k) {
        const int64_t i = c * kChunk + k * kThreads + threadIdx.x;
        if (in[k]) store_acc(&gtarget[b * N + i], gt[k]);
      }
    }
  }
}

template <typename A>
__global__ void finalize(const A* __restrict__ pv, const A* __restrict__ pa, A* __restrict__ sv, A* __restrict__ sa,
                         A* __restrict__ out, ContrastiveLossShape s) {
  const int64_t nv = chunks(s.Nv), na = chunks(s.Na);
  for (int64_t b = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; b < s.B; b += int64_t(gridDim.x) * blockDim.x) {
    for (int64_t g = 0; g < s.G; ++g) {
      A x = 0, y = 0;
      for (int64_t c = 0; c < nv; ++c) x += pv[(g * s.B + b) * nv + c];
      for (int64_t c = 0; c < na; ++c) y += pa[(g * s.B + b) * na + c];
      sv[g * s.B + b] = x;
      sa[g * s.B + b] = y;
    }
    contrastive_combine<A>(sv, sa, b, s, out);  // reads only column b, written above by this thread
  }
}

template <typename T>
__global__ void backward_elems(const acc_t<T>* __restrict__ grad, const T* __restrict__ pred,
                               const T* __restrict__ target, T* __restrict__ gpred, T* __restrict__ gtarget,
                               int64_t N, int64_t ps0, int64_t ps1, int64_t ps2, int64_t ts0, int64_t ts1, double w,
                               ContrastiveLossShape s) {
  using A = acc_t<T>;
  const A scale = A(w) * A(2) / A(N);
  const int64_t n = s.B * N;
  for (int64_t e = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; e < n; e += int64_t(gridDim.x) * blockDim.x) {
    const int64_t b = e / N, i = e % N;
    const A t = load_acc(&target[b * ts0 + i * ts1]);
    const A gc = grad[kCont * s.B + b], gL = grad[kPos * s.B + b];
    const A gnv = grad[kNegV * s.B + b], gna = grad[kNegA * s.B + b];
    A gt = 0;
    for (int64_t g = 0; g < s.G; ++g) {
      const A coef = scale * contrastive_group_coef<A>(g, s.G, s.Kv, A(s.eta), gc, gL, gnv, gna);
      const A gp = contrastive_grad_elem<A>(coef, load_acc(&pred[g * ps0 + b * ps1 + i * ps2]), t);
      store_acc(&gpred[(g * s.B + b) * N + i], gp);
      gt -= gp;
    }
    if (gtarget) store_acc(&gtarget[e], gt);  // null: the targets need no gradient
  }
}

void check(cudaError_t err, const char* what) {
  if (err != cudaSuccess)
    throw std::runtime_error(std::string("avfast CUDA contrastive_loss ") + what + ": " + cudaGetErrorString(err));
}

}  // namespace

int64_t contrastive_loss_workspace_elems_cuda(const ContrastiveLossShape& s) {
  return s.G * s.B * (chunks(s.Nv) + chunks(s.Na) + 2);
}

void contrastive_loss_forward_cuda(int dtype, const void* pv, const void* pa, const void* tv, const void* ta,
                                   void* out, void* workspace, const void* grad, void* gpv, void* gpa, void* gtv,
                                   void* gta, const ContrastiveLossShape& s, void* stream) {
  auto st = static_cast<cudaStream_t>(stream);
  if (grad && (!gpv || !gpa))
    throw std::invalid_argument("avfast: contrastive_loss_forward: `grad` needs both prediction gradients");
  AVF_DISPATCH_FLOATING(dtype, {
    using A = acc_t<scalar_t>;
    A* part_v = static_cast<A*>(workspace);
    A* part_a = part_v + s.G * s.B * chunks(s.Nv);
    A* sum_v = part_a + s.G * s.B * chunks(s.Na);
    A* sum_a = sum_v + s.G * s.B;
    const A* g = static_cast<const A*>(grad);
    AVF_LAUNCH(partial_sums<scalar_t>, grid_for(s.B * chunks(s.Nv), 1), kThreads, st,
        static_cast<const scalar_t*>(pv), static_cast<const scalar_t*>(tv), part_v, s.Nv, s.pvs[0], s.pvs[1],
        s.pvs[2], s.tvs[0], s.tvs[1], g, static_cast<scalar_t*>(gpv), static_cast<scalar_t*>(gtv), s.wv, s);
    check(cudaGetLastError(), "forward video partials");
    AVF_LAUNCH(partial_sums<scalar_t>, grid_for(s.B * chunks(s.Na), 1), kThreads, st,
        static_cast<const scalar_t*>(pa), static_cast<const scalar_t*>(ta), part_a, s.Na, s.pas[0], s.pas[1],
        s.pas[2], s.tas[0], s.tas[1], g, static_cast<scalar_t*>(gpa), static_cast<scalar_t*>(gta), s.wa, s);
    check(cudaGetLastError(), "forward audio partials");
    AVF_LAUNCH(finalize<A>, grid_for(s.B, 128), 128, st, part_v, part_a, sum_v, sum_a, static_cast<A*>(out), s);
    check(cudaGetLastError(), "forward finalize");
  });
}

void contrastive_loss_backward_cuda(int dtype, const void* grad, const void* pv, const void* pa, const void* tv,
                                    const void* ta, void* gpv, void* gpa, void* gtv, void* gta,
                                    const ContrastiveLossShape& s, void* stream) {
  auto st = static_cast<cudaStream_t>(stream);
  if (!gpv || !gpa)
    throw std::invalid_argument("avfast: contrastive_loss_backward: both prediction gradients are required");
  AVF_DISPATCH_FLOATING(dtype, {
    using A = acc_t<scalar_t>;
    const A* g = static_cast<const A*>(grad);
    AVF_LAUNCH(backward_elems<scalar_t>, grid_for(s.B * s.Nv, kThreads), kThreads, st,
        g, static_cast<const scalar_t*>(pv), static_cast<const scalar_t*>(tv), static_cast<scalar_t*>(gpv),
        static_cast<scalar_t*>(gtv), s.Nv, s.pvs[0], s.pvs[1], s.pvs[2], s.tvs[0], s.tvs[1], s.wv, s);
    check(cudaGetLastError(), "backward video");
    AVF_LAUNCH(backward_elems<scalar_t>, grid_for(s.B * s.Na, kThreads), kThreads, st,
        g, static_cast<const scalar_t*>(pa), static_cast<const scalar_t*>(ta), static_cast<scalar_t*>(gpa),
        static_cast<scalar_t*>(gta), s.Na, s.pas[0], s.pas[1], s.pas[2], s.tas[0], s.tas[1], s.wa, s);
    check(cudaGetLastError(), "backward audio");
  });
}

}  // namespace avfast
