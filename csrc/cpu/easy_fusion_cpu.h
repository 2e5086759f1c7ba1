// CPU entry points of easy fusion (plain C++; the pybind11 layer converts Python ints to pointers).
#pragma once
#include "avfast/easy_fusion.h"

namespace avfast {

void easy_fusion_forward_cpu(int dtype, const void* v, const void* a, void* vf, void* af, const EasyFusionShape& s);
void easy_fusion_backward_cpu(int dtype, const void* gvf, const void* gaf, void* gv, void* ga, const EasyFusionShape& s);

}  // namespace avfast
