// AdamW, clipping and the learning-rate schedules: closed forms, and ten training steps of the whole
// model (gradient accumulation, router losses, clipping, WSD, AdamW) against the trajectory PyTorch's
// torch.optim.AdamW produced from the same weights and batches (scripts/oracle/make_model_fixtures.py).
#include <catch2/catch.hpp>

#include <cmath>
#include <vector>

#include "io/safetensors.hpp"
#include "model/hf_checkpoint.hpp"
#include "train/losses.hpp"
#include "train/network.hpp"
#include "train/optimizer.hpp"

using namespace jetmoe;

TEST_CASE("WSD schedule: linear warmup from the initial ratio, constant, exponential decay", "[unit][optimizer]") {
  const LrSchedule s("wsd", 2e-3, 100, 10, 20, 0.1, 0.1);
  CHECK(s.lr(0) == Approx(2e-4).epsilon(1e-12));
  CHECK(s.lr(5) == Approx(2e-3 * (0.1 + 0.9 * 0.5)).epsilon(1e-12));
  CHECK(s.lr(10) == Approx(2e-3).epsilon(1e-12));
  CHECK(s.lr(79) == Approx(2e-3).epsilon(1e-12));
  CHECK(s.lr(80) == Approx(2e-3).epsilon(1e-12));
  CHECK(s.lr(90) == Approx(2e-3 * std::pow(0.1, 0.5)).epsilon(1e-12));
  CHECK(s.lr(100) == Approx(2e-4).epsilon(1e-12));
  CHECK(s.lr(1000) == Approx(2e-4).epsilon(1e-12));
  CHECK(s.phase(79) == 1);
  CHECK(s.phase(80) == 2);
  // Cosine: the same warmup, half-way through the rest the mean of peak and floor.
  const LrSchedule c("cosine", 1.0, 110, 10, 0, 0.0, 0.2);
  CHECK(c.lr(0) == 0.0);
  CHECK(c.lr(60) == Approx(0.6).epsilon(1e-12));
  CHECK(c.lr(110) == Approx(0.2).epsilon(1e-12));
  CHECK(LrSchedule("constant", 0.5, 10, 3, 3, 0.1, 0.1).lr(0) == 0.5);
}

TEST_CASE("clipping follows clip_grad_norm_: min(1, max / (norm + 1e-6))", "[unit][optimizer]") {
  CHECK(clip_factor(0.5, 1.0) == 1.0);
  CHECK(clip_factor(4.0, 1.0) == Approx(1.0 / (4.0 + 1e-6)).epsilon(1e-15));
  CHECK(clip_factor(1e9, 0.0) == 1.0);  // 0: clipping off
}

TEST_CASE("AdamW: bias-corrected update with decoupled decay, none on norms and biases", "[unit][optimizer]") {
  ModelConfig c;
  c.vocab_size = 5, c.hidden_size = 4, c.num_layers = 1, c.num_kv_heads = 1, c.head_dim = 2, c.num_experts = 2;
  c.top_k = 1, c.ffn_hidden_size = 3, c.max_position_embeddings = 8;
  ModelWeights p(c), g(c, true);
  p.init_random(c, 3);
  const AdamWSettings s{0.9, 0.95, 1e-8, 0.1};
  AdamW adam(c, s);
  // Two steps with fixed gradients; the reference recomputes the recurrences in double.
  const auto named_p = p.named(c), named_g = g.named(c);
  std::vector<std::vector<double>> p0, m(named_p.size()), v(named_p.size());
  for (std::size_t i = 0; i < named_p.size(); ++i) {
    auto hp = Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace(), named_p[i].flat);
    p0.emplace_back(hp.data(), hp.data() + hp.size());
    m[i].assign(hp.size(), 0.0), v[i].assign(hp.size(), 0.0);
  }
  const double lrs[2] = {1e-2, 3e-3};
  for (int step = 1; step <= 2; ++step) {
    for (std::size_t i = 0; i < named_g.size(); ++i) {
      auto hg = Kokkos::create_mirror_view(named_g[i].flat);
      for (std::size_t j = 0; j < hg.size(); ++j) hg(j) = float(std::sin(double(i * 31 + j * 7 + step)) * 0.01);
      Kokkos::deep_copy(named_g[i].flat, hg);
      for (std::size_t j = 0; j < hg.size(); ++j) {
        const double gj = hg(j), lr = lrs[step - 1];
        if (named_p[i].decays) p0[i][j] *= 1 - lr * s.weight_decay;
        m[i][j] = 0.9 * m[i][j] + 0.1 * gj;
        v[i][j] = 0.95 * v[i][j] + 0.05 * gj * gj;
        const double mh = m[i][j] / (1 - std::pow(0.9, step)), vh = v[i][j] / (1 - std::pow(0.95, step));
        p0[i][j] -= lr * mh / (std::sqrt(vh) + 1e-8);
      }
    }
    adam.step(p, g, lrs[step - 1]);
  }
  CHECK(adam.steps() == 2);
  for (std::size_t i = 0; i < named_p.size(); ++i) {
    INFO(named_p[i].name);
    auto hp = Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace(), named_p[i].flat);
    for (std::size_t j = 0; j < hp.size(); ++j) REQUIRE(std::fabs(hp(j) - p0[i][j]) <= 1e-6 * (1 + std::fabs(p0[i][j])));
  }
}

TEST_CASE("ten training steps follow PyTorch's AdamW trajectory", "[unit][optimizer][hf]") {
  for (const char* name : {"base", "untied"}) {
    INFO("fixture " << name);
    const std::string dir = std::string(JETMOE_SOURCE_DIR) + "/tests/fixtures/models/" + name;
    const ModelConfig c = load_hf_config(dir);
    const auto ref = io::SafetensorsFile::open(dir + "/adamw.safetensors");
    const auto hp = ref.read_as_float("hparams", {13});
    const double peak = hp[0], beta1 = hp[1], beta2 = hp[2], eps = hp[3], wd = hp[4], max_norm = hp[5];
    const double coef_switch = hp[6], coef_z = hp[7];
    const LrSchedule schedule("wsd", peak, std::int64_t(hp[10]), std::int64_t(hp[8]), std::int64_t(hp[9]), hp[11], hp[12]);
    const auto& shape = ref.info("batch.input_ids").shape;  // [steps, micro, B, T]
    const std::int64_t steps = shape.at(0), micro = shape.at(1), B = shape.at(2), T = shape.at(3);
    const auto all_ids = ref.read_as_int64("batch.input_ids", shape);
    const auto all_labels = ref.read_as_int64("batch.labels", shape);
    const auto losses = ref.read_as_float("step.loss", {steps}), norms = ref.read_as_float("step.grad_norm", {steps});
    const auto lrs = ref.read_as_float("step.lr", {steps});

    ModelWeights w = load_hf_weights(dir, c), g(c, true);
    Network<float> net(c, coef_switch, coef_z);
    AdamW adam(c, AdamWSettings{beta1, beta2, eps, wd});
    IntView2 ids("ids", B, T), labels("labels", B, T);
    IntView1 targets("targets", B * T);
    int clipped = 0;
    for (std::int64_t s = 0; s < steps; ++s) {
      INFO("step " << s);
      zero_gradients(c, g);
      double loss = 0;
      for (std::int64_t m = 0; m < micro; ++m) {
        auto hi = Kokkos::create_mirror_view(ids);
        auto hl = Kokkos::create_mirror_view(labels);
        for (std::int64_t i = 0; i < B * T; ++i) {
          hi.data()[i] = std::int32_t(all_ids[std::size_t((s * micro + m) * B * T + i)]);
          hl.data()[i] = std::int32_t(all_labels[std::size_t((s * micro + m) * B * T + i)]);
        }
        Kokkos::deep_copy(ids, hi);
        Kokkos::deep_copy(labels, hl);
        shift_labels(labels, targets);
        std::int64_t count = 0;
        auto ht = Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace(), targets);
        for (std::int64_t i = 0; i < B * T; ++i) count += ht(i) != ignore_index;
        // The reference averages HF's per-micro-batch mean losses.
        const LossTerms t = net.run(w, ids, targets, &g, 1.0 / double(count * micro), 1.0 / double(micro));
        loss += (t.ce() + coef_switch * t.switch_loss + coef_z * t.z_loss) / double(micro);
      }
      CHECK(std::fabs(loss - losses[std::size_t(s)]) <= 1e-5 * std::fabs(losses[std::size_t(s)]));
      const double norm = global_grad_norm(c, g);
      CHECK(std::fabs(norm - norms[std::size_t(s)]) <= 1e-4 * norms[std::size_t(s)]);
      const double lr = schedule.lr(s);
      CHECK(std::fabs(lr - lrs[std::size_t(s)]) <= 1e-6 * lr);
      const double factor = clip_factor(norm, max_norm);
      clipped += factor < 1.0;
      scale_gradients(c, g, factor);
      adam.step(w, g, lr);
    }
    CHECK(clipped > 0);  // the trajectory exercises clipping
    for (const NamedTensor& p : w.named(c)) {
      INFO("parameter " << p.name);
      auto h = Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace(), p.flat);
      const auto theirs = ref.read_as_float("final." + p.name, p.shape);
      double diff = 0, scale = 0;
      for (std::size_t i = 0; i < theirs.size(); ++i) {
        diff = std::max(diff, double(std::fabs(h(i) - theirs[i])));
        scale = std::max(scale, double(std::fabs(theirs[i])));
      }
      INFO("max |ours - torch| / max |torch| = " << diff / scale);
      CHECK(diff <= 1e-4 * scale);
    }
  }
}
