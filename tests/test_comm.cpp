#include <catch2/catch.hpp>

#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "core/deck.hpp"
#include "core/error.hpp"
#include "io/collective.hpp"
#include "parallel/comm.hpp"

TEST_CASE("communicator reductions", "[unit][mpi][comm]") {
  const jetmoe::Comm c = jetmoe::Comm::world();
  const int p = c.size();
  CHECK(c.sum(1.0) == double(p));
  CHECK(c.max(c.rank()) == p - 1);
  CHECK(c.min(c.rank()) == 0);
  CHECK(c.sum(double(c.rank())) == double(p) * (p - 1) / 2);
  c.barrier();
}

TEST_CASE("every rank gets every rank's string, in rank order", "[unit][mpi][comm]") {
  const jetmoe::Comm c = jetmoe::Comm::world();
  // Lengths differ by rank, rank 1's is empty: each string keeps its bytes and its place.
  const auto text = [](int r) { return r == 1 ? std::string() : std::string(std::size_t(r + 1), char('a' + r)) + "\n="; };
  const std::vector<std::string> all = c.all_gather(text(c.rank()));
  REQUIRE(int(all.size()) == c.size());
  for (int r = 0; r < c.size(); ++r) CHECK(all[std::size_t(r)] == text(r));
}

TEST_CASE("parts computed on different ranks come together at their places on every rank", "[unit][mpi][comm]") {
  const jetmoe::Comm c = jetmoe::Comm::world();
  const std::size_t P = std::size_t(c.size()), me = std::size_t(c.rank());
  // Place k (of 2P + 1) holds k values 100 k + i when some rank gives it; rank r gives places r, r + P
  // (in that order reversed), so place 2P is nobody's and place 0 is empty.
  const auto part = [](std::size_t k) {
    std::vector<std::int32_t> v;
    for (std::size_t i = 0; i < k; ++i) v.push_back(std::int32_t(100 * k + i));
    return v;
  };
  const std::vector<std::uint64_t> index = {me + P, me};
  const std::vector<std::vector<std::int32_t>> mine = {part(me + P), part(me)};
  const auto all = jetmoe::all_gather_parts(c, index, mine, 2 * P + 1);
  REQUIRE(all.size() == 2 * P + 1);
  for (std::size_t k = 0; k < 2 * P; ++k) CHECK(all[k] == part(k));
  CHECK(all[2 * P].empty());
}

TEST_CASE("every rank reads the same deck", "[unit][mpi][comm]") {
  const jetmoe::Comm c = jetmoe::Comm::world();
  const auto deck = jetmoe::Deck::from_file(std::string(JETMOE_SOURCE_DIR) + "/inputs/tiny.deck");
  const double lr = deck.get_real("optimizer", "lr");
  CHECK(c.max(lr) == lr);
  CHECK(c.min(lr) == lr);
}

TEST_CASE("a check every rank makes passes or fails on all of them, with the lowest failing rank's message and kind",
          "[mpi][comm]") {
  const jetmoe::Comm c = jetmoe::Comm::world();
  CHECK_NOTHROW(jetmoe::collectively(c, [] {}));
  // The last rank fails (and the one before it, with three or more ranks): every rank throws the lower
  // one's deck error, exit status 2, whether it failed itself or not.
  const int last = c.size() - 1, first_failing = c.size() > 2 ? last - 1 : last;
  const auto failing = [&] {
    if (c.rank() >= first_failing)
      jetmoe::fail(jetmoe::ErrorKind::Deck, "rank " + std::to_string(c.rank()) + " found a bad key");
  };
  bool thrown = false;
  try {
    jetmoe::collectively(c, failing);
  } catch (const jetmoe::CollectiveError& e) {
    thrown = true;
    CHECK(e.kind() == jetmoe::ErrorKind::Deck);
    CHECK(e.exit_code() == 2);
    CHECK(std::string(e.what()) == "rank " + std::to_string(first_failing) + " found a bad key");
  }
  CHECK(thrown);
  // Anything else thrown is an input error (exit status 1) on every rank.
  thrown = false;
  try {
    jetmoe::collectively(c, [&] {
      if (c.rank() == last) throw std::runtime_error("disk gone");
    });
  } catch (const jetmoe::CollectiveError& e) {
    thrown = true;
    CHECK(e.kind() == jetmoe::ErrorKind::Input);
    CHECK(std::string(e.what()) == "unexpected failure: disk gone");
  }
  CHECK(thrown);
}

// ---- gradient sums over data-parallel replicas, overlapped with the backward pass ---------------------

#include <cmath>
#include <vector>

#include "core/kokkos_compat.hpp"
#include "model/hf_checkpoint.hpp"
#include "model/weights.hpp"
#include "train/pipeline.hpp"

namespace {

// Rank r's value of element j of tensor k: distinct per rank, tensor and element, not exactly representable
// sums (so a missing or doubled contribution, or one from the wrong tensor, shows).
float grad_value(int rank, std::size_t k, std::size_t j) {
  return float(std::sin(0.37 * double(rank + 1) + 0.011 * double(k) + 1e-3 * double(j)) * (1.0 + 0.1 * rank));
}

void fill(const std::vector<jetmoe::NamedTensor>& grads, int rank) {
  for (std::size_t k = 0; k < grads.size(); ++k) {
    auto h = Kokkos::create_mirror_view(grads[k].flat);
    for (std::size_t j = 0; j < h.size(); ++j) h(j) = grad_value(rank, k, j);
    Kokkos::deep_copy(grads[k].flat, h);
  }
}

}  // namespace

TEST_CASE("gradient sums overlapped with the backward pass equal the blocking bucketed sums", "[unit][mpi][comm]") {
  using namespace jetmoe;
  const Comm c = Comm::world();
  const ModelConfig config = load_hf_config(std::string(JETMOE_SOURCE_DIR) + "/tests/fixtures/models/base");
  for (const double bucket : {1.0, 300.0, 5000.0, 1e9}) {  // every tensor alone ... one bucket for all
    INFO("bucket of " << bucket << " floats");
    ModelWeights overlapped(config, true), blocking(config, true);
    const auto go = overlapped.named(config), gb = blocking.named(config);
    fill(go, c.rank());
    fill(gb, c.rank());

    GradientReducer reducer(c, config, go, std::size_t(bucket));
    // What a backward pass reports: the head, the layers from the last, the embedding.
    reducer.ready(config.num_layers);
    for (std::int64_t l = config.num_layers - 1; l >= 0; --l) reducer.ready(l);
    reducer.ready(-1);
    reducer.finish();
    sum_gradients(c, gb, std::size_t(bucket));

    // Everything but finish()'s own start-up was overlapped: every bucket started during "backward".
    if (c.size() > 1) CHECK(reducer.started_early() == reducer.buckets());
    if (bucket == 1.0) CHECK(reducer.buckets() == go.size());
    if (bucket == 1e9) CHECK(reducer.buckets() == 1);
    for (std::size_t k = 0; k < go.size(); ++k) {
      INFO(go[k].name);
      auto ho = Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace(), go[k].flat);
      auto hb = Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace(), gb[k].flat);
      std::size_t bad = 0, differ = 0;
      for (std::size_t j = 0; j < ho.size(); ++j) {
        double exact = 0;
        for (int r = 0; r < c.size(); ++r) exact += double(grad_value(r, k, j));
        // fp32 sums of c.size() terms in some order: within (p - 1) roundings of the exact sum.
        const double tol = double(c.size()) * 6e-8 * (std::fabs(exact) + 4.0);
        bad += std::fabs(double(ho(j)) - exact) > tol;
        differ += ho(j) != hb(j);
      }
      CHECK(bad == 0);
      if (c.size() <= 2) CHECK(differ == 0);  // two terms: one rounding, the same in any order
    }
  }
}

TEST_CASE("a gradient bucket starts only when all its tensors are final", "[unit][mpi][comm]") {
  using namespace jetmoe;
  const Comm c = Comm::world();
  if (c.size() == 1) return;  // nothing is sent on one rank
  const ModelConfig config = load_hf_config(std::string(JETMOE_SOURCE_DIR) + "/tests/fixtures/models/base");
  ModelWeights g(config, true);
  const auto named = g.named(config);
  fill(named, c.rank());
  GradientReducer reducer(c, config, named, 1);  // one bucket per tensor
  reducer.ready(config.num_layers);               // the final norm (and untied head) only
  std::size_t tail = 0;
  for (const NamedTensor& t : named) tail += t.name.rfind("model.layers.", 0) != 0 && t.name != "model.embed_tokens.weight";
  CHECK(reducer.started_early() == tail);
  reducer.ready(config.num_layers - 1);  // + the last layer's tensors
  std::size_t last_layer = 0;
  const std::string prefix = "model.layers." + std::to_string(config.num_layers - 1) + ".";
  for (const NamedTensor& t : named) last_layer += t.name.rfind(prefix, 0) == 0;
  CHECK(reducer.started_early() == tail + last_layer);
  reducer.finish();
  CHECK(reducer.started_early() == tail + last_layer);  // the rest started in finish()
}
