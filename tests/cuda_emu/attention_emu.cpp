// csrc/cuda/attention.cu compiled as host C++ under the emulation in include/emu.h, exported with
// C signatures for ctypes (tests/test_attention_cuda_emulated.py). The kernels, tile sizes and
// launchers are the CUDA file's own; only the execution model is emulated.
#include <stdexcept>

#include "cuda_runtime.h"  // emu.h first: defines AVF_LAUNCH and the CUDA keywords
#include "cuda/attention.cu"

namespace {

avfast::AttnView view(const int64_t* v) { return avfast::AttnView{v[0], v[1], {v[2], v[3]}, {v[4], v[5], v[6]}}; }
avfast::AttnShape shape(const int64_t* z, double scale) {
  return avfast::AttnShape{z[0], z[1], z[2], {z[3], z[4]}, {z[5], z[6], z[7]}, float(scale)};
}

}  // namespace

extern "C" {

// Returns 0, or 1 when the launcher threw (the message is copied into err).
int emu_attention_forward(int dtype, const void* qkv, void* out, float* lse, const int64_t* sizes,
                          const int64_t* vi, const int64_t* vo, double scale, unsigned max_grid, char* err,
                          int err_len) {
  try {
    emu::max_grid() = max_grid;
    avfast::attention_forward_cuda(dtype, qkv, out, lse, shape(sizes, scale), view(vi), view(vo), nullptr);
    return 0;
  } catch (const std::exception& e) {
    snprintf(err, size_t(err_len), "%s", e.what());
    return 1;
  }
}

int emu_attention_backward(int dtype, const void* dout, const void* qkv, const void* out, const float* lse,
                           float* delta, void* dqkv, const int64_t* sizes, const int64_t* vdo, const int64_t* vi,
                           const int64_t* vo, const int64_t* vg, double scale, unsigned max_grid, char* err,
                           int err_len) {
  try {
    emu::max_grid() = max_grid;
    avfast::attention_backward_cuda(dtype, dout, qkv, out, lse, delta, dqkv, shape(sizes, scale), view(vdo),
                                    view(vi), view(vo), view(vg), nullptr);
    return 0;
  } catch (const std::exception& e) {
    snprintf(err, size_t(err_len), "%s", e.what());
    return 1;
  }
}

}  // extern "C"
