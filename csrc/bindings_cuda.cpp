// avfast._C_cuda: CUDA kernels. Pointers, sizes, strides, dtype code, workspace and the
// cudaStream_t of the caller's current stream (torch.cuda.current_stream().cuda_stream).
#include "bindings_common.h"

namespace py = pybind11;
using namespace avfast;  // NOLINT

namespace avfast {
void bind_easy_fusion_cuda(py::module_& m);
void bind_contrastive_loss_cuda(py::module_& m);
void bind_attention_cuda(py::module_& m);
}  // namespace avfast

PYBIND11_MODULE(_C_cuda, m) {
  m.doc() = "avfast CUDA kernels";
  m.attr("cuda_archs") = AVFAST_CUDA_ARCHS;
  bind_easy_fusion_cuda(m);
  bind_contrastive_loss_cuda(m);
  bind_attention_cuda(m);
  // New ops: add `void bind_<op>_cuda(py::module_&)` in csrc/cuda/<op>_bind.cpp and call it here.
}
