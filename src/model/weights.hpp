#pragma once
// The parameters of a JetMoE model, one view per checkpoint tensor (jetmoe-spec.md section 2),
// named exactly as the Hugging Face checkpoints name them.
#include <cstdint>
#include <string>
#include <vector>

#include "core/tensor.hpp"
#include "model/config.hpp"

namespace jetmoe {

struct LayerWeights {
  View1 input_norm;  // input_layernorm.weight                         [D]
  View2 moa_router;  // self_attention.experts.router.layer.weight     [E, D]
  View3 moa_q;       // self_attention.experts.input_linear.weight     [E, A, D]
  View3 moa_o;       // self_attention.experts.output_linear.weight    [E, D, A]
  View1 moa_bias;    // self_attention.experts.bias                    [D]
  View2 kv_proj;     // self_attention.kv_proj.weight                  [2A, D] (K rows, then V rows)
  View1 post_norm;   // post_attention_layernorm.weight                [D]
  View2 moe_router;  // mlp.router.layer.weight                        [E, D]
  View3 moe_in;      // mlp.input_linear.weight                        [E, 2F, D] (gate rows, then up rows)
  View3 moe_out;     // mlp.output_linear.weight                       [E, D, F]
  View1 moe_bias;    // mlp.bias                                       [D]
};

// A parameter seen as a flat array: what loaders, exporters, optimizers and checkpoints iterate over.
struct NamedTensor {
  std::string name;                 // HF name, e.g. "model.layers.3.mlp.input_linear.weight"
  std::vector<std::int64_t> shape;  // as stored in checkpoints
  View1 flat;                       // the parameter's storage (contiguous)
  bool decays;                      // weight decay applies (matrices and embeddings; not norms, biases)
};

struct ModelWeights {
  View2 embed;  // model.embed_tokens.weight [V, D]
  std::vector<LayerWeights> layers;
  View1 final_norm;  // model.norm.weight [D]
  View2 lm_head;     // lm_head.weight [V, D]; the same view as `embed` when tied

  // Allocates every tensor (norm weights 1, everything else 0).
  explicit ModelWeights(const ModelConfig& config);
  ModelWeights() = default;

  // HF initialisation (jetmoe-spec.md section 0): N(0, initializer_range) for every matrix and the
  // embedding, zeros for the MoA/MoE biases, ones for norms. Deterministic from `seed`, independent
  // of the backend and thread count (a counter-based generator keyed by tensor and element).
  void init_random(const ModelConfig& config, std::uint64_t seed);

  // Every parameter once (the tied head is not listed separately), in checkpoint order.
  std::vector<NamedTensor> named(const ModelConfig& config) const;
};

}  // namespace jetmoe
