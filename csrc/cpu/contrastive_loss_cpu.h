// CPU entry points of the contrastive loss (kept in their own header so ops touch separate files).
#pragma once
#include "avfast/contrastive_loss.h"

namespace avfast {

// out: [4, B] accumulators (float, or double for fp64 inputs).
void contrastive_loss_forward_cpu(int dtype, const void* pv, const void* pa, const void* tv, const void* ta,
                                  void* out, const ContrastiveLossShape& s);
// grad: [4, B] accumulators; gpv/gpa [G, B, N] and gtv/gta [B, N], contiguous, input dtype.
void contrastive_loss_backward_cpu(int dtype, const void* grad, const void* pv, const void* pa, const void* tv,
                                   const void* ta, void* gpv, void* gpa, void* gtv, void* gta,
                                   const ContrastiveLossShape& s);

}  // namespace avfast
