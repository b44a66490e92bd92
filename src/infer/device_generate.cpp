// Generation on the GPU (infer/device_generate.hpp): host orchestration of jk_model_decode.
#include "infer/device_generate.hpp"

#include "jetmoe/build_config.hpp"

#include <algorithm>
#include <chrono>

#include "core/error.hpp"
#include "core/profiling.hpp"
#include "model/device_model.hpp"
#include "train/device_network.hpp"

namespace jetmoe {

std::string device_generation_unavailable() { return device_training_unavailable(); }

PrefillPlan plan_prefill(const std::vector<std::vector<std::int32_t>>& prompts, std::int64_t max_tokens) {
  PrefillPlan plan;
  plan.order.resize(prompts.size());
  for (std::size_t b = 0; b < prompts.size(); ++b) plan.order[b] = b;
  std::stable_sort(plan.order.begin(), plan.order.end(),
                   [&](std::size_t a, std::size_t b) { return prompts[a].size() > prompts[b].size(); });
  for (std::size_t s0 = 0; s0 < plan.order.size();) {
    const std::int64_t T = std::int64_t(prompts[plan.order[s0]].size());
    std::size_t s1 = s0 + 1;
    while (s1 < plan.order.size() && std::int64_t(s1 - s0 + 1) * T <= max_tokens) ++s1;
    plan.batches.emplace_back(s0, s1);
    s0 = s1;
  }
  return plan;
}

#if !JETMOE_HAVE_CUDA_KERNELS

GenerationResult generate_on_device(const Model&, const std::vector<std::vector<std::int32_t>>&,
                                    const GenerationParams&, const std::function<void(std::size_t, std::int32_t)>&,
                                    const DeviceGenerationOptions&) {
  fail(ErrorKind::Deck, "generate/precision = bf16: " + device_generation_unavailable());
}

#else

namespace {

double now() { return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count(); }

// How a failed CUDA call of generation reads.
const device::CudaErrors cuda{"generation on the GPU", "fewer prompts at once or fewer generate/max_new_tokens"};

// A captured step (exec null: not captured, launch it plainly).
struct Graph {
  cudaGraph_t graph = nullptr;
  cudaGraphExec_t exec = nullptr;
  Graph() = default;
  Graph(const Graph&) = delete;
  Graph& operator=(const Graph&) = delete;
  ~Graph() {
    if (exec) cudaGraphExecDestroy(exec);
    if (graph) cudaGraphDestroy(graph);
  }
  // Captures launch() on `stream`; on any refusal leaves exec null (and clears the error).
  template <class Launch>
  void capture(Launch&& launch, cudaStream_t stream) {
    if (cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal) != cudaSuccess) {
      cudaGetLastError();
      return;
    }
    const cudaError_t launched = launch();
    const cudaError_t ended = cudaStreamEndCapture(stream, &graph);
    if (launched != cudaSuccess || ended != cudaSuccess || cudaGraphInstantiate(&exec, graph, 0) != cudaSuccess) {
      exec = nullptr;
      cudaGetLastError();
    }
  }
};

}  // namespace

GenerationResult generate_on_device(const Model& model, const std::vector<std::vector<std::int32_t>>& prompts,
                                    const GenerationParams& params,
                                    const std::function<void(std::size_t, std::int32_t)>& on_token,
                                    const DeviceGenerationOptions& options) {
  Region region("generate_on_device");
  const std::string why = device_generation_unavailable();
  if (!why.empty()) fail(ErrorKind::Deck, "generate/precision = bf16: " + why);
  const ModelConfig& c = model.config();
  const std::int64_t B = std::int64_t(prompts.size()), V = c.vocab_size;
  GenerationResult result;
  result.tokens.resize(prompts.size());
  if (B == 0 || params.max_new_tokens <= 0) return result;
  const std::int64_t max_seq = check_prompts(c, prompts, params, result) + params.max_new_tokens;

  device::Stream stream(cuda);
  const device::InferenceModel on_device(c, model.weights(), stream.s, cuda, options.kernels);
  const jk_model_config_t& cfg = *on_device.config();
  const jk_model_weights_t& w = *on_device.weights();

  // One K and one V cache per block, [B, max_seq, H_kv, d] bf16.
  const std::size_t cache_bytes = std::size_t(B * max_seq * c.num_kv_heads * c.head_dim) * 2;
  std::vector<device::Buffer> caches(static_cast<std::size_t>(2 * c.num_layers));
  std::vector<std::uint16_t*> k_caches, v_caches;
  for (std::int64_t l = 0; l < c.num_layers; ++l) {
    cuda.ensure(caches[std::size_t(2 * l)], cache_bytes, "the KV caches");
    cuda.ensure(caches[std::size_t(2 * l + 1)], cache_bytes, "the KV caches");
    k_caches.push_back(caches[std::size_t(2 * l)].as<std::uint16_t>());
    v_caches.push_back(caches[std::size_t(2 * l + 1)].as<std::uint16_t>());
  }
  device::Buffer scratch, ids_dev, len_dev, logits_dev, invalid_dev;
  cuda.ensure(scratch, jk_model_decode_bytes(&cfg, B, max_seq), "the decode scratch buffer");
  cuda.ensure(ids_dev, std::size_t(B) * 4, "token ids");
  cuda.ensure(len_dev, std::size_t(B) * 4, "cache lengths");
  cuda.ensure(logits_dev, std::size_t(B * V) * 4, "the logits");
  cuda.ensure(invalid_dev, 4, "the id check");

  // The step: its inputs (ids, cache lengths) are uploaded into the same buffers every time, so one
  // capture serves every step.
  auto decode = [&] {
    return jk_model_decode(&w, &cfg, ids_dev.as<std::int32_t>(), B, k_caches.data(), v_caches.data(),
                           len_dev.as<std::int32_t>(), max_seq, logits_dev.as<float>(), invalid_dev.as<std::int32_t>(),
                           scratch.p, scratch.bytes, stream.s);
  };
  Graph graph;
  if (options.cuda_graph) graph.capture(decode, stream.s);

  Sampler sampler(params.sampling);
  std::vector<std::mt19937_64> streams = prompt_streams(params, prompts.size());
  const std::size_t nb = std::size_t(B);
  // Sequence b lives in cache slot slot[b] (its rows of the caches, ids, lengths and logits).
  const PrefillPlan plan = plan_prefill(prompts, options.prefill_tokens);
  std::vector<std::size_t> slot(nb);
  for (std::size_t s = 0; s < nb; ++s) slot[plan.order[s]] = s;
  std::vector<std::int64_t> fed(nb, 0);  // tokens in sequence b's cache
  std::vector<std::int32_t> last(nb), ids(nb), lens(nb);  // last: set by each prefill
  std::vector<bool> done(nb, false);
  std::vector<float> logits(nb * std::size_t(V));
  // Sequence b's next token from its row of `rows`.
  auto choose = [&](std::int64_t b, const float* row) {
    const std::int32_t next = sampler.next(row, V, streams[std::size_t(b)]);
    result.tokens[std::size_t(b)].push_back(next);
    ++result.generated_tokens;
    if (on_token) on_token(std::size_t(b), next);
    last[b] = next;
    done[b] = next == params.eos_id || std::int64_t(result.tokens[std::size_t(b)].size()) >= params.max_new_tokens;
  };
  auto check_ids = [&] {
    std::int32_t invalid = 0;
    cuda.copy(&invalid, invalid_dev.p, 4, cudaMemcpyDeviceToHost, stream.s, "reading the id check");
    if (invalid != 0)
      fail(ErrorKind::Input, "a prompt has a token id outside the vocabulary [0, " + std::to_string(V) + ")");
  };

  // Prefill: the prompts in batches of similar lengths (plan_prefill), right-padded, each batch one
  // jk_model_prefill into its slots' cache rows and logits; then every prompt's first token from its
  // last position, in prompt order (as generate()).
  double t0 = now();
  {
    device::Buffer prompt_dev, pscratch;
    std::size_t most_bytes = 0, most_ids = 0;
    for (const auto& [s0, s1] : plan.batches) {
      const std::int64_t n = std::int64_t(s1 - s0), T = std::int64_t(prompts[plan.order[s0]].size());
      most_bytes = std::max(most_bytes, jk_model_prefill_bytes(&cfg, n, T));
      most_ids = std::max(most_ids, std::size_t(n * T));
    }
    cuda.ensure(prompt_dev, most_ids * 4, "the prompt ids");
    cuda.ensure(pscratch, most_bytes, "the prefill scratch buffer");
    const std::size_t stride = std::size_t(max_seq * c.num_kv_heads * c.head_dim);  // one sequence's cache rows
    std::vector<std::uint16_t*> kb(k_caches.size()), vb(v_caches.size());
    std::vector<std::int32_t> batch_ids;
    std::vector<std::int64_t> prompt_lens;
    for (const auto& [s0, s1] : plan.batches) {
      const std::int64_t n = std::int64_t(s1 - s0), T = std::int64_t(prompts[plan.order[s0]].size());
      batch_ids.assign(std::size_t(n * T), 0);
      prompt_lens.assign(std::size_t(n), 0);
      for (std::int64_t i = 0; i < n; ++i) {
        const auto& p = prompts[plan.order[s0 + std::size_t(i)]];
        // Padding: the prompt's first token (a valid id; causal attention keeps it out of the prompt).
        std::fill(batch_ids.begin() + i * T, batch_ids.begin() + (i + 1) * T, p.front());
        std::copy(p.begin(), p.end(), batch_ids.begin() + i * T);
        prompt_lens[std::size_t(i)] = std::int64_t(p.size());
      }
      for (std::size_t l = 0; l < kb.size(); ++l) kb[l] = k_caches[l] + s0 * stride;
      for (std::size_t l = 0; l < vb.size(); ++l) vb[l] = v_caches[l] + s0 * stride;
      cuda.copy(prompt_dev.p, batch_ids.data(), batch_ids.size() * 4, cudaMemcpyHostToDevice, stream.s,
                "uploading the prompts");
      cuda.check(jk_model_prefill(&w, &cfg, prompt_dev.as<std::int32_t>(), n, T, prompt_lens.data(), kb.data(), vb.data(),
                                  max_seq, logits_dev.as<float>() + s0 * std::size_t(V), invalid_dev.as<std::int32_t>(),
                                  pscratch.p, pscratch.bytes, stream.s),
                 "jk_model_prefill");
      check_ids();
    }
    cuda.copy(logits.data(), logits_dev.p, logits.size() * 4, cudaMemcpyDeviceToHost, stream.s, "reading the logits");
    for (std::int64_t b = 0; b < B; ++b) {
      fed[b] = std::int64_t(prompts[std::size_t(b)].size());
      choose(b, &logits[slot[b] * std::size_t(V)]);
    }
  }
  result.prefill_seconds = now() - t0;

  // Decode: one token per unfinished sequence per step, each at its own position.
  t0 = now();
  while (!std::all_of(done.begin(), done.end(), [](bool x) { return x; })) {
    for (std::int64_t b = 0; b < B; ++b) {
      ids[slot[b]] = done[b] ? params.pad_id : last[b];  // a finished sequence rewrites its next (unused) cache row
      lens[slot[b]] = std::int32_t(fed[b]);
    }
    cuda.copy(ids_dev.p, ids.data(), ids.size() * 4, cudaMemcpyHostToDevice, stream.s, "uploading token ids");
    cuda.copy(len_dev.p, lens.data(), lens.size() * 4, cudaMemcpyHostToDevice, stream.s, "uploading cache lengths");
    cuda.check(graph.exec ? cudaGraphLaunch(graph.exec, stream.s) : decode(), "jk_model_decode");
    cuda.copy(logits.data(), logits_dev.p, logits.size() * 4, cudaMemcpyDeviceToHost, stream.s, "reading the logits");
    for (std::int64_t b = 0; b < B; ++b) {
      if (done[b]) continue;
      ++fed[b];
      choose(b, &logits[slot[b] * std::size_t(V)]);
    }
  }
  result.decode_seconds = now() - t0;
  return result;
}

#endif

}  // namespace jetmoe
