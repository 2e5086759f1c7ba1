// C entry points into the emulation itself, linked into every emulated module (tests/cuda_emu/build.py)
// and called through ctypes: fold a launch into fewer blocks than AVFAST_EMU_MAX_GRID, and choose
// the schedule the threads and blocks run in (see emu.h).
#include "cuda_runtime.h"

extern "C" unsigned avfast_emu_set_max_grid(unsigned blocks) {
  const unsigned previous = emu::max_grid();
  emu::max_grid() = blocks;
  return previous;
}

// mode: 0 alternating, 1 forward, 2 reverse, 3 shuffled (seeded by `seed`); returns the previous mode.
extern "C" int avfast_emu_set_schedule(int mode, unsigned long long seed) {
  const int previous = int(emu::schedule().mode);
  emu::schedule().mode = emu::Schedule(mode);
  emu::schedule().rng.seed(seed);
  return previous;
}
