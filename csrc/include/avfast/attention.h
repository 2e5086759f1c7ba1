// Temporal-spatial attention: the geometry handed down from Python (no libtorch).
//
// Every tensor is seen as [B, channels, A1, A2, A3] (audio [B, C, T] as [B, C, 1, 1, T]). The mode
// splits the three trailing axes into "group" axes (independent attention problems: the frame in
// spatial mode, the pixel in temporal mode) and "token" axes (the sequence attended over). Python
// folds that into up to two group axes and three token axes, padding with size 1 / stride 0, so the
// kernels read q, k, v straight out of the model's [B, 3C, F, H, W] tensor with its own strides.
//
//   qkv  [B, 3C, ...]  q = channels [0, C), k = [C, 2C), v = [2C, 3C); head h = channels [hD, hD+D)
//   out  [B, C, ...]   lse [B, heads, G, N] fp32 (natural log, of the scaled scores)
#pragma once
#include <cstdint>

#include "avfast/common.h"

namespace avfast {

struct AttnShape {
  int64_t B, heads, D;
  int64_t g[2];  // group axes sizes (G = g[0] * g[1])
  int64_t n[3];  // token axes sizes (N = n[0] * n[1] * n[2]), n[0] outermost
  float scale;   // softmax scale (head_dim^-0.5 by default)
};

// Strides in elements of one tensor seen through the geometry above.
struct AttnView {
  int64_t b, c;
  int64_t g[2];
  int64_t n[3];
};

AVF_HD int64_t attn_groups(const AttnShape& s) { return s.g[0] * s.g[1]; }
AVF_HD int64_t attn_tokens(const AttnShape& s) { return s.n[0] * s.n[1] * s.n[2]; }
AVF_HD int64_t attn_group_offset(const AttnShape& s, const AttnView& v, int64_t g) {
  return (g / s.g[1]) * v.g[0] + (g % s.g[1]) * v.g[1];
}
AVF_HD int64_t attn_token_offset(const AttnShape& s, const AttnView& v, int64_t n) {
  const int64_t n2 = n % s.n[2];
  n /= s.n[2];
  return (n / s.n[1]) * v.n[0] + (n % s.n[1]) * v.n[1] + n2 * v.n[2];
}

// Problem p = (b, head, group) in row-major order [B, heads, G] -> offset of channel 0 of that
// head (q block for qkv) plus the group; the lse / delta row of the problem starts at p * N.
AVF_HD int64_t attn_problem_offset(const AttnShape& s, const AttnView& v, int64_t p) {
  const int64_t G = attn_groups(s);
  const int64_t bh = p / G;
  return (bh / s.heads) * v.b + (bh % s.heads) * s.D * v.c + attn_group_offset(s, v, p % G);
}

// Online softmax in base 2: scores are kept as log2 units (q . k * scale * log2 e), so every
// exponential is one exp2 and the running max never meets an unscaled logit.
constexpr float kAttnLog2e = 1.4426950408889634f;
constexpr float kAttnLn2 = 0.6931471805599453f;
AVF_HD float attn_log2_scale(float scale) { return scale * kAttnLog2e; }
// One key tile of the online softmax for a row: raises the running max m to include the tile's
// max and returns alpha, the factor the running sum and accumulator are rescaled by (0 on the
// first tile, where m = -inf; the tile max is finite because every tile has a valid key).
AVF_HD float attn_online_rescale(float& m, float tile_max) {
  const float m_new = m > tile_max ? m : tile_max;
  const float alpha = exp2f(m - m_new);
  m = m_new;
  return alpha;
}
// Natural-log log-sum-exp of the scaled scores from the base-2 running max and sum.
AVF_HD float attn_lse(float m2, float l) { return (m2 + log2f(l)) * kAttnLn2; }
// Backward: P recomputed from the saved lse (s2 in log2 units), and dS = P * (dP - delta).
AVF_HD float attn_prob(float s2, float lse) { return exp2f(s2 - lse * kAttnLog2e); }
AVF_HD float attn_dscore(float p, float dp, float delta) { return p * (dp - delta); }

}  // namespace avfast
