// CUDA launchers of the contrastive loss: plain C++ signatures (stream as void*), no libtorch.
#pragma once
#include <cstdint>

#include "avfast/contrastive_loss.h"

namespace avfast {

// Accumulators (float, or double for fp64) the forward needs as workspace.
int64_t contrastive_loss_workspace_elems_cuda(const ContrastiveLossShape& s);
// out: [4, B] accumulators. With a non-null `grad` ([4, B] accumulators: the upstream gradient the
// caller expects) the same pass also writes gpv/gpa (required then) and gtv/gta (each optional).
void contrastive_loss_forward_cuda(int dtype, const void* pv, const void* pa, const void* tv, const void* ta,
                                   void* out, void* workspace, const void* grad, void* gpv, void* gpa, void* gtv,
                                   void* gta, const ContrastiveLossShape& s, void* stream);
// grad: [4, B] accumulators; gpv/gpa [G, B, N], gtv/gta [B, N], contiguous, input dtype; gtv/gta
// may be null (the targets need no gradient).
void contrastive_loss_backward_cuda(int dtype, const void* grad, const void* pv, const void* pa, const void* tv,
                                    const void* ta, void* gpv, void* gpa, void* gtv, void* gta,
                                    const ContrastiveLossShape& s, void* stream);

}  // namespace avfast
