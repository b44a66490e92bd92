#include "model/weights.hpp"

#include "core/error.hpp"
#include "core/kokkos_compat.hpp"

#include <type_traits>

namespace jetmoe {

namespace {

template <class V>
std::vector<std::int64_t> shape_of(const V& v) {
  std::vector<std::int64_t> s;
  for (int i = 0; i < int(V::rank); ++i) s.push_back(std::int64_t(v.extent(i)));
  return s;
}

// SplitMix64: a counter-based hash, so element i of tensor s gets the same number on every backend.
KOKKOS_INLINE_FUNCTION std::uint64_t mix(std::uint64_t z) {
  z += 0x9e3779b97f4a7c15ull;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

template <class R>
void fill_normal(const Vec<R>& v, std::uint64_t stream, double stddev) {
  const float sd = float(stddev);
  Kokkos::parallel_for(
      "init_normal", Range(0, std::int64_t(v.extent(0))), KOKKOS_LAMBDA(std::int64_t i) {
        // Box-Muller on two uniforms in (0, 1].
        const std::uint64_t a = mix(stream ^ mix(2 * std::uint64_t(i)));
        const std::uint64_t b = mix(stream ^ mix(2 * std::uint64_t(i) + 1));
        const double u1 = (double(a >> 11) + 1.0) * (1.0 / 9007199254740992.0);
        const double u2 = double(b >> 11) * (1.0 / 9007199254740992.0);
        const double r = kmath::sqrt(-2.0 * kmath::log(u1));
        v(i) = R(float(r * kmath::cos(6.283185307179586 * u2)) * sd);
      });
}

}  // namespace

template <class R>
ModelWeightsT<R>::ModelWeightsT(const ModelConfig& c, bool zeros, const StageSpan& stage) : span(stage) {
  const std::int64_t V = c.vocab_size, D = c.hidden_size, A = c.attention_width(), E = c.num_experts,
                     F = c.ffn_hidden_size;
  const R norm_value = zeros ? R(0) : R(1);
  if (span.holds_embedding(c)) embed = Mat<R>("embed_tokens", V, D);
  if (span.head) {
    lm_head = c.tie_word_embeddings ? embed : Mat<R>("lm_head", V, D);
    final_norm = Vec<R>("norm", D);
    Kokkos::deep_copy(final_norm, norm_value);
  }
  layers.resize(std::size_t(c.num_layers));
  for (std::int64_t i = span.first_layer; i < span.end(c); ++i) {
    LayerWeightsT<R>& l = layers[std::size_t(i)];
    l.input_norm = Vec<R>("input_layernorm", D);
    l.moa_router = Mat<R>("moa_router", E, D);
    l.moa_q = Ten3<R>("moa_input_linear", E, A, D);
    l.moa_o = Ten3<R>("moa_output_linear", E, D, A);
    l.moa_bias = Vec<R>("moa_bias", D);
    l.kv_proj = Mat<R>("kv_proj", 2 * A, D);
    l.post_norm = Vec<R>("post_attention_layernorm", D);
    l.moe_router = Mat<R>("moe_router", E, D);
    l.moe_in = Ten3<R>("moe_input_linear", E, 2 * F, D);
    l.moe_out = Ten3<R>("moe_output_linear", E, D, F);
    l.moe_bias = Vec<R>("moe_bias", D);
    Kokkos::deep_copy(l.input_norm, norm_value);
    Kokkos::deep_copy(l.post_norm, norm_value);
  }
}

namespace {
// Calls fn(name, view, decays) for every parameter of the whole model in checkpoint order (W: const or
// not, so that views can be read or replaced).
template <class W, class Fn>
void for_each_tensor(W& w, const ModelConfig& c, Fn&& fn) {
  fn(std::string("model.embed_tokens.weight"), w.embed, true);
  for (std::size_t i = 0; i < w.layers.size(); ++i) {
    auto& l = w.layers[i];
    const std::string p = "model.layers." + std::to_string(i) + ".";
    fn(p + "input_layernorm.weight", l.input_norm, false);
    fn(p + "self_attention.experts.router.layer.weight", l.moa_router, true);
    fn(p + "self_attention.experts.input_linear.weight", l.moa_q, true);
    fn(p + "self_attention.experts.output_linear.weight", l.moa_o, true);
    fn(p + "self_attention.experts.bias", l.moa_bias, false);
    fn(p + "self_attention.kv_proj.weight", l.kv_proj, true);
    fn(p + "post_attention_layernorm.weight", l.post_norm, false);
    fn(p + "mlp.router.layer.weight", l.moe_router, true);
    fn(p + "mlp.input_linear.weight", l.moe_in, true);
    fn(p + "mlp.output_linear.weight", l.moe_out, true);
    fn(p + "mlp.bias", l.moe_bias, false);
  }
  fn(std::string("model.norm.weight"), w.final_norm, false);
  if (!c.tie_word_embeddings) fn(std::string("lm_head.weight"), w.lm_head, true);
}
}  // namespace

template <class R>
std::vector<NamedTensorT<R>> ModelWeightsT<R>::named_all(const ModelConfig& c) const {
  std::vector<NamedTensorT<R>> out;
  for_each_tensor(*this, c, [&](const std::string& name, const auto& view, bool decays) {
    out.push_back(NamedTensorT<R>{name, shape_of(view), flat(view), decays});
  });
  return out;
}

template <class R>
void ModelWeightsT<R>::release(const ModelConfig& c, const std::function<bool(std::size_t, const std::string&)>& drop) {
  std::size_t index = 0;
  for_each_tensor(*this, c, [&](const std::string& name, auto& view, bool) {
    if (drop(index++, name)) view = std::decay_t<decltype(view)>();
  });
  if (c.tie_word_embeddings) lm_head = embed;
}

template <class R>
std::vector<NamedTensorT<R>> ModelWeightsT<R>::named(const ModelConfig& c) const {
  std::vector<NamedTensorT<R>> out;
  for (NamedTensorT<R>& t : named_all(c))
    if (t.flat.data() != nullptr) out.push_back(std::move(t));
  return out;
}

template <class R>
void ModelWeightsT<R>::init_random(const ModelConfig& c, std::uint64_t seed) {
  std::uint64_t stream = 0;
  for (const NamedTensorT<R>& t : named_all(c)) {
    ++stream;  // numbered over the whole model: a stage's tensors get the whole model's values
    if (t.flat.data() == nullptr) continue;
    if (!t.decays) {  // norms are 1, biases 0
      const bool is_norm = t.name.find("norm") != std::string::npos;
      Kokkos::deep_copy(t.flat, is_norm ? R(1) : R(0));
      continue;
    }
    fill_normal(t.flat, mix(seed) ^ mix(stream * 0x100000001b3ull), c.initializer_range);
  }
}

template <class Dst, class Src>
void copy_weights(const ModelConfig& c, const ModelWeightsT<Src>& src, const ModelWeightsT<Dst>& dst) {
  const auto s = src.named(c);
  const auto d = dst.named(c);
  JETMOE_ASSERT(s.size() == d.size(), "copy_weights: different models");
  for (std::size_t i = 0; i < s.size(); ++i) {
    JETMOE_ASSERT(s[i].shape == d[i].shape, "copy_weights: shapes of " + s[i].name);
    const Vec<Src> from = s[i].flat;
    const Vec<Dst> to = d[i].flat;
    Kokkos::parallel_for(
        "copy_weights", Range(0, std::int64_t(from.extent(0))), KOKKOS_LAMBDA(std::int64_t j) { to(j) = Dst(from(j)); });
  }
}

void copy_span(const ModelConfig& c, const ModelWeightsT<float>& src, const ModelWeightsT<float>& dst) {
  const auto from = src.named_all(c);
  const auto to = dst.named_all(c);
  for (std::size_t i = 0; i < to.size(); ++i) {
    if (to[i].flat.data() == nullptr) continue;
    JETMOE_ASSERT(from[i].flat.data() != nullptr && from[i].shape == to[i].shape, "copy_span: " + to[i].name);
    Kokkos::deep_copy(to[i].flat, from[i].flat);
  }
}

template struct ModelWeightsT<float>;
template struct ModelWeightsT<double>;
template void copy_weights<float, float>(const ModelConfig&, const ModelWeightsT<float>&, const ModelWeightsT<float>&);
template void copy_weights<double, float>(const ModelConfig&, const ModelWeightsT<float>&, const ModelWeightsT<double>&);
template void copy_weights<float, double>(const ModelConfig&, const ModelWeightsT<double>&, const ModelWeightsT<float>&);

}  // namespace jetmoe
