// avfast._C_cpu: OpenMP CPU kernels. Takes data pointers, sizes, strides and a dtype code;
// the Python op layer (avfast/ops) validates every tensor before calling in.
#include "bindings_common.h"

#ifdef _OPENMP
#include <omp.h>
#endif

namespace py = pybind11;
using namespace avfast;  // NOLINT

namespace avfast {
void bind_easy_fusion_cpu(py::module_& m);
void bind_contrastive_loss_cpu(py::module_& m);
void bind_attention_cpu(py::module_& m);
}  // namespace avfast

PYBIND11_MODULE(_C_cpu, m) {
  m.doc() = "avfast CPU kernels (OpenMP)";
  m.def("openmp_threads", []() {
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
  });
  bind_easy_fusion_cpu(m);
  bind_contrastive_loss_cpu(m);
  bind_attention_cpu(m);
  // New ops: add `void bind_<op>_cpu(py::module_&)` in csrc/cpu/<op>_bind.cpp and call it here.
}
