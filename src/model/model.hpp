#pragma once
// The JetMoE forward pass (jetmoe-spec.md section 3) over a batch of sequences, with a KV cache of
// the shared K/V heads only (section 7): the full forward is prefill into an empty cache, and
// incremental decoding appends to it.
#include <cstdint>
#include <vector>

#include "core/tensor.hpp"
#include "model/config.hpp"
#include "model/weights.hpp"
#include "moe/routing.hpp"

namespace jetmoe {

// Keys (after RoPE) and values of every layer: [B, capacity, H_kv, d] each; K/V are shared by all
// attention experts, so this is all a decoder needs to keep.
struct KvCache {
  std::vector<View4> k, v;
  std::int64_t length = 0;  // tokens already cached (the same for every sequence: left padding aligns them)

  KvCache() = default;
  KvCache(const ModelConfig& config, std::int64_t batch, std::int64_t capacity);
  std::int64_t batch() const { return k.empty() ? 0 : std::int64_t(k[0].extent(0)); }
  std::int64_t capacity() const { return k.empty() ? 0 : std::int64_t(k[0].extent(1)); }
};

class Model {
 public:
  Model(const ModelConfig& config, ModelWeights weights);

  const ModelConfig& config() const { return config_; }
  ModelWeights& weights() { return weights_; }
  const ModelWeights& weights() const { return weights_; }

  // ids [B, T] (token ids < vocab_size, checked), positions [B, T] (RoPE positions), key_start [B]
  // (first valid key per sequence: left padding; empty = 0). Appends T tokens to `cache` (which must
  // have room) and writes the logits: [B*T, V] (row b*T + t), or [B, V] for the last position of
  // each sequence only (row b), which is all generation needs: the final norm and the LM head then
  // run on B rows instead of B*T.
  void forward(const IntView2& ids, const IntView2& positions, const IntView1& key_start, KvCache& cache,
               const View2& logits);

  // Convenience: positions past..past+T-1, no padding.
  void forward(const IntView2& ids, KvCache& cache, const View2& logits);

 private:
  // The forward's activations for one batch shape, kept from call to call (decoding repeats the
  // shape B x 1 every step) and allocated without zero fill: every kernel writes its output whole.
  struct Workspace {
    std::int64_t batch = -1, tokens = -1;
    IntView1 flat_ids;
    View2 x, u, tmp, gathered, q_sorted, o_sorted, y_sorted, z, hidden_ffn;
    View3 rope_cos, rope_sin;
    View4 q, attn_out;
  };
  void reserve(std::int64_t batch, std::int64_t tokens);

  ModelConfig config_;
  ModelWeights weights_;
  Routing moa_routing_, moe_routing_;
  Workspace ws_;
};

}  // namespace jetmoe
