// Easy fusion on the CPU: OpenMP over channel rows, one pass over the inputs.
//
// Forward reads v once: the same loop that copies a (b, c, f) frame into vf sums it for the
// H x W pooling, so the pooled video never round-trips through memory at full size.
// Backward is fused the same way: each grad_v frame is written once as
// grad_vf + (sum of the grad_af entries that picked this frame) / (H W).
#include "avfast/easy_fusion.h"
#include "avfast/common.h"
#include "easy_fusion_cpu.h"

#include <algorithm>
#include <cstring>
#include <vector>
#include <stdexcept>
#include <string>

namespace avfast {
namespace {

template <typename T>
using acc_t = typename Acc<T>::type;

// Sum of n contiguous values in the accumulator type. 16 independent lanes (one AVX-512 register
// of fp32) and a tree at the end: `omp simd reduction` ended every 64-element frame with a serial
// chain of 16 dependent adds, which cost more than the loads on the 8x8 level.
template <typename T>
acc_t<T> sum_contiguous(const T* src, int64_t n) {
  constexpr int kLanes = 16;
  acc_t<T> lanes[kLanes] = {};
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes)
    for (int j = 0; j < kLanes; ++j) lanes[j] += to_float(src[i + j]);
  for (int j = 0; i < n; ++i, ++j) lanes[j] += to_float(src[i]);
  for (int width = kLanes / 2; width > 0; width /= 2)
    for (int j = 0; j < width; ++j) lanes[j] += lanes[j + width];
  return lanes[0];
}

// Copies one H x W frame (strided source, contiguous destination) and returns its sum. The sum
// re-reads the destination while it is still in L1, so memory is read once.
template <typename T>
acc_t<T> copy_and_sum_frame(const T* src, int64_t sh, int64_t sw, int64_t H, int64_t W, T* dst) {
  if (sw == 1 && sh == W) {
    std::memcpy(dst, src, sizeof(T) * size_t(H * W));
  } else {
    for (int64_t h = 0; h < H; ++h)
      for (int64_t w = 0; w < W; ++w) dst[h * W + w] = src[h * sh + w * sw];
  }
  return sum_contiguous(dst, H * W);
}

template <typename T>
acc_t<T> sum_frame(const T* src, int64_t sh, int64_t sw, int64_t H, int64_t W) {
  if (sw == 1 && sh == W) return sum_contiguous(src, H * W);
  acc_t<T> sum = 0;
  for (int64_t h = 0; h < H; ++h) {
    const T* row = src + h * sh;
#pragma omp simd reduction(+ : sum)
    for (int64_t w = 0; w < W; ++w) sum += to_float(row[w * sw]);
  }
  return sum;
}

template <typename T>
void fill(T* dst, int64_t n, T value) {
  std::fill_n(dst, n, value);
}
// The 16-bit formats are structs: fill their raw bits, which the compiler vectorises (a fill of
// the struct type compiles to scalar 2-byte stores).
inline void fill(half_t* dst, int64_t n, half_t value) { std::fill_n(reinterpret_cast<uint16_t*>(dst), n, value.bits); }
inline void fill(bf16_t* dst, int64_t n, bf16_t value) { std::fill_n(reinterpret_cast<uint16_t*>(dst), n, value.bits); }

template <typename T>
void forward(const T* v, const T* a, T* vf, T* af, const EasyFusionShape& s) {
  const int64_t B = s.B, Cv = s.Cv, Ca = s.Ca, F = s.F, H = s.H, W = s.W, Tn = s.T;
  const int64_t HW = H * W, C = Cv + Ca;
  std::vector<acc_t<T>> pooled(static_cast<size_t>(B * Cv * F));
  const acc_t<T> inv_hw = acc_t<T>(1) / acc_t<T>(HW);

  // vf: video rows copy (and pool), audio rows broadcast the nearest audio step.
#pragma omp parallel for schedule(static)
  for (int64_t bc = 0; bc < B * C; ++bc) {
    const int64_t b = bc / C, c = bc % C;
    T* out = vf + bc * F * HW;
    if (c < Cv) {
      const T* src = v + b * s.vs[0] + c * s.vs[1];
      acc_t<T>* pool_row = pooled.data() + (b * Cv + c) * F;
      if (s.vs[4] == 1 && s.vs[3] == W && s.vs[2] == HW) {
        // The whole channel is one contiguous run: one copy, then the sums read it from cache.
        std::memcpy(out, src, sizeof(T) * size_t(F * HW));
        for (int64_t f = 0; f < F; ++f) pool_row[f] = sum_contiguous(out + f * HW, HW) * inv_hw;
      } else {
        for (int64_t f = 0; f < F; ++f)
          pool_row[f] = copy_and_sum_frame(src + f * s.vs[2], s.vs[3], s.vs[4], H, W, out + f * HW) * inv_hw;
      }
    } else {
      const T* src = a + b * s.as[0] + (c - Cv) * s.as[1];
      for (int64_t f = 0; f < F; ++f)
        fill(out + f * HW, HW, src[nearest_src_index(f, Tn, F) * s.as[2]]);
    }
  }

  // af: audio rows copy, video rows take the pooled frame nearest to each audio step. The index
  // map and the rounding of each pooled value are computed once, not once per output element.
  std::vector<int64_t> frame_of_step(static_cast<size_t>(Tn));
  for (int64_t t = 0; t < Tn; ++t) frame_of_step[size_t(t)] = nearest_src_index(t, F, Tn);
  const int64_t Caf = Ca + Cv;
#pragma omp parallel
  {
    std::vector<T> pooled_row(static_cast<size_t>(F));
#pragma omp for schedule(static)
    for (int64_t bc = 0; bc < B * Caf; ++bc) {
      const int64_t b = bc / Caf, c = bc % Caf;
      T* out = af + bc * Tn;
      if (c < Ca) {
        const T* src = a + b * s.as[0] + c * s.as[1];
        if (s.as[2] == 1) {
          std::memcpy(out, src, sizeof(T) * size_t(Tn));
        } else {
          for (int64_t t = 0; t < Tn; ++t) out[t] = src[t * s.as[2]];
        }
      } else {
        const acc_t<T>* pool_row = pooled.data() + (b * Cv + (c - Ca)) * F;
        for (int64_t f = 0; f < F; ++f) pooled_row[size_t(f)] = from_acc<T>(pool_row[f]);
        for (int64_t t = 0; t < Tn; ++t) out[t] = pooled_row[size_t(frame_of_step[size_t(t)])];
      }
    }
  }
}

template <typename T>
void backward(const T* gvf, const T* gaf, T* gv, T* ga, const EasyFusionShape& s) {
  const int64_t B = s.B, Cv = s.Cv, Ca = s.Ca, F = s.F, H = s.H, W = s.W, Tn = s.T;
  const int64_t HW = H * W;
  const acc_t<T> inv_hw = acc_t<T>(1) / acc_t<T>(HW);

  // grad_v = grad_vf[:, :Cv] + (grad_af[:, Ca:] gathered back onto frames) / HW
#pragma omp parallel
  {
    std::vector<acc_t<T>> gpool(static_cast<size_t>(F));
#pragma omp for schedule(static)
    for (int64_t bc = 0; bc < B * Cv; ++bc) {
      const int64_t b = bc / Cv, c = bc % Cv;
      std::fill(gpool.begin(), gpool.end(), acc_t<T>(0));
      const T* ga_row = gaf + b * s.as[0] + (Ca + c) * s.as[1];
      for (int64_t t = 0; t < Tn; ++t) gpool[nearest_src_index(t, F, Tn)] += to_float(ga_row[t * s.as[2]]);
      const T* src = gvf + b * s.vs[0] + c * s.vs[1];
      T* out = gv + bc * F * HW;
      for (int64_t f = 0; f < F; ++f) {
        const acc_t<T> add = gpool[f] * inv_hw;
        const T* frame = src + f * s.vs[2];
        T* dst = out + f * HW;
        if (s.vs[4] == 1 && s.vs[3] == W) {
#pragma omp simd
          for (int64_t i = 0; i < HW; ++i) dst[i] = from_acc<T>(to_float(frame[i]) + add);
        } else {
          for (int64_t h = 0; h < H; ++h)
            for (int64_t w = 0; w < W; ++w)
              dst[h * W + w] = from_acc<T>(to_float(frame[h * s.vs[3] + w * s.vs[4]]) + add);
        }
      }
    }
  }

  // grad_a = grad_af[:, :Ca] + sum over the frames that picked each step of sum_HW grad_vf[:, Cv:]
#pragma omp parallel
  {
    std::vector<acc_t<T>> acc(static_cast<size_t>(Tn));
#pragma omp for schedule(static)
    for (int64_t bc = 0; bc < B * Ca; ++bc) {
      const int64_t b = bc / Ca, c = bc % Ca;
      const T* ga_row = gaf + b * s.as[0] + c * s.as[1];
      for (int64_t t = 0; t < Tn; ++t) acc[t] = to_float(ga_row[t * s.as[2]]);
      const T* src = gvf + b * s.vs[0] + (Cv + c) * s.vs[1];
      for (int64_t f = 0; f < F; ++f)
        acc[nearest_src_index(f, Tn, F)] += sum_frame(src + f * s.vs[2], s.vs[3], s.vs[4], H, W);
      T* out = ga + bc * Tn;
      for (int64_t t = 0; t < Tn; ++t) out[t] = from_acc<T>(acc[t]);
    }
  }
}

}  // namespace

void easy_fusion_forward_cpu(int dtype, const void* v, const void* a, void* vf, void* af,
                             const EasyFusionShape& s) {
  AVF_DISPATCH_FLOATING(dtype, forward<scalar_t>(static_cast<const scalar_t*>(v), static_cast<const scalar_t*>(a),
                                                 static_cast<scalar_t*>(vf), static_cast<scalar_t*>(af), s));
}

void easy_fusion_backward_cpu(int dtype, const void* gvf, const void* gaf, void* gv, void* ga,
                              const EasyFusionShape& s) {
  AVF_DISPATCH_FLOATING(dtype, backward<scalar_t>(static_cast<const scalar_t*>(gvf), static_cast<const scalar_t*>(gaf),
                                                  static_cast<scalar_t*>(gv), static_cast<scalar_t*>(ga), s));
}

}  // namespace avfast
