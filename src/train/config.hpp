#pragma once
// The training run's settings, read from <train>, <optimizer>, <schedule>, <checkpoint>,
// <parallel> and <dpo>, with the checks that involve several keys.
#include <cstdint>
#include <string>
#include <vector>

namespace jetmoe {

class Deck;
struct ModelConfig;

struct TrainConfig {
  std::string mode;
  std::int64_t seq_len = 0, micro_batch_size = 0, global_batch_tokens = 0;
  std::int64_t grad_accum_steps = 0;  // micro-batches per optimizer step on each data-parallel rank
  std::string precision;
  double load_balance_coef = 0, z_loss_coef = 0;
  double lr = 0, beta1 = 0, beta2 = 0, eps = 0, weight_decay = 0, grad_clip = 0;
  std::string schedule, schedule_unit;
  std::int64_t total = 0, warmup = 0, decay = 0;
  double initial_ratio = 0, final_ratio = 0;
  std::int64_t pipeline_stages = 1, data_parallel = 1;
  std::vector<std::int64_t> stage_layers;  // parallel/stage_layers (empty: an even split)
  std::int64_t total_steps = 0;  // optimizer steps of the run

  // `ranks` is the job's rank count: pipeline_stages x data_parallel must equal it.
  static TrainConfig from_deck(const Deck& deck, const ModelConfig& model, int ranks);
};

}  // namespace jetmoe
