// Joint contrastive diffusion loss (CMMD Eq. 6 / Alg. 1): shapes and the scalar maths shared by
// the CPU and CUDA kernels (and mirrored by the Python reference and the Triton host code).
//
//   pred_v [G, B, Nv], pred_a [G, B, Na]   (any strides; trailing dims flattened by Python)
//   target_v [B, Nv], target_a [B, Na]     (the positives' velocity targets)
//   groups: g = 0 positives, 1..Kv video negatives, Kv+1..G-1 audio negatives (Ka = G-1-Kv)
//
//   e_m[g, b] = mean_i (pred_m[g, b, i] - target_m[b, i])^2          (m = v, a)
//   j[g, b]   = wv e_v[g, b] + wa e_a[g, b]                          (joint error of one pair)
//   L = j[0], Lneg_v = mean_{video groups} j, Lneg_a = mean_{audio groups} j (0 if none)
//   L_cont = L - eta (Lneg_v + Lneg_a)
//   out [4, B] = (L_cont, L, Lneg_v, Lneg_a), in the accumulator type.
//
// Backward: with upstream gradients (gc, gL, gnv, gna) of the four rows,
//   dOut/dj[g] = c[g] = gc + gL                 (g = 0)
//                     = (gnv - eta gc) / Kv     (video groups)
//                     = (gna - eta gc) / Ka     (audio groups)
//   grad_pred_m[g, b, i] = c[g] * wm * 2 / Nm * (pred - target),  grad_target_m = -sum_g grad_pred_m.
#pragma once
#include <cstdint>

#include "avfast/common.h"

namespace avfast {

struct ContrastiveLossShape {
  int64_t G, B, Kv, Nv, Na;
  int64_t pvs[3], pas[3];  // strides (elements) of pred_v / pred_a over (G, B, N)
  int64_t tvs[2], tas[2];  // strides of target_v / target_a over (B, N)
  double eta, wv, wa;
};

// Rows of the [4, B] output.
enum ContrastiveRow : int { kCont = 0, kPos = 1, kNegV = 2, kNegA = 3 };

// The per-group backward coefficient c[g] (see above), without the per-modality factor wm*2/Nm.
template <typename A>
AVF_HD A contrastive_group_coef(int64_t g, int64_t G, int64_t Kv, A eta, A gc, A gL, A gnv, A gna) {
  if (g == 0) return gc + gL;
  if (g <= Kv) return (gnv - eta * gc) / A(Kv);
  return (gna - eta * gc) / A(G - 1 - Kv);
}

// Squared error of one element, in the accumulator type.
template <typename A>
AVF_HD A contrastive_sq_err(A pred, A target) {
  const A d = pred - target;
  return d * d;
}

// One element of grad_pred: coef (= c[g] * wm * 2 / Nm) times the residual.
template <typename A>
AVF_HD A contrastive_grad_elem(A coef, A pred, A target) {
  return coef * (pred - target);
}

// out[row * B + b] for one sample b from the summed squared errors sv[g * B + b], sa[g * B + b].
template <typename A>
AVF_HD void contrastive_combine(const A* sv, const A* sa, int64_t b, const ContrastiveLossShape& s, A* out) {
  const A inv_nv = A(1) / A(s.Nv), inv_na = A(1) / A(s.Na), wv = A(s.wv), wa = A(s.wa);
  const int64_t Ka = s.G - 1 - s.Kv;
  A pos = 0, negv = 0, nega = 0;
  for (int64_t g = 0; g < s.G; ++g) {
    const A j = wv * sv[g * s.B + b] * inv_nv + wa * sa[g * s.B + b] * inv_na;
    if (g == 0) pos = j;
    else if (g <= s.Kv) negv += j;
    else nega += j;
  }
  if (s.Kv > 0) negv /= A(s.Kv);
  if (Ka > 0) nega /= A(Ka);
  out[kCont * s.B + b] = pos - A(s.eta) * (negv + nega);
  out[kPos * s.B + b] = pos;
  out[kNegV * s.B + b] = negv;
  out[kNegA * s.B + b] = nega;
}

}  // namespace avfast
