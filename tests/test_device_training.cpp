// The bf16 training path (train/precision = bf16, src/train/device_network.*) against the fp32 CPU
// network and against itself, on the CPU: this executable (jetmoe-device-emu-tests) links the emulated
// kernel library (kernels/tests/emu: the real kernel sources, transformed, on a fake CUDA device) in
// place of jetmoe::kernels and libcudart, so the application's own device code runs unchanged.
//
// What is checked (tolerances stated where there are any):
//  - one micro-batch through the device stage vs Network<float> with the same fp32 master weights: the
//    cross-entropy within 1e-2 relative, the router losses within 2e-2, every gradient tensor within
//    relative RMS 0.1 with cosine >= 0.99 (bf16 activations vs fp32: measured below in the case; a
//    swapped tensor, a wrong scale or a lost tied-head part gives O(1));
//  - two device stages chained through their boundary buffers (as the pipeline does) equal the whole
//    device stage bit for bit, the tied embedding's two gradients summed as the trainer sums them;
//  - two micro-batches accumulated on the device and flushed once equal the sum of two single flushes;
//  - the trainer with train/precision = bf16: the loss falls, the run restarts from a checkpoint bit
//    for bit (the device path is deterministic), and it tracks the fp32 run's loss;
//  - DPO with bf16 (per-token loss weights on the device, the frozen reference on the device too): the
//    first step's loss is exactly ln 2, the loss falls, and it tracks fp32 DPO within 2e-2;
//  - [mpi] pipeline stages x data-parallel replicas follow the one-rank run within 1e-4, and moving the
//    traffic by NCCL (the emulated NCCL over MPI) instead of host memory and MPI changes no bit;
//  - generation on the GPU (generate/precision = bf16): prompts of different lengths give each sequence
//    the tokens it gets alone; the step from a CUDA graph = plain launches; greedy choices are the fp32 model's (teacher-forced) up to bf16 (the
//    chosen token's fp32 logit within 5% of the row's range of the best, 3/4 exactly the argmax); EOS
//    and bad inputs.
#include <catch2/catch.hpp>

#include <Kokkos_Core.hpp>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "core/deck.hpp"
#include "infer/device_generate.hpp"
#include "model/model.hpp"
#include "model/config.hpp"
#include "model/device_model.hpp"
#include "model/weights.hpp"
#include "random_weights.hpp"
#include "support.hpp"
#include "train/device_network.hpp"
#include "train/losses.hpp"
#include "train/network.hpp"
#include "trainer_support.hpp"

using namespace jetmoe;
using jetmoe::testing::TempDir;
namespace tt = jetmoe::testing::trainer;

namespace {

ModelConfig tiny_config(bool tied) {
  ModelConfig c;
  c.vocab_size = 40, c.hidden_size = 24, c.num_layers = 2, c.num_kv_heads = 2, c.head_dim = 6;
  c.num_experts = 4, c.top_k = 2, c.ffn_hidden_size = 20, c.max_position_embeddings = 32;
  c.rope_theta = 10000.0, c.rms_norm_eps = 1e-5, c.block_norm_eps = 1e-6, c.tie_word_embeddings = tied;
  return c;
}

// Every parameter random (norms around 1, biases around 0), matrices N(0, 0.2^2): z losses ~15 (router
// logits of a few units, far apart compared with bf16 rounding). Larger weights (0.35) make this
// two-block model chaotic enough that bf16 activations move the loss by 2% (measured): not a useful
// comparison.
void randomize(const ModelConfig& c, ModelWeights& w, unsigned seed) {
  jetmoe::testing::randomize_weights(c, w, seed, 0.2, 0.1);
}

struct Batch {
  IntView2 ids;
  IntView1 targets;
  std::int64_t count = 0;
};

Batch make_batch(const ModelConfig& c, std::int64_t B, std::int64_t T, unsigned seed) {
  std::mt19937 rng(seed);
  Batch b{IntView2("ids", B, T), IntView1("targets", B * T)};
  auto hi = Kokkos::create_mirror_view(b.ids);
  auto ht = Kokkos::create_mirror_view(b.targets);
  for (std::int64_t i = 0; i < B; ++i)
    for (std::int64_t t = 0; t < T; ++t) hi(i, t) = std::int32_t(rng() % std::uint32_t(c.vocab_size));
  for (std::int64_t i = 0; i < B; ++i)
    for (std::int64_t t = 0; t < T; ++t) {
      const bool ignored = t == T - 1 || (i * T + t) % 5 == 3;
      ht(i * T + t) = ignored ? ignore_index : hi(i, t + 1);
      b.count += ignored ? 0 : 1;
    }
  Kokkos::deep_copy(b.ids, hi);
  Kokkos::deep_copy(b.targets, ht);
  return b;
}

std::vector<float> host(const Vec<float>& v) {
  auto h = Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace(), v);
  return std::vector<float>(h.data(), h.data() + h.size());
}

// One forward + backward of the device stage, gradients added to `grads` (flush at the end).
LossTerms device_step(StageNetwork& net, const ModelWeights& w, ModelWeights& grads, const Batch& b, double ce_scale) {
  net.set_slots(1);
  net.begin_pass(w);
  net.prepare(std::int64_t(b.ids.extent(0)), std::int64_t(b.ids.extent(1)));
  LossTerms t = net.stage_forward(w, b.ids, b.targets, true, ce_scale, 0, nullptr);
  net.stage_backward(w, grads, 1.0, t, 0);
  net.flush_gradients(grads);
  return t;
}

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

}  // namespace

TEST_CASE("the bf16 device stage matches the fp32 network", "[unit][device]") {
  REQUIRE(device_training_unavailable().empty());
  // Every kernel choice of job/gpu_kernels (wgmma: the sm_90a grouped GEMMs where k % 8 == 0 here, fc1 and
  // the routers' inputs; the attention's head dim 6 takes the simple kernels on every path).
  for (const GpuKernels kernels : {GpuKernels::Tuned, GpuKernels::Wgmma, GpuKernels::Simple})
  for (const bool tied : {true, false}) {
    INFO("tied " << tied << ", kernels " << int(kernels));
    const ModelConfig c = tiny_config(tied);
    ModelWeights w(c);
    randomize(c, w, 11);
    const Batch b = make_batch(c, 2, 12, 5);
    const double ce_scale = 1.0 / double(b.count);

    Network<float> cpu(c, 0.01, 0.001);
    ModelWeights g_cpu(c, true);
    const LossTerms tc = cpu.run(w, b.ids, b.targets, &g_cpu, ce_scale, 1.0);

    auto dev = make_device_network(c, 0.01, 0.001, StageSpan(), nullptr, DeviceNetworkOptions{kernels});
    ModelWeights g_dev(c, true);
    const LossTerms td = device_step(*dev, w, g_dev, b, ce_scale);

    CHECK(td.count == tc.count);
    CHECK(std::fabs(td.ce() - tc.ce()) <= 3e-3 * tc.ce());
    CHECK(std::fabs(td.switch_loss - tc.switch_loss) <= 1e-2 * tc.switch_loss);
    CHECK(std::fabs(td.z_loss - tc.z_loss) <= 1e-2 * tc.z_loss);
    const auto a = g_cpu.named(c), d = g_dev.named(c);
    REQUIRE(a.size() == d.size());
    double worst = 0, worst_cos = 1;
    for (std::size_t i = 0; i < a.size(); ++i) {
      const auto x = host(a[i].flat), y = host(d[i].flat);
      double se = 0, sr = 0, dot = 0, sy = 0;
      for (std::size_t j = 0; j < x.size(); ++j)
        se += (double(y[j]) - x[j]) * (double(y[j]) - x[j]), sr += double(x[j]) * x[j], dot += double(x[j]) * y[j],
            sy += double(y[j]) * y[j];
      const double rel = std::sqrt(se / std::max(sr, 1e-300)), cosine = dot / std::sqrt(std::max(sr * sy, 1e-300));
      INFO(a[i].name << ": relative RMS " << rel << ", cosine " << cosine);
      CHECK(rel <= 0.1);
      CHECK(cosine >= 0.99);
      worst = std::max(worst, rel), worst_cos = std::min(worst_cos, cosine);
    }
    WARN("tied " << tied << ", kernels " << int(kernels) << ": ce fp32 " << tc.ce() << " bf16 " << td.ce()
                 << "; gradients worst relative RMS " << worst << ", worst cosine " << worst_cos);
  }
}

TEST_CASE("two bf16 device stages equal the whole device stage bit for bit", "[unit][device]") {
  for (const bool tied : {true, false}) {
    INFO("tied " << tied);
    const ModelConfig c = tiny_config(tied);
    ModelWeights w(c);
    randomize(c, w, 12);
    const Batch b = make_batch(c, 2, 10, 6);
    const double ce_scale = 1.0 / double(b.count);

    auto whole = make_device_network(c, 0.01, 0.001, StageSpan());
    ModelWeights g_whole(c, true);
    const LossTerms tw = device_step(*whole, w, g_whole, b, ce_scale);

    StageSpan s0, s1;
    s0.first_layer = 0, s0.end_layer = 1, s0.head = false;
    s1.first_layer = 1, s1.end_layer = 2, s1.embedding = false;
    ModelWeights w0(c, false, s0), w1(c, false, s1), g0(c, true, s0), g1(c, true, s1);
    copy_span(c, w, w0);
    copy_span(c, w, w1);
    auto first = make_device_network(c, 0.01, 0.001, s0), last = make_device_network(c, 0.01, 0.001, s1);
    const std::int64_t B = std::int64_t(b.ids.extent(0)), T = std::int64_t(b.ids.extent(1));
    for (StageNetwork* n : {first.get(), last.get()}) n->set_slots(1);
    first->begin_pass(w0);
    last->begin_pass(w1);
    first->prepare(B, T);
    last->prepare(B, T);
    LossTerms t0 = first->stage_forward(w0, b.ids, b.targets, true, ce_scale, 0, nullptr);
    Kokkos::deep_copy(last->stage_input(0), first->stage_output(0));
    LossTerms t1 = last->stage_forward(w1, b.ids, b.targets, true, ce_scale, 0, nullptr);
    last->stage_backward(w1, g1, 1.0, t1, 0);
    last->flush_gradients(g1);
    Kokkos::deep_copy(first->boundary_grad(), last->boundary_grad());
    first->stage_backward(w0, g0, 1.0, t0, 0);
    first->flush_gradients(g0);

    CHECK(t1.ce_sum == tw.ce_sum);
    CHECK(t0.switch_loss + t1.switch_loss == Approx(tw.switch_loss).epsilon(1e-12));
    for (std::int64_t l = 0; l < 2; ++l) {
      const ModelWeights& gs = l == 0 ? g0 : g1;
      const auto ws = ModelWeights(g_whole).named(c);
      for (const auto& t : gs.named(c)) {
        if (t.name.rfind("model.layers.", 0) != 0) continue;
        for (const auto& u : ws)
          if (u.name == t.name) {
            INFO(t.name);
            CHECK(same_bits(host(t.flat), host(u.flat)));
          }
      }
    }
    CHECK(same_bits(host(g1.final_norm), host(g_whole.final_norm)));
    // The embedding: the first stage's scatter-add plus the last stage's head part (tied), as the
    // trainer's sum over the two stages; untied: the embedding and the head separately.
    const auto e0 = host(Vec<float>(g0.embed.data(), g0.embed.size()));
    const auto ew = host(Vec<float>(g_whole.embed.data(), g_whole.embed.size()));
    if (tied) {
      const auto e1 = host(Vec<float>(g1.embed.data(), g1.embed.size()));
      std::vector<float> sum(e0.size());
      for (std::size_t i = 0; i < sum.size(); ++i) sum[i] = e0[i] + e1[i];
      CHECK(same_bits(sum, ew));
    } else {
      CHECK(same_bits(e0, ew));
      CHECK(same_bits(host(Vec<float>(g1.lm_head.data(), g1.lm_head.size())),
                      host(Vec<float>(g_whole.lm_head.data(), g_whole.lm_head.size()))));
    }
  }
}

TEST_CASE("train/logits_chunk_tokens: the bf16 stage's head in chunks gives the same losses and gradients",
          "[unit][device]") {
  // 2 x 10 = 20 tokens in chunks of 7 (the last 6): every loss term and every gradient but the head's
  // bit for bit; the head's weight gradient (tied: the embedding's, which holds it) sums its chunks'
  // fp32 partial sums, a few ulps apart. A DPO-style forward-only stage (forward_only) gives the same
  // losses too.
  const DeviceNetworkOptions fo = forward_only({});
  CHECK(fo.recompute);
  CHECK(fo.logits_chunk == kForwardLogitsChunk);
  DeviceNetworkOptions big;
  big.logits_chunk = 2 * kForwardLogitsChunk;
  CHECK(forward_only(big).logits_chunk == kForwardLogitsChunk);
  for (const bool tied : {true, false}) {
    INFO("tied " << tied);
    const ModelConfig c = tiny_config(tied);
    ModelWeights w(c);
    randomize(c, w, 14);
    const Batch b = make_batch(c, 2, 10, 9);
    const double ce_scale = 1.0 / double(b.count);
    DeviceNetworkOptions whole_head, chunked;
    chunked.logits_chunk = 7;
    auto a = make_device_network(c, 0.01, 0.001, StageSpan(), nullptr, whole_head);
    auto d = make_device_network(c, 0.01, 0.001, StageSpan(), nullptr, chunked);
    {  // the run's memory line says what the options arranged (a chunk of 20 or more tokens is the whole head)
      const auto says = [](const std::string& line, const std::string& what) {
        INFO(line);
        CHECK(line.find(what) != std::string::npos);
      };
      says(a->memory_summary(2, 10), "(every block's kept; LM head whole)");
      says(d->memory_summary(2, 10), "LM head in chunks of 7 of the 20 tokens: train/logits_chunk_tokens)");
      says(d->memory_summary(2, 3), "LM head whole)");
      says(make_device_network(c, 0.0, 0.0, StageSpan(), nullptr, forward_only(chunked))->memory_summary(2, 10),
           "(blocks computed again in the backward: train/recompute; LM head in chunks of 7 of the 20 tokens");
    }
    ModelWeights ga(c, true), gd(c, true);
    const LossTerms ta = device_step(*a, w, ga, b, ce_scale), td = device_step(*d, w, gd, b, ce_scale);
    CHECK(td.ce_sum == ta.ce_sum);
    CHECK(td.switch_loss == ta.switch_loss);
    CHECK(td.z_loss == ta.z_loss);
    CHECK(td.count == ta.count);
    const std::string head = tied ? "model.embed_tokens.weight" : "lm_head.weight";
    const auto na = ga.named(c), nd = gd.named(c);
    REQUIRE(na.size() == nd.size());
    for (std::size_t i = 0; i < na.size(); ++i) {
      INFO(na[i].name);
      const auto x = host(na[i].flat), y = host(nd[i].flat);
      if (na[i].name != head) {
        CHECK(same_bits(x, y));
        continue;
      }
      CHECK_FALSE(same_bits(x, y));  // the chunks really ran: the partial sums round differently somewhere
      double se = 0, sr = 0;
      for (std::size_t j = 0; j < x.size(); ++j) se += (double(y[j]) - x[j]) * (double(y[j]) - x[j]), sr += double(x[j]) * x[j];
      CHECK(std::sqrt(se / std::max(sr, 1e-300)) <= 1e-6);
    }
    auto ref = make_device_network(c, 0.0, 0.0, StageSpan(), nullptr, forward_only(chunked));
    auto ref_whole = make_device_network(c, 0.0, 0.0, StageSpan(), nullptr);
    for (StageNetwork* n : {ref.get(), ref_whole.get()}) {
      n->set_slots(1);
      n->begin_pass(w);
      n->prepare(2, 10);
    }
    CHECK(ref->stage_forward(w, b.ids, b.targets, false, ce_scale, 0, nullptr).ce_sum ==
          ref_whole->stage_forward(w, b.ids, b.targets, false, ce_scale, 0, nullptr).ce_sum);
  }
}

TEST_CASE("bf16 gradients of two micro-batches accumulate on the device", "[unit][device]") {
  const ModelConfig c = tiny_config(true);
  ModelWeights w(c);
  randomize(c, w, 13);
  const Batch b1 = make_batch(c, 2, 8, 7), b2 = make_batch(c, 2, 8, 8);
  auto net = make_device_network(c, 0.01, 0.001, StageSpan());
  // Separately: two steps, each flushed.
  ModelWeights ga(c, true), gb(c, true);
  device_step(*net, w, ga, b1, 0.05);
  device_step(*net, w, gb, b2, 0.05);
  // Together: two slots, both backward passes, one flush.
  ModelWeights gt(c, true);
  net->set_slots(2);
  net->begin_pass(w);
  net->prepare(2, 8);
  LossTerms t1 = net->stage_forward(w, b1.ids, b1.targets, true, 0.05, 0, nullptr);
  LossTerms t2 = net->stage_forward(w, b2.ids, b2.targets, true, 0.05, 1, nullptr);
  net->stage_backward(w, gt, 1.0, t1, 0);
  net->stage_backward(w, gt, 1.0, t2, 1);
  net->flush_gradients(gt);
  const auto a = ga.named(c), bb = gb.named(c), t = gt.named(c);
  for (std::size_t i = 0; i < t.size(); ++i) {
    INFO(t[i].name);
    const auto x = host(a[i].flat), y = host(bb[i].flat), z = host(t[i].flat);
    double worst = 0, scale = 0;
    for (std::size_t j = 0; j < z.size(); ++j) {
      worst = std::max(worst, std::fabs(double(z[j]) - (double(x[j]) + y[j])));
      scale = std::max(scale, std::fabs(double(x[j]) + y[j]));
    }
    // fp32 accumulation on the device (one add per element, or per partial sum): a few ulps.
    CHECK(worst <= 1e-6 * std::max(scale, 1e-30));
  }
}

TEST_CASE("bf16 training on the emulated GPU: the loss falls, restarts are exact, fp32 is tracked",
          "[unit][device][train]") {
  TempDir tmp;
  tt::prepare_corpus(tmp);
  const std::vector<std::string> bf16 = {"train/precision=bf16"};
  REQUIRE(tt::train(tmp, "bf16", bf16) == TrainOutcome::Finished);
  REQUIRE(tt::train(tmp, "fp32") == TrainOutcome::Finished);
  const auto lines = tt::lines_of(tmp / "bf16/metrics.jsonl", "train");
  const auto ref = tt::lines_of(tmp / "fp32/metrics.jsonl", "train");
  REQUIRE(lines.size() == 6);
  REQUIRE(ref.size() == 6);
  auto ce = [](const std::string& line) { return std::stod(line.substr(line.find("\"ce\": ") + 6)); };
  CHECK(ce(lines[5]) < ce(lines[0]));
  for (std::size_t i = 0; i < lines.size(); ++i) {
    INFO("step " << i + 1 << ": bf16 " << ce(lines[i]) << ", fp32 " << ce(ref[i]));
    CHECK(std::fabs(ce(lines[i]) - ce(ref[i])) <= 2e-2 * ce(ref[i]));
  }
  WARN("cross-entropy per step, bf16 vs fp32: " << ce(lines[0]) << " / " << ce(ref[0]) << " ... " << ce(lines[5]) << " / "
                                                  << ce(ref[5]));
  const auto evals = tt::lines_of(tmp / "bf16/metrics.jsonl", "eval");
  REQUIRE(evals.size() == 3);
  // The LM head in chunks of 24 of the micro-batch's 64 tokens (train/logits_chunk_tokens): the first
  // step's loss bit for bit (the same forward), then within the head gradient's few ulps per step.
  std::vector<std::string> chunked_deck = bf16;
  chunked_deck.push_back("train/logits_chunk_tokens=24");
  REQUIRE(tt::train(tmp, "chunked", chunked_deck) == TrainOutcome::Finished);
  const auto chunked = tt::lines_of(tmp / "chunked/metrics.jsonl", "train");
  REQUIRE(chunked.size() == 6);
  CHECK(ce(chunked[0]) == ce(lines[0]));
  for (std::size_t i = 0; i < chunked.size(); ++i) {
    INFO("step " << i + 1 << ": chunked " << ce(chunked[i]) << ", whole " << ce(lines[i]));
    CHECK(std::fabs(ce(chunked[i]) - ce(lines[i])) <= 1e-4 * ce(lines[i]));
  }
  // Restart from step 3: the same step-6 checkpoint, bit for bit.
  REQUIRE(tt::train(tmp, "again", bf16, tmp / "bf16/checkpoints/step-000000003.h5") ==
          TrainOutcome::Finished);
  tt::require_identical(tmp / "bf16/checkpoints/step-000000006.h5", tmp / "again/checkpoints/step-000000006.h5");
  CHECK(tt::lines_of(tmp / "again/metrics.jsonl", "train") == std::vector<std::string>(lines.begin() + 3, lines.end()));
}


TEST_CASE("bf16 DPO on the emulated GPU starts at ln 2, learns the preference and tracks fp32",
          "[unit][device][alignment][train]") {
  TempDir tmp;
  tt::write_chat_data(tmp);
  Deck sft = tt::chat_deck(tmp, "sft", "sft");
  sft.apply_override("schedule/total=2");
  REQUIRE(run_training(sft, Comm::world(), std::nullopt) == TrainOutcome::Finished);
  std::vector<std::vector<std::string>> runs;
  for (const char* precision : {"bf16", "fp32"}) {
    Deck dpo = tt::chat_deck(tmp, "dpo", std::string("dpo-") + precision);
    dpo.apply_override("model/weights=" + tmp / "sft/final");
    dpo.apply_override(std::string("train/precision=") + precision);
    dpo.apply_override("schedule/total=3");
    dpo.apply_override("train/global_batch_tokens=192");  // one micro-batch of 4 pairs per step
    dpo.apply_override("train/eval_interval=0");
    REQUIRE(run_training(dpo, Comm::world(), std::nullopt) == TrainOutcome::Finished);
    runs.push_back(tt::train_lines(tmp / ("dpo-" + std::string(precision) + "/metrics.jsonl")));
    REQUIRE(runs.back().size() == 3);
  }
  const auto& bf16 = runs[0];
  const auto& fp32 = runs[1];
  // Step 1: the policy is the reference, computed by the same device code: exactly ln 2, margin 0.
  CHECK(tt::field(bf16.front(), "dpo_loss") == Approx(std::log(2.0)).epsilon(1e-9));
  CHECK(tt::field(bf16.front(), "reward_margin") == 0.0);
  CHECK(tt::field(bf16.back(), "dpo_loss") < std::log(2.0));
  for (std::size_t i = 0; i < bf16.size(); ++i) {
    INFO("step " << i + 1 << ": dpo loss bf16 " << tt::field(bf16[i], "dpo_loss") << ", fp32 "
                 << tt::field(fp32[i], "dpo_loss"));
    CHECK(std::fabs(tt::field(bf16[i], "dpo_loss") - tt::field(fp32[i], "dpo_loss")) <= 2e-2);
  }
  WARN("DPO loss per step, bf16 / fp32: " << tt::field(bf16[0], "dpo_loss") << " / " << tt::field(fp32[0], "dpo_loss")
                                          << " ... " << tt::field(bf16[2], "dpo_loss") << " / "
                                          << tt::field(fp32[2], "dpo_loss"));
}

TEST_CASE("bf16 pipeline stages under MPI follow the single-rank bf16 run, over MPI and over NCCL",
          "[mpi][device][train]") {
  const Comm world = Comm::world();
  TempDir tmp;  // one per rank: each rank prepares the same corpus; rank 0 writes the run's files
  tt::prepare_corpus(tmp);
  // Two stages of one block each when there are 2 or 4 ranks (4: two data-parallel replicas of each
  // stage): the tied embedding's two copies get their gradients summed between the first and the last
  // stage, the replicas' gradients over the data-parallel ranks, as in fp32.
  const std::vector<std::string> common = {"train/micro_batch_size=2", "train/sample_tokens=0", "train/precision=bf16",
                                           "schedule/total=3", "schedule/warmup=1", "schedule/decay=1",
                                           "train/eval_interval=2", "train/eval_batches=2", "checkpoint/interval=0"};
  if (world.is_root()) {
    Deck single = tt::micro_deck(tmp, "single", common);
    REQUIRE(run_training(single, Comm::self(), std::nullopt) == TrainOutcome::Finished);
  }
  world.barrier();
  std::vector<std::string> layout = common;
  const int stages = world.size() >= 2 ? 2 : 1;
  layout.push_back("parallel/pipeline_stages=" + std::to_string(stages));
  layout.push_back("parallel/data_parallel=" + std::to_string(world.size() / stages));
  auto run = [&](const std::string& name, const std::string& communication, bool overlap) {
    std::vector<std::string> v = layout;
    v.push_back("parallel/communication=" + communication);
    v.push_back(std::string("parallel/overlap_allreduce=") + (overlap ? "true" : "false"));
    Deck deck = tt::micro_deck(tmp, name, v);
    REQUIRE(run_training(deck, world, std::nullopt) == TrainOutcome::Finished);
  };
  run("mpi", "mpi", true);
  // NCCL (the emulated one: kernels/tests/emu/nccl.cpp) moves the same bf16 boundaries GPU to GPU and
  // sums the same fp32 gradients of two ranks (exact either way): bit for bit the MPI run, whether the
  // replicas' sums (4 ranks: 2 replicas per stage) overlap the last backward pass, part by part behind
  // the backward's events, or follow it as one sum. Under EMU_STREAMS=lazy (CTest "... (np=4, lazy
  // streams)") each part's sum runs right after its event's record, before the rest of the backward:
  // an event recorded before its part is final, or a missing wait, changes the sums.
  const bool nccl = world.size() > 1 && gpu_comms_unavailable().empty();
  if (nccl) {
    run("nccl", "nccl", true);
    run("nccl-after", "nccl", false);
  }
  if (!world.is_root()) return;
  // The stages run the same device code on the same bf16 boundaries: the losses agree up to the fp32
  // summation order of the gradient norm over the ranks (clipping), of the tied embedding's sum and of
  // the data-parallel sums.
  const auto a = tt::lines_of(tmp / "single/metrics.jsonl", "train"), b = tt::lines_of(tmp / "mpi/metrics.jsonl", "train");
  REQUIRE(a.size() == 3);
  REQUIRE(b.size() == a.size());
  for (const char* key : {"\"ce\": ", "\"switch\": ", "\"z\": ", "\"grad_norm\": "}) {
    for (std::size_t i = 0; i < a.size(); ++i) {
      const double x = std::stod(a[i].substr(a[i].find(key) + std::strlen(key)));
      const double y = std::stod(b[i].substr(b[i].find(key) + std::strlen(key)));
      INFO(key << " step " << i + 1 << ": one rank " << x << ", " << stages << " stages x " << world.size() / stages
               << " replicas " << y);
      CHECK(std::fabs(x - y) <= 1e-4 * std::fabs(x));
    }
  }
  // The checkpoints record what summed the replicas' gradients (4 ranks: 2 replicas per stage).
  const auto setup = [&](const std::string& name) {
    return CheckpointReader(tmp / (name + "/checkpoints/step-000000003.h5")).meta().run_setup;
  };
  const bool replicas = world.size() / stages > 1;
  CHECK((setup("mpi").find("\ngradient sums = MPI\n") != std::string::npos) == replicas);
  if (!nccl) return;
  for (const char* name : {"nccl", "nccl-after"}) {
    INFO("the " << name << " run against the MPI run");
    CHECK((setup(name).find("\ngradient sums = NCCL\n") != std::string::npos) == replicas);
    tt::require_identical(tmp / "mpi/checkpoints/step-000000003.h5", tmp / (std::string(name) + "/checkpoints/step-000000003.h5"));
    for (const char* kind : {"train", "eval"}) {
      const auto m = tt::lines_of(tmp / "mpi/metrics.jsonl", kind), n = tt::lines_of(tmp / (std::string(name) + "/metrics.jsonl"), kind);
      REQUIRE(!m.empty());
      REQUIRE(m.size() == n.size());
      for (std::size_t i = 0; i < m.size(); ++i) {
        auto numbers = [](const std::string& line) { return line.substr(0, line.find(", \"pipeline_idle\"")); };  // not timings
        CHECK(numbers(m[i]) == numbers(n[i]));
      }
    }
  }
}

TEST_CASE("ZeRO-1's parameter broadcast over NCCL leaves every replica with each part's owner's values",
          "[mpi][device]") {
  // What the trainer runs after AdamW on a Kokkos::Cuda build with parallel/zero1 (its views are GPU
  // memory there; here the parts are plain device buffers): part i from replica i mod size, in one group.
  const Comm world = Comm::world();
  if (!gpu_comms_unavailable().empty()) {  // no NCCL in this build: the trainer broadcasts through host memory
    CHECK_THROWS_WITH(make_gpu_comms(Comm::self(), world, Comm::self()), Catch::Matchers::Contains("has no NCCL"));
    return;
  }
  const auto comms = make_gpu_comms(Comm::self(), world, Comm::self());
  const std::vector<std::size_t> sizes = {5, 1 << 12, 1, 0, 3};
  auto value = [](int rank, std::size_t part, std::size_t j) { return float(1000 * rank + 17 * part) + 0.25f * float(j); };
  std::vector<device::Buffer> buffers(sizes.size());
  std::vector<std::pair<float*, std::size_t>> parts;
  std::vector<int> owners;
  for (std::size_t i = 0; i < sizes.size(); ++i) {
    REQUIRE(buffers[i].ensure(std::max<std::size_t>(1, sizes[i]) * sizeof(float)) == cudaSuccess);
    std::vector<float> mine(sizes[i]);
    for (std::size_t j = 0; j < sizes[i]; ++j) mine[j] = value(world.rank(), i, j);
    REQUIRE(device::copy_and_wait(buffers[i].p, mine.data(), sizes[i] * sizeof(float), cudaMemcpyHostToDevice,
                                  nullptr) == cudaSuccess);
    parts.emplace_back(buffers[i].as<float>(), sizes[i]);
    owners.push_back(int(i % std::size_t(world.size())));
  }
  broadcast_from_owners(*comms, parts, owners);
  for (std::size_t i = 0; i < sizes.size(); ++i) {
    std::vector<float> got(sizes[i]);
    REQUIRE(device::copy_and_wait(got.data(), buffers[i].p, sizes[i] * sizeof(float), cudaMemcpyDeviceToHost,
                                  nullptr) == cudaSuccess);
    for (std::size_t j = 0; j < sizes[i]; ++j) {
      INFO("rank " << world.rank() << ", part " << i << " (owner " << owners[i] << "), element " << j);
      REQUIRE(got[j] == value(owners[i], i, j));
    }
  }
  // The owners' lists must agree with the parts: a mismatch is a programming error, found before NCCL.
  CHECK_THROWS_WITH(broadcast_from_owners(*comms, parts, {0}), Catch::Matchers::Contains("one owner per part"));
}

TEST_CASE("generation on the GPU: each sequence as if alone, the fp32 model's greedy choices up to bf16, EOS and "
          "limits",
          "[unit][device]") {
  const ModelConfig c = tiny_config(true);
  ModelWeights w(c, true);
  randomize(c, w, 11);
  const Model model(c, w);
  const std::int64_t V = c.vocab_size;
  // Prompts of different lengths: each sequence is fed one token per step at its own position.
  const std::vector<std::vector<std::int32_t>> prompts = {{5, 9, 1, 33, 7}, {12}, {3, 3, 8}};
  GenerationParams gp;
  gp.max_new_tokens = 8, gp.eos_id = -1, gp.pad_id = 0;
  gp.sampling.temperature = 0.0;
  const GenerationResult all = generate_on_device(model, prompts, gp);
  REQUIRE(all.tokens.size() == prompts.size());
  CHECK(all.prompt_tokens == 9);
  CHECK(all.generated_tokens == 24);
  // The step replayed from a CUDA graph (the default) and launched plainly: the same tokens.
  DeviceGenerationOptions plain;
  plain.cuda_graph = false;
  CHECK(generate_on_device(model, prompts, gp, {}, plain).tokens == all.tokens);
  // The prompts prefilled in one padded batch (above), one by one, and two then one: the same tokens
  // (a prompt's logits and cache rows do not depend on its batch), also when sampling with a seed (the
  // first tokens are drawn in prompt order whatever the batches).
  for (const std::int64_t budget : {std::int64_t(1), std::int64_t(6), std::int64_t(10)}) {
    INFO("prefill_tokens " << budget);
    DeviceGenerationOptions batched;
    batched.prefill_tokens = budget;
    CHECK(generate_on_device(model, prompts, gp, {}, batched).tokens == all.tokens);
    GenerationParams sampled = gp;
    sampled.sampling.temperature = 1.3;
    sampled.sampling.seed = 7;
    CHECK(generate_on_device(model, prompts, sampled, {}, batched).tokens ==
          generate_on_device(model, prompts, sampled).tokens);
  }
  int agree = 0, total = 0;
  double worst = 0;  // the fp32 model's logit of the GPU's choice below its best, relative to the row's range
  for (std::size_t b = 0; b < prompts.size(); ++b) {
    INFO("sequence " << b);
    REQUIRE(all.tokens[b].size() == std::size_t(gp.max_new_tokens));
    // Alone, the sequence gets the same tokens: rows do not mix, positions and caches are per sequence.
    CHECK(generate_on_device(model, {prompts[b]}, gp).tokens[0] == all.tokens[b]);
    // Teacher-forced fp32 logits along the GPU's tokens: each greedy choice is the fp32 argmax, or within
    // bf16's error of it (a wrong position, cache or mask would choose tokens the fp32 model ranks low).
    std::vector<std::int32_t> seq = prompts[b];
    seq.insert(seq.end(), all.tokens[b].begin(), all.tokens[b].end() - 1);
    const std::int64_t T = std::int64_t(seq.size());
    IntView2 ids("ids", 1, T);
    auto hi = Kokkos::create_mirror_view(ids);
    for (std::int64_t t = 0; t < T; ++t) hi(0, t) = seq[std::size_t(t)];
    Kokkos::deep_copy(ids, hi);
    KvCache cache(c, 1, T);
    View2 logits("logits", T, V);
    const_cast<Model&>(model).forward(ids, cache, logits);
    auto hl = Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace(), logits);
    for (std::size_t i = 0; i < all.tokens[b].size(); ++i) {
      const std::int64_t row = std::int64_t(prompts[b].size()) - 1 + std::int64_t(i);
      float lo = hl(row, 0), hi_v = hl(row, 0);
      for (std::int64_t v = 1; v < V; ++v) lo = std::min(lo, hl(row, v)), hi_v = std::max(hi_v, hl(row, v));
      const float chosen = hl(row, all.tokens[b][i]);
      worst = std::max(worst, double(hi_v - chosen) / double(hi_v - lo));
      agree += chosen == hi_v ? 1 : 0;
      ++total;
    }
  }
  WARN("greedy GPU (bf16) tokens that are the fp32 argmax: " << agree << " of " << total
                                                             << "; worst shortfall " << worst << " of a row's range");
  CHECK(worst <= 0.05);
  CHECK(agree >= total * 3 / 4);
  // EOS ends a sequence (the EOS token included), the others go on.
  GenerationParams eos = gp;
  eos.eos_id = all.tokens[0][2];
  const GenerationResult stopped = generate_on_device(model, prompts, eos);
  const auto first = std::find(all.tokens[0].begin(), all.tokens[0].end(), eos.eos_id);
  CHECK(stopped.tokens[0] == std::vector<std::int32_t>(all.tokens[0].begin(), first + 1));
  // Inputs the user can get wrong: one clear error each.
  CHECK_THAT(jetmoe::testing::error_of([&] { generate_on_device(model, {{1, 2}, {}}, gp); }, ErrorKind::Input),
             Catch::Contains("prompt 2 is empty"));
  CHECK_THAT(jetmoe::testing::error_of([&] { generate_on_device(model, {{1, std::int32_t(V)}}, gp); }, ErrorKind::Input),
             Catch::Contains("outside the vocabulary"));
  GenerationParams longer = gp;
  longer.max_new_tokens = c.max_position_embeddings;
  CHECK_THAT(jetmoe::testing::error_of([&] { generate_on_device(model, {{1, 2}}, longer); }, ErrorKind::Input),
             Catch::Contains("exceeds the model's context"));
}
