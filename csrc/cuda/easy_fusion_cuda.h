// CUDA launchers of easy fusion: plain C++ signatures (stream as void*) so the pybind11 layer (or a TensorRT
// plugin, should one be written) can call them without CUDA headers or libtorch.
#pragma once
#include "avfast/easy_fusion.h"

namespace avfast {

// workspace: B*Cv*F accumulators (float, or double for fp64 inputs).
void easy_fusion_forward_cuda(int dtype, const void* v, const void* a, void* vf, void* af, void* workspace,
                              const EasyFusionShape& s, void* stream);
// workspace: B*(Cv+Ca)*F accumulators.
void easy_fusion_backward_cuda(int dtype, const void* gvf, const void* gaf, void* gv, void* ga, void* workspace,
                               const EasyFusionShape& s, void* stream);

}  // namespace avfast
