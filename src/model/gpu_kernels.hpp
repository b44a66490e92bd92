#pragma once
// Which CUDA kernels the bf16 paths run (deck key job/gpu_kernels; train, generate and eval with
// precision = bf16): the kernels' layer path (jetmoe/layer.h).
//   Tuned  the mma.sync kernels (JK_LAYER_TUNED), the default;
//   Wgmma  the sm_90a TMA/wgmma kernels where the GPU and the build allow them, the tuned ones elsewhere
//          (JK_LAYER_WGMMA; verified on the emulated GPU, not yet on a real one);
//   Simple the straightforward fallback kernels (JK_LAYER_SIMPLE): slow, to rule out a tuned kernel.
#include <cstdint>
#include <string>

namespace jetmoe {

enum class GpuKernels { Tuned, Wgmma, Simple };

// Tokens per chunk of the LM head in the bf16 passes that only run forward (evaluation, DPO's frozen
// reference; jk_model_config_t::head_chunk): one chunk's bf16 logits in GPU memory (4096 x V x 2 bytes,
// 262 MB at V = 32000) instead of the whole batch's. Without a backward the chunks cost nothing extra
// (no logits are computed twice) and the results are the same bit for bit.
constexpr std::int64_t kForwardLogitsChunk = 4096;

// The deck's value ("tuned", "wgmma", "simple"; the schema admits nothing else).
inline GpuKernels gpu_kernels_from(const std::string& name) {
  return name == "wgmma" ? GpuKernels::Wgmma : name == "simple" ? GpuKernels::Simple : GpuKernels::Tuned;
}
inline std::string gpu_kernels_name(GpuKernels k) {
  return k == GpuKernels::Wgmma ? "wgmma" : k == GpuKernels::Simple ? "simple" : "tuned";
}

}  // namespace jetmoe
