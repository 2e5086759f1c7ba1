// pybind11 bindings of the CPU easy-fusion kernels (called from bindings_cpu.cpp).
#include "easy_fusion_bind.h"
#include "cpu/easy_fusion_cpu.h"

namespace py = pybind11;

namespace avfast {

void bind_easy_fusion_cpu(py::module_& m) {
  m.def(
      "easy_fusion_forward",
      [](int dtype, uintptr_t v, uintptr_t a, uintptr_t vf, uintptr_t af, const std::vector<int64_t>& sizes,
         const std::vector<int64_t>& vstrides, const std::vector<int64_t>& astrides) {
        auto s = easy_fusion_shape(sizes, vstrides, astrides);
        py::gil_scoped_release release;
        easy_fusion_forward_cpu(dtype, as_ptr(v), as_ptr(a), as_ptr(vf), as_ptr(af), s);
      },
      py::arg("dtype"), py::arg("v"), py::arg("a"), py::arg("vf"), py::arg("af"), py::arg("sizes"),
      py::arg("v_strides"), py::arg("a_strides"));
  m.def(
      "easy_fusion_backward",
      [](int dtype, uintptr_t gvf, uintptr_t gaf, uintptr_t gv, uintptr_t ga, const std::vector<int64_t>& sizes,
         const std::vector<int64_t>& gvf_strides, const std::vector<int64_t>& gaf_strides) {
        auto s = easy_fusion_shape(sizes, gvf_strides, gaf_strides);
        py::gil_scoped_release release;
        easy_fusion_backward_cpu(dtype, as_ptr(gvf), as_ptr(gaf), as_ptr(gv), as_ptr(ga), s);
      },
      py::arg("dtype"), py::arg("grad_vf"), py::arg("grad_af"), py::arg("grad_v"), py::arg("grad_a"),
      py::arg("sizes"), py::arg("grad_vf_strides"), py::arg("grad_af_strides"));
}

}  // namespace avfast
