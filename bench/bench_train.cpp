// jetmoe-bench-train: training-step throughput (forward + backward + clipping + AdamW) on random
// weights and random tokens.
//
// A benchmark, not a test: it prints a table and (with --json) writes its raw numbers; the peer is
// scripts/bench/bench_hf_train.py (HF transformers + torch.optim.AdamW, same config, same threads),
// and scripts/bench/run_cpu_train_bench.sh runs both side by side.
//
//   jetmoe-bench-train --preset small --batch 4 --seq-len 256 --steps 5 --warmup 1 --json out.json
//
// One step = zero gradients, Network::run (forward, cross-entropy and the original JetMoE router
// losses, backward), global gradient norm, clipping to 1.0, AdamW (lr 1e-4, betas 0.9/0.95, weight
// decay 0.1). Reported: median step time over --steps timed steps after --warmup untimed ones,
// tokens/s = batch x seq_len / step time, model FLOP/s (6 x active matmul parameters + causal
// attention per token), peak RSS, and the per-phase table (forward, backward, optimizer).
#include <Kokkos_Core.hpp>

#include <nlohmann/json.hpp>

#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include "core/error.hpp"
#include "core/profiling.hpp"
#include "jetmoe/build_config.hpp"
#include "model/config.hpp"
#include "parallel/comm.hpp"
#include "train/losses.hpp"
#include "train/network.hpp"
#include "train/optimizer.hpp"

namespace {

using namespace jetmoe;

double now() { return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count(); }

double peak_rss_mb() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return double(u.ru_maxrss) / 1024.0;
}

[[noreturn]] void usage(const char* msg) {
  std::fprintf(stderr,
               "jetmoe-bench-train: %s\nusage: jetmoe-bench-train [--preset tiny|small|jetmoe-8b] [--batch B] "
               "[--seq-len T] [--steps N] [--warmup W] [--seed S] [--recompute] [--json FILE]\n",
               msg);
  std::exit(2);
}

}  // namespace

int main(int argc, char** argv) {
  MpiSession mpi(&argc, &argv);
  Kokkos::initialize(argc, argv);
  int status = 0;
  {
    std::string preset = "small", json_path;
    std::int64_t B = 4, T = 256, steps = 5, warmup = 1;
    std::uint64_t seed = 1234;
    bool recompute = false;
    for (int i = 1; i < argc; ++i) {
      const std::string a = argv[i];
      auto value = [&]() -> std::string {
        if (i + 1 >= argc) usage((a + " needs a value").c_str());
        return argv[++i];
      };
      if (a == "--preset") preset = value();
      else if (a == "--batch") B = std::stoll(value());
      else if (a == "--seq-len") T = std::stoll(value());
      else if (a == "--steps") steps = std::stoll(value());
      else if (a == "--warmup") warmup = std::stoll(value());
      else if (a == "--seed") seed = std::stoull(value());
      else if (a == "--recompute") recompute = true;
      else if (a == "--json") json_path = value();
      else if (a.rfind("--kokkos", 0) == 0) continue;
      else usage(("unknown argument " + a).c_str());
    }
    try {
      const ModelConfig c = ModelConfig::preset(preset);
      ModelWeights w(c), g(c, true);
      w.init_random(c, seed);
      Network<float> net(c, 0.01, 0.001, recompute);
      AdamW adam(c, AdamWSettings{0.9, 0.95, 1e-8, 0.1});
      IntView2 ids("ids", B, T);
      IntView1 targets("targets", B * T);
      {
        auto hi = Kokkos::create_mirror_view(ids);
        auto ht = Kokkos::create_mirror_view(targets);
        std::uint64_t x = seed * 0x9e3779b97f4a7c15ull + 1;
        for (std::int64_t i = 0; i < B * T; ++i) {
          x ^= x << 13, x ^= x >> 7, x ^= x << 17;
          hi.data()[i] = std::int32_t(x % std::uint64_t(c.vocab_size));
        }
        for (std::int64_t b = 0; b < B; ++b)
          for (std::int64_t t = 0; t < T; ++t) ht(b * T + t) = t + 1 < T ? hi(b, t + 1) : std::int32_t(ignore_index);
        Kokkos::deep_copy(ids, hi);
        Kokkos::deep_copy(targets, ht);
      }
      std::vector<double> times;
      double loss0 = 0, loss_last = 0;
      const Comm comm = Comm::world();
      for (std::int64_t s = 0; s < warmup + steps; ++s) {
        if (s == warmup) phases::reset();
        const double t0 = now();
        zero_gradients(c, g);
        const LossTerms terms = net.run(w, ids, targets, &g, 1.0 / double(B * (T - 1)), 1.0);
        {
          Region region("clip");
          const double norm = global_grad_norm(c, g);
          scale_gradients(c, g, clip_factor(norm, 1.0));
        }
        adam.step(w, g, 1e-4);
        Kokkos::fence();
        const double dt = now() - t0;
        if (s == 0) loss0 = terms.ce();
        loss_last = terms.ce();
        if (s >= warmup) times.push_back(dt);
      }
      std::vector<double> sorted = times;
      std::sort(sorted.begin(), sorted.end());
      const double median = sorted[sorted.size() / 2];
      const double tokens_per_s = double(B * T) / median;
      const double flops = training_flops_per_token(c, T) * double(B * T) / median;
      std::printf("jetmoe-bench-train  preset %s (%s)\n", preset.c_str(), c.summary().c_str());
      std::printf("  batch %lld x seq %lld, %lld timed steps after %lld warm-up, recompute %s\n", (long long)B,
                  (long long)T, (long long)steps, (long long)warmup, recompute ? "on" : "off");
      std::printf("  step median %.4f s (min %.4f, max %.4f) | %.1f tokens/s | %.2f GFLOP/s model | peak RSS %.1f MB\n",
                  median, sorted.front(), sorted.back(), tokens_per_s, flops / 1e9, peak_rss_mb());
      std::printf("  loss %.4f -> %.4f (first and last step)\n", loss0, loss_last);
      double wall = 0;
      for (double t : times) wall += t;
      std::printf("%s", phases::table(comm, wall).c_str());
      if (!json_path.empty()) {
        nlohmann::ordered_json j;
        j["impl"] = "jetmoe";
        j["preset"] = preset;
        j["batch"] = B;
        j["seq_len"] = T;
        j["steps"] = steps;
        j["recompute"] = recompute;
        j["step_seconds"] = times;
        j["step_median_s"] = median;
        j["tokens_per_s"] = tokens_per_s;
        j["model_gflops"] = flops / 1e9;
        j["peak_rss_mb"] = peak_rss_mb();
        j["loss_first"] = loss0;
        j["loss_last"] = loss_last;
        j["blas"] = JETMOE_BLAS_LIBRARIES;
        std::ofstream(json_path) << j.dump(2) << "\n";
      }
    } catch (const Error& e) {
      std::fprintf(stderr, "jetmoe-bench-train: %s\n", e.what());
      status = 1;
    }
  }
  Kokkos::finalize();
  return status;
}
