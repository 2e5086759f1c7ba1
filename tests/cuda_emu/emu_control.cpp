// C entry points into the emulation itself, linked into the emulated _C_cuda (tests/cuda_emu/build.py)
// and called through ctypes: lets a test fold a launch into fewer blocks than AVFAST_EMU_MAX_GRID.
#include "cuda_runtime.h"

extern "C" unsigned avfast_emu_set_max_grid(unsigned blocks) {
  const unsigned previous = emu::max_grid();
  emu::max_grid() = blocks;
  return previous;
}
