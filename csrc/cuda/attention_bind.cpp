// pybind11 bindings of the CUDA attention launchers (called from bindings_cuda.cpp).
#include "attention_bind.h"
#include "cuda/attention_cuda.h"

namespace py = pybind11;

namespace avfast {

void bind_attention_cuda(py::module_& m) {
  py::list dims;
  for (int d : kAttnCudaHeadDims) dims.append(d);
  m.attr("attention_head_dims") = py::tuple(dims);
  m.def(
      "attention_forward",
      [](int dtype, uintptr_t qkv, uintptr_t out, uintptr_t lse, const std::vector<int64_t>& sizes,
         const std::vector<int64_t>& qkv_strides, const std::vector<int64_t>& out_strides, double scale,
         uintptr_t stream) {
        const AttnShape s = attn_shape(sizes, scale);
        const AttnView vi = attn_view(qkv_strides, "qkv strides"), vo = attn_view(out_strides, "out strides");
        py::gil_scoped_release release;
        attention_forward_cuda(dtype, as_ptr(qkv), as_ptr(out), static_cast<float*>(as_ptr(lse)), s, vi, vo,
                               as_ptr(stream));
      },
      py::arg("dtype"), py::arg("qkv"), py::arg("out"), py::arg("lse"), py::arg("sizes"), py::arg("qkv_strides"),
      py::arg("out_strides"), py::arg("scale"), py::arg("stream"));
  m.def(
      "attention_backward",
      [](int dtype, uintptr_t dout, uintptr_t qkv, uintptr_t out, uintptr_t lse, uintptr_t delta, uintptr_t dqkv,
         const std::vector<int64_t>& sizes, const std::vector<int64_t>& dout_strides,
         const std::vector<int64_t>& qkv_strides, const std::vector<int64_t>& out_strides,
         const std::vector<int64_t>& dqkv_strides, double scale, uintptr_t stream) {
        const AttnShape s = attn_shape(sizes, scale);
        const AttnView vdo = attn_view(dout_strides, "grad_out strides"), vi = attn_view(qkv_strides, "qkv strides"),
                       vo = attn_view(out_strides, "out strides"), vg = attn_view(dqkv_strides, "grad_qkv strides");
        py::gil_scoped_release release;
        attention_backward_cuda(dtype, as_ptr(dout), as_ptr(qkv), as_ptr(out), static_cast<const float*>(as_ptr(lse)),
                                static_cast<float*>(as_ptr(delta)), as_ptr(dqkv), s, vdo, vi, vo, vg, as_ptr(stream));
      },
      py::arg("dtype"), py::arg("grad_out"), py::arg("qkv"), py::arg("out"), py::arg("lse"), py::arg("delta"),
      py::arg("grad_qkv"), py::arg("sizes"), py::arg("grad_out_strides"), py::arg("qkv_strides"),
      py::arg("out_strides"), py::arg("grad_qkv_strides"), py::arg("scale"), py::arg("stream"));
}

}  // namespace avfast
