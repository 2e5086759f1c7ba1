// Easy fusion on CUDA. Plain launchers: raw pointers, sizes, strides, a workspace allocated
// by the caller (fp32, or fp64 for double inputs) and a cudaStream_t. No libtorch.
//
// Forward:  (1) one warp per (b, c, f) row of vf: video rows copy + warp-reduce the H x W sum
//               into the workspace, audio rows broadcast the nearest audio step;
//           (2) af element-wise from a and the pooled workspace.
// Backward: (1) one warp per (b, c, f) audio row of grad_vf: H x W sum into the workspace;
//           (2) per (b, c, f): the grad_af entries that picked the frame, summed (workspace);
//           (3) grad_v element-wise: grad_vf + (2) / HW;
//           (4) grad_a element-wise: grad_af + sum of (1) over the frames that picked the step.
// No atomics: every output is written by exactly one thread, so results are deterministic.
// Offsets are int64 throughout (tensors over 2^31 elements), grids are 1-D grid-stride loops.
#include <cuda_runtime.h>
#include <cuda_fp16.h>
#include <cuda_bf16.h>

#include <stdexcept>
#include <string>

#include "avfast/common.h"
#include "device_common.cuh"
#include "avfast/easy_fusion.h"
#include "easy_fusion_cuda.h"

namespace avfast {
namespace {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;



int grid_for(int64_t work, int64_t per_block) {
  int64_t blocks = (work + per_block - 1) / per_block;
  if (blocks < 1) blocks = 1;
  // A grid-stride loop covers the rest; 2^20 blocks is far past what any GPU keeps resident.
  return int(blocks < (int64_t(1) << 20) ? blocks : (int64_t(1) << 20));
}

// The row loops below advance a whole block at a time (bound `base < rows` is block-uniform) and
// every lane reaches each warp_sum: the shuffles never sit in divergent control flow, which also
// lets tests/cuda_emu run these kernels on a CPU with block-wide shuffle emulation.
template <typename T>
__global__ void fwd_rows(const T* __restrict__ v, const T* __restrict__ a, T* __restrict__ vf,
                         acc_t<T>* __restrict__ pooled, EasyFusionShape s) {
  const int64_t C = s.Cv + s.Ca, HW = s.H * s.W, rows = s.B * C * s.F;
  const int lane = threadIdx.x & 31;
  for (int64_t base = int64_t(blockIdx.x) * kWarps; base < rows; base += int64_t(gridDim.x) * kWarps) {
    const int64_t row = base + threadIdx.x / 32;
    const int64_t f = row % s.F, bc = row / s.F, c = bc % C, b = bc / C;
    const bool video = row < rows && c < s.Cv;
    acc_t<T> sum = 0;
    if (video) {
      const T* src = v + b * s.vs[0] + c * s.vs[1] + f * s.vs[2];
      T* out = vf + row * HW;
      for (int64_t i = lane; i < HW; i += 32) {
        const T x = src[(i / s.W) * s.vs[3] + (i % s.W) * s.vs[4]];
        out[i] = x;
        sum += load_acc(&x);
      }
    } else if (row < rows) {
      const T x = a[b * s.as[0] + (c - s.Cv) * s.as[1] + nearest_src_index(f, s.T, s.F) * s.as[2]];
      T* out = vf + row * HW;
      for (int64_t i = lane; i < HW; i += 32) out[i] = x;
    }
    sum = warp_sum(sum);
    if (video && lane == 0) pooled[(b * s.Cv + c) * s.F + f] = sum / acc_t<T>(HW);
  }
}

template <typename T>
__global__ void fwd_audio(const T* __restrict__ a, const acc_t<T>* __restrict__ pooled, T* __restrict__ af,
                          EasyFusionShape s) {
  const int64_t C = s.Ca + s.Cv, n = s.B * C * s.T;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t t = i % s.T, bc = i / s.T, c = bc % C, b = bc / C;
    if (c < s.Ca)
      af[i] = a[b * s.as[0] + c * s.as[1] + t * s.as[2]];
    else
      af[i] = from_acc<T>(pooled[(b * s.Cv + (c - s.Ca)) * s.F + nearest_src_index(t, s.F, s.T)]);
  }
}

template <typename T>
__global__ void bwd_audio_rows(const T* __restrict__ gvf, acc_t<T>* __restrict__ rowsum, EasyFusionShape s) {
  const int64_t HW = s.H * s.W, rows = s.B * s.Ca * s.F;
  const int lane = threadIdx.x & 31;
  for (int64_t base = int64_t(blockIdx.x) * kWarps; base < rows; base += int64_t(gridDim.x) * kWarps) {
    const int64_t row = base + threadIdx.x / 32;
    acc_t<T> sum = 0;
    if (row < rows) {
      const int64_t f = row % s.F, bc = row / s.F, c = bc % s.Ca, b = bc / s.Ca;
      const T* src = gvf + b * s.vs[0] + (s.Cv + c) * s.vs[1] + f * s.vs[2];
      for (int64_t i = lane; i < HW; i += 32) sum += load_acc(&src[(i / s.W) * s.vs[3] + (i % s.W) * s.vs[4]]);
    }
    sum = warp_sum(sum);
    if (row < rows && lane == 0) rowsum[row] = sum;
  }
}

template <typename T>
__global__ void bwd_gather_pool(const T* __restrict__ gaf, acc_t<T>* __restrict__ gpool, EasyFusionShape s) {
  // gpool[b, c, f] = sum of grad_af[b, Ca + c, t] over the steps t that picked frame f.
  const int64_t n = s.B * s.Cv * s.F;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t f = i % s.F, bc = i / s.F, c = bc % s.Cv, b = bc / s.Cv;
    const T* ga_row = gaf + b * s.as[0] + (s.Ca + c) * s.as[1];
    acc_t<T> g = 0;
    for (int64_t t = 0; t < s.T; ++t)
      if (nearest_src_index(t, s.F, s.T) == f) g += load_acc(&ga_row[t * s.as[2]]);
    gpool[i] = g;
  }
}

template <typename T>
__global__ void bwd_video(const T* __restrict__ gvf, const acc_t<T>* __restrict__ gpool, T* __restrict__ gv,
                          EasyFusionShape s) {
  const int64_t HW = s.H * s.W, n = s.B * s.Cv * s.F * HW;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t hw = i % HW, row = i / HW, f = row % s.F, bc = row / s.F, c = bc % s.Cv, b = bc / s.Cv;
    const T x = gvf[b * s.vs[0] + c * s.vs[1] + f * s.vs[2] + (hw / s.W) * s.vs[3] + (hw % s.W) * s.vs[4]];
    gv[i] = from_acc<T>(load_acc(&x) + gpool[row] / acc_t<T>(HW));
  }
}

template <typename T>
__global__ void bwd_audio(const T* __restrict__ gaf, const acc_t<T>* __restrict__ rowsum, T* __restrict__ ga,
                          EasyFusionShape s) {
  const int64_t n = s.B * s.Ca * s.T;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t t = i % s.T, bc = i / s.T, c = bc % s.Ca, b = bc / s.Ca;
    acc_t<T> g = load_acc(&gaf[b * s.as[0] + c * s.as[1] + t * s.as[2]]);
    const acc_t<T>* rows = rowsum + bc * s.F;
    for (int64_t f = 0; f < s.F; ++f)
      if (nearest_src_index(f, s.T, s.F) == t) g += rows[f];
    ga[i] = from_acc<T>(g);
  }
}

void check(cudaError_t err, const char* what) {
  if (err != cudaSuccess)
    throw std::runtime_error(std::string("avfast CUDA easy_fusion ") + what + ": " + cudaGetErrorString(err));
}

}  // namespace

void easy_fusion_forward_cuda(int dtype, const void* v, const void* a, void* vf, void* af, void* workspace,
                              const EasyFusionShape& s, void* stream) {
  auto st = static_cast<cudaStream_t>(stream);
  AVF_DISPATCH_FLOATING(dtype, {
    using A = acc_t<scalar_t>;
    AVF_LAUNCH(fwd_rows<scalar_t>, grid_for(s.B * (s.Cv + s.Ca) * s.F, kWarps), kThreads, st,
        static_cast<const scalar_t*>(v), static_cast<const scalar_t*>(a), static_cast<scalar_t*>(vf),
        static_cast<A*>(workspace), s);
    check(cudaGetLastError(), "forward rows");
    AVF_LAUNCH(fwd_audio<scalar_t>, grid_for(s.B * (s.Ca + s.Cv) * s.T, kThreads), kThreads, st,
        static_cast<const scalar_t*>(a), static_cast<const A*>(workspace), static_cast<scalar_t*>(af), s);
    check(cudaGetLastError(), "forward audio");
  });
}

void easy_fusion_backward_cuda(int dtype, const void* gvf, const void* gaf, void* gv, void* ga, void* workspace,
                               const EasyFusionShape& s, void* stream) {
  auto st = static_cast<cudaStream_t>(stream);
  AVF_DISPATCH_FLOATING(dtype, {
    using A = acc_t<scalar_t>;
    A* gpool = static_cast<A*>(workspace);
    A* rowsum = gpool + s.B * s.Cv * s.F;
    AVF_LAUNCH(bwd_audio_rows<scalar_t>, grid_for(s.B * s.Ca * s.F, kWarps), kThreads, st,
        static_cast<const scalar_t*>(gvf), rowsum, s);
    check(cudaGetLastError(), "backward audio rows");
    AVF_LAUNCH(bwd_gather_pool<scalar_t>, grid_for(s.B * s.Cv * s.F, kThreads), kThreads, st,
        static_cast<const scalar_t*>(gaf), gpool, s);
    check(cudaGetLastError(), "backward gather");
    AVF_LAUNCH(bwd_video<scalar_t>, grid_for(s.B * s.Cv * s.F * s.H * s.W, kThreads), kThreads, st,
        static_cast<const scalar_t*>(gvf), gpool, static_cast<scalar_t*>(gv), s);
    check(cudaGetLastError(), "backward video");
    AVF_LAUNCH(bwd_audio<scalar_t>, grid_for(s.B * s.Ca * s.T, kThreads), kThreads, st,
        static_cast<const scalar_t*>(gaf), rowsum, static_cast<scalar_t*>(ga), s);
    check(cudaGetLastError(), "backward audio");
  });
}

}  // namespace avfast
