#include "train/config.hpp"

#include <cmath>
#include <exception>
#include <string>

#include "core/deck.hpp"
#include "model/config.hpp"

namespace jetmoe {

TrainConfig TrainConfig::from_deck(const Deck& deck, const ModelConfig& model, int ranks) {
  TrainConfig t;
  t.mode = deck.get_string("train", "mode");
  t.seq_len = deck.get_int("train", "seq_len");
  t.micro_batch_size = deck.get_int("train", "micro_batch_size");
  t.global_batch_tokens = deck.get_int("train", "global_batch_tokens");
  t.precision = deck.get_string("train", "precision");
  t.load_balance_coef = deck.get_real("train", "load_balance_coef");
  t.z_loss_coef = deck.get_real("train", "z_loss_coef");
  t.lr = deck.get_real("optimizer", "lr");
  t.beta1 = deck.get_real("optimizer", "beta1");
  t.beta2 = deck.get_real("optimizer", "beta2");
  t.eps = deck.get_real("optimizer", "eps");
  t.weight_decay = deck.get_real("optimizer", "weight_decay");
  t.grad_clip = deck.get_real("optimizer", "grad_clip");
  t.schedule = deck.get_string("schedule", "type");
  t.schedule_unit = deck.get_string("schedule", "unit");
  t.total = deck.get_int("schedule", "total");
  t.warmup = deck.get_int("schedule", "warmup");
  t.decay = deck.get_int("schedule", "decay");
  if (deck.is_set("schedule", "warmup_ratio")) {
    if (deck.is_set("schedule", "warmup"))
      deck.fail_value("schedule", "warmup_ratio", "set schedule/warmup or schedule/warmup_ratio, not both");
    t.warmup = std::int64_t(std::llround(deck.get_real("schedule", "warmup_ratio") * double(t.total)));
  }
  t.initial_ratio = deck.get_real("schedule", "initial_ratio");
  t.final_ratio = deck.get_real("schedule", "final_ratio");
  t.pipeline_stages = deck.get_int("parallel", "pipeline_stages");
  t.data_parallel = deck.get_int("parallel", "data_parallel");
  if (deck.is_set("parallel", "stage_layers")) {
    for (const std::string& v : deck.get_list("parallel", "stage_layers")) {
      std::size_t used = 0;
      long long n = 0;
      try {
        n = std::stoll(v, &used);
      } catch (const std::exception&) {
        used = 0;
      }
      if (used != v.size() || n < 1)
        deck.fail_value("parallel", "stage_layers", "'" + v + "' is not a positive layer count (expected e.g. 12, 12)");
      t.stage_layers.push_back(n);
    }
    if (std::int64_t(t.stage_layers.size()) != t.pipeline_stages)
      deck.fail_value("parallel", "stage_layers", std::to_string(t.stage_layers.size()) + " entries for pipeline_stages = " +
                                                      std::to_string(t.pipeline_stages) + " (one layer count per stage)");
    std::int64_t sum = 0;
    for (std::int64_t n : t.stage_layers) sum += n;
    if (sum != model.num_layers)
      deck.fail_value("parallel", "stage_layers", "the stages hold " + std::to_string(sum) + " layers, the model has " +
                                                      std::to_string(model.num_layers));
  }

  if (t.precision == "fp32" && deck.get_string("parallel", "communication") == "nccl")
    deck.fail_value("parallel", "communication",
                    "nccl carries the GPU traffic of train/precision = bf16; fp32 communicates over MPI (use auto or mpi)");
  if (t.seq_len > model.max_position_embeddings)
    deck.fail_value("train", "seq_len", std::to_string(t.seq_len) + " exceeds the model's context of " +
                                            std::to_string(model.max_position_embeddings) + " tokens");
  const std::int64_t tokens_per_micro_step = t.micro_batch_size * t.seq_len * t.data_parallel;
  if (t.global_batch_tokens % tokens_per_micro_step != 0)
    deck.fail_value("train", "global_batch_tokens",
                    std::to_string(t.global_batch_tokens) + " is not a multiple of micro_batch_size x seq_len x "
                    "data_parallel = " + std::to_string(tokens_per_micro_step));
  t.grad_accum_steps = t.global_batch_tokens / tokens_per_micro_step;

  if (t.pipeline_stages * t.data_parallel != ranks)
    deck.fail_value("parallel", t.pipeline_stages > 1 ? "pipeline_stages" : "data_parallel",
                    "pipeline_stages x data_parallel = " + std::to_string(t.pipeline_stages) + " x " +
                        std::to_string(t.data_parallel) + " does not match the " + std::to_string(ranks) +
                        " MPI rank(s) of this job");
  if (t.pipeline_stages > model.num_layers)
    deck.fail_value("parallel", "pipeline_stages", std::to_string(t.pipeline_stages) + " stages for only " +
                                                       std::to_string(model.num_layers) + " layers");

  const std::int64_t micro_batches = deck.get_int("parallel", "micro_batches");
  if (micro_batches != 0 && micro_batches != t.grad_accum_steps)
    deck.fail_value("parallel", "micro_batches",
                    std::to_string(micro_batches) + " micro-batches per step, but train/global_batch_tokens / "
                    "(micro_batch_size x seq_len x data_parallel) = " + std::to_string(t.grad_accum_steps) +
                    "; leave it 0 (the pipeline runs every micro-batch of the step) or change the global batch");
  if (t.schedule != "constant" && t.warmup + (t.schedule == "wsd" ? t.decay : 0) > t.total)
    deck.fail_value("schedule", "warmup",
                    "warmup" + std::string(t.schedule == "wsd" ? " + decay = " : " = ") +
                        std::to_string(t.warmup + (t.schedule == "wsd" ? t.decay : 0)) + " exceeds total = " +
                        std::to_string(t.total));
  const std::int64_t unit = t.schedule_unit == "tokens" ? t.global_batch_tokens : 1;
  t.total_steps = (t.total + unit - 1) / unit;
  return t;
}

}  // namespace jetmoe
