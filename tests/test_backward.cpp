// The hand-written backward pass: (a) against central finite differences of our own loss in double
// precision, for every parameter tensor of small models (both attention paths, tied and untied heads,
// top-1 and top-k routing, ignore_index targets, router losses switched on); (b) against the gradients
// HF transformers' autograd computes for the oracle fixtures (scripts/oracle/make_model_fixtures.py).
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <random>
#include <vector>

#include "io/safetensors.hpp"
#include "random_weights.hpp"
#include "model/hf_checkpoint.hpp"
#include "train/losses.hpp"
#include "train/network.hpp"

using namespace jetmoe;
namespace fs = std::filesystem;

namespace {

const std::string fixtures = std::string(JETMOE_SOURCE_DIR) + "/tests/fixtures/models";

IntView2 device_ids(const std::vector<std::int64_t>& ids, std::int64_t B, std::int64_t T) {
  IntView2 v("ids", B, T);
  auto h = Kokkos::create_mirror_view(v);
  for (std::int64_t i = 0; i < B * T; ++i) h.data()[i] = std::int32_t(ids[std::size_t(i)]);
  Kokkos::deep_copy(v, h);
  return v;
}

IntView1 device_targets(const std::vector<std::int32_t>& t) {
  IntView1 v("targets", t.size());
  auto h = Kokkos::create_mirror_view(v);
  for (std::size_t i = 0; i < t.size(); ++i) h(i) = t[i];
  Kokkos::deep_copy(v, h);
  return v;
}

template <class R>
std::vector<R> host_of(const Vec<R>& v) {
  auto h = Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace(), v);
  return std::vector<R>(h.data(), h.data() + h.size());
}

ModelConfig small_config(std::int64_t experts, std::int64_t top_k, bool tied) {
  ModelConfig c;
  c.vocab_size = 29, c.hidden_size = 12, c.num_layers = 2, c.num_kv_heads = 2, c.head_dim = 4;
  c.num_experts = experts, c.top_k = top_k, c.ffn_hidden_size = 6, c.max_position_embeddings = 32;
  c.rope_theta = 100.0, c.rms_norm_eps = 1e-5, c.block_norm_eps = 1e-6, c.tie_word_embeddings = tied;
  return c;
}

// Every parameter random (norms around 1, biases around 0), so that every gradient is exercised.
void randomize(const ModelConfig& c, ModelWeightsT<double>& w, unsigned seed) {
  jetmoe::testing::randomize_weights(c, w, seed, 0.35, 0.2);
}

struct Case {
  ModelConfig config;
  std::int64_t B, T;
};

void finite_difference_check(const Case& cs, bool recompute, std::int64_t logits_chunk = 0) {
  const ModelConfig& c = cs.config;
  const double coef_switch = 0.5, coef_z = 0.3, aux_scale = 0.7;
  ModelWeightsT<double> w(c);
  randomize(c, w, 11);
  std::mt19937 rng(5);
  std::vector<std::int64_t> ids(std::size_t(cs.B * cs.T));
  std::vector<std::int32_t> targets(ids.size());
  for (auto& x : ids) x = std::int64_t(rng() % std::uint32_t(c.vocab_size));
  for (std::size_t i = 0; i < targets.size(); ++i)
    targets[i] = (i % 5 == 3) ? ignore_index : std::int32_t(rng() % std::uint32_t(c.vocab_size));
  const IntView2 dids = device_ids(ids, cs.B, cs.T);
  const IntView1 dtargets = device_targets(targets);

  Network<double> net(c, coef_switch, coef_z, recompute, StageSpan(), logits_chunk);
  ModelWeightsT<double> g(c, /*zeros=*/true);
  const LossTerms base = net.run(w, dids, dtargets, &g, 1.0 / 17.0, aux_scale);
  REQUIRE(base.count == std::int64_t(std::count_if(targets.begin(), targets.end(), [](int t) { return t != ignore_index; })));
  auto objective = [&]() {
    const LossTerms t = net.run(w, dids, dtargets);
    return t.ce_sum / 17.0 + aux_scale * (coef_switch * t.switch_loss + coef_z * t.z_loss);
  };
  // The loss the backward pass differentiated is the one the forward pass reports.
  CHECK(std::fabs(objective() - (base.ce_sum / 17.0 + aux_scale * (coef_switch * base.switch_loss + coef_z * base.z_loss))) < 1e-12);

  const auto params = w.named(c);
  const auto grads = g.named(c);
  const double h = 1e-6;
  for (std::size_t p = 0; p < params.size(); ++p) {
    INFO("parameter " << params[p].name);
    const auto gh = host_of(grads[p].flat);
    auto wh = Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace(), params[p].flat);
    // The largest gradient element and a spread of others.
    std::vector<std::size_t> picks;
    picks.push_back(std::size_t(std::max_element(gh.begin(), gh.end(), [](double a, double b) { return std::fabs(a) < std::fabs(b); }) - gh.begin()));
    for (std::size_t i = 0; i < 7; ++i) picks.push_back(std::size_t(rng() % gh.size()));
    double gmax = 0;
    for (double v : gh) gmax = std::max(gmax, std::fabs(v));
    CHECK(gmax > 0);  // every parameter receives gradient
    for (std::size_t i : picks) {
      const double saved = wh(i);
      wh(i) = saved + h;
      Kokkos::deep_copy(params[p].flat, wh);
      const double up = objective();
      wh(i) = saved - h;
      Kokkos::deep_copy(params[p].flat, wh);
      const double down = objective();
      wh(i) = saved;
      Kokkos::deep_copy(params[p].flat, wh);
      const double fd = (up - down) / (2 * h);
      INFO("element " << i << ": backward " << gh[i] << ", finite difference " << fd);
      CHECK(std::fabs(gh[i] - fd) <= 1e-7 + 1e-6 * std::fabs(fd));
    }
  }
}

}  // namespace

TEST_CASE("backward equals finite differences in double precision for every parameter", "[unit][backward]") {
  // T >= 8 takes the blocked (GEMM) attention path, T < 8 the direct one.
  SECTION("tied head, 4 experts top-2, blocked attention") { finite_difference_check({small_config(4, 2, true), 2, 11}, false); }
  SECTION("untied head, 3 experts top-1, direct attention") { finite_difference_check({small_config(3, 1, false), 3, 5}, false); }
  SECTION("5 experts top-3, recomputed activations") { finite_difference_check({small_config(5, 3, true), 2, 9}, true); }
  SECTION("untied head in chunks of 4 of the 15 tokens") {
    finite_difference_check({small_config(3, 1, false), 3, 5}, false, 4);
  }
  SECTION("tied head in chunks of 1 token") { finite_difference_check({small_config(4, 2, true), 2, 5}, false, 1); }
  SECTION("blocked attention over several query blocks") {
    ModelConfig c = small_config(4, 2, true);
    c.max_position_embeddings = 160;
    finite_difference_check({c, 1, 150}, false);
  }
}

TEST_CASE("recomputing activations gives bit-identical gradients", "[unit][backward]") {
  const ModelConfig c = small_config(4, 2, false);
  ModelWeights w(c);
  w.init_random(c, 7);
  std::vector<std::int64_t> ids(3 * 16);
  std::vector<std::int32_t> targets(ids.size());
  for (std::size_t i = 0; i < ids.size(); ++i) ids[i] = std::int64_t((i * 7 + 3) % 29), targets[i] = std::int32_t((i * 5 + 1) % 29);
  const IntView2 dids = device_ids(ids, 3, 16);
  const IntView1 dtargets = device_targets(targets);
  ModelWeights g1(c, true), g2(c, true);
  Network<float> stored(c, 0.01, 0.001, false), recomputed(c, 0.01, 0.001, true);
  const LossTerms a = stored.run(w, dids, dtargets, &g1, 1.0 / 48);
  const LossTerms b = recomputed.run(w, dids, dtargets, &g2, 1.0 / 48);
  CHECK(a.ce_sum == b.ce_sum);
  CHECK(a.switch_loss == b.switch_loss);
  const auto n1 = g1.named(c), n2 = g2.named(c);
  for (std::size_t p = 0; p < n1.size(); ++p) {
    INFO(n1[p].name);
    const auto x = host_of(n1[p].flat), y = host_of(n2[p].flat);
    CHECK(std::memcmp(x.data(), y.data(), x.size() * sizeof(float)) == 0);
  }
}

TEST_CASE("token ids outside the vocabulary stop a training pass as an input error", "[unit][backward]") {
  const ModelConfig c = small_config(2, 2, true);
  ModelWeights w(c), g(c, true);
  w.init_random(c, 5);
  std::vector<std::int64_t> ids(2 * 8, 3);
  ids[5] = c.vocab_size, ids[12] = -1;
  const std::vector<std::int32_t> targets(ids.size(), 1);
  Network<float> net(c, 0.01, 0.001);
  CHECK_THROWS_WITH(net.run(w, device_ids(ids, 2, 8), device_targets(targets), &g, 1.0 / 16),
                    Catch::Matchers::Contains("2 token id(s) outside the model's vocabulary [0, " +
                                              std::to_string(c.vocab_size) + ")"));
}

TEST_CASE("the LM head in chunks (train/logits_chunk_tokens): the same losses and gradients, no [N, V] logits",
          "[unit][backward]") {
  // 3 x 16 = 48 tokens in chunks of 7 (the last 6), against the whole micro-batch at once: the plain
  // mean loss and the per-row weighted loss (SFT, DPO), each with its gradients. The chunks' GEMMs may
  // round differently from the whole one (the vendor BLAS picks kernels by shape), and the head's
  // weight gradient is summed chunk by chunk: float agreement, not bits.
  for (const bool tied : {true, false}) {
    INFO("tied " << tied);
    const ModelConfig c = small_config(4, 2, tied);
    ModelWeights w(c);
    w.init_random(c, 9);
    std::vector<std::int64_t> ids(3 * 16);
    std::vector<std::int32_t> targets(ids.size());
    for (std::size_t i = 0; i < ids.size(); ++i)
      ids[i] = std::int64_t((i * 7 + 3) % 29), targets[i] = i % 6 == 5 ? ignore_index : std::int32_t((i * 5 + 1) % 29);
    const IntView2 dids = device_ids(ids, 3, 16);
    const IntView1 dtargets = device_targets(targets);
    Network<float> whole(c, 0.01, 0.001, false), chunked(c, 0.01, 0.001, false, StageSpan(), 7);
    const auto weigh = [](const std::vector<double>& rows, std::vector<double>& wt) {
      for (std::size_t t = 0; t < rows.size(); ++t) wt[t] = 0.01 + 0.003 * double(t % 11) - 0.002 * rows[t];
    };
    for (const bool weighted : {false, true}) {
      INFO("weighted " << weighted);
      ModelWeights g1(c, true), g2(c, true);
      const LossTerms a = weighted ? whole.run_weighted(w, dids, dtargets, &g1, weigh) : whole.run(w, dids, dtargets, &g1, 1.0 / 40);
      const LossTerms b =
          weighted ? chunked.run_weighted(w, dids, dtargets, &g2, weigh) : chunked.run(w, dids, dtargets, &g2, 1.0 / 40);
      CHECK(a.count == b.count);
      CHECK(b.ce_sum == Approx(a.ce_sum).epsilon(1e-6));
      CHECK(b.switch_loss == a.switch_loss);  // the blocks' forward is the same
      if (weighted) {
        REQUIRE(whole.row_losses().size() == chunked.row_losses().size());
        for (std::size_t t = 0; t < whole.row_losses().size(); ++t)
          CHECK(chunked.row_losses()[t] == Approx(whole.row_losses()[t]).epsilon(1e-5).margin(1e-6));
      }
      const auto n1 = g1.named(c), n2 = g2.named(c);
      for (std::size_t p = 0; p < n1.size(); ++p) {
        INFO(n1[p].name);
        const auto x = host_of(n1[p].flat), y = host_of(n2[p].flat);
        double se = 0, sr = 0;
        for (std::size_t i = 0; i < x.size(); ++i) se += (double(y[i]) - x[i]) * (double(y[i]) - x[i]), sr += double(x[i]) * x[i];
        CHECK(sr > 0);
        CHECK(std::sqrt(se / sr) <= 1e-5);
      }
    }
    CHECK(whole.logits().extent(0) == 48);
    CHECK(chunked.logits().extent(0) == 0);  // no [N, V] logits kept
  }
}

TEST_CASE("gradients match HF transformers' autograd on the oracle fixtures", "[unit][backward][hf]") {
  // The variants with distinct shapes (bf16, sharded and old-key copies of `base` add nothing here).
  for (const char* name : {"base", "top1", "top3of5", "odd_sizes", "untied", "rope500_kv3"}) {
    INFO("fixture " << name);
    const std::string dir = fixtures + "/" + name;
    const ModelConfig c = load_hf_config(dir);
    const auto ref = io::SafetensorsFile::open(dir + "/reference.safetensors");
    const auto& shape = ref.info("labels").shape;
    const std::int64_t B = shape.at(0), T = shape.at(1);
    const IntView2 ids = device_ids(ref.read_as_int64("input_ids", {B, T}), B, T);
    const IntView2 labels = device_ids(ref.read_as_int64("labels", {B, T}), B, T);
    IntView1 targets("targets", B * T);
    shift_labels(labels, targets);
    const ModelWeights w = load_hf_weights(dir, c);
    const double coef_switch = ref.read_as_float("aux.coef_switch", {1})[0], coef_z = ref.read_as_float("aux.coef_z", {1})[0];

    // Cross-entropy alone (HF's loss) and cross-entropy plus the original JetMoE router losses.
    for (const bool with_aux : {false, true}) {
      INFO((with_aux ? "loss_total (CE + router losses)" : "loss (CE)"));
      Network<float> net(c, with_aux ? coef_switch : 0.0, with_aux ? coef_z : 0.0);
      ModelWeights g(c, true);
      std::int64_t count = 0;
      {
        auto ht = Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace(), targets);
        for (std::int64_t i = 0; i < B * T; ++i) count += ht(i) != ignore_index;
      }
      const LossTerms t = net.run(w, ids, targets, &g, 1.0 / double(count));
      const double loss = t.ce() + (with_aux ? coef_switch * t.switch_loss + coef_z * t.z_loss : 0.0);
      const double ref_loss = ref.read_as_float(with_aux ? "loss_total" : "loss", {1})[0];
      CHECK(std::fabs(loss - ref_loss) <= 2e-6 * std::fabs(ref_loss));
      if (with_aux) {
        CHECK(std::fabs(t.switch_loss - ref.read_as_float("aux.switch", {1})[0]) <= 1e-5 * t.switch_loss);
        CHECK(std::fabs(t.z_loss - ref.read_as_float("aux.z", {1})[0]) <= 1e-5 * std::max(1e-3, t.z_loss));
      }
      for (const NamedTensor& p : g.named(c)) {
        INFO("gradient of " << p.name);
        const auto ours = host_of(p.flat);
        const auto theirs = ref.read_as_float((with_aux ? "grad_total." : "grad.") + p.name, p.shape);
        double diff = 0, scale = 0;
        for (std::size_t i = 0; i < ours.size(); ++i) {
          diff = std::max(diff, double(std::fabs(ours[i] - theirs[i])));
          scale = std::max(scale, double(std::fabs(theirs[i])));
        }
        INFO("max |ours - HF| / max |HF| = " << diff / scale << " (max |HF| = " << scale << ")");
        // With one expert per token the gate is 1 whatever the logits: the router learns only from the
        // router losses, and HF's gradient is exactly zero there.
        const bool no_signal = c.top_k == 1 && !with_aux && p.name.find("router") != std::string::npos;
        CHECK((no_signal ? scale == 0 : scale > 0));
        CHECK(diff <= 1e-4 * scale);
      }
    }
  }
}
