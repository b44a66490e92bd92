#pragma once
// The model's tensors on a CUDA GPU for the kernels of kernels/ (jetmoe/model.h): device buffers and
// the mapping of checkpoint tensor names onto the kernels' weight and gradient structs. Shared by the
// bf16 training stage (train/device_network.cpp), generation (infer/device_generate.cpp) and
// evaluation (eval/device_forward.cpp) on the GPU. Built with the CUDA kernels only.
#include "jetmoe/build_config.hpp"

#if JETMOE_HAVE_CUDA_KERNELS
#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "core/error.hpp"
#include "jetmoe/kernels.h"
#include "model/config.hpp"
#include "model/gpu_kernels.hpp"
#include "model/weights.hpp"

namespace jetmoe::device {

// The error for a failed CUDA call of `context` ("bf16 training"): out of GPU memory is the user's
// (ErrorKind::Input: "<context>: out of GPU memory in <what> (<memory_hint>)"), anything else a failed
// call named with CUDA's error (ErrorKind::Internal).
[[noreturn]] void fail_cuda(cudaError_t e, const char* context, const char* what, const char* memory_hint);

// A copy through `stream` (so ordered with its kernels; a plain cudaMemcpy runs on the legacy stream,
// which a non-blocking stream does not wait for) that has landed when it returns: `from` may be a
// caller's temporary. The first failing call's error.
inline cudaError_t copy_and_wait(void* to, const void* from, std::size_t bytes, cudaMemcpyKind kind,
                                 cudaStream_t stream) {
  const cudaError_t e = cudaMemcpyAsync(to, from, bytes, kind, stream);
  return e != cudaSuccess ? e : cudaStreamSynchronize(stream);
}

// A device allocation that frees itself. ensure(n) makes it at least n bytes (contents lost when it
// grows) and returns cudaMalloc's result.
class Buffer {
 public:
  Buffer() = default;
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;
  Buffer(Buffer&& o) noexcept : p(o.p), bytes(o.bytes) { o.p = nullptr, o.bytes = 0; }
  Buffer& operator=(Buffer&& o) noexcept;
  ~Buffer() { reset(); }
  void reset();
  [[nodiscard]] cudaError_t ensure(std::size_t n);
  template <class T>
  T* as() const {
    return static_cast<T*>(p);
  }

  void* p = nullptr;
  std::size_t bytes = 0;
};

// How one user of the GPU reports a failed CUDA call: fail_cuda with its context ("generation on the
// GPU") and what to change when the GPU is out of memory; and the calls it checks that way.
struct CudaErrors {
  const char* context;
  const char* memory_hint;
  void check(cudaError_t e, const char* what) const {
    if (e != cudaSuccess) fail_cuda(e, context, what, memory_hint);
  }
  void ensure(Buffer& b, std::size_t bytes, const char* what) const { check(b.ensure(bytes), what); }
  void copy(void* to, const void* from, std::size_t bytes, cudaMemcpyKind kind, cudaStream_t stream,
            const char* what) const {
    check(copy_and_wait(to, from, bytes, kind, stream), what);
  }
};

// A non-blocking stream of our own, destroyed with the object.
class Stream {
 public:
  explicit Stream(const CudaErrors& errors);
  Stream(const Stream&) = delete;
  Stream& operator=(const Stream&) = delete;
  ~Stream();
  cudaStream_t s = nullptr;
};

// The kernels' configuration of `span` of the model (the layer path of `kernels`; router loss
// coefficients as given) over the RoPE table `rope`, which make_rope_table fills.
jk_model_config_t model_config(const ModelConfig& c, const StageSpan& span, const Buffer& rope, double coef_switch,
                               double coef_z, GpuKernels kernels = GpuKernels::Tuned);
// The RoPE table of every position of the model (cos/sin in fp32), on the device when it returns.
cudaError_t make_rope_table(Buffer& rope, const ModelConfig& c);

// fp32 weights -> their bf16 copies for the kernels (round to nearest even, as HF's .to(bfloat16)) on
// `stream`: to[i] receives named[i]'s values. Read straight from Kokkos' views where they are GPU memory
// (a Kokkos::Cuda build), else uploaded one tensor at a time through `staging` (made as large as the
// largest tensor in fp32). Fences Kokkos first (the weights were written on its stream); done when it
// returns, so the caller may change or free the fp32 weights.
void round_to_bf16(const std::vector<NamedTensor>& named, const std::vector<std::uint16_t*>& to, Buffer& staging,
                   cudaStream_t stream, const CudaErrors& errors);

// The whole model for inference (generation, evaluation): its weights rounded to bf16 once (round to
// nearest even, as HF's .to(bfloat16)) and uploaded through `stream`, bound to the kernels' struct, with
// the RoPE table and the kernels' configuration (no router losses; the head of jk_model_eval
// `logits_chunk` tokens at a time: the same logits and losses bit for bit for any chunk >= 1, in the
// memory of one chunk's logits; tests choose small chunks).
class InferenceModel {
 public:
  InferenceModel(const ModelConfig& c, const ModelWeights& weights, cudaStream_t stream, const CudaErrors& errors,
                 GpuKernels kernels = GpuKernels::Tuned, std::int64_t logits_chunk = kForwardLogitsChunk);
  InferenceModel(const InferenceModel&) = delete;
  InferenceModel& operator=(const InferenceModel&) = delete;
  const jk_model_config_t* config() const { return &cfg_; }
  const jk_model_weights_t* weights() const { return &w_; }

 private:
  Buffer rope_;
  jk_model_config_t cfg_{};
  std::vector<Buffer> tensors_;
  std::vector<jk_layer_weights_t> layers_;  // w_.layers points here
  jk_model_weights_t w_{};
};

// Where checkpoint tensor `name` goes in the kernels' structs.
struct TensorPlace {
  enum Kind { Embedding, FinalNorm, LmHead, Block } kind;
  std::int64_t layer = -1;  // Block: the model's layer
  int field = -1;           // Block: which of the block's 11 tensors (slot())
};
// Throws ErrorKind::Internal for a name that is not a JetMoE parameter.
TensorPlace place_of(const std::string& name);

// Block field `field` of a block's weights / gradients.
const std::uint16_t*& slot(jk_layer_weights_t& w, int field);
float*& slot(jk_layer_grads_t& g, int field);

// Points the member of `model` (jk_model_weights_t with P = const uint16_t*, or jk_model_grads_t with
// P = float*) that tensor `name` is at `p`; block tensors go to `layers` (index: layer - first_layer).
// `has_embedding`: the span starts with the embedding; `tied_head`: the span ends with the head and the
// head is the embedding (whose tensor then also feeds it).
template <class Model, class Layer, class P>
void bind(const std::string& name, P p, std::int64_t first_layer, std::vector<Layer>& layers, bool has_embedding,
          bool tied_head, Model& model) {
  const TensorPlace at = place_of(name);
  switch (at.kind) {
    case TensorPlace::Embedding:
      model.embedding = has_embedding ? p : nullptr;
      if (tied_head) model.lm_head = p;
      break;
    case TensorPlace::FinalNorm: model.final_norm = p; break;
    case TensorPlace::LmHead: model.lm_head = p; break;
    case TensorPlace::Block: {
      const std::int64_t l = at.layer - first_layer;
      JETMOE_ASSERT(l >= 0 && l < std::int64_t(layers.size()), "device::bind: " + name + " is outside the span");
      slot(layers[std::size_t(l)], at.field) = p;
      break;
    }
  }
}

}  // namespace jetmoe::device
#endif
