#pragma once
// Which CUDA kernels the bf16 paths run (deck key job/gpu_kernels; train, generate and eval with
// precision = bf16): the kernels' layer path (jetmoe/layer.h).
//   Tuned  the mma.sync kernels (JK_LAYER_TUNED), the default;
//   Wgmma  the sm_90a TMA/wgmma kernels where the GPU and the build allow them, the tuned ones elsewhere
//          (JK_LAYER_WGMMA; verified on the emulated GPU, not yet on a real one);
//   Simple the straightforward fallback kernels (JK_LAYER_SIMPLE): slow, to rule out a tuned kernel.
#include <string>

namespace jetmoe {

enum class GpuKernels { Tuned, Wgmma, Simple };

// The deck's value ("tuned", "wgmma", "simple"; the schema admits nothing else).
inline GpuKernels gpu_kernels_from(const std::string& name) {
  return name == "wgmma" ? GpuKernels::Wgmma : name == "simple" ? GpuKernels::Simple : GpuKernels::Tuned;
}

}  // namespace jetmoe
