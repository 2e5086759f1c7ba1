// Easy fusion (CMMD, Fig. 6): shapes and strides handed down from Python.
//
//   v  [B, Cv, F, H, W]  (any strides)      a  [B, Ca, T]  (any strides)
//   vf [B, Cv+Ca, F, H, W] (contiguous) = cat(v, nearest_T->F(a) repeated over H x W)
//   af [B, Ca+Cv, T]       (contiguous) = cat(a, nearest_F->T(mean_HW(v)))
//
// Backward takes grad_vf / grad_af with any strides and writes contiguous grad_v / grad_a.
#pragma once
#include <cstdint>

namespace avfast {

struct EasyFusionShape {
  int64_t B, Cv, Ca, F, H, W, T;
  // Strides in elements of the strided inputs: forward (v, a) or backward (grad_vf, grad_af).
  int64_t vs[5];
  int64_t as[3];
};

}  // namespace avfast
