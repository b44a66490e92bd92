#pragma once
// Random parameters for the model-level tests: every tensor drawn, norms around 1, matrices and
// embeddings N(0, sd_matrix^2), biases and norm offsets N(0, sd_other^2), from one seeded stream in
// checkpoint order (the same values for any backend and thread count).
#include <Kokkos_Core.hpp>

#include <random>
#include <string>

#include "model/config.hpp"
#include "model/weights.hpp"

namespace jetmoe::testing {

template <class R>
void randomize_weights(const ModelConfig& c, ModelWeightsT<R>& w, unsigned seed, double sd_matrix, double sd_other) {
  std::mt19937 rng(seed);
  std::normal_distribution<double> dist(0.0, 1.0);
  for (const auto& t : w.named(c)) {
    auto h = Kokkos::create_mirror_view(t.flat);
    const bool norm = t.name.find("norm") != std::string::npos;
    const double sd = t.decays ? sd_matrix : sd_other;
    for (std::size_t i = 0; i < h.size(); ++i) h(i) = R((norm ? 1.0 : 0.0) + sd * dist(rng));
    Kokkos::deep_copy(t.flat, h);
  }
}

}  // namespace jetmoe::testing
