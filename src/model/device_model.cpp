#include "model/device_model.hpp"

#if JETMOE_HAVE_CUDA_KERNELS
#include <algorithm>

namespace jetmoe::device {

void fail_cuda(cudaError_t e, const char* context, const char* what, const char* memory_hint) {
  if (e == cudaErrorMemoryAllocation)
    fail(ErrorKind::Input, std::string(context) + ": out of GPU memory in " + what + " (" + memory_hint + ")");
  fail(ErrorKind::Internal, std::string(context) + ": " + what + " failed: " + cudaGetErrorName(e) + " (" +
                                cudaGetErrorString(e) + ")");
}

Buffer& Buffer::operator=(Buffer&& o) noexcept {
  if (this != &o) {
    reset();
    p = o.p, bytes = o.bytes;
    o.p = nullptr, o.bytes = 0;
  }
  return *this;
}

void Buffer::reset() {
  if (p) cudaFree(p);
  p = nullptr, bytes = 0;
}

cudaError_t Buffer::ensure(std::size_t n) {
  if (n <= bytes && p) return cudaSuccess;
  reset();
  const cudaError_t e = cudaMalloc(&p, std::max<std::size_t>(n, 256));
  if (e == cudaSuccess) bytes = n;
  else p = nullptr;
  return e;
}

Stream::Stream(const CudaErrors& errors) {
  errors.check(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking), "cudaStreamCreateWithFlags");
}

Stream::~Stream() {
  if (s) cudaStreamDestroy(s);
}

namespace {
std::int64_t rope_positions(const ModelConfig& c) { return std::max<std::int64_t>(c.max_position_embeddings, 1); }
}  // namespace

cudaError_t make_rope_table(Buffer& rope, const ModelConfig& c) {
  const std::int64_t positions = rope_positions(c);
  const cudaError_t e = rope.ensure(static_cast<std::size_t>(jk_fused_rope_table_elems(positions, c.head_dim)) * sizeof(float));
  if (e != cudaSuccess) return e;
  const cudaError_t f = jk_fused_rope_table(rope.as<float>(), positions, c.head_dim, static_cast<float>(c.rope_theta));
  if (f != cudaSuccess) return f;
  return cudaDeviceSynchronize();  // its copy ran on the legacy stream
}

jk_model_config_t model_config(const ModelConfig& c, const StageSpan& span, const Buffer& rope, double coef_switch,
                               double coef_z, GpuKernels kernels) {
  jk_model_config_t m{};
  jk_layer_config_t& l = m.layer;
  l.hidden = c.hidden_size, l.num_experts = c.num_experts, l.top_k = c.top_k, l.kv_heads = c.num_kv_heads;
  l.head_dim = c.head_dim, l.ffn = c.ffn_hidden_size, l.eps = static_cast<float>(c.block_norm_eps);
  l.aux_switch_coef = static_cast<float>(coef_switch), l.aux_z_coef = static_cast<float>(coef_z);
  l.rope_table = rope.as<float>(), l.rope_max_positions = rope_positions(c);
  l.path = kernels == GpuKernels::Wgmma ? JK_LAYER_WGMMA : kernels == GpuKernels::Simple ? JK_LAYER_SIMPLE : JK_LAYER_TUNED;
  m.vocab = c.vocab_size, m.num_layers = span.end(c) - span.first_layer;
  m.has_embedding = span.embedding ? 1 : 0, m.has_head = span.head ? 1 : 0;
  m.final_eps = static_cast<float>(c.rms_norm_eps);
  return m;
}

void round_to_bf16(const std::vector<NamedTensor>& named, const std::vector<std::uint16_t*>& to, Buffer& staging,
                   cudaStream_t stream, const CudaErrors& errors) {
  JETMOE_ASSERT(named.size() == to.size(), "round_to_bf16: one destination per tensor");
  Kokkos::fence();
  if (!host_memory) {
    for (std::size_t i = 0; i < named.size(); ++i)
      errors.check(jk_f32_to_bf16(named[i].flat.data(), to[i], std::int64_t(named[i].flat.extent(0)), stream),
                   "jk_f32_to_bf16 (the weights)");
    errors.check(cudaStreamSynchronize(stream), "jk_f32_to_bf16 (the weights)");
    return;
  }
  std::size_t largest = 0;
  for (const NamedTensor& t : named) largest = std::max(largest, std::size_t(t.flat.extent(0)));
  errors.ensure(staging, largest * sizeof(float), "the weight staging buffer");
  for (std::size_t i = 0; i < named.size(); ++i) {
    const std::int64_t n = std::int64_t(named[i].flat.extent(0));
    auto host = Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace(), named[i].flat);
    errors.check(cudaMemcpyAsync(staging.p, host.data(), std::size_t(n) * sizeof(float), cudaMemcpyHostToDevice, stream),
                 "uploading the weights");
    errors.check(jk_f32_to_bf16(staging.as<float>(), to[i], n, stream), "jk_f32_to_bf16 (the weights)");
    // `staging` and the host mirror are reused by the next tensor.
    errors.check(cudaStreamSynchronize(stream), "uploading the weights");
  }
}

InferenceModel::InferenceModel(const ModelConfig& c, const ModelWeights& weights, cudaStream_t stream,
                               const CudaErrors& errors, GpuKernels kernels, std::int64_t logits_chunk) {
  JETMOE_ASSERT(logits_chunk >= 1, "InferenceModel: logits_chunk >= 1");
  errors.check(make_rope_table(rope_, c), "the RoPE table");
  cfg_ = model_config(c, StageSpan{}, rope_, 0.0, 0.0, kernels);
  cfg_.head_chunk = logits_chunk;  // evaluation (jk_model_eval); decode and prefill ignore it
  layers_.resize(static_cast<std::size_t>(c.num_layers));
  const std::vector<NamedTensor> named = weights.named(c);
  tensors_.resize(named.size());
  std::vector<std::uint16_t*> to;
  for (std::size_t i = 0; i < named.size(); ++i) {
    errors.ensure(tensors_[i], named[i].flat.extent(0) * 2, "the bf16 weights");
    to.push_back(tensors_[i].as<std::uint16_t>());
    // Qualified: an unqualified call also finds std::bind by the arguments' namespace, a better match.
    device::bind(named[i].name, static_cast<const std::uint16_t*>(to.back()), 0, layers_, true, c.tie_word_embeddings,
                 w_);
  }
  Buffer staging;  // freed on return: inference keeps only the bf16 weights
  round_to_bf16(named, to, staging, stream, errors);
  w_.layers = layers_.data();
}

namespace {
// The block tensors after "model.layers.<l>.", in the order of slot()'s fields.
const char* const kBlockFields[] = {"input_layernorm.weight",
                                    "self_attention.experts.router.layer.weight",
                                    "self_attention.experts.input_linear.weight",
                                    "self_attention.kv_proj.weight",
                                    "self_attention.experts.output_linear.weight",
                                    "self_attention.experts.bias",
                                    "post_attention_layernorm.weight",
                                    "mlp.router.layer.weight",
                                    "mlp.input_linear.weight",
                                    "mlp.output_linear.weight",
                                    "mlp.bias"};
}  // namespace

TensorPlace place_of(const std::string& name) {
  if (name == "model.embed_tokens.weight") return {TensorPlace::Embedding};
  if (name == "model.norm.weight") return {TensorPlace::FinalNorm};
  if (name == "lm_head.weight") return {TensorPlace::LmHead};
  const std::string prefix = "model.layers.";
  if (name.compare(0, prefix.size(), prefix) == 0) {
    const std::size_t dot = name.find('.', prefix.size());
    if (dot != std::string::npos) {
      const std::string suffix = name.substr(dot + 1);
      for (int f = 0; f < 11; ++f)
        if (suffix == kBlockFields[f])
          return {TensorPlace::Block, std::stoll(name.substr(prefix.size(), dot - prefix.size())), f};
    }
  }
  fail(ErrorKind::Internal, "device::place_of: " + name + " is not a JetMoE parameter");
}

const std::uint16_t*& slot(jk_layer_weights_t& w, int field) {
  const std::uint16_t** slots[11] = {&w.input_norm, &w.moa_router, &w.moa_q,  &w.kv_proj, &w.moa_o,   &w.moa_bias,
                                     &w.post_norm,  &w.moe_router, &w.moe_in, &w.moe_out, &w.moe_bias};
  return *slots[field];
}

float*& slot(jk_layer_grads_t& g, int field) {
  float** slots[11] = {&g.input_norm, &g.moa_router, &g.moa_q,  &g.kv_proj, &g.moa_o,   &g.moa_bias,
                       &g.post_norm,  &g.moe_router, &g.moe_in, &g.moe_out, &g.moe_bias};
  return *slots[field];
}

}  // namespace jetmoe::device
#endif
