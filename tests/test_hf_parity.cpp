// The forward pass against Hugging Face transformers' JetMoeForCausalLM: every model under
// tests/fixtures/models was built and run by scripts/oracle/make_model_fixtures.py (the oracle), and
// the test loads it as users load published checkpoints (config.json + safetensors, single, sharded,
// bf16, old hub key names, tied or untied head).
#include <catch2/catch.hpp>

#include <cmath>
#include <filesystem>

#include "infer/generate.hpp"
#include "io/safetensors.hpp"
#include "model/hf_checkpoint.hpp"
#include "model/model.hpp"

using namespace jetmoe;
namespace fs = std::filesystem;

namespace {

const std::string fixtures = std::string(JETMOE_SOURCE_DIR) + "/tests/fixtures/models";

struct Fixture {
  ModelConfig config;
  io::SafetensorsFile reference;
  std::int64_t B, T, V;
  IntView2 ids;
};

Fixture load_fixture(const std::string& name) {
  const std::string dir = fixtures + "/" + name;
  Fixture f{load_hf_config(dir), io::SafetensorsFile::open(dir + "/reference.safetensors"), 0, 0, 0, IntView2()};
  const auto& shape = f.reference.info("input_ids").shape;
  f.B = shape.at(0), f.T = shape.at(1), f.V = f.config.vocab_size;
  const auto ids = f.reference.read_as_int64("input_ids", {f.B, f.T});
  f.ids = IntView2("ids", f.B, f.T);
  auto h = Kokkos::create_mirror_view(f.ids);
  for (std::int64_t i = 0; i < f.B * f.T; ++i) h.data()[i] = std::int32_t(ids[std::size_t(i)]);
  Kokkos::deep_copy(f.ids, h);
  return f;
}

// max |ours - reference| / max |reference|
double relative_error(const float* ours, const std::vector<float>& ref) {
  double diff = 0, scale = 0;
  for (std::size_t i = 0; i < ref.size(); ++i) {
    diff = std::max(diff, double(std::fabs(ours[i] - ref[i])));
    scale = std::max(scale, double(std::fabs(ref[i])));
  }
  return diff / scale;
}

}  // namespace

TEST_CASE("logits match HF transformers on every fixture model", "[unit][hf]") {
  std::vector<std::string> names;
  for (const auto& entry : fs::directory_iterator(fixtures))
    if (fs::exists(entry.path() / "reference.safetensors")) names.push_back(entry.path().filename().string());
  std::sort(names.begin(), names.end());
  REQUIRE(names.size() >= 9);
  for (const std::string& name : names) {
    INFO("fixture " << name);
    Fixture f = load_fixture(name);
    Model model(f.config, load_hf_weights(fixtures + "/" + name, f.config));
    KvCache cache(f.config, f.B, f.T);
    View2 logits("logits", f.B * f.T, f.V);
    model.forward(f.ids, cache, logits);
    auto h = Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace(), logits);
    const auto ref = f.reference.read_as_float("logits", {f.B, f.T, f.V});
    const double err = relative_error(h.data(), ref);
    INFO("max relative error " << err);
    CHECK(err <= 1e-4);
  }
}

TEST_CASE("greedy continuation and incremental logits equal HF generate", "[unit][hf]") {
  for (const std::string name : {"base", "top1", "top3of5", "odd_sizes", "untied", "rope500_kv3"}) {
    INFO("fixture " << name);
    Fixture f = load_fixture(name);
    Model model(f.config, load_hf_weights(fixtures + "/" + name, f.config));
    const auto& gshape = f.reference.info("greedy_ids").shape;
    const std::int64_t total = gshape.at(1), n_new = total - f.T;
    const auto greedy = f.reference.read_as_int64("greedy_ids", {f.B, total});
    std::vector<std::vector<std::int32_t>> prompts(std::size_t(f.B));
    auto h = Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace(), f.ids);
    for (std::int64_t b = 0; b < f.B; ++b)
      for (std::int64_t t = 0; t < f.T; ++t) prompts[b].push_back(h(b, t));
    GenerationParams params;
    params.max_new_tokens = n_new;
    params.eos_id = -1;  // the oracle generated with EOS disabled
    const GenerationResult r = generate(model, prompts, params);
    for (std::int64_t b = 0; b < f.B; ++b) {
      REQUIRE(std::int64_t(r.tokens[b].size()) == n_new);
      for (std::int64_t t = 0; t < n_new; ++t) CHECK(r.tokens[b][t] == greedy[std::size_t(b * total + f.T + t)]);
    }
    // Step-by-step logits through the KV cache.
    const auto inc = f.reference.read_as_float("incremental_logits", {f.B, n_new, f.V});
    KvCache cache(f.config, f.B, total);
    View2 prefill("prefill", f.B * f.T, f.V);
    model.forward(f.ids, cache, prefill);
    auto hp = Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace(), prefill);
    std::vector<float> ours(std::size_t(f.B * n_new * f.V));
    for (std::int64_t b = 0; b < f.B; ++b)
      for (std::int64_t v = 0; v < f.V; ++v) ours[std::size_t((b * n_new) * f.V + v)] = hp((b + 1) * f.T - 1, v);
    for (std::int64_t t = 1; t < n_new; ++t) {
      IntView2 step("step", f.B, 1);
      auto hs = Kokkos::create_mirror_view(step);
      for (std::int64_t b = 0; b < f.B; ++b) hs(b, 0) = std::int32_t(greedy[std::size_t(b * total + f.T + t - 1)]);
      Kokkos::deep_copy(step, hs);
      View2 out("out", f.B, f.V);
      model.forward(step, cache, out);
      auto ho = Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace(), out);
      for (std::int64_t b = 0; b < f.B; ++b)
        for (std::int64_t v = 0; v < f.V; ++v) ours[std::size_t((b * n_new + t) * f.V + v)] = ho(b, v);
    }
    CHECK(relative_error(ours.data(), inc) <= 1e-4);
  }
}

TEST_CASE("export to HF format round-trips and rounds to bf16 as torch does", "[unit][hf]") {
  const fs::path out = fs::temp_directory_path() / "jetmoe-test-export";
  fs::remove_all(out);
  const ModelConfig config = load_hf_config(fixtures + "/base");
  const ModelWeights original = load_hf_weights(fixtures + "/base", config);

  save_hf_checkpoint((out / "fp32").string(), config, original, "fp32");
  const ModelConfig config_back = load_hf_config((out / "fp32").string());
  CHECK(config_back.parameter_count() == config.parameter_count());
  CHECK(config_back.rope_theta == config.rope_theta);
  CHECK(config_back.rms_norm_eps == config.rms_norm_eps);
  const ModelWeights back = load_hf_weights((out / "fp32").string(), config_back);

  // bf16 export of the fp32 weights equals transformers' own bf16 cast (the base_bf16 fixture).
  save_hf_checkpoint((out / "bf16").string(), config, original, "bf16");
  const ModelWeights ours_bf16 = load_hf_weights((out / "bf16").string(), config);
  const ModelWeights torch_bf16 = load_hf_weights(fixtures + "/base_bf16", config);

  const auto a = original.named(config), b = back.named(config), c = ours_bf16.named(config), d = torch_bf16.named(config);
  REQUIRE(a.size() == b.size());
  for (std::size_t i = 0; i < a.size(); ++i) {
    INFO(a[i].name);
    auto ha = Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace(), a[i].flat);
    auto hb = Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace(), b[i].flat);
    auto hc = Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace(), c[i].flat);
    auto hd = Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace(), d[i].flat);
    bool same = true, same_bf16 = true;
    for (std::size_t j = 0; j < ha.size(); ++j) {
      same = same && ha(j) == hb(j);
      same_bf16 = same_bf16 && hc(j) == hd(j);
    }
    CHECK(same);
    CHECK(same_bf16);
  }
  fs::remove_all(out);
}

TEST_CASE("checkpoint errors name the file and the tensor", "[unit][hf]") {
  const ModelConfig config = load_hf_config(fixtures + "/base");
  ModelConfig wider = config;
  wider.hidden_size += 1;
  CHECK_THROWS_WITH(load_hf_weights(fixtures + "/base", wider),
                    Catch::Matchers::Contains("model.safetensors") && Catch::Matchers::Contains("model.embed_tokens.weight") &&
                        Catch::Matchers::Contains("expected shape [96, 33], found [96, 32]"));
  ModelConfig fewer = config;
  fewer.num_layers = 1;
  CHECK_THROWS_WITH(load_hf_weights(fixtures + "/base", fewer),
                    Catch::Matchers::Contains("unexpected tensor(s)") && Catch::Matchers::Contains("model.layers.1."));
  ModelConfig more = config;
  more.num_layers = 3;
  CHECK_THROWS_WITH(load_hf_weights(fixtures + "/base", more),
                    Catch::Matchers::Contains("missing tensor 'model.layers.2.input_layernorm.weight'"));
  ModelConfig untied = config;
  untied.tie_word_embeddings = false;
  CHECK_THROWS_WITH(load_hf_weights(fixtures + "/base", untied), Catch::Matchers::Contains("missing tensor 'lm_head.weight'"));
  CHECK_THROWS_WITH(load_hf_config("/nonexistent"), Catch::Matchers::Contains("no config.json"));
}
