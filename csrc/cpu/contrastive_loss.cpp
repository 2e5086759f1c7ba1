// Joint contrastive diffusion loss on the CPU (maths in avfast/contrastive_loss.h).
//
// Forward, per modality: OpenMP over (sample, chunk of kChunk elements); a task reads its target
// chunk once (it stays in L1) and streams the chunk of every group against it, writing one partial
// sum per (group, sample, chunk). The partials are then added in chunk order, so the result does
// not depend on the thread count (deterministic), and combined into the [4, B] output.
// Backward: the same tiling; a task writes grad_pred for every group and accumulates
// grad_target = -sum_g grad_pred in a chunk buffer, so the data is read once and written once.
#include "avfast/contrastive_loss.h"
#include "avfast/common.h"
#include "contrastive_loss_cpu.h"

#include <stdexcept>
#include <string>
#include <vector>

namespace avfast {
namespace {

template <typename T> using acc_t = typename Acc<T>::type;
constexpr int64_t kChunk = 4096;

// from_acc<T> with the bf16 NaN test as a select instead of an early return, so GCC vectorises
// the gradient stores (same bits as bf16_from_float: round to nearest even, quiet NaN).
template <typename T> inline T store(acc_t<T> x) { return from_acc<T>(x); }
template <> inline bf16_t store<bf16_t>(float f) {
  const uint32_t u = f32_bits(f);
  const uint32_t rounded = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
  const uint32_t quiet = (u >> 16) | 0x40u;
  return bf16_t{uint16_t((u & 0x7fffffffu) > 0x7f800000u ? quiet : rounded)};
}

// Sum over i < n of (p[i*ps] - t[i*ts])^2. The contiguous path keeps kLanes independent partial
// sums: one running vector sum is bound by the add latency (~4x below what the loads allow); the
// lanes are added in a fixed order, so the result stays deterministic.
constexpr int kLanes = 32;

template <typename T>
acc_t<T> chunk_sq_sum(const T* p, int64_t ps, const T* t, int64_t ts, int64_t n) {
  using A = acc_t<T>;
  A sum = 0;
  if (ps == 1 && ts == 1) {
    A lanes[kLanes] = {};
    int64_t i = 0;
    for (; i + kLanes <= n; i += kLanes) {
#pragma omp simd
      for (int l = 0; l < kLanes; ++l) lanes[l] += contrastive_sq_err<A>(to_float(p[i + l]), to_float(t[i + l]));
    }
    for (; i < n; ++i) sum += contrastive_sq_err<A>(to_float(p[i]), to_float(t[i]));
    for (int l = 0; l < kLanes; ++l) sum += lanes[l];
  } else {
    for (int64_t i = 0; i < n; ++i) sum += contrastive_sq_err<A>(to_float(p[i * ps]), to_float(t[i * ts]));
  }
  return sum;
}

// sums[g * B + b] = sum_i (pred[g, b, i] - target[b, i])^2 for one modality.
template <typename T>
void modality_sums(const T* pred, const T* target, const int64_t* ps, const int64_t* ts, int64_t G, int64_t B,
                   int64_t N, acc_t<T>* sums) {
  using A = acc_t<T>;
  const int64_t nch = (N + kChunk - 1) / kChunk;
  std::vector<A> partial(static_cast<size_t>(G * B * nch));
#pragma omp parallel for schedule(static)
  for (int64_t task = 0; task < B * nch; ++task) {
    const int64_t b = task / nch, c = task % nch, i0 = c * kChunk;
    const int64_t n = (N - i0) < kChunk ? (N - i0) : kChunk;
    const T* t = target + b * ts[0] + i0 * ts[1];
    for (int64_t g = 0; g < G; ++g)
      partial[(g * B + b) * nch + c] = chunk_sq_sum(pred + g * ps[0] + b * ps[1] + i0 * ps[2], ps[2], t, ts[1], n);
  }
  for (int64_t gb = 0; gb < G * B; ++gb) {
    A s = 0;
    for (int64_t c = 0; c < nch; ++c) s += partial[gb * nch + c];
    sums[gb] = s;
  }
}

template <typename T>
void forward(const T* pv, const T* pa, const T* tv, const T* ta, acc_t<T>* out, const ContrastiveLossShape& s) {
  using A = acc_t<T>;
  std::vector<A> sv(static_cast<size_t>(s.G * s.B)), sa(static_cast<size_t>(s.G * s.B));
  modality_sums(pv, tv, s.pvs, s.tvs, s.G, s.B, s.Nv, sv.data());
  modality_sums(pa, ta, s.pas, s.tas, s.G, s.B, s.Na, sa.data());
  for (int64_t b = 0; b < s.B; ++b) contrastive_combine<A>(sv.data(), sa.data(), b, s, out);
}

// grad_pred [G, B, N] and grad_target [B, N] (contiguous) for one modality; w = the modality weight.
template <typename T>
void modality_backward(const T* pred, const T* target, const int64_t* ps, const int64_t* ts, const acc_t<T>* grad,
                       T* gpred, T* gtarget, int64_t N, double w, const ContrastiveLossShape& s) {
  using A = acc_t<T>;
  const int64_t G = s.G, B = s.B, nch = (N + kChunk - 1) / kChunk;
  const A scale = A(w) * A(2) / A(N);
#pragma omp parallel
  {
    std::vector<A> buf(static_cast<size_t>(kChunk));
#pragma omp for schedule(static)
    for (int64_t task = 0; task < B * nch; ++task) {
      const int64_t b = task / nch, c = task % nch, i0 = c * kChunk;
      const int64_t n = (N - i0) < kChunk ? (N - i0) : kChunk;
      const T* t = target + b * ts[0] + i0 * ts[1];
      const int64_t tst = ts[1], pst = ps[2];
      A* acc = buf.data();
      for (int64_t i = 0; i < n; ++i) acc[i] = 0;
      for (int64_t g = 0; g < G; ++g) {
        const A coef = scale * contrastive_group_coef<A>(g, G, s.Kv, A(s.eta), grad[kCont * B + b], grad[kPos * B + b],
                                                         grad[kNegV * B + b], grad[kNegA * B + b]);
        const T* p = pred + g * ps[0] + b * ps[1] + i0 * pst;
        T* out = gpred + (g * B + b) * N + i0;
        if (pst == 1 && tst == 1) {
#pragma omp simd
          for (int64_t i = 0; i < n; ++i) {
            const A gp = contrastive_grad_elem<A>(coef, to_float(p[i]), to_float(t[i]));
            out[i] = store<T>(gp);
            acc[i] -= gp;
          }
        } else {
          for (int64_t i = 0; i < n; ++i) {
            const A gp = contrastive_grad_elem<A>(coef, to_float(p[i * pst]), to_float(t[i * tst]));
            out[i] = store<T>(gp);
            acc[i] -= gp;
          }
        }
      }
      T* gt = gtarget + b * N + i0;
      for (int64_t i = 0; i < n; ++i) gt[i] = store<T>(acc[i]);
    }
  }
}

}  // namespace

void contrastive_loss_forward_cpu(int dtype, const void* pv, const void* pa, const void* tv, const void* ta,
                                  void* out, const ContrastiveLossShape& s) {
  AVF_DISPATCH_FLOATING(dtype, forward<scalar_t>(
      static_cast<const scalar_t*>(pv), static_cast<const scalar_t*>(pa), static_cast<const scalar_t*>(tv),
      static_cast<const scalar_t*>(ta), static_cast<acc_t<scalar_t>*>(out), s));
}

void contrastive_loss_backward_cpu(int dtype, const void* grad, const void* pv, const void* pa, const void* tv,
                                   const void* ta, void* gpv, void* gpa, void* gtv, void* gta,
                                   const ContrastiveLossShape& s) {
  AVF_DISPATCH_FLOATING(dtype, {
    using A = acc_t<scalar_t>;
    const A* g = static_cast<const A*>(grad);
    modality_backward<scalar_t>(static_cast<const scalar_t*>(pv), static_cast<const scalar_t*>(tv), s.pvs, s.tvs, g,
                                static_cast<scalar_t*>(gpv), static_cast<scalar_t*>(gtv), s.Nv, s.wv, s);
    modality_backward<scalar_t>(static_cast<const scalar_t*>(pa), static_cast<const scalar_t*>(ta), s.pas, s.tas, g,
                                static_cast<scalar_t*>(gpa), static_cast<scalar_t*>(gta), s.Na, s.wa, s);
  });
}

}  // namespace avfast
