// jetmoe-generate: text generation with a KV cache of the shared K/V heads.
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>

#include "core/app.hpp"
#include "core/build_info.hpp"
#include "core/error.hpp"
#include "core/log.hpp"
#include "infer/device_generate.hpp"
#include "infer/generate.hpp"
#include "io/chat_template.hpp"
#include "io/collective.hpp"
#include "io/output_directory.hpp"
#include "io/atomic_file.hpp"
#include "model/load.hpp"
#include "model/model.hpp"
#include "parallel/comm.hpp"
#include "train/device_network.hpp"

namespace {

std::vector<std::string> read_prompts(const jetmoe::Deck& deck, const jetmoe::Comm& comm) {
  using namespace jetmoe;
  if (auto p = deck.find_string("generate", "prompt")) {
    if (p->empty()) deck.fail_value("generate", "prompt", "the prompt is empty");
    return {*p};
  }
  std::vector<std::string> prompts;
  std::string line;
  if (auto file = deck.find_existing("generate", "prompt_file", Deck::PathKind::File)) {
    std::ifstream in(*file);
    if (!in) deck.fail_value("generate", "prompt_file", "cannot open '" + *file + "'");
    while (std::getline(in, line))
      if (!line.empty()) prompts.push_back(line);
    if (prompts.empty()) deck.fail_value("generate", "prompt_file", "'" + *file + "' has no prompt (no non-empty line)");
    return prompts;
  }
  // Under MPI only rank 0 is given standard input (mpirun forwards it there): it reads, every rank gets it.
  log::info("reading prompts from standard input, one per line");
  std::string text;
  if (comm.is_root()) {
    std::ostringstream all;
    all << std::cin.rdbuf();
    text = all.str();
  }
  comm.broadcast(text);
  std::istringstream in(text);
  while (std::getline(in, line))
    if (!line.empty()) prompts.push_back(line);
  if (prompts.empty()) fail(ErrorKind::Input, "no prompt: standard input was empty (set generate/prompt or generate/prompt_file)");
  return prompts;
}

// Every rank's generations (its prompts' indices in `index`) on every rank, in prompt order; prompt and
// generated token counts summed, seconds the slowest rank's.
jetmoe::GenerationResult gather_generations(const jetmoe::Comm& comm, const jetmoe::GenerationResult& mine,
                                            const std::vector<std::uint64_t>& index, std::size_t prompts) {
  jetmoe::GenerationResult all;
  all.tokens = jetmoe::all_gather_parts(comm, index, mine.tokens, prompts);
  all.prefill_seconds = comm.max(mine.prefill_seconds);
  all.decode_seconds = comm.max(mine.decode_seconds);
  all.prompt_tokens = comm.sum(mine.prompt_tokens);
  all.generated_tokens = comm.sum(mine.generated_tokens);
  return all;
}

}  // namespace

int main(int argc, char** argv) {
  const jetmoe::AppSpec spec{
      "jetmoe-generate",
      "Generate text from a JetMoE model (prompt from <generate>/prompt, a file, or stdin).",
      {"job", "model", "tokenizer", "generate"},
      /*takes_restart=*/false,
      "Examples:\n"
      "  jetmoe-generate -i inputs/jetmoe-8b-generate.deck model/weights=/models/jetmoe-8b generate/prompt=\"My favourite condiment is \"\n"
      "  echo \"What is a mixture of experts?\" | jetmoe-generate -i inputs/jetmoe-8b-generate.deck model/weights=/models/jetmoe-8b-chat generate/chat=true"};
  return jetmoe::run_app(argc, argv, spec, [](jetmoe::AppContext& ctx) {
    using namespace jetmoe;
    const Deck& deck = ctx.deck;
    // Every rank checks alike and the ranks agree (collectively): under MPI an error is printed once.
    GenerationParams params;
    bool chat = false, on_gpu = false;
    std::optional<std::string> system;
    ModelConfig config;
    collectively(ctx.comm, [&] {
      if (deck.is_set("generate", "prompt") && deck.is_set("generate", "prompt_file"))
        deck.fail_value("generate", "prompt_file", "give either generate/prompt or generate/prompt_file, not both");
      params.max_new_tokens = deck.get_int("generate", "max_new_tokens");
      params.sampling.temperature = deck.get_real("generate", "temperature");
      params.sampling.top_k = deck.get_int("generate", "top_k");
      params.sampling.top_p = deck.get_real("generate", "top_p");
      params.sampling.seed = std::uint64_t(deck.get_int("job", "seed"));
      chat = deck.get_bool("generate", "chat");
      system = deck.find_string("generate", "system");
      if (system && !chat) deck.fail_value("generate", "system", "a system message needs generate/chat = true");
      config = ModelConfig::from_deck(deck);
      on_gpu = deck.get_string("generate", "precision") == "bf16";
    });
    if (params.sampling.temperature == 0.0 && (params.sampling.top_k != 0 || params.sampling.top_p != 1.0))
      log::warn("generate/temperature = 0 decodes greedily: top_k and top_p have no effect");
    if (ctx.command_line.check_only) {  // the deck alone: no files, no GPU (a login node checks a GPU job's deck)
      log::info("model: %s", config.summary().c_str());
      log::info("deck is valid.");
      return;
    }
    // The results file's directory is made before the model is loaded, so that a path the file system
    // refuses is reported before the generation runs; it is removed again if the run fails.
    std::optional<std::string> output;
    io::OutputDirectory out_dir;
    collectively(ctx.comm, [&] {
      if (on_gpu) {
        const std::string why = device_generation_unavailable();
        if (!why.empty()) deck.fail_value("generate", "precision", "bf16 needs the CUDA kernels on a GPU: " + why + "; use fp32");
      }
      if (!deck.is_set("generate", "output")) return;
      output = results_path(deck, "generate", "output");
      const std::filesystem::path parent = std::filesystem::path(*output).parent_path();
      if (ctx.comm.is_root() && !parent.empty())
        out_dir = io::OutputDirectory(parent, results_directory_keys(deck, "generate", "output"));
    });

    LoadedModel loaded = load_model(deck);
    auto tokenizer = load_tokenizer(deck, loaded.config, /*required=*/true);
    log::info("model: %s; weights: %s", loaded.config.summary().c_str(), loaded.source.c_str());
    log::info("tokenizer: %s (%d pieces)", tokenizer->path().c_str(), tokenizer->vocab_size());
    Model model(loaded.config, std::move(loaded.weights));

    const bool add_bos = deck.get_bool("tokenizer", "add_bos"), add_eos = deck.get_bool("tokenizer", "add_eos");
    std::vector<std::vector<std::int32_t>> prompts;
    const std::vector<std::string> texts = read_prompts(deck, ctx.comm);
    for (const std::string& text : texts) {
      if (chat) {
        std::vector<io::ChatMessage> messages;
        if (system) messages.push_back({"system", *system});
        messages.push_back({"user", text});
        prompts.push_back(io::encode_chat(*tokenizer, messages, /*add_generation_prompt=*/true).ids);
      } else {
        prompts.push_back(tokenizer->encode(text, add_bos, add_eos));
      }
      if (prompts.back().empty()) fail(ErrorKind::Input, "prompt " + std::to_string(prompts.size()) + " encodes to no token");
    }
    params.eos_id = tokenizer->eos_id();
    params.pad_id = tokenizer->pad_id();

    // One prompt streams its text as it is generated; a batch prints each answer at the end.
    const bool stream = prompts.size() == 1 && ctx.comm.is_root();
    // The new text as the whole sequence decodes: a continuation keeps the space its first word begins
    // with ("Once upon a time" + " there"). A chat answer is decoded alone, as HF decodes the tokens
    // after the prompt, and standard output shows it on the line after its question.
    const auto context = [&](std::size_t b) { return chat ? std::vector<std::int32_t>() : prompts[b]; };
    const char* separator = chat ? "\n" : "";
    io::StreamDecoder decoder(*tokenizer);
    if (stream) decoder.skip(context(0));
    const auto on_token = [&](std::size_t, std::int32_t token) {
      if (!stream || token == params.eos_id) return;
      std::fputs(decoder.push(token).c_str(), stdout);
      std::fflush(stdout);
    };
    const std::string matrix_products = on_gpu ? cuda_kernels_description(deck.get_string("job", "gpu_kernels"))
                                               : matrix_products_description();
    if (on_gpu) log::info("generating on %s (bf16)", device_training_description().c_str());
    else log::info("generating in fp32; matrix products: %s", matrix_products.c_str());
    if (stream) {  // after the log lines, so that the prompt and its continuation stay on one line
      std::fputs((texts[0] + separator).c_str(), stdout);
      std::fflush(stdout);
    }
    DeviceGenerationOptions device_options;
    device_options.kernels = gpu_kernels_from(deck.get_string("job", "gpu_kernels"));
    device_options.prefill_tokens = deck.get_int("generate", "prefill_tokens");
    // Under MPI the prompts are dealt out over the ranks (rank r: prompts r, r + P, ...), each sampling
    // from its own stream (GenerationParams::prompt_index): the job prints and writes what one rank
    // given all of them would.
    const int ranks = ctx.comm.size(), rank = ctx.comm.rank();
    std::vector<std::vector<std::int32_t>> share;
    GenerationParams share_params = params;
    for (std::size_t i = std::size_t(rank); i < prompts.size(); i += std::size_t(ranks)) {
      share.push_back(prompts[i]);
      share_params.prompt_index.push_back(i);
    }
    if (ranks > 1)
      log::info("%zu prompt(s) dealt out over %d ranks, at most %zu each", prompts.size(), ranks,
                (prompts.size() + std::size_t(ranks) - 1) / std::size_t(ranks));
    GenerationResult mine;
    collectively(ctx.comm, [&] {
      GenerationResult whole;  // every prompt is checked on every rank, so that all ranks agree on an error
      check_prompts(model.config(), prompts, params, whole);
    });
    collectively(ctx.comm, [&] {
      mine = on_gpu ? generate_on_device(model, share, share_params, on_token, device_options)
                    : generate(model, share, share_params, on_token);
    });
    GenerationResult result = gather_generations(ctx.comm, mine, share_params.prompt_index, prompts.size());
    if (stream) std::printf("%s\n", decoder.finish().c_str());
    std::vector<std::string> completions(prompts.size());  // rank 0 prints and writes them
    for (std::size_t b = 0; b < prompts.size() && ctx.comm.is_root(); ++b) {
      std::vector<std::int32_t> ids = result.tokens[b];
      if (!ids.empty() && ids.back() == params.eos_id) ids.pop_back();
      completions[b] = io::decode_continuation(*tokenizer, context(b), ids);
    }
    if (!stream && ctx.comm.is_root())
      for (std::size_t b = 0; b < prompts.size(); ++b)
        std::printf("--- %zu ---\n%s%s%s\n", b + 1, texts[b].c_str(), separator, completions[b].c_str());
    log::info("prefill: %lld tokens in %.3f s (%.1f tokens/s); decode: %lld tokens in %.3f s (%.1f tokens/s)",
              (long long)result.prompt_tokens, result.prefill_seconds,
              result.prompt_tokens / std::max(1e-9, result.prefill_seconds), (long long)result.generated_tokens,
              result.decode_seconds,
              std::max<std::int64_t>(0, result.generated_tokens - std::int64_t(prompts.size())) /
                  std::max(1e-9, result.decode_seconds));
    if (output && ctx.comm.is_root()) {
      GenerationSettings settings;
      settings.model = loaded.source;
      settings.tokenizer = tokenizer->path();
      settings.precision = on_gpu ? "bf16" : "fp32";
      settings.matrix_products = matrix_products;
      settings.chat = chat;
      settings.system = system;
      settings.params = params;
      std::vector<GenerationRecord> records(prompts.size());
      for (std::size_t b = 0; b < prompts.size(); ++b) {
        GenerationRecord& r = records[b];
        r.prompt = texts[b];
        r.prompt_tokens = std::int64_t(prompts[b].size());
        r.completion_ids = result.tokens[b];
        r.completion = completions[b];
      }
      io::write_text_atomically(*output, generation_results_json(settings, records));
      log::info("wrote %s (%zu generation(s))", output->c_str(), records.size());
    }
    out_dir.keep();
  });
}
