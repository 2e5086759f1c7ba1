// pybind11 bindings of the CUDA easy-fusion launchers (called from bindings_cuda.cpp).
#include "easy_fusion_bind.h"
#include "cuda/easy_fusion_cuda.h"

namespace py = pybind11;

namespace avfast {

void bind_easy_fusion_cuda(py::module_& m) {
  m.def(
      "easy_fusion_forward",
      [](int dtype, uintptr_t v, uintptr_t a, uintptr_t vf, uintptr_t af, uintptr_t workspace,
         const std::vector<int64_t>& sizes, const std::vector<int64_t>& vstrides, const std::vector<int64_t>& astrides,
         uintptr_t stream) {
        auto s = easy_fusion_shape(sizes, vstrides, astrides);
        py::gil_scoped_release release;
        easy_fusion_forward_cuda(dtype, as_ptr(v), as_ptr(a), as_ptr(vf), as_ptr(af), as_ptr(workspace), s,
                                 as_ptr(stream));
      },
      py::arg("dtype"), py::arg("v"), py::arg("a"), py::arg("vf"), py::arg("af"), py::arg("workspace"),
      py::arg("sizes"), py::arg("v_strides"), py::arg("a_strides"), py::arg("stream"));
  m.def(
      "easy_fusion_backward",
      [](int dtype, uintptr_t gvf, uintptr_t gaf, uintptr_t gv, uintptr_t ga, uintptr_t workspace,
         const std::vector<int64_t>& sizes, const std::vector<int64_t>& gvf_strides,
         const std::vector<int64_t>& gaf_strides, uintptr_t stream) {
        auto s = easy_fusion_shape(sizes, gvf_strides, gaf_strides);
        py::gil_scoped_release release;
        easy_fusion_backward_cuda(dtype, as_ptr(gvf), as_ptr(gaf), as_ptr(gv), as_ptr(ga), as_ptr(workspace), s,
                                  as_ptr(stream));
      },
      py::arg("dtype"), py::arg("grad_vf"), py::arg("grad_af"), py::arg("grad_v"), py::arg("grad_a"),
      py::arg("workspace"), py::arg("sizes"), py::arg("grad_vf_strides"), py::arg("grad_af_strides"),
      py::arg("stream"));
}

}  // namespace avfast
