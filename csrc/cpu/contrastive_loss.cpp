// Joint contrastive diffusion loss on the CPU (maths in avfast/contrastive_loss.h).
//
// One pass serves both directions. OpenMP runs over the (modality, sample, chunk of kChunk
// elements) tasks of both modalities in one parallel region; a task reads its target chunk once
// (it stays in L1) and streams the chunk of every group against it, doing what was asked of it:
//   - sums:     one partial sum of squared errors per (group, sample, chunk); the partials are then
//               added in chunk order, so the result does not depend on the thread count;
//   - gradient: grad_pred = c[g] * wm * 2 / Nm * (pred - target) for every group, and, when asked,
//               grad_target = -sum_g grad_pred through a chunk buffer.
// The forward asks for the sums and, when given an upstream gradient, the gradient too (the loss
// is quadratic, so the gradient needs only the upstream gradient, not the forward's result: the
// autograd fast path computes both in one pass). The backward asks for the gradient only. Every
// gradient pointer may be null (not needed), so nothing is written that nobody reads.
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
// Independent partial sums in the contiguous loop: a running vector sum is bound by the FMA latency;
// 64 fp32 lanes are 4 AVX-512 chains, enough to keep up with two loads a cycle (32 lanes ran ~35%
// slower). The lanes are added in a fixed order, so the result stays deterministic.
constexpr int kLanes = 64;

// from_acc<T> with the bf16 NaN test as a select instead of an early return, so GCC vectorises
// the gradient stores (same bits as bf16_from_float: round to nearest even, quiet NaN).
template <typename T> inline T store(acc_t<T> x) { return from_acc<T>(x); }
template <> inline bf16_t store<bf16_t>(float f) {
  const uint32_t u = f32_bits(f);
  const uint32_t rounded = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
  const uint32_t quiet = (u >> 16) | 0x40u;
  return bf16_t{uint16_t((u & 0x7fffffffu) > 0x7f800000u ? quiet : rounded)};
}

// One modality's data and what to produce for it.
template <typename T> struct Modality {
  const T* pred;
  const T* target;
  const int64_t* ps;  // pred strides over (G, B, N)
  const int64_t* ts;  // target strides over (B, N)
  int64_t N;
  double w;
  acc_t<T>* partial;  // [G, B, nch] partial sums, or null
  T* gpred;           // [G, B, N] contiguous, or null
  T* gtarget;         // [B, N] contiguous, or null
  int64_t nch() const { return (N + kChunk - 1) / kChunk; }
};

// One group against one target chunk: returns sum (p - t)^2 when kSum, writes out = coef (p - t)
// when kGrad and subtracts it from acc when kTarget. p/t strided by ps/ts; out/acc contiguous.
template <bool kSum, bool kGrad, bool kTarget, typename T>
acc_t<T> chunk_pass(const T* p, int64_t ps, const T* t, int64_t ts, int64_t n, acc_t<T> coef, T* out,
                    acc_t<T>* acc) {
  using A = acc_t<T>;
  A sum = 0;
  int64_t i = 0;
  if (ps == 1 && ts == 1) {
    A lanes[kLanes] = {};
    for (; i + kLanes <= n; i += kLanes) {
#pragma omp simd
      for (int l = 0; l < kLanes; ++l) {
        const A d = A(to_float(p[i + l])) - A(to_float(t[i + l]));
        if (kSum) lanes[l] += d * d;
        if (kGrad) {
          const A gp = coef * d;
          out[i + l] = store<T>(gp);
          if (kTarget) acc[i + l] -= gp;
        }
      }
    }
    for (int l = 0; l < kLanes; ++l) sum += lanes[l];
  }
  for (; i < n; ++i) {  // strided inputs, and the tail of contiguous ones
    const A d = A(to_float(p[i * ps])) - A(to_float(t[i * ts]));
    if (kSum) sum += d * d;
    if (kGrad) {
      const A gp = coef * d;
      out[i] = store<T>(gp);
      if (kTarget) acc[i] -= gp;
    }
  }
  return sum;
}

template <bool kSum, bool kGrad, bool kTarget, typename T>
void task(const Modality<T>& m, const acc_t<T>* coef, int64_t b, int64_t c, const ContrastiveLossShape& s,
          acc_t<T>* acc) {
  using A = acc_t<T>;
  const int64_t G = s.G, B = s.B, nch = m.nch(), i0 = c * kChunk;
  const int64_t n = (m.N - i0) < kChunk ? (m.N - i0) : kChunk;
  const T* t = m.target + b * m.ts[0] + i0 * m.ts[1];
  if (kTarget)
    for (int64_t i = 0; i < n; ++i) acc[i] = 0;
  for (int64_t g = 0; g < G; ++g) {
    const T* p = m.pred + g * m.ps[0] + b * m.ps[1] + i0 * m.ps[2];
    T* out = kGrad ? m.gpred + (g * B + b) * m.N + i0 : nullptr;
    const A sum = chunk_pass<kSum, kGrad, kTarget>(p, m.ps[2], t, m.ts[1], n, kGrad ? coef[g * B + b] : A(0), out,
                                                   acc);
    if (kSum) m.partial[(g * B + b) * nch + c] = sum;
  }
  if (kTarget) {
    T* gt = m.gtarget + b * m.N + i0;
    for (int64_t i = 0; i < n; ++i) gt[i] = store<T>(acc[i]);
  }
}

template <typename T>
void run_task(const Modality<T>& m, const acc_t<T>* coef, int64_t b, int64_t c, const ContrastiveLossShape& s,
              acc_t<T>* acc) {
  const bool sum = m.partial != nullptr, grad = coef != nullptr && m.gpred != nullptr;
  const bool target = coef != nullptr && m.gtarget != nullptr;
  // check_grad_pointers guarantees grad_pred wherever grad_target is asked for.
  if (sum && grad && target) task<true, true, true>(m, coef, b, c, s, acc);
  else if (sum && grad) task<true, true, false>(m, coef, b, c, s, acc);
  else if (sum) task<true, false, false>(m, coef, b, c, s, acc);
  else if (grad && target) task<false, true, true>(m, coef, b, c, s, acc);
  else if (grad) task<false, true, false>(m, coef, b, c, s, acc);
}

// coef[m][g * B + b] = c[g] * wm * 2 / Nm from the upstream gradient [4, B].
template <typename A>
std::vector<A> coefficients(const A* grad, double w, int64_t N, const ContrastiveLossShape& s) {
  std::vector<A> coef(static_cast<size_t>(s.G * s.B));
  const A scale = A(w) * A(2) / A(N);
  for (int64_t g = 0; g < s.G; ++g)
    for (int64_t b = 0; b < s.B; ++b)
      coef[g * s.B + b] = scale * contrastive_group_coef<A>(g, s.G, s.Kv, A(s.eta), grad[kCont * s.B + b],
                                                            grad[kPos * s.B + b], grad[kNegV * s.B + b],
                                                            grad[kNegA * s.B + b]);
  return coef;
}

// Runs every task of both modalities in one parallel region.
template <typename T>
void run(const Modality<T> (&mods)[2], const acc_t<T>* grad, const ContrastiveLossShape& s) {
  using A = acc_t<T>;
  std::vector<A> coef[2];
  if (grad)
    for (int k = 0; k < 2; ++k) coef[k] = coefficients<A>(grad, mods[k].w, mods[k].N, s);
  const int64_t tasks0 = s.B * mods[0].nch(), tasks = tasks0 + s.B * mods[1].nch();
  const bool need_buf = grad && (mods[0].gtarget || mods[1].gtarget);
#pragma omp parallel
  {
    std::vector<A> buf(need_buf ? static_cast<size_t>(kChunk) : 0);
#pragma omp for schedule(static)
    for (int64_t k = 0; k < tasks; ++k) {
      const int mi = k < tasks0 ? 0 : 1;
      const Modality<T>& m = mods[mi];
      const int64_t local = k - (mi ? tasks0 : 0), nch = m.nch();
      run_task(m, grad ? coef[mi].data() : nullptr, local / nch, local % nch, s, buf.data());
    }
  }
}

template <typename T>
void forward(const T* pv, const T* pa, const T* tv, const T* ta, acc_t<T>* out, const acc_t<T>* grad, T* gpv,
             T* gpa, T* gtv, T* gta, const ContrastiveLossShape& s) {
  using A = acc_t<T>;
  const int64_t nv = (s.Nv + kChunk - 1) / kChunk, na = (s.Na + kChunk - 1) / kChunk;
  std::vector<A> part_v(static_cast<size_t>(s.G * s.B * nv)), part_a(static_cast<size_t>(s.G * s.B * na));
  const Modality<T> mods[2] = {{pv, tv, s.pvs, s.tvs, s.Nv, s.wv, part_v.data(), gpv, gtv},
                               {pa, ta, s.pas, s.tas, s.Na, s.wa, part_a.data(), gpa, gta}};
  run(mods, grad, s);
  std::vector<A> sv(static_cast<size_t>(s.G * s.B)), sa(static_cast<size_t>(s.G * s.B));
  for (int64_t gb = 0; gb < s.G * s.B; ++gb) {
    A x = 0, y = 0;
    for (int64_t c = 0; c < nv; ++c) x += part_v[gb * nv + c];
    for (int64_t c = 0; c < na; ++c) y += part_a[gb * na + c];
    sv[gb] = x;
    sa[gb] = y;
  }
  for (int64_t b = 0; b < s.B; ++b) contrastive_combine<A>(sv.data(), sa.data(), b, s, out);
}

template <typename T>
void backward(const acc_t<T>* grad, const T* pv, const T* pa, const T* tv, const T* ta, T* gpv, T* gpa, T* gtv,
              T* gta, const ContrastiveLossShape& s) {
  const Modality<T> mods[2] = {{pv, tv, s.pvs, s.tvs, s.Nv, s.wv, nullptr, gpv, gtv},
                               {pa, ta, s.pas, s.tas, s.Na, s.wa, nullptr, gpa, gta}};
  run(mods, grad, s);
}

void check_grad_pointers(const void* gpv, const void* gpa, const void* gtv, const void* gta) {
  // grad_target is grad_pred summed over the groups: the kernel needs somewhere to write grad_pred.
  if ((gtv && !gpv) || (gta && !gpa))
    throw std::invalid_argument("avfast: contrastive_loss: a target gradient needs its prediction gradient");
}

}  // namespace

void contrastive_loss_forward_cpu(int dtype, const void* pv, const void* pa, const void* tv, const void* ta,
                                  void* out, const void* grad, void* gpv, void* gpa, void* gtv, void* gta,
                                  const ContrastiveLossShape& s) {
  if (grad) check_grad_pointers(gpv, gpa, gtv, gta);
  AVF_DISPATCH_FLOATING(dtype, forward<scalar_t>(
      static_cast<const scalar_t*>(pv), static_cast<const scalar_t*>(pa), static_cast<const scalar_t*>(tv),
      static_cast<const scalar_t*>(ta), static_cast<acc_t<scalar_t>*>(out),
      static_cast<const acc_t<scalar_t>*>(grad), static_cast<scalar_t*>(gpv), static_cast<scalar_t*>(gpa),
      static_cast<scalar_t*>(gtv), static_cast<scalar_t*>(gta), s));
}

void contrastive_loss_backward_cpu(int dtype, const void* grad, const void* pv, const void* pa, const void* tv,
                                   const void* ta, void* gpv, void* gpa, void* gtv, void* gta,
                                   const ContrastiveLossShape& s) {
  check_grad_pointers(gpv, gpa, gtv, gta);
  AVF_DISPATCH_FLOATING(dtype, backward<scalar_t>(
      static_cast<const acc_t<scalar_t>*>(grad), static_cast<const scalar_t*>(pv),
      static_cast<const scalar_t*>(pa), static_cast<const scalar_t*>(tv), static_cast<const scalar_t*>(ta),
      static_cast<scalar_t*>(gpv), static_cast<scalar_t*>(gpa), static_cast<scalar_t*>(gtv),
      static_cast<scalar_t*>(gta), s));
}

}  // namespace avfast
