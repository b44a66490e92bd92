#pragma once
// The parameters of a JetMoE model, one view per checkpoint tensor (jetmoe-spec.md section 2),
// named exactly as the Hugging Face checkpoints name them.
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "core/tensor.hpp"
#include "model/config.hpp"

namespace jetmoe {

// Instantiated for R = float (the model) and R = double (gradient checks). The same structure holds
// gradients (and optimizer moments): one tensor per parameter, same names and shapes.
template <class R>
struct LayerWeightsT {
  Vec<R> input_norm;   // input_layernorm.weight                         [D]
  Mat<R> moa_router;   // self_attention.experts.router.layer.weight     [E, D]
  Ten3<R> moa_q;       // self_attention.experts.input_linear.weight     [E, A, D]
  Ten3<R> moa_o;       // self_attention.experts.output_linear.weight    [E, D, A]
  Vec<R> moa_bias;     // self_attention.experts.bias                    [D]
  Mat<R> kv_proj;      // self_attention.kv_proj.weight                  [2A, D] (K rows, then V rows)
  Vec<R> post_norm;    // post_attention_layernorm.weight                [D]
  Mat<R> moe_router;   // mlp.router.layer.weight                        [E, D]
  Ten3<R> moe_in;      // mlp.input_linear.weight                        [E, 2F, D] (gate rows, then up rows)
  Ten3<R> moe_out;     // mlp.output_linear.weight                       [E, D, F]
  Vec<R> moe_bias;     // mlp.bias                                       [D]
};

// A parameter seen as a flat array: what loaders, exporters, optimizers and checkpoints iterate over.
template <class R>
struct NamedTensorT {
  std::string name;                 // HF name, e.g. "model.layers.3.mlp.input_linear.weight"
  std::vector<std::int64_t> shape;  // as stored in checkpoints
  Vec<R> flat;                      // the parameter's storage (contiguous)
  bool decays;                      // weight decay applies (matrices and embeddings; not norms, biases)
};

// The part of the model a pipeline stage holds: layers [first_layer, end_layer), the embedding on the
// first stage, the final norm and the LM head on the last (with tied embeddings the last stage holds
// its own copy of the embedding as the head, kept equal by summing both copies' gradients). The
// default span is the whole model.
struct StageSpan {
  std::int64_t first_layer = 0, end_layer = -1;  // -1: num_layers
  bool embedding = true, head = true;
  std::int64_t end(const ModelConfig& c) const { return end_layer < 0 ? c.num_layers : end_layer; }
  bool owns_layer(const ModelConfig& c, std::int64_t l) const { return l >= first_layer && l < end(c); }
  bool whole(const ModelConfig& c) const { return first_layer == 0 && end(c) == c.num_layers && embedding && head; }
  // Holds model.embed_tokens.weight: as the embedding, or as the tied head.
  bool holds_embedding(const ModelConfig& c) const { return embedding || (head && c.tie_word_embeddings); }
};

template <class R>
struct ModelWeightsT {
  Mat<R> embed;  // model.embed_tokens.weight [V, D]
  std::vector<LayerWeightsT<R>> layers;
  Vec<R> final_norm;  // model.norm.weight [D]
  Mat<R> lm_head;     // lm_head.weight [V, D]; the same view as `embed` when tied

  StageSpan span;  // what is allocated; tensors outside it are empty views

  // Allocates every tensor of `span` (norm weights 1, everything else 0; `zeros`: norms 0 too, for
  // gradients). `layers` always has num_layers entries, indexed by the global layer number.
  explicit ModelWeightsT(const ModelConfig& config, bool zeros = false, const StageSpan& span = StageSpan());
  ModelWeightsT() = default;

  // HF initialisation (jetmoe-spec.md section 0): N(0, initializer_range) for every matrix and the
  // embedding, zeros for the MoA/MoE biases, ones for norms. Deterministic from `seed`, independent
  // of the backend, the thread count and the span (a counter-based generator keyed by tensor and
  // element): a stage gets exactly its part of the whole model's initialisation.
  void init_random(const ModelConfig& config, std::uint64_t seed);

  // Every parameter of the span once (the tied head is not listed separately), in checkpoint order.
  std::vector<NamedTensorT<R>> named(const ModelConfig& config) const;
  // Every parameter of the whole model in checkpoint order; those outside the span have empty views.
  std::vector<NamedTensorT<R>> named_all(const ModelConfig& config) const;
  // Frees the tensors for which drop(index in named_all, name) is true (they become empty views and
  // leave named()): what a rank does not hold under ZeRO-1.
  void release(const ModelConfig& config, const std::function<bool(std::size_t, const std::string&)>& drop);
};

using LayerWeights = LayerWeightsT<float>;
using NamedTensor = NamedTensorT<float>;
using ModelWeights = ModelWeightsT<float>;

// The tensors of dst's span taken from src (by name; src holds at least dst's span).
void copy_span(const ModelConfig& config, const ModelWeightsT<float>& src, const ModelWeightsT<float>& dst);

// dst = src element by element (same configuration and span), converting the scalar type.
template <class Dst, class Src>
void copy_weights(const ModelConfig& config, const ModelWeightsT<Src>& src, const ModelWeightsT<Dst>& dst);

}  // namespace jetmoe
