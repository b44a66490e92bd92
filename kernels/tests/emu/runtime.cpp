// The fake CUDA runtime of the emulation (emu_host.hpp) as its own translation unit, the object library
// `jetmoe_cuda_emu` (kernels/CMakeLists.txt): with the emulated kernel library `jetmoe_kernels_emu` (the
// transformed kernel sources) it stands in for jetmoe::kernels and libcudart, so that host code written
// against the real interface (src/train/device_network.cpp) runs on the CPU
// (tests/test_device_training.cpp).
#include "emu_cuda.hpp"
#include "jetmoe/kernels.h"
#include "emu_host.hpp"

// The size limits of emu_cuda.hpp guard the GPU test programs' cases (a per-case budget, reset by the
// harness). A library caller (a training run) has no cases: no limit unless the environment sets one.
namespace {
const bool kNoCaseLimits = [] {
  if (!std::getenv("EMU_MAX_THREADS")) emu::cfg().max_threads = ~std::uint64_t(0);
  if (!std::getenv("EMU_MAX_BYTES")) emu::cfg().max_bytes = ~std::size_t(0);
  return true;
}();
}  // namespace

// For tests of what a full GPU does to the application (tests/test_device_training.cpp): the emulated
// GPU's memory from now on (0: no limit), as EMU_DEVICE_MEMORY sets it at start.
extern "C" void jk_emu_set_device_memory(std::size_t bytes) { emu::cfg().device_memory = bytes; }
// The most device memory live at once since the last reset (then starts again from what is live).
extern "C" std::size_t jk_emu_device_bytes_peak(int reset) {
  const std::size_t peak = emu::peak_bytes();
  if (reset) emu::peak_bytes() = emu::live_bytes();
  return peak;
}
