// CPU entry points of the contrastive loss (kept in their own header so ops touch separate files).
#pragma once
#include "avfast/contrastive_loss.h"

namespace avfast {

// out: [4, B] accumulators (float, or double for fp64 inputs). With a non-null `grad` ([4, B]
// accumulators: the upstream gradient the caller expects), the same pass also writes the gradients
// the backward below would (forward + backward in one read of the data); otherwise they are unused.
void contrastive_loss_forward_cpu(int dtype, const void* pv, const void* pa, const void* tv, const void* ta,
                                  void* out, const void* grad, void* gpv, void* gpa, void* gtv, void* gta,
                                  const ContrastiveLossShape& s);
// grad: [4, B] accumulators; gpv/gpa [G, B, N] and gtv/gta [B, N], contiguous, input dtype. Any
// gradient pointer may be null (not written), except that a target gradient needs its pred one.
void contrastive_loss_backward_cpu(int dtype, const void* grad, const void* pv, const void* pa, const void* tv,
                                   const void* ta, void* gpv, void* gpa, void* gtv, void* gta,
                                   const ContrastiveLossShape& s);

}  // namespace avfast
