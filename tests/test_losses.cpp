// Losses against HF (the cross-entropy the oracle recorded), closed forms, and finite differences of
// independent double-precision implementations written here from the definitions.
#include <catch2/catch.hpp>

#include <cmath>
#include <random>
#include <vector>

#include "io/safetensors.hpp"
#include "train/losses.hpp"

using namespace jetmoe;

namespace {

View2 device_matrix(const std::vector<float>& host, std::int64_t rows, std::int64_t cols) {
  View2 v("m", rows, cols);
  auto h = Kokkos::create_mirror_view(v);
  for (std::int64_t i = 0; i < rows * cols; ++i) h.data()[i] = host[std::size_t(i)];
  Kokkos::deep_copy(v, h);
  return v;
}

std::vector<float> host_of(const View2& v) {
  auto h = Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace(), v);
  return std::vector<float>(h.data(), h.data() + h.size());
}

double ce_reference(const std::vector<double>& x, const std::vector<int>& y, int V) {
  double sum = 0;
  int n = 0;
  for (std::size_t t = 0; t < y.size(); ++t) {
    if (y[t] == ignore_index) continue;
    double m = -1e300, z = 0;
    for (int v = 0; v < V; ++v) m = std::max(m, x[t * V + v]);
    for (int v = 0; v < V; ++v) z += std::exp(x[t * V + v] - m);
    sum += m + std::log(z) - x[t * V + y[t]];
    ++n;
  }
  return sum / n;
}

// The original JetMoE router loss from its definition (jetmoe-spec.md section 4).
double aux_reference(const std::vector<double>& x, const std::vector<int>& chosen, int N, int E, int k, double cs,
                     double cz) {
  std::vector<double> P(E, 0), f(E, 0);
  double z = 0;
  for (int t = 0; t < N; ++t) {
    double m = -1e300, s = 0;
    for (int e = 0; e < E; ++e) m = std::max(m, x[t * E + e]);
    for (int e = 0; e < E; ++e) s += std::exp(x[t * E + e] - m);
    const double lse = m + std::log(s);
    for (int e = 0; e < E; ++e) P[e] += std::exp(x[t * E + e] - lse) / N;
    z += lse * lse / N;
    for (int j = 0; j < k; ++j) f[chosen[t * k + j]] += 1.0 / (N * k);
  }
  double sw = 0;
  for (int e = 0; e < E; ++e) sw += E * P[e] * f[e];
  return cs * sw + cz * z;
}

}  // namespace

TEST_CASE("cross-entropy equals HF's loss on the oracle batch", "[unit][losses]") {
  for (const char* name : {"base", "top1", "untied", "odd_sizes"}) {
    INFO(name);
    const auto ref = io::SafetensorsFile::open(std::string(JETMOE_SOURCE_DIR) + "/tests/fixtures/models/" + name +
                                               "/reference.safetensors");
    const auto& shape = ref.info("logits").shape;
    const std::int64_t B = shape[0], T = shape[1], V = shape[2];
    const View2 logits = device_matrix(ref.read_as_float("logits", {B, T, V}), B * T, V);
    const auto labels = ref.read_as_int64("labels", {B, T});
    IntView2 lab("labels", B, T);
    auto hl = Kokkos::create_mirror_view(lab);
    for (std::int64_t i = 0; i < B * T; ++i) hl.data()[i] = std::int32_t(labels[std::size_t(i)]);
    Kokkos::deep_copy(lab, hl);
    IntView1 targets("targets", B * T);
    shift_labels(lab, targets);
    const CrossEntropy ce = cross_entropy(logits, targets);
    const double hf = ref.read_as_float("loss", {1})[0];
    CHECK(std::fabs(ce.loss - hf) <= 1e-6 * std::fabs(hf));
    CHECK(ce.count < B * (T - 1));  // the oracle's labels hold ignore_index entries
  }
}

TEST_CASE("cross-entropy gradient matches finite differences", "[unit][losses]") {
  const int N = 6, V = 11;
  std::mt19937 rng(3);
  std::normal_distribution<double> dist(0.0, 2.0);
  std::vector<double> x(N * V);
  for (auto& v : x) v = dist(rng);
  const std::vector<int> y = {3, ignore_index, 0, 10, 5, ignore_index};
  std::vector<float> xf(x.begin(), x.end());
  for (std::size_t i = 0; i < x.size(); ++i) x[i] = xf[i];  // the float values both sides see
  IntView1 targets("t", N);
  auto ht = Kokkos::create_mirror_view(targets);
  for (int t = 0; t < N; ++t) ht(t) = y[t];
  Kokkos::deep_copy(targets, ht);
  View2 logits = device_matrix(xf, N, V), grad("g", N, V);
  const CrossEntropy ce = cross_entropy(logits, targets, grad, 1.0);
  CHECK(ce.count == 4);
  CHECK(std::fabs(ce.loss - ce_reference(x, y, V)) < 1e-6);
  const auto g = host_of(grad);
  const double h = 1e-6;
  for (int i = 0; i < N * V; ++i) {
    auto xp = x, xm = x;
    xp[i] += h;
    xm[i] -= h;
    const double fd = (ce_reference(xp, y, V) - ce_reference(xm, y, V)) / (2 * h);
    REQUIRE(std::fabs(g[i] - fd) < 1e-6);
  }
  // A target outside the vocabulary is an input error.
  ht(1) = V;
  Kokkos::deep_copy(targets, ht);
  CHECK_THROWS_WITH(cross_entropy(logits, targets), Catch::Matchers::Contains("1 target token id(s) outside [0, 11)"));
}

TEST_CASE("router aux loss: closed form under balance and finite differences", "[unit][losses]") {
  // Equal logits and every expert chosen equally often: switch = 1, z = (log E)^2.
  {
    const int N = 8, E = 4, k = 2;
    View2 zero("x", N, E);
    IntView2 chosen("c", N, k);
    auto hc = Kokkos::create_mirror_view(chosen);
    for (int t = 0; t < N; ++t)
      for (int j = 0; j < k; ++j) hc(t, j) = (t * k + j) % E;
    Kokkos::deep_copy(chosen, hc);
    const RouterAux a = router_aux_loss(zero, chosen, 0.01, 0.001);
    CHECK(a.switch_loss == Approx(1.0).epsilon(1e-12));
    CHECK(a.z_loss == Approx(std::log(4.0) * std::log(4.0)).epsilon(1e-6));
  }
  const int N = 7, E = 5, k = 2;
  std::mt19937 rng(9);
  std::normal_distribution<double> dist(0.0, 1.5);
  std::vector<double> x(N * E);
  for (auto& v : x) v = double(float(dist(rng)));
  std::vector<int> chosen(N * k);
  for (int t = 0; t < N; ++t) chosen[t * k] = t % E, chosen[t * k + 1] = (t + 2) % E;
  std::vector<float> xf(x.begin(), x.end());
  View2 logits = device_matrix(xf, N, E), grad("g", N, E);
  IntView2 ch("c", N, k);
  auto hc = Kokkos::create_mirror_view(ch);
  for (int i = 0; i < N * k; ++i) hc.data()[i] = chosen[i];
  Kokkos::deep_copy(ch, hc);
  const double cs = 0.01, cz = 0.001;
  const RouterAux a = router_aux_loss(logits, ch, cs, cz, grad);
  CHECK(cs * a.switch_loss + cz * a.z_loss == Approx(aux_reference(x, chosen, N, E, k, cs, cz)).epsilon(1e-6));
  const auto g = host_of(grad);
  const double h = 1e-5;
  for (int i = 0; i < N * E; ++i) {
    auto xp = x, xm = x;
    xp[i] += h;
    xm[i] -= h;
    const double fd = (aux_reference(xp, chosen, N, E, k, cs, cz) - aux_reference(xm, chosen, N, E, k, cs, cz)) / (2 * h);
    REQUIRE(std::fabs(g[i] - fd) < 1e-7 + 1e-4 * std::fabs(fd));
  }
}
