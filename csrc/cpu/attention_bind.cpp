// pybind11 bindings of the CPU attention kernels (called from bindings_cpu.cpp).
#include "attention_bind.h"
#include "attention_cpu.h"

namespace py = pybind11;

namespace avfast {

void bind_attention_cpu(py::module_& m) {
  m.def(
      "attention_forward",
      [](int dtype, uintptr_t qkv, uintptr_t out, uintptr_t lse, const std::vector<int64_t>& sizes,
         const std::vector<int64_t>& qkv_strides, const std::vector<int64_t>& out_strides, double scale) {
        const AttnShape s = attn_shape(sizes, scale);
        const AttnView vi = attn_view(qkv_strides, "qkv strides"), vo = attn_view(out_strides, "out strides");
        py::gil_scoped_release release;
        attention_forward_cpu(dtype, as_ptr(qkv), as_ptr(out), static_cast<float*>(as_ptr(lse)), s, vi, vo);
      },
      py::arg("dtype"), py::arg("qkv"), py::arg("out"), py::arg("lse"), py::arg("sizes"), py::arg("qkv_strides"),
      py::arg("out_strides"), py::arg("scale"));
  m.def(
      "attention_backward",
      [](int dtype, uintptr_t dout, uintptr_t qkv, uintptr_t out, uintptr_t lse, uintptr_t dqkv,
         const std::vector<int64_t>& sizes, const std::vector<int64_t>& dout_strides,
         const std::vector<int64_t>& qkv_strides, const std::vector<int64_t>& out_strides,
         const std::vector<int64_t>& dqkv_strides, double scale) {
        const AttnShape s = attn_shape(sizes, scale);
        const AttnView vdo = attn_view(dout_strides, "grad_out strides"), vi = attn_view(qkv_strides, "qkv strides"),
                       vo = attn_view(out_strides, "out strides"), vdq = attn_view(dqkv_strides, "grad_qkv strides");
        py::gil_scoped_release release;
        attention_backward_cpu(dtype, as_ptr(dout), as_ptr(qkv), as_ptr(out), static_cast<const float*>(as_ptr(lse)),
                               as_ptr(dqkv), s, vdo, vi, vo, vdq);
      },
      py::arg("dtype"), py::arg("grad_out"), py::arg("qkv"), py::arg("out"), py::arg("lse"), py::arg("grad_qkv"),
      py::arg("sizes"), py::arg("grad_out_strides"), py::arg("qkv_strides"), py::arg("out_strides"),
      py::arg("grad_qkv_strides"), py::arg("scale"));
}

}  // namespace avfast
