// pybind11 bindings of the CPU contrastive-loss kernels (called from bindings_cpu.cpp).
#include "bindings_common.h"
#include "contrastive_loss_bind.h"
#include "cpu/contrastive_loss_cpu.h"

namespace py = pybind11;

namespace avfast {

void bind_contrastive_loss_cpu(py::module_& m) {
  m.def(
      "contrastive_loss_forward",
      [](int dtype, uintptr_t pv, uintptr_t pa, uintptr_t tv, uintptr_t ta, uintptr_t out,
         const std::vector<int64_t>& sizes, const std::vector<int64_t>& strides, const std::vector<double>& params,
         uintptr_t grad, uintptr_t gpv, uintptr_t gpa, uintptr_t gtv, uintptr_t gta) {
        auto s = contrastive_loss_shape(sizes, strides, params);
        py::gil_scoped_release release;
        contrastive_loss_forward_cpu(dtype, as_ptr(pv), as_ptr(pa), as_ptr(tv), as_ptr(ta), as_ptr(out),
                                     as_ptr(grad), as_ptr(gpv), as_ptr(gpa), as_ptr(gtv), as_ptr(gta), s);
      },
      py::arg("dtype"), py::arg("pred_v"), py::arg("pred_a"), py::arg("target_v"), py::arg("target_a"),
      py::arg("out"), py::arg("sizes"), py::arg("strides"), py::arg("params"), py::arg("grad") = 0,
      py::arg("grad_pred_v") = 0, py::arg("grad_pred_a") = 0, py::arg("grad_target_v") = 0,
      py::arg("grad_target_a") = 0);
  m.def(
      "contrastive_loss_backward",
      [](int dtype, uintptr_t grad, uintptr_t pv, uintptr_t pa, uintptr_t tv, uintptr_t ta, uintptr_t gpv,
         uintptr_t gpa, uintptr_t gtv, uintptr_t gta, const std::vector<int64_t>& sizes,
         const std::vector<int64_t>& strides, const std::vector<double>& params) {
        auto s = contrastive_loss_shape(sizes, strides, params);
        py::gil_scoped_release release;
        contrastive_loss_backward_cpu(dtype, as_ptr(grad), as_ptr(pv), as_ptr(pa), as_ptr(tv), as_ptr(ta),
                                      as_ptr(gpv), as_ptr(gpa), as_ptr(gtv), as_ptr(gta), s);
      },
      py::arg("dtype"), py::arg("grad"), py::arg("pred_v"), py::arg("pred_a"), py::arg("target_v"),
      py::arg("target_a"), py::arg("grad_pred_v"), py::arg("grad_pred_a"), py::arg("grad_target_v"),
      py::arg("grad_target_a"), py::arg("sizes"), py::arg("strides"), py::arg("params"));
}

}  // namespace avfast
