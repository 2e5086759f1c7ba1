// Host emulation of the CUDA runtime subset the avfast kernels use (tests only; see emu.h).
#pragma once
#include "emu.h"
